//! GoHub's permission strings, parsed, with room-scoped globs (`join:room:chat-*`).

use std::sync::Arc;

/// One of GoHub's permissions (plus `broadcast:message`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    ReadMessage,
    SendMessage,
    CreateRoom,
    DeleteRoom,
    JoinRoom,
    LeaveRoom,
    AdminRoom,
    BroadcastMessage,
    /// Grants everything.
    AdminSystem,
}

impl Permission {
    pub const ALL: &'static [Permission] = &[
        Permission::ReadMessage,
        Permission::SendMessage,
        Permission::CreateRoom,
        Permission::DeleteRoom,
        Permission::JoinRoom,
        Permission::LeaveRoom,
        Permission::AdminRoom,
        Permission::BroadcastMessage,
        Permission::AdminSystem,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Permission::ReadMessage => "read:message",
            Permission::SendMessage => "send:message",
            Permission::CreateRoom => "create:room",
            Permission::DeleteRoom => "delete:room",
            Permission::JoinRoom => "join:room",
            Permission::LeaveRoom => "leave:room",
            Permission::AdminRoom => "admin:room",
            Permission::BroadcastMessage => "broadcast:message",
            Permission::AdminSystem => "admin:system",
        }
    }
}

/// A permission, optionally limited to rooms whose id matches a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    permission: Permission,
    room_glob: Option<Box<str>>,
}

impl Grant {
    /// `join:room`, or scoped to rooms: `join:room:chat-*`. `None` for anything else.
    fn parse(item: &str) -> Option<Grant> {
        Permission::ALL.iter().find_map(|p| {
            let name = p.as_str();
            if item == name {
                Some(Grant {
                    permission: *p,
                    room_glob: None,
                })
            } else {
                item.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .filter(|glob| !glob.is_empty())
                    .map(|glob| Grant {
                        permission: *p,
                        room_glob: Some(Box::from(glob)),
                    })
            }
        })
    }
}

/// The permissions of one client. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    grants: Arc<[Grant]>,
}

impl Permissions {
    /// Everything (`admin:system`).
    pub fn all() -> Self {
        Permissions {
            grants: Arc::from([Grant {
                permission: Permission::AdminSystem,
                room_glob: None,
            }]),
        }
    }

    /// Parses strings such as `join:room`, `send:message:lobby`, `join:room:chat-*`.
    /// Unknown strings are returned as the error.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        let grants = items
            .iter()
            .map(|item| Grant::parse(item.as_ref()).ok_or_else(|| item.as_ref().to_owned()))
            .collect::<Result<Arc<[Grant]>, String>>()?;
        Ok(Permissions { grants })
    }

    /// As [`Permissions::parse`], skipping strings it does not know (tokens minted for other
    /// services may carry permissions of theirs).
    pub fn parse_lenient<S: AsRef<str>>(items: &[S]) -> Self {
        Permissions {
            grants: items
                .iter()
                .filter_map(|item| Grant::parse(item.as_ref()))
                .collect(),
        }
    }

    /// Nothing at all.
    pub fn none() -> Self {
        Permissions {
            grants: Arc::from([]),
        }
    }

    /// Whether `needed` is granted, for `room` when the operation targets one. A grant
    /// scoped to rooms never allows an operation that targets no room.
    pub fn allows(&self, needed: Permission, room: Option<&str>) -> bool {
        self.grants.iter().any(|g| {
            (g.permission == needed || g.permission == Permission::AdminSystem)
                && match (&g.room_glob, room) {
                    (None, _) => true,
                    (Some(glob), Some(room)) => glob_match(glob, room),
                    (Some(_), None) => false,
                }
        })
    }
}

/// `*` matches any run of characters, `?` exactly one; everything else is literal.
fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("chat-*", "chat-1"));
        assert!(glob_match("chat-*", "chat-"));
        assert!(!glob_match("chat-*", "cha"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("*x*y", "axxby"));
        assert!(!glob_match("lobby", "lobby2"));
    }

    #[test]
    fn scoped_and_global_grants() {
        let p = Permissions::parse(&["join:room:chat-*", "send:message"]).unwrap();
        assert!(p.allows(Permission::JoinRoom, Some("chat-1")));
        assert!(!p.allows(Permission::JoinRoom, Some("ops")));
        assert!(!p.allows(Permission::JoinRoom, None));
        assert!(p.allows(Permission::SendMessage, Some("any")));
        assert!(!p.allows(Permission::CreateRoom, Some("any")));
        assert!(Permissions::all().allows(Permission::DeleteRoom, Some("x")));
        assert_eq!(
            Permissions::parse(&["fly:away"]),
            Err("fly:away".to_owned())
        );
    }
}
