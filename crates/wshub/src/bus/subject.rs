//! Subject (NATS) / channel (Redis) names. The one place they are built.
//!
//! ```text
//! {prefix}room.{room}      room traffic; a node subscribes only while it has local members
//! {prefix}node.{node}      direct messages and per-client commands (kick, disconnect) for
//!                          the clients of one node (the client registry says which)
//! {prefix}broadcast        messages to every client
//! ```
//!
//! The prefix ends with its separator: `wshub.` for NATS (`cluster.nats.subject_prefix`),
//! `wshub:` for Redis (`cluster.redis.key_prefix`).
//!
//! Room ids are free text, but NATS subjects are dot-separated tokens without spaces or
//! wildcards. Ids made only of `[A-Za-z0-9_-]` are used as they are; anything else is
//! written as `~` + base64url(id). `~` is not in the plain alphabet, so the two forms cannot
//! collide.

use base64::Engine;

#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    prefix: String,
}

impl Subjects {
    pub(crate) fn new(prefix: &str) -> Self {
        Subjects {
            prefix: prefix.to_owned(),
        }
    }

    pub(crate) fn room(&self, room: &str) -> String {
        format!("{}room.{}", self.prefix, encode_token(room))
    }

    /// The wildcard covering every room subject (JetStream stream filter).
    pub(crate) fn all_rooms(&self) -> String {
        format!("{}room.>", self.prefix)
    }

    /// One node's subject: direct messages, kicks and disconnects for its clients.
    pub(crate) fn node(&self, node: &str) -> String {
        format!("{}node.{}", self.prefix, encode_token(node))
    }

    pub(crate) fn broadcast(&self) -> String {
        format!("{}broadcast", self.prefix)
    }
}

fn encode_token(id: &str) -> String {
    let plain = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        id.to_owned()
    } else {
        format!(
            "~{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_subjects_are_single_safe_tokens() {
        let s = Subjects::new("wshub.");
        assert_eq!(s.room("lobby"), "wshub.room.lobby");
        assert_eq!(s.room("chat-1_a"), "wshub.room.chat-1_a");
        for weird in ["a.b", "a b", "*", ">", "ünï", "~x"] {
            let subject = s.room(weird);
            let token = subject.strip_prefix("wshub.room.").unwrap();
            assert!(token.starts_with('~'), "{weird}");
            assert!(!token.contains(['.', ' ', '*', '>']), "{weird} -> {token}");
        }
        assert_ne!(s.room("a.b"), s.room("a_b"));
        assert_eq!(s.all_rooms(), "wshub.room.>");
    }
}
