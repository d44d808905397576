//! Admission and rate limits (`limits.*`, all live-reloadable): how many sockets a node and
//! one IP may hold, how fast one IP may connect, how fast one connection may send, and how
//! deeply nested a message may be.
//!
//! Refusals are answered, never silent: an upgrade over a limit gets HTTP 503 (node full)
//! or 429 (this IP), a message over the rate gets error 1005 and, if the client keeps going,
//! close 1008; each is counted in `wshub_rate_limited_total{limit}`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use dashmap::DashMap;

use crate::config::LimitsConfig;

/// Which limit refused something (the `limit` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    Connections,
    ConnectionsPerIp,
    ConnectRate,
    MessageRate,
    RoomsPerClient,
    JsonDepth,
}

impl Limit {
    pub(crate) const ALL: [Limit; 6] = [
        Limit::Connections,
        Limit::ConnectionsPerIp,
        Limit::ConnectRate,
        Limit::MessageRate,
        Limit::RoomsPerClient,
        Limit::JsonDepth,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::ConnectionsPerIp => "connections_per_ip",
            Limit::ConnectRate => "connect_rate",
            Limit::MessageRate => "message_rate",
            Limit::RoomsPerClient => "rooms_per_client",
            Limit::JsonDepth => "json_depth",
        }
    }
}

/// Sockets held, per node and per IP. A [`Slot`] is held for a connection's whole life.
#[derive(Default)]
pub(crate) struct Admission {
    open: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    connect_rate: DashMap<IpAddr, TokenBucket>,
}

/// One admitted socket; dropping it gives the place back.
pub(crate) struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::Relaxed);
        self.admission.per_ip.remove_if_mut(&self.ip, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

impl Admission {
    /// Admits a new socket from `ip`, or names the limit it would break.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, cfg: &LimitsConfig) -> Result<Slot, Limit> {
        if cfg.connects_per_second_per_ip > 0 {
            let rate = f64::from(cfg.connects_per_second_per_ip);
            let mut bucket = self
                .connect_rate
                .entry(ip)
                .or_insert_with(|| TokenBucket::full(rate * 2.0));
            if !bucket.take(rate, rate * 2.0) {
                return Err(Limit::ConnectRate);
            }
        }
        let open = self.open.fetch_add(1, Ordering::Relaxed);
        if cfg.max_connections > 0 && open >= cfg.max_connections {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Limit::Connections);
        }
        let mut held = self.per_ip.entry(ip).or_insert(0);
        if cfg.max_connections_per_ip > 0 && *held >= cfg.max_connections_per_ip {
            drop(held);
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Limit::ConnectionsPerIp);
        }
        *held += 1;
        Ok(Slot {
            admission: self.clone(),
            ip,
        })
    }

    /// Forgets connect-rate state of IPs whose bucket has refilled (called by the sweeper,
    /// so the map holds only recently active IPs).
    pub(crate) fn forget_idle(&self, cfg: &LimitsConfig) {
        let rate = f64::from(cfg.connects_per_second_per_ip.max(1));
        self.connect_rate
            .retain(|_, b| b.level(rate, rate * 2.0) < rate * 2.0);
    }
}

/// A token bucket: `rate` tokens per second, at most `burst`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub(crate) fn full(burst: f64) -> Self {
        TokenBucket {
            tokens: burst,
            at: Instant::now(),
        }
    }

    fn level(&self, rate: f64, burst: f64) -> f64 {
        (self.tokens + self.at.elapsed().as_secs_f64() * rate).min(burst)
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, rate: f64, burst: f64) -> bool {
        self.tokens = self.level(rate, burst);
        self.at = Instant::now();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A connection's message rate: the bucket and how many messages in a row it refused.
pub(crate) struct MessageRate {
    bucket: Option<TokenBucket>,
    strikes: u32,
}

/// What to do with an inbound message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accept,
    /// Answer 1005 and drop the message.
    Refuse,
    /// Refused too many times in a row: close 1008.
    Close,
}

impl MessageRate {
    pub(crate) fn new() -> Self {
        MessageRate {
            bucket: None,
            strikes: 0,
        }
    }

    pub(crate) fn check(&mut self, limit: RateLimit) -> Verdict {
        if limit.per_second == 0 {
            return Verdict::Accept;
        }
        let rate = f64::from(limit.per_second);
        let burst = f64::from(limit.burst.max(limit.per_second));
        let bucket = self.bucket.get_or_insert_with(|| TokenBucket::full(burst));
        if bucket.take(rate, burst) {
            self.strikes = 0;
            return Verdict::Accept;
        }
        self.strikes += 1;
        if self.strikes > limit.strikes {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

/// `limits.messages_per_second`, `messages_burst` and `rate_limit_strikes`, read once per
/// message from the node's live limits (atomics, so a reload reaches open connections).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateLimit {
    pub(crate) per_second: u32,
    pub(crate) burst: u32,
    pub(crate) strikes: u32,
}

impl From<&LimitsConfig> for RateLimit {
    fn from(c: &LimitsConfig) -> Self {
        RateLimit {
            per_second: c.messages_per_second,
            burst: c.messages_burst,
            strikes: c.rate_limit_strikes,
        }
    }
}

/// Whether JSON `bytes` nest objects/arrays deeper than `max` (brackets inside strings do
/// not count). One pass, no allocation: runs before the parser sees the message.
pub(crate) fn json_too_deep(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
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
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LimitsConfig {
        LimitsConfig::default()
    }

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert!(!json_too_deep(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(json_too_deep(br#"{"a":[1,{"b":[2]}]}"#, 3));
        assert!(!json_too_deep(br#"{"a":"[[[[[[\"{{{{"}"#, 1));
        assert!(json_too_deep(&b"[".repeat(100), 64));
    }

    #[test]
    fn admission_counts_per_node_and_ip_and_gives_back() {
        let a = Arc::new(Admission::default());
        let mut c = cfg();
        c.max_connections = 3;
        c.max_connections_per_ip = 2;
        let ip1: IpAddr = "10.0.0.1".parse().unwrap();
        let ip2: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = a.admit(ip1, &c).unwrap();
        let _s2 = a.admit(ip1, &c).unwrap();
        assert_eq!(a.admit(ip1, &c).err(), Some(Limit::ConnectionsPerIp));
        let _s3 = a.admit(ip2, &c).unwrap();
        assert_eq!(a.admit(ip2, &c).err(), Some(Limit::Connections));
        drop(s1);
        assert!(a.admit(ip1, &c).is_ok());
    }

    #[test]
    fn message_rate_refuses_then_closes() {
        let mut c = cfg();
        c.messages_per_second = 1;
        c.messages_burst = 2;
        c.rate_limit_strikes = 2;
        let c = RateLimit::from(&c);
        let mut r = MessageRate::new();
        assert_eq!(r.check(c), Verdict::Accept);
        assert_eq!(r.check(c), Verdict::Accept);
        assert_eq!(r.check(c), Verdict::Refuse);
        assert_eq!(r.check(c), Verdict::Refuse);
        assert_eq!(r.check(c), Verdict::Close);
    }
}
