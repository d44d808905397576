//! Newtypes for the ids that flow through the hub. Cheap to clone (`Arc<str>`), compared and
//! hashed by value, and impossible to mix up (a room id is not a client id).

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(id: impl Into<Arc<str>>) -> Self {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.into())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s.into())
            }
        }
    };
}

id_type!(
    /// A client's id: JWT `user_id`/`sub`, else `?client_id=`, else a UUIDv4.
    ClientId
);
id_type!(
    /// A room's id as clients name it.
    RoomId
);
id_type!(
    /// A node's id (`cluster.node_id`, or generated).
    NodeId
);
