//! The pure functions on wshub's hot path, so a regression shows up as a number:
//! `cargo bench -p wshub --bench hot_paths`.
//!
//! - decoding an inbound envelope (every message a client sends),
//! - the JSON depth scan that runs before it,
//! - encoding and framing an outbound envelope (once per publication, shared by every
//!   recipient),
//! - a publication's bus encoding and decoding (once per node it crosses),
//! - the bus duplicate filter (once per received bus message),
//! - verifying an HS256 token (once per connection with auth on: bounds connection churn).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::value::RawValue;
use std::hint::black_box;
use wshub::bench_api;
use wshub::protocol::InboundEnvelope;
use wshub::protocol::messages::{RoomMessageOut, RoomMessageRequest};

const ROOM_MESSAGE: &str = r#"{"message_type":"room_message","data":{"room_id":"lobby","content":{"text":"hello, everyone in the lobby","n":12345,"tags":["a","b"]}},"message_id":17,"request_id":17}"#;

fn inbound(c: &mut Criterion) {
    let mut g = c.benchmark_group("inbound");
    g.throughput(Throughput::Bytes(ROOM_MESSAGE.len() as u64));
    g.bench_function("json_depth_scan", |b| {
        b.iter(|| bench_api::json_too_deep(black_box(ROOM_MESSAGE.as_bytes()), 32))
    });
    g.bench_function("decode_envelope", |b| {
        b.iter(|| {
            let env = InboundEnvelope::decode(black_box(ROOM_MESSAGE.as_bytes())).ok();
            env.map(|e| e.message_id)
        })
    });
    g.bench_function("decode_envelope_and_room_message", |b| {
        b.iter(|| {
            let env = InboundEnvelope::decode(black_box(ROOM_MESSAGE.as_bytes())).ok()?;
            let req: RoomMessageRequest = serde_json::from_str(env.data?.get()).ok()?;
            Some(req.room_id.len())
        })
    });
    g.finish();
}

fn outbound(c: &mut Criterion) {
    let content = RawValue::from_string(
        r#"{"text":"hello, everyone in the lobby","n":12345,"tags":["a","b"]}"#.into(),
    )
    .unwrap_or_else(|_| unreachable!("valid JSON"));
    let data = RoomMessageOut {
        content: &content,
        room_id: "lobby",
        sender_id: "client-42",
        timestamp: 1_700_000_000_000,
    };
    let frame = bench_api::envelope_frame(1, "room_message", &data);
    let mut g = c.benchmark_group("outbound");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("room_message_frame", |b| {
        b.iter(|| bench_api::envelope_frame(black_box(1), "room_message", black_box(&data)))
    });
    let bus = bench_api::bus_encode(1, frame.clone());
    g.bench_function("bus_encode", |b| {
        b.iter(|| bench_api::bus_encode(black_box(7), frame.clone()))
    });
    g.bench_function("bus_decode", |b| {
        b.iter(|| bench_api::bus_decode(black_box(bus.clone())))
    });
    g.finish();
}

fn dedup(c: &mut Criterion) {
    let mut g = c.benchmark_group("dedup");
    g.throughput(Throughput::Elements(1));
    g.bench_function("in_order", |b| {
        let mut window = bench_api::Dedup::new();
        let mut seq = 0;
        b.iter(|| {
            seq += 1;
            window.first_time("node-1", 42, black_box(seq))
        })
    });
    g.bench_function("three_origins_interleaved_with_repeats", |b| {
        let mut window = bench_api::Dedup::new();
        let origins = ["node-1", "node-2", "node-3"];
        let mut n: u64 = 0;
        b.iter(|| {
            n += 1;
            // Every fourth message is a repeat of a recent one (a JetStream redelivery).
            let seq = if n.is_multiple_of(4) {
                n / 3 - 1
            } else {
                n / 3 + 1
            };
            window.first_time(origins[(n % 3) as usize], 42, black_box(seq))
        })
    });
    g.finish();
}

fn jwt(c: &mut Criterion) {
    let config = wshub::config::AuthConfig {
        enabled: true,
        secret_key: "bench-secret".into(),
        ..Default::default()
    };
    let verifier = wshub::auth::Verifier::from_config(&config)
        .unwrap_or_else(|e| unreachable!("a secret is a valid config: {e}"));
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let claims = serde_json::json!({"user_id": "client-42", "permissions": ["join:room", "send:message"],
        "iss": "gohub", "exp": exp});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"bench-secret"),
    )
    .unwrap_or_else(|e| unreachable!("HS256 signs: {e}"));
    assert!(verifier.verify(&token).is_ok(), "the bench token verifies");
    let mut g = c.benchmark_group("jwt");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_hs256", |b| {
        b.iter(|| verifier.verify(black_box(&token)).is_ok())
    });
    g.finish();
}

criterion_group!(benches, inbound, outbound, dedup, jwt);
criterion_main!(benches);
