//! Message types and their wire names.
//!
//! The five GoHub types come first; everything after `Error` is a wshub extension that a GoHub
//! client never needs to send. Matching on [`MessageType`] is the only place a `message_type`
//! string is interpreted (no string matching elsewhere).

macro_rules! message_types {
    ($($(#[$doc:meta])* $variant:ident => $wire:literal,)*) => {
        /// Every message type the server understands or sends.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum MessageType {
            $($(#[$doc])* $variant,)*
        }

        impl MessageType {
            /// All types, in declaration order.
            pub const ALL: &'static [MessageType] = &[$(MessageType::$variant,)*];

            /// The wire name (`"room_message"`, ...).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(MessageType::$variant => $wire,)*
                }
            }

            /// Parses a wire name. Unknown names are `None` (they may be custom handlers).
            pub fn parse(name: &str) -> Option<MessageType> {
                match name {
                    $($wire => Some(MessageType::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

message_types! {
    // GoHub's types.
    /// `{ts}` -> `pong`.
    Ping => "ping",
    /// `{ts, server_ts, rtt}`.
    Pong => "pong",
    /// `{room_id}` -> `room_joined`.
    JoinRoom => "join_room",
    /// `{room_id, status: "joined"}`.
    RoomJoined => "room_joined",
    /// `{room_id}` -> `room_left`.
    LeaveRoom => "leave_room",
    /// `{room_id, status: "left"}`.
    RoomLeft => "room_left",
    /// In: `{room_id, content}`. Out: `{content, room_id, sender_id, timestamp}`.
    RoomMessage => "room_message",
    /// In: `{target_id, content}`. Out: `{content, sender_id, timestamp}`.
    DirectMessage => "direct_message",
    /// `{code, message, request_id, details?}`.
    Error => "error",

    // Extensions.
    /// Sent by the server right after the upgrade: `{client_id, node_id}`.
    Connected => "connected",
    /// `{room_id, name?, max_clients?}` -> `room_created`.
    CreateRoom => "create_room",
    /// `{room_id, name, max_clients}`.
    RoomCreated => "room_created",
    /// `{room_id}` -> `room_deleted` (also sent to every member).
    DeleteRoom => "delete_room",
    /// `{room_id}`.
    RoomDeleted => "room_deleted",
    /// `{}` -> `room_list`.
    ListRooms => "list_rooms",
    /// `{rooms: [{id, name, max_clients, members}]}`.
    RoomList => "room_list",
    /// In: `{room_id}`. Reply of the same type: `{room_id, members: [{client_id}]}`.
    RoomMembers => "room_members",
    /// In: `{content}`. Out, to every other client: `{content, sender_id, timestamp}`.
    Broadcast => "broadcast",
    /// `{token}` -> `authenticated`: in-band auth (first message) or token refresh.
    Authenticate => "authenticate",
    /// `{client_id, expires_at}` (`expires_at` in Unix seconds, or null).
    Authenticated => "authenticated",
    /// `{room_id, client_id}` -> `kicked`: removes a member (needs `admin:room`). The member
    /// gets `kicked {room_id, by}`.
    Kick => "kick",
    /// Reply to `kick` `{room_id, client_id}`; to the kicked member `{room_id, by}`.
    Kicked => "kicked",
    /// To a room's members (with `rooms.presence_events`): `{room_id, client_id, info?}`.
    PresenceJoin => "presence_join",
    /// To a room's members (with `rooms.presence_events`): `{room_id, client_id}`.
    PresenceLeave => "presence_leave",
    /// Ack of a `room_message` sent with `request_id`: `{room_id, offset?, epoch?}`.
    Published => "published",
    /// `{room_id, since?, limit?}` -> `history {room_id, epoch, publications}`.
    History => "history",
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for t in MessageType::ALL {
            assert_eq!(MessageType::parse(t.as_str()), Some(*t));
        }
        assert_eq!(MessageType::parse("nope"), None);
        assert_eq!(MessageType::RoomMessage.as_str(), "room_message");
    }
}
