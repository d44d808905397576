//! Permissions and the one permission check every handler goes through.
//!
//! Until JWT authentication lands, every client is anonymous and gets
//! [`Permissions::all`]. Handlers never look at permissions themselves: dispatch calls
//! [`authorize`] with the permission a handler declares and the room it targets, so auth
//! slots in here without touching handlers.

mod jwt;
mod permission;

pub use jwt::{Identity, TokenError, Verifier};
pub use permission::{Permission, Permissions};

use wshub_protocol::ErrorCode;

use crate::dispatch::HandlerError;

/// Checks that `perms` grant `needed` (scoped to `room` when the operation targets one).
/// A denial is error 2001 with the missing permission named in `details`.
pub(crate) fn authorize(
    perms: &Permissions,
    needed: Permission,
    room: Option<&str>,
) -> Result<(), HandlerError> {
    if perms.allows(needed, room) {
        return Ok(());
    }
    let scoped = match room {
        Some(r) => format!("{}:{r}", needed.as_str()),
        None => needed.as_str().to_owned(),
    };
    Err(HandlerError::new(
        ErrorCode::Forbidden,
        format!("permission {scoped} required"),
    )
    .with_details(serde_json::json!({ "permission": scoped })))
}
