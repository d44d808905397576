//! JWTs for wshub runs with auth on: HS256, signed with the secret the server was started
//! with (`WSHUB_AUTH__SECRET_KEY`), issuer `gohub` (the server's default).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};

/// What every benchmark client may do: join rooms and publish in them.
const PERMISSIONS: [&str; 2] = ["join:room", "send:message"];

/// Mints tokens for one secret; each is valid for an hour.
#[derive(Clone)]
pub(crate) struct Minter {
    key: EncodingKey,
    exp: u64,
}

impl Minter {
    pub(crate) fn new(secret: &str) -> Minter {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Minter {
            key: EncodingKey::from_secret(secret.as_bytes()),
            exp: now + 3600,
        }
    }

    pub(crate) fn token(&self, user_id: &str) -> anyhow::Result<String> {
        let claims = serde_json::json!({
            "user_id": user_id,
            "permissions": PERMISSIONS,
            "iss": "gohub",
            "exp": self.exp,
        });
        Ok(jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &self.key,
        )?)
    }
}
