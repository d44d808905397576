//! Drops bus messages already seen: each origin (node id + boot id) has a sliding window of
//! the last [`WINDOW`] sequence numbers. A message at or below `max - WINDOW` counts as seen
//! (too old to tell, and far older than any reordering between one publisher's subjects).
//! Origins silent for [`IDLE_EVICT`] are forgotten, so restarted or dead nodes don't pile up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Sequence numbers remembered per origin (one bit each: 8 KiB per live origin).
pub(crate) const WINDOW: u64 = 65_536;
const WORDS: usize = (WINDOW / 64) as usize;
const IDLE_EVICT: Duration = Duration::from_secs(600);

struct Window {
    max: u64,
    bits: Box<[u64; WORDS]>,
    last_seen: Instant,
}

impl Window {
    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }
}

#[derive(Default)]
pub(crate) struct DedupWindow {
    origins: HashMap<(String, u64), Window>,
    checks: u64,
}

impl DedupWindow {
    /// True when `(origin, boot, seq)` is new (and remembers it); false for a duplicate.
    pub(crate) fn first_time(&mut self, origin: &str, boot: u64, seq: u64) -> bool {
        self.checks += 1;
        if self.checks.is_multiple_of(4096) {
            let now = Instant::now();
            self.origins
                .retain(|_, w| now.duration_since(w.last_seen) < IDLE_EVICT);
        }
        let now = Instant::now();
        let w = self
            .origins
            .entry((origin.to_owned(), boot))
            .or_insert_with(|| Window {
                max: 0,
                bits: Box::new([0; WORDS]),
                last_seen: now,
            });
        w.last_seen = now;
        if seq + WINDOW <= w.max {
            return false;
        }
        if seq > w.max {
            // Clear the slots the window slides past.
            let advance = (seq - w.max).min(WINDOW);
            for s in (seq - advance + 1)..=seq {
                let (word, mask) = Window::bit(s);
                w.bits[word] &= !mask;
            }
            w.max = seq;
        }
        let (word, mask) = Window::bit(seq);
        if w.bits[word] & mask != 0 {
            return false;
        }
        w.bits[word] |= mask;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_reordering() {
        let mut d = DedupWindow::default();
        assert!(d.first_time("a", 1, 1));
        assert!(!d.first_time("a", 1, 1));
        assert!(d.first_time("a", 1, 3));
        assert!(d.first_time("a", 1, 2), "late but within the window");
        assert!(!d.first_time("a", 1, 2));
        // Another origin, or another boot of the same node, has its own sequence.
        assert!(d.first_time("b", 1, 1));
        assert!(d.first_time("a", 2, 1));
        // Far ahead, then the old ones are too old.
        assert!(d.first_time("a", 1, 3 + WINDOW));
        assert!(!d.first_time("a", 1, 3));
        assert!(d.first_time("a", 1, 4 + WINDOW));
        assert!(!d.first_time("a", 1, 4 + WINDOW));
    }

    #[test]
    fn long_runs_have_no_false_positives() {
        let mut d = DedupWindow::default();
        for seq in 1..=(3 * WINDOW) {
            assert!(d.first_time("n", 9, seq), "{seq}");
        }
    }
}
