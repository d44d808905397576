//! Error codes and the `error` frame payload, as GoHub defines them.

use serde::{Deserialize, Serialize};

/// Every client-visible failure has one of these codes (GoHub's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    Unknown = 1000,
    InvalidFormat = 1001,
    InvalidMessageId = 1002,
    ServerError = 1003,
    Timeout = 1004,
    RateLimited = 1005,
    Unauthorized = 2000,
    Forbidden = 2001,
    TokenExpired = 2002,
    InvalidToken = 2003,
    RoomNotFound = 3000,
    RoomAlreadyExists = 3001,
    RoomFull = 3002,
    NotInRoom = 3003,
    AlreadyInRoom = 3004,
    ClientNotFound = 4000,
    ClientOffline = 4001,
    MessageTooLarge = 4002,
}

impl ErrorCode {
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::Unknown,
        ErrorCode::InvalidFormat,
        ErrorCode::InvalidMessageId,
        ErrorCode::ServerError,
        ErrorCode::Timeout,
        ErrorCode::RateLimited,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::TokenExpired,
        ErrorCode::InvalidToken,
        ErrorCode::RoomNotFound,
        ErrorCode::RoomAlreadyExists,
        ErrorCode::RoomFull,
        ErrorCode::NotInRoom,
        ErrorCode::AlreadyInRoom,
        ErrorCode::ClientNotFound,
        ErrorCode::ClientOffline,
        ErrorCode::MessageTooLarge,
    ];

    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_u16() == code)
    }

    /// The default message, GoHub's text where GoHub had one.
    pub const fn default_message(self) -> &'static str {
        match self {
            ErrorCode::Unknown => "unknown error",
            ErrorCode::InvalidFormat => "invalid message format",
            ErrorCode::InvalidMessageId => "invalid message id",
            ErrorCode::ServerError => "internal server error",
            ErrorCode::Timeout => "operation timed out",
            ErrorCode::RateLimited => "rate limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TokenExpired => "token expired",
            ErrorCode::InvalidToken => "invalid token",
            ErrorCode::RoomNotFound => "room not found",
            ErrorCode::RoomAlreadyExists => "room already exists",
            ErrorCode::RoomFull => "room is full",
            ErrorCode::NotInRoom => "client not in room",
            ErrorCode::AlreadyInRoom => "client already in room",
            ErrorCode::ClientNotFound => "client not found",
            ErrorCode::ClientOffline => "client offline",
            ErrorCode::MessageTooLarge => "message too large",
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.as_u16())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = u16::deserialize(d)?;
        ErrorCode::from_u16(code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {code}")))
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.as_u16(), self.default_message())
    }
}

/// `data` of an `error` frame. Field order is GoHub's `ErrorResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorData {
    pub code: ErrorCode,
    pub message: String,
    /// The correlation id of the request that failed (0 when it had none).
    #[serde(default)]
    pub request_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_serialize_as_numbers() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(c.as_u16()), Some(*c));
        }
        let e = ErrorData {
            code: ErrorCode::RoomFull,
            message: "room is full".into(),
            request_id: 7,
            details: None,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"code":3002,"message":"room is full","request_id":7}"#
        );
    }
}
