#![allow(clippy::unwrap_used)]
//! Random input over real sockets: thousands of random envelopes (valid JSON with built-in
//! and garbage `message_type`s, random `data` shapes, ids of every JSON type, deep nesting,
//! strings up to the size limit, garbage text, invalid UTF-8 in binary frames) go to one
//! server over one socket.
//!
//! Each envelope is followed by a sentinel `ping` with its own `request_id`, so every frame
//! the server sends is attributed to the envelope before it (a connection's messages are
//! handled, and answered, in order). Properties:
//!
//! - the socket is never closed and every sentinel is answered (no panic, no drop);
//! - an envelope the protocol decoder refuses gets exactly one `error` frame (1001, or 1002
//!   for a bad id) without `request_id`;
//! - a decodable envelope gets exactly one answer carrying its correlation id (its reply
//!   type or `error`), except the types that answer nothing on success (`room_message`
//!   without `request_id`, `direct_message`, `broadcast`), which get nothing or one `error`;
//!   JSON nested deeper than the server's `limits.max_json_depth` (32 by default) may
//!   instead get one uncorrelated 1001;
//! - no frame carries a correlation id that was not asked for;
//! - a second, well-behaved client stays connected and answers a ping after every case;
//! - `GET /health` is 200 at the end, and nothing in the process panicked.
//!
//! The inputs are deterministic (a fixed ChaCha seed); `RANDOM_INPUT_SEED=<u64>` and
//! `RANDOM_INPUT_CASES=<n>` explore further, and `RANDOM_INPUT_TRACE=<file>` writes every
//! message sent with the frames it got back (to compare runs).

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{RawClient, TestServer, WAIT};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::test_runner::{
    Config as ProptestConfig, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wshub::Config;
use wshub::protocol::{DecodeError, InboundEnvelope, MessageType};

/// Cases (batches of envelopes) per run; a batch holds 1..=48 envelopes.
const CASES: u32 = 128;
/// The server's `server.hub.max_message_size` default: frames up to it must be handled.
const MAX_MESSAGE: usize = 64 * 1024;
/// The server's `limits.max_json_depth` default; deeper JSON may get an uncorrelated 1001.
const MAX_JSON_DEPTH: usize = 32;
/// Sentinel request ids live above every id the generator produces.
const SENTINEL_BASE: i64 = 8_000_000_000_000_000_000;
const FUZZ_ID: &str = "fuzzer";
const BYSTANDER_ID: &str = "bystander";

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// One WebSocket message to send.
#[derive(Clone, Debug)]
enum Wire {
    Text(String),
    Binary(Vec<u8>),
}

impl Wire {
    fn bytes(&self) -> &[u8] {
        match self {
            Wire::Text(t) => t.as_bytes(),
            Wire::Binary(b) => b,
        }
    }
}

fn room_id() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => prop::sample::select(vec!["lobby", "r1", "r2", "r3"]).prop_map(Value::from),
        1 => Just(Value::from("")),
        1 => Just(Value::from("a".repeat(257))),
        1 => Just(Value::from("ctl\u{1}room")),
        1 => "\\PC{0,12}".prop_map(Value::from),
        1 => json_value(),
    ]
    .boxed()
}

fn client_id() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => prop::sample::select(vec![FUZZ_ID, BYSTANDER_ID, "nobody"]).prop_map(Value::from),
        1 => "\\PC{0,12}".prop_map(Value::from),
        1 => json_value(),
    ]
    .boxed()
}

fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-10i64..10).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
    ]
    .boxed()
}

fn json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        "\\PC{0,16}".prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ]
    .boxed()
}

/// Any JSON value of small size, up to 4 levels deep.
fn json_value() -> BoxedStrategy<Value> {
    json_leaf()
        .prop_recursive(4, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{0,10}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .boxed()
}

/// Arrays/objects nested `depth` levels (iteratively built; up to 300, well past both the
/// server's 32 and serde_json's 128).
fn deep_value() -> BoxedStrategy<Value> {
    (1usize..=300, any::<bool>(), json_leaf())
        .prop_map(|(depth, objects, leaf)| {
            let mut v = leaf;
            for _ in 0..depth {
                v = if objects {
                    json!({ "k": v })
                } else {
                    Value::Array(vec![v])
                };
            }
            v
        })
        .boxed()
}

/// A string whose JSON encoding is about `budget` bytes, of a repeated character that
/// encodes as 1, 2, 4 (UTF-8) or 2, 6 (escaped) bytes.
fn huge_string(budget: usize, which: usize) -> String {
    let (c, width) = [('a', 1), ('é', 2), ('😀', 4), ('"', 2), ('\u{1}', 6)][which % 5];
    std::iter::repeat_n(c, budget / width).collect()
}

/// A `data` object with the fields the built-in handlers read, each present or not, with
/// plausible or random values.
fn plausible_data() -> BoxedStrategy<Value> {
    let fields = (
        prop::option::weighted(0.8, room_id()),
        prop::option::weighted(0.5, json_value()),
        prop::option::weighted(0.3, client_id()),
        prop::option::weighted(0.3, client_id()),
        prop::option::weighted(0.2, prop_oneof![number(), json_value()]),
        prop::option::weighted(
            0.2,
            prop_oneof!["\\PC{0,40}".prop_map(Value::from), json_value()],
        ),
        prop::option::weighted(
            0.2,
            prop_oneof![
                (any::<u64>(), "[a-z0-9]{0,8}")
                    .prop_map(|(offset, epoch)| json!({"offset": offset, "epoch": epoch})),
                number(),
                json_value(),
            ],
        ),
        prop::option::weighted(0.2, prop_oneof![number(), json_value()]),
        prop::option::weighted(0.2, prop_oneof![number(), json_value()]),
        prop::option::weighted(0.2, json_value()),
    );
    fields
        .prop_map(
            |(room, content, target, client, ts, token, since, limit, max_clients, extra)| {
                let mut m = serde_json::Map::new();
                let mut put = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        m.insert(k.to_owned(), v);
                    }
                };
                put("room_id", room);
                put("content", content);
                put("target_id", target);
                put("client_id", client);
                put("ts", ts);
                put("token", token);
                put("since", since);
                put("limit", limit);
                put("max_clients", max_clients);
                put("idempotency_key", extra.clone().filter(Value::is_string));
                put("name", extra);
                Value::Object(m)
            },
        )
        .boxed()
}

/// `data`: absent, null, plausible, any value, deep, or a huge string (sized later).
#[derive(Clone, Debug)]
enum Data {
    Absent,
    Value(Value),
    /// `{"room_id": .., "content": "<huge>"}` (or the huge string as `data` itself), with
    /// the string sized so the frame is about `fill` of the size limit.
    Huge {
        room: Value,
        as_content: bool,
        fill: u8,
        which: usize,
    },
}

fn data() -> BoxedStrategy<Data> {
    prop_oneof![
        2 => Just(Data::Absent),
        1 => Just(Data::Value(Value::Null)),
        10 => plausible_data().prop_map(Data::Value),
        3 => json_value().prop_map(Data::Value),
        2 => deep_value().prop_map(Data::Value),
        1 => (room_id(), any::<bool>(), 50u8..=100, 0usize..5).prop_map(
            |(room, as_content, fill, which)| Data::Huge { room, as_content, fill, which }
        ),
    ]
    .boxed()
}

fn message_type() -> BoxedStrategy<Option<Value>> {
    let builtin: Vec<&'static str> = MessageType::ALL.iter().map(|t| t.as_str()).collect();
    prop_oneof![
        12 => prop::sample::select(builtin).prop_map(|t| Some(Value::from(t))),
        2 => "\\PC{0,20}".prop_map(|t| Some(Value::from(t))),
        1 => "[a-z_]{60,90}".prop_map(|t| Some(Value::from(t))),
        1 => Just(Some(Value::from(""))),
        1 => json_value().prop_map(Some),
        1 => Just(None),
    ]
    .boxed()
}

/// `request_id` / `message_id`: mostly integers (never in the sentinel range), sometimes
/// every other JSON type, or absent.
fn id_value() -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        // Valid: an integer (0 and negatives included) or null.
        24 => (1i64..SENTINEL_BASE).prop_map(|i| Some(Value::from(i))),
        2 => (-1_000_000i64..=-1).prop_map(|i| Some(Value::from(i))),
        1 => Just(Some(Value::from(0))),
        1 => Just(Some(Value::from(i64::MIN))),
        1 => Just(Some(Value::Null)),
        12 => Just(None),
        // Invalid (error 1002): not an integer, or out of the i64 range.
        1 => Just(Some(Value::from(u64::MAX))),
        1 => prop::sample::select(vec![7.0, 1.5, -0.0, 1e300]).prop_map(|f| Some(Value::from(f))),
        1 => prop_oneof![Just(Value::from("7")), json_value()].prop_map(Some),
    ]
    .boxed()
}

/// A JSON envelope as a value plus how to send it.
#[derive(Clone, Debug)]
struct EnvelopeSpec {
    message_type: Option<Value>,
    data: Data,
    request_id: Option<Value>,
    message_id: Option<Value>,
    extra: Option<(String, Value)>,
    /// Pad with an unknown field so the frame is exactly the size limit.
    pad_to_limit: bool,
    /// Send as a binary frame; with `corrupt`, a byte in it is replaced by invalid UTF-8.
    binary: bool,
    corrupt: Option<prop::sample::Index>,
}

/// A request the server can carry out: an inbound type with the `data` it needs (rooms and
/// clients from small sets, so joins, messages, kicks and deletes meet each other).
fn well_formed() -> BoxedStrategy<(Option<Value>, Data)> {
    let room = || {
        prop_oneof![
            9 => prop::sample::select(vec!["lobby", "r1", "r2", "r3"]).prop_map(Value::from),
            1 => "\\PC{1,12}".prop_map(Value::from),
        ]
    };
    let client =
        || prop::sample::select(vec![FUZZ_ID, BYSTANDER_ID, "nobody"]).prop_map(Value::from);
    let request = prop_oneof![
        2 => prop::option::of(0i64..2_000_000_000_000)
            .prop_map(|ts| ("ping", ts.map_or(json!({}), |ts| json!({"ts": ts})))),
        5 => (room(), prop::option::weighted(0.2, (any::<u64>(), "[a-z0-9]{0,8}")))
            .prop_map(|(room, since)| match since {
                Some((offset, epoch)) => (
                    "join_room",
                    json!({"room_id": room, "since": {"offset": offset, "epoch": epoch}}),
                ),
                None => ("join_room", json!({"room_id": room})),
            }),
        2 => room().prop_map(|room| ("leave_room", json!({"room_id": room}))),
        1 => room().prop_map(|room| ("delete_room", json!({"room_id": room}))),
        1 => room().prop_map(|room| ("room_members", json!({"room_id": room}))),
        1 => (room(), prop::option::of("\\PC{0,12}"), prop::option::of(0u32..4)).prop_map(
            |(room, name, max)| ("create_room", json!({"room_id": room, "name": name, "max_clients": max}))
        ),
        1 => Just(("list_rooms", json!({}))),
        1 => (room(), prop::option::of(0u64..10), prop::option::of(0usize..10)).prop_map(
            |(room, since, limit)| ("history", json!({"room_id": room, "since": since, "limit": limit}))
        ),
        1 => (room(), client()).prop_map(|(room, c)| ("kick", json!({"room_id": room, "client_id": c}))),
        6 => (room(), json_value(), prop::option::weighted(0.2, "[a-z]{1,4}")).prop_map(
            |(room, content, key)| match key {
                Some(key) => (
                    "room_message",
                    json!({"room_id": room, "content": content, "idempotency_key": key}),
                ),
                None => ("room_message", json!({"room_id": room, "content": content})),
            }
        ),
        2 => (client(), json_value())
            .prop_map(|(c, content)| ("direct_message", json!({"target_id": c, "content": content}))),
        1 => json_value().prop_map(|content| ("broadcast", json!({"content": content}))),
        1 => "[A-Za-z0-9._-]{0,40}".prop_map(|token| ("authenticate", json!({"token": token}))),
    ];
    request
        .prop_map(|(t, data)| (Some(Value::from(t)), Data::Value(data)))
        .boxed()
}

fn envelope_spec() -> impl Strategy<Value = EnvelopeSpec> {
    (
        prop_oneof![
            1 => (message_type(), data()),
            1 => well_formed(),
        ],
        id_value(),
        id_value(),
        prop::option::weighted(
            0.1,
            (
                prop::sample::select(vec!["timestamp", "client_id", "x", "data "]),
                json_value(),
            ),
        ),
        prop::bool::weighted(0.03),
        prop::bool::weighted(0.15),
        prop::option::weighted(0.3, any::<prop::sample::Index>()),
    )
        .prop_map(
            |(
                (message_type, data),
                request_id,
                message_id,
                extra,
                pad_to_limit,
                binary,
                corrupt,
            )| {
                EnvelopeSpec {
                    message_type,
                    data,
                    request_id,
                    message_id,
                    extra: extra.map(|(k, v)| (k.to_owned(), v)),
                    pad_to_limit,
                    binary,
                    corrupt,
                }
            },
        )
}

impl EnvelopeSpec {
    fn to_wire(&self) -> Wire {
        let build = |data: Option<Value>, pad: Option<usize>| {
            let mut m = serde_json::Map::new();
            if let Some(t) = &self.message_type {
                m.insert("message_type".into(), t.clone());
            }
            if let Some(d) = data {
                m.insert("data".into(), d);
            }
            if let Some(r) = &self.request_id {
                m.insert("request_id".into(), r.clone());
            }
            if let Some(i) = &self.message_id {
                m.insert("message_id".into(), i.clone());
            }
            if let Some((k, v)) = &self.extra {
                m.insert(k.clone(), v.clone());
            }
            if let Some(pad) = pad {
                m.insert("zz_pad".into(), Value::from("p".repeat(pad)));
            }
            serde_json::to_string(&Value::Object(m)).unwrap()
        };
        let data = match &self.data {
            Data::Absent => None,
            Data::Value(v) => Some(v.clone()),
            Data::Huge {
                room,
                as_content,
                fill,
                which,
            } => {
                let skeleton = build(Some(json!({"room_id": room, "content": ""})), None).len();
                let budget = (MAX_MESSAGE.saturating_sub(skeleton + 64)) * usize::from(*fill) / 100;
                let s = huge_string(budget, *which);
                Some(if *as_content {
                    json!({"room_id": room, "content": s})
                } else {
                    Value::from(s)
                })
            }
        };
        let mut text = build(data.clone(), None);
        if self.pad_to_limit {
            // With an empty pad field, then with as many bytes as are left.
            let unpadded = build(data.clone(), Some(0)).len();
            if unpadded < MAX_MESSAGE {
                text = build(data, Some(MAX_MESSAGE - unpadded));
                assert_eq!(text.len(), MAX_MESSAGE);
            }
        }
        assert!(text.len() <= MAX_MESSAGE, "generated {} bytes", text.len());
        match (self.binary, &self.corrupt) {
            (true, Some(at)) => {
                let mut bytes = text.into_bytes();
                let i = at.index(bytes.len());
                bytes[i] = 0xff;
                Wire::Binary(bytes)
            }
            (true, None) => Wire::Binary(text.into_bytes()),
            (false, _) => Wire::Text(text),
        }
    }
}

/// Text that is not (quite) an envelope: garbage, broken JSON, odd but valid JSON.
fn odd_text() -> BoxedStrategy<Wire> {
    let templates = prop::sample::select(vec![
        r#"{"message_type":"ping","message_type":"join_room","request_id":ID}"#,
        r#"{"message_type":"ping","request_id":ID,}"#,
        r#"{"message_type":"ping","request_id":ID} trailing"#,
        "\u{feff}{\"message_type\":\"ping\",\"request_id\":ID}",
        " \t\r\n{\"message_type\" : \"ping\" , \"request_id\" : ID }\n",
        r#"{"message_type":"ping","request_id":1e3}"#,
        r#"{"message_type":"ping","request_id":-0,"message_id":ID}"#,
        r#"{"message_type":"ping","request_id":00}"#,
        r#"{"message_type":"ping","request_id":+1}"#,
        r#"{"message_type":"ping","request_id":9223372036854775808}"#,
        r#"{"message_type":"p\u0069ng","request_id":ID}"#,
        r#"{"message_type":"\ud800","request_id":ID}"#,
        r#"{"message_type":"join_room","data":"{\"room_id\":\"lobby\"}","request_id":ID}"#,
        r#"{"message_type":"room_message","data":{"room_id":"lobby","content":}}"#,
        r#"{"message_type":"room_message","data":{"room_id":"lobby","room_id":"r1","content":1},"request_id":ID}"#,
        r#"{"message_type":"ping","data":{"ts":"1"},"request_id":ID}"#,
        r#"{"message_type":"ping","data":[],"request_id":ID}"#,
        r#"{"message_type":null,"request_id":ID}"#,
        r#"{"MESSAGE_TYPE":"ping","request_id":ID}"#,
        "null",
        "[]",
        "\"ping\"",
        "",
        "{",
        "}",
        "42",
    ]);
    prop_oneof![
        4 => (templates, 1i64..1_000_000)
            .prop_map(|(t, id)| Wire::Text(t.replace("ID", &id.to_string()))),
        2 => "\\PC{0,64}".prop_map(Wire::Text),
        1 => ".{0,64}".prop_map(Wire::Text),
        2 => prop::collection::vec(any::<u8>(), 0..128).prop_map(Wire::Binary),
        // A valid envelope cut short.
        2 => (envelope_spec(), any::<prop::sample::Index>()).prop_map(|(spec, at)| {
            let mut bytes = spec.to_wire().bytes().to_vec();
            bytes.truncate(at.index(bytes.len().max(1)));
            match String::from_utf8(bytes) {
                Ok(t) => Wire::Text(t),
                Err(e) => Wire::Binary(e.into_bytes()),
            }
        }),
    ]
    .boxed()
}

fn wire() -> BoxedStrategy<Wire> {
    prop_oneof![
        6 => envelope_spec().prop_map(|s| s.to_wire()),
        1 => odd_text(),
    ]
    .boxed()
}

fn batch() -> impl Strategy<Value = Vec<Wire>> {
    prop::collection::vec(wire(), 1..=48)
}

// ---------------------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------------------

/// Nesting of objects/arrays outside strings (what `limits.max_json_depth` measures).
fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// What one sent message must be answered with.
#[derive(Debug)]
enum Expect {
    /// The decoder refuses it: one uncorrelated `error` with this code.
    DecodeError(u16),
    Decoded {
        message_type: String,
        correlation: Option<i64>,
        /// The reply type on success; `None` for types that answer nothing on success.
        reply: Option<&'static str>,
    },
}

fn expectation(bytes: &[u8]) -> Expect {
    match InboundEnvelope::decode(bytes) {
        Err(DecodeError::InvalidFormat(_)) => Expect::DecodeError(1001),
        Err(DecodeError::InvalidMessageId(_)) => Expect::DecodeError(1002),
        Ok(env) => {
            use MessageType as T;
            let reply = match MessageType::parse(&env.message_type) {
                Some(T::Ping) => Some("pong"),
                Some(T::JoinRoom) => Some("room_joined"),
                Some(T::LeaveRoom) => Some("room_left"),
                Some(T::CreateRoom) => Some("room_created"),
                Some(T::DeleteRoom) => Some("room_deleted"),
                Some(T::ListRooms) => Some("room_list"),
                Some(T::RoomMembers) => Some("room_members"),
                Some(T::History) => Some("history"),
                Some(T::Kick) => Some("kicked"),
                Some(T::Authenticate) => Some("authenticated"),
                // GoHub sends nothing for a room message; with a request_id it is acked.
                Some(T::RoomMessage) => env.request_id.map(|_| "published"),
                Some(T::DirectMessage | T::Broadcast) => None,
                // Outbound-only and unknown types: error 1000 (no custom handlers here).
                _ => Some("error"),
            };
            Expect::Decoded {
                message_type: env.message_type.to_string(),
                correlation: env.correlation_id(),
                reply,
            }
        }
    }
}

/// A frame from the server, parsed.
#[derive(Debug)]
struct Frame {
    message_type: String,
    request_id: Option<i64>,
    code: Option<u64>,
    text: String,
}

fn parse_frame(text: String) -> Result<Frame, String> {
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("server sent non-JSON {text:?}: {e}"))?;
    let message_type = v["message_type"]
        .as_str()
        .ok_or_else(|| format!("server frame without message_type: {text}"))?
        .to_owned();
    let request_id = match v.get("request_id") {
        None => None,
        Some(r) => Some(
            r.as_i64()
                .ok_or_else(|| format!("server frame with a non-integer request_id: {text}"))?,
        ),
    };
    Ok(Frame {
        code: v["data"]["code"].as_u64(),
        message_type,
        request_id,
        text,
    })
}

fn short(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() > 300 {
        let cut: String = s.chars().take(300).collect();
        format!("{cut}… ({} bytes)", bytes.len())
    } else {
        s.into_owned()
    }
}

/// Checks the frames the server sent between `sent` and its sentinel's pong.
fn check_window(sent: &[u8], frames: &[Frame]) -> Result<(), String> {
    let expect = expectation(sent);
    let deep = json_depth(sent) > MAX_JSON_DEPTH;
    let correlation = match &expect {
        Expect::Decoded { correlation, .. } => *correlation,
        Expect::DecodeError(_) => None,
    };
    // Events are not answers: direct messages (the fuzzer may message itself) and, when
    // the request was correlated, the uncorrelated notices of kick/delete_room.
    let answers: Vec<&Frame> = frames
        .iter()
        .filter(|f| {
            let notice = f.request_id.is_none()
                && (f.message_type == "direct_message"
                    || (correlation.is_some()
                        && matches!(f.message_type.as_str(), "kicked" | "room_deleted")));
            !notice
        })
        .collect();
    let fail = |why: &str| {
        let shown: Vec<&str> = frames.iter().map(|f| f.text.as_str()).collect();
        Err(format!(
            "{why}\n  sent: {}\n  expected: {expect:?} (depth > {MAX_JSON_DEPTH}: {deep})\n  got: {shown:#?}",
            short(sent)
        ))
    };
    let is_error = |f: &Frame, code: u64| f.message_type == "error" && f.code == Some(code);
    // Too deep: one uncorrelated 1001 is a valid answer whatever the message was.
    if deep && answers.len() == 1 && is_error(answers[0], 1001) && answers[0].request_id.is_none() {
        return Ok(());
    }
    match &expect {
        Expect::DecodeError(code) => {
            if answers.len() != 1 {
                return fail("an undecodable message needs exactly one error frame");
            }
            let a = answers[0];
            if !is_error(a, u64::from(*code)) || a.request_id.is_some() {
                return fail("wrong error for an undecodable message");
            }
        }
        Expect::Decoded {
            message_type,
            correlation,
            reply,
        } => {
            let (correlation, reply) = (*correlation, *reply);
            for a in &answers {
                if a.request_id != correlation {
                    return fail("an answer's request_id is not the request's correlation id");
                }
                if a.message_type != "error" && Some(a.message_type.as_str()) != reply {
                    return fail("an answer of an unexpected type");
                }
            }
            let errors = answers.iter().filter(|a| a.message_type == "error").count();
            if errors > 1 {
                return fail("more than one error for one message");
            }
            match reply {
                None => {
                    if answers.len() != errors {
                        return fail(
                            "a type that answers nothing on success got a non-error answer",
                        );
                    }
                }
                // An uncorrelated kick/delete_room: the reply and the member notice look
                // alike.
                Some(_)
                    if correlation.is_none()
                        && matches!(message_type.as_str(), "kick" | "delete_room") =>
                {
                    if answers.is_empty() || answers.len() > 2 {
                        return fail("kick/delete_room needs one answer (plus maybe a notice)");
                    }
                }
                Some(_) => {
                    if answers.len() != 1 {
                        return fail("a request needs exactly one answer");
                    }
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The sockets
// ---------------------------------------------------------------------------------------

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

/// The well-behaved client: a task drains its socket into a channel (it receives the
/// fuzzer's direct messages and broadcasts), and it pings between cases.
struct Bystander {
    sink: Sink,
    frames: mpsc::UnboundedReceiver<Result<String, String>>,
    next_id: i64,
}

impl Bystander {
    fn new(client: RawClient) -> Bystander {
        let (sink, mut stream) = client.ws.split();
        let (tx, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let item = match msg {
                    Ok(Message::Text(t)) => Ok(t.to_string()),
                    Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                    other => Err(format!("bystander got {other:?}")),
                };
                let end = item.is_err();
                if tx.send(item).is_err() || end {
                    return;
                }
            }
            let _ = tx.send(Err("bystander's socket ended".into()));
        });
        Bystander {
            sink,
            frames,
            next_id: 1,
        }
    }

    async fn ping(&mut self) -> Result<(), String> {
        let id = self.next_id;
        self.next_id += 1;
        let ping = json!({"message_type": "ping", "data": {"ts": 1}, "request_id": id});
        self.sink
            .send(Message::text(ping.to_string()))
            .await
            .map_err(|e| format!("bystander send: {e}"))?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let item = tokio::time::timeout_at(deadline, self.frames.recv())
                .await
                .map_err(|_| "bystander: no pong in time".to_owned())?
                .ok_or("bystander: channel closed")??;
            let frame = parse_frame(item)?;
            if frame.request_id == Some(id) {
                return if frame.message_type == "pong" {
                    Ok(())
                } else {
                    Err(format!("bystander's ping got {}", frame.text))
                };
            }
        }
    }
}

struct State {
    server: TestServer,
    fuzzer: Option<WebSocketStream<MaybeTlsStream<TcpStream>>>,
    bystander: Bystander,
    next_sentinel: i64,
    messages: u64,
    bytes: u64,
    binary: u64,
    cases: u32,
    /// Frames received, by `message_type` (and error code).
    answers: BTreeMap<String, u64>,
    /// `RANDOM_INPUT_TRACE`: one line per message sent, then its frames.
    trace: Option<std::io::BufWriter<std::fs::File>>,
}

impl State {
    async fn run_case(&mut self, batch: Vec<Wire>) -> Result<(), TestCaseError> {
        self.cases += 1;
        if self.fuzzer.is_none() {
            // A previous case failed (or this is a shrink step after one): start afresh.
            self.fuzzer = Some(self.server.raw(FUZZ_ID).await.ws);
        }
        let result = self.send_batch(&batch).await;
        if result.is_err() {
            self.fuzzer = None;
        }
        result.map_err(TestCaseError::fail)?;
        self.bystander.ping().await.map_err(TestCaseError::fail)
    }

    async fn send_batch(&mut self, batch: &[Wire]) -> Result<(), String> {
        let ws = self.fuzzer.as_mut().unwrap();
        // Pipelined: every message and its sentinel first (at most 96 answers plus a few
        // notices: under the server's 256-frame queue), then the answers.
        let mut sentinels = Vec::with_capacity(batch.len());
        for w in batch {
            let msg = match w {
                Wire::Text(t) => Message::text(t.clone()),
                Wire::Binary(b) => Message::binary(b.clone()),
            };
            self.messages += 1;
            self.bytes += w.bytes().len() as u64;
            self.binary += u64::from(matches!(w, Wire::Binary(_)));
            ws.send(msg).await.map_err(|e| {
                format!(
                    "send failed (socket dropped?): {e}\n  sending {}",
                    short(w.bytes())
                )
            })?;
            let sentinel = SENTINEL_BASE + self.next_sentinel;
            self.next_sentinel += 1;
            sentinels.push(sentinel);
            ws.send(Message::text(
                json!({"message_type": "ping", "request_id": sentinel}).to_string(),
            ))
            .await
            .map_err(|e| format!("sentinel send failed: {e}"))?;
        }
        for (w, sentinel) in batch.iter().zip(sentinels) {
            let mut window = Vec::new();
            loop {
                let next = tokio::time::timeout(WAIT, ws.next()).await.map_err(|_| {
                    format!(
                        "no answer to sentinel {sentinel} in {WAIT:?}\n  after {}\n  got so far: {window:#?}",
                        short(w.bytes())
                    )
                })?;
                let text = match next {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => {
                        return Err(format!(
                            "connection dropped or odd frame {other:?}\n  after sending {}\n  got so far: {window:#?}",
                            short(w.bytes())
                        ));
                    }
                };
                let frame = parse_frame(text)?;
                if frame.request_id == Some(sentinel) {
                    if frame.message_type != "pong" {
                        return Err(format!("sentinel answered with {}", frame.text));
                    }
                    break;
                }
                if frame.request_id.is_some_and(|r| r >= SENTINEL_BASE) {
                    return Err(format!("answer to another sentinel: {}", frame.text));
                }
                let key = match frame.code {
                    Some(code) if frame.message_type == "error" => format!("error {code}"),
                    _ => frame.message_type.clone(),
                };
                *self.answers.entry(key).or_default() += 1;
                window.push(frame);
            }
            if let Some(trace) = &mut self.trace {
                use std::io::Write;
                let _ = writeln!(trace, "> {}", short(w.bytes()));
                for f in &window {
                    let _ = writeln!(trace, "< {}", short(f.text.as_bytes()));
                }
            }
            check_window(w.bytes(), &window)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------

#[test]
fn random_envelopes_over_real_sockets() {
    // The server runs in this process: any panic anywhere (a connection task, a handler) is
    // recorded here, not only those that break a socket.
    let panics: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let panics = panics.clone();
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("?").to_owned();
            panics.lock().unwrap().push(format!("[{thread}] {info}"));
            default_hook(info);
        }));
    }

    let cases = std::env::var("RANDOM_INPUT_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CASES);
    let rng = match std::env::var("RANDOM_INPUT_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(seed) => {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&seed.to_le_bytes());
            TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
        }
        None => TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    };
    let config = ProptestConfig {
        cases,
        max_shrink_iters: 64,
        max_shrink_time: 60_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let state = rt.block_on(async {
        let server = TestServer::start(Config::default()).await;
        let fuzzer = server.raw(FUZZ_ID).await.ws;
        let bystander = Bystander::new(server.raw(BYSTANDER_ID).await);
        RefCell::new(State {
            server,
            fuzzer: Some(fuzzer),
            bystander,
            next_sentinel: 0,
            messages: 0,
            bytes: 0,
            binary: 0,
            cases: 0,
            answers: BTreeMap::new(),
            trace: std::env::var_os("RANDOM_INPUT_TRACE")
                .map(|path| std::io::BufWriter::new(std::fs::File::create(path).unwrap())),
        })
    });

    let mut runner = TestRunner::new_with_rng(config, rng);
    let result = runner.run(&batch(), |batch| {
        rt.block_on(state.borrow_mut().run_case(batch))
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, batch)) => {
            let shown: Vec<String> = batch.iter().map(|w| short(w.bytes())).collect();
            panic!("{why}\nminimal failing batch: {shown:#?}");
        }
        Err(e) => panic!("{e}"),
    }

    let mut state = state.into_inner();
    rt.block_on(async {
        // The well-behaved client still works, the fuzzer's socket is still open, the node
        // is healthy.
        state.bystander.ping().await.unwrap();
        let ws = state.fuzzer.as_mut().expect("the fuzzer's socket is open");
        ws.send(Message::text(r#"{"message_type":"ping","request_id":1}"#))
            .await
            .unwrap();
        let pong = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(Ok(Message::Text(t))) = ws.next().await {
                    let f = parse_frame(t.to_string()).unwrap();
                    if f.request_id == Some(1) {
                        return f;
                    }
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(pong.message_type, "pong");
        let health = reqwest::get(state.server.http_url("/health"))
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    });
    let panicked = panics.lock().unwrap().clone();
    assert!(panicked.is_empty(), "panics in the process: {panicked:#?}");
    eprintln!(
        "random_input: {} cases, {} messages ({} binary, {} bytes) in {:.1?}; frames back: {:?}",
        state.cases,
        state.messages,
        state.binary,
        state.bytes,
        started.elapsed(),
        state.answers
    );
    rt.block_on(async move { drop(state) });
    rt.shutdown_timeout(Duration::from_secs(5));
}
