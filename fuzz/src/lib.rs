//! The fuzz harnesses of wshub, shared by the cargo-fuzz targets (`fuzz_targets/`) and the
//! stable replay test (`tests/replay.rs`).
//!
//! Every function here takes arbitrary bytes and must return normally: a panic (an
//! `assert!` below, or one inside wshub) is a finding.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use wshub_protocol::messages::{
    AuthenticateRequest, Authenticated, BroadcastRequest, Connected, CreateRoomRequest,
    DirectMessageRequest, HistoryRequest, JoinRoomRequest, KickRequest, KickedNotice, PingRequest,
    Pong, Published, RoomCreated, RoomDeleted, RoomJoined, RoomList, RoomMembers,
    RoomMessageRequest, RoomRequest, RoomStatus,
};
use wshub_protocol::{
    Envelope, ErrorData, InboundEnvelope, MessageType, correlation_id, encode_envelope,
};

/// `list_rooms` takes an empty object (as the server's own `Empty`).
#[derive(Debug, Serialize, Deserialize)]
struct Empty {}

/// Decodes `raw` as `$ty`; when that works, the value must serialize, the JSON must decode
/// again, and serializing that must give the same JSON (what a client or the server writes
/// from a decoded value reads back the same).
macro_rules! decodes_and_round_trips {
    ($ty:ty, $raw:expr) => {{
        if let Ok(first) = serde_json::from_str::<$ty>($raw) {
            let json = serde_json::to_string(&first).expect(concat!(
                "a decoded ",
                stringify!($ty),
                " serializes"
            ));
            let again: $ty = serde_json::from_str(&json).unwrap_or_else(|e| {
                panic!(
                    "{} re-serialized as {json} does not decode: {e}",
                    stringify!($ty)
                )
            });
            let json_again = serde_json::to_string(&again).expect("serializes");
            assert_eq!(json_again, json, "{} round trip", stringify!($ty));
        }
    }};
}

/// One inbound frame, as the server's dispatch sees it.
///
/// 1. `InboundEnvelope::decode` returns Ok or Err; an Ok envelope has a non-empty
///    `message_type`, no `"null"` data, and a non-zero correlation id when it has one.
/// 2. `data` (or `{}` when absent, as the server does) goes through the decoder the server
///    uses for the envelope's type, then through the decoder of every other message type
///    (inbound requests and the outbound payloads clients decode), each with a
///    serialize/decode round trip.
/// 3. `encode_envelope` of the decoded envelope decodes back to the same type, data and
///    request id, with both the borrowing server decoder and the owned client `Envelope`.
pub fn envelope(bytes: &[u8]) {
    let Ok(env) = InboundEnvelope::decode(bytes) else {
        return;
    };
    assert!(
        !env.message_type.is_empty(),
        "decoded an empty message_type"
    );
    if let Some(data) = env.data {
        assert_ne!(data.get(), "null", "null data must decode as absent");
    }
    let correlation = env.correlation_id();
    assert_eq!(correlation, correlation_id(env.request_id, env.message_id));
    assert_ne!(correlation, Some(0), "a correlation id is never 0");

    let raw = env.data.map_or("{}", RawValue::get);
    // The server's decoder for this type first (the `handlers::builtin` table) ...
    match MessageType::parse(&env.message_type) {
        Some(t) => request_data(t, raw),
        // ... unknown types go to custom handlers as a `Value` (or null).
        None => {
            let _ = serde_json::from_str::<serde_json::Value>(raw);
        }
    }
    // ... then every decoder, whatever the type said.
    for t in MessageType::ALL {
        request_data(*t, raw);
        reply_data(*t, raw);
    }

    round_trip(&env);
}

/// The request decoder of `t`, as in `crates/wshub/src/dispatch/handlers/mod.rs`.
fn request_data(t: MessageType, raw: &str) {
    use MessageType as T;
    match t {
        T::Ping => decodes_and_round_trips!(PingRequest, raw),
        T::JoinRoom => decodes_and_round_trips!(JoinRoomRequest, raw),
        T::LeaveRoom | T::DeleteRoom | T::RoomMembers => {
            decodes_and_round_trips!(RoomRequest, raw)
        }
        T::CreateRoom => decodes_and_round_trips!(CreateRoomRequest, raw),
        T::ListRooms => decodes_and_round_trips!(Empty, raw),
        T::History => decodes_and_round_trips!(HistoryRequest, raw),
        T::Kick => decodes_and_round_trips!(KickRequest, raw),
        T::RoomMessage => decodes_and_round_trips!(RoomMessageRequest<'_>, raw),
        T::DirectMessage => decodes_and_round_trips!(DirectMessageRequest<'_>, raw),
        T::Broadcast => decodes_and_round_trips!(BroadcastRequest<'_>, raw),
        T::Authenticate => decodes_and_round_trips!(AuthenticateRequest, raw),
        T::Pong
        | T::RoomJoined
        | T::RoomLeft
        | T::Error
        | T::Connected
        | T::RoomCreated
        | T::RoomDeleted
        | T::RoomList
        | T::Authenticated
        | T::Kicked
        | T::PresenceJoin
        | T::PresenceLeave
        | T::Published => {}
    }
}

/// The payload decoder a client uses for `t` sent by the server (where the protocol crate
/// has one).
fn reply_data(t: MessageType, raw: &str) {
    use MessageType as T;
    match t {
        T::Pong => decodes_and_round_trips!(Pong, raw),
        T::RoomJoined => decodes_and_round_trips!(RoomJoined, raw),
        T::RoomLeft => decodes_and_round_trips!(RoomStatus, raw),
        T::Error => decodes_and_round_trips!(ErrorData, raw),
        T::Connected => decodes_and_round_trips!(Connected, raw),
        T::RoomCreated => decodes_and_round_trips!(RoomCreated, raw),
        T::RoomDeleted => decodes_and_round_trips!(RoomDeleted, raw),
        T::RoomList => decodes_and_round_trips!(RoomList, raw),
        T::RoomMembers => decodes_and_round_trips!(RoomMembers, raw),
        T::Authenticated => decodes_and_round_trips!(Authenticated, raw),
        T::Kicked => decodes_and_round_trips!(KickedNotice, raw),
        T::Published => decodes_and_round_trips!(Published, raw),
        _ => {}
    }
}

/// `encode_envelope` of a decoded envelope reads back the same.
fn round_trip(env: &InboundEnvelope<'_>) {
    let null = RawValue::NULL;
    let data: &RawValue = env.data.unwrap_or(null);
    // The server's message ids are its own counter (u64); any that fits an i64 round-trips.
    let message_id = env.message_id.max(0) as u64;
    let mut out = Vec::new();
    encode_envelope(
        &mut out,
        message_id,
        &env.message_type,
        data,
        1_717_000_000_000,
        env.request_id,
    )
    .expect("encode_envelope of a decoded envelope");

    let back = InboundEnvelope::decode(&out).unwrap_or_else(|e| {
        panic!(
            "encoded envelope {} does not decode: {e}",
            String::from_utf8_lossy(&out)
        )
    });
    assert_eq!(
        back.message_type, env.message_type,
        "message_type round trip"
    );
    assert_eq!(
        back.data.map(RawValue::get),
        env.data.map(RawValue::get),
        "data round trip"
    );
    assert_eq!(back.message_id, message_id as i64, "message_id round trip");
    assert_eq!(
        back.request_id,
        env.request_id.filter(|r| *r != 0),
        "request_id round trip (0 is left out)"
    );

    // What a client decodes (`data` as a `Value`, which has serde_json's nesting limit of
    // 128: deeper data is refused there, and only there).
    match serde_json::from_slice::<Envelope>(&out) {
        Ok(owned) => {
            assert_eq!(owned.message_type, env.message_type);
            assert_eq!(owned.request_id, env.request_id.filter(|r| *r != 0));
            assert_eq!(owned.message_id, message_id as i64);
            let expected: serde_json::Value =
                serde_json::from_str(data.get()).expect("data decoded as Envelope.data");
            assert_eq!(owned.data, expected, "owned data");
        }
        Err(e) => assert!(
            serde_json::from_str::<serde_json::Value>(data.get()).is_err(),
            "client Envelope refused {}: {e}",
            String::from_utf8_lossy(&out)
        ),
    }
}

/// The file the config harness writes, one per process (libFuzzer runs inputs one at a
/// time in a process; parallel jobs are separate processes).
fn config_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("wshub-fuzz-config-{}.yaml", std::process::id()))
    })
}

/// Arbitrary UTF-8 as the YAML config file of `wshub::Config::load_from` (defaults <- file
/// <- an environment prefix nothing sets). It must return Ok or Err, never panic. A
/// configuration it accepts, written back out as YAML, must load again to the same value.
pub fn config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let path = config_path();
    std::fs::write(path, text).expect("write the temporary config file");
    let env = || figment::providers::Env::prefixed("WSHUB_FUZZ_NONE_");
    let Ok(config) = wshub::Config::load_from(Some(path), env()) else {
        return;
    };
    let yaml = serde_yaml::to_string(&config).expect("an accepted Config serializes as YAML");
    std::fs::write(path, &yaml).expect("write the temporary config file");
    match wshub::Config::load_from(Some(path), env()) {
        Ok(again) => assert_eq!(again, config, "Config YAML round trip of {text:?}"),
        Err(e) => panic!("accepted config {text:?} written back as\n{yaml}\ndoes not load: {e}"),
    }
}
