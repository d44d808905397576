//! The servers' CPU time, read from `/proc/<pid>/stat`: what a run cost the server side,
//! whichever side (server or the single-core load generator) limited its rate.
//!
//! A cluster run names every process of the cluster (its nodes and the broker), so the cost
//! of a delivery there includes the bus.

use std::time::Duration;

use anyhow::Context;

/// CPU time (user + system, all threads) the processes `pids` have used so far.
pub(crate) fn cpu_time(pids: &[u32]) -> anyhow::Result<Duration> {
    pids.iter().map(|&pid| cpu_time_of(pid)).sum()
}

fn cpu_time_of(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after its `)` are fixed.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the `)`.
    let ticks: u64 = fields
        .get(11..13)
        .context("short /proc/<pid>/stat")?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    // Counted in USER_HZ, which the kernel fixes at 100 for what it reports to user space.
    Ok(Duration::from_millis(ticks * 10))
}

/// Server CPU per unit of work (µs, two decimals: a delivery costs about one) and the units per second one whole core of
/// it would sustain; `None` without a measurement or without work.
pub(crate) fn per_unit(used: Option<Duration>, units: u64) -> (Option<f64>, Option<f64>) {
    let Some(used) = used else {
        return (None, None);
    };
    if units == 0 {
        return (None, None);
    }
    let per_unit = used.as_secs_f64() * 1e6 / units as f64;
    (
        Some((per_unit * 100.0).round() / 100.0),
        (per_unit > 0.0).then(|| (1e6 / per_unit).round()),
    )
}

/// Measures the CPU the processes use from now until [`Meter::used`].
pub(crate) struct Meter {
    pids: Vec<u32>,
    before: Duration,
}

impl Meter {
    /// `None` when no pid is given.
    pub(crate) fn start(pids: &[u32]) -> anyhow::Result<Option<Meter>> {
        if pids.is_empty() {
            return Ok(None);
        }
        Ok(Some(Meter {
            pids: pids.to_vec(),
            before: cpu_time(pids)?,
        }))
    }

    pub(crate) fn used(&self) -> anyhow::Result<Duration> {
        Ok(cpu_time(&self.pids)?.saturating_sub(self.before))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        // Burn a little CPU so there is something to count (10 ms ticks).
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(cpu_time(&[pid]).unwrap() > Duration::ZERO);
        assert!(cpu_time(&[pid, pid]).unwrap() >= cpu_time(&[pid]).unwrap());
        assert!(cpu_time(&[u32::MAX]).is_err());
    }

    #[test]
    fn per_unit_rounds_and_guards() {
        assert_eq!(per_unit(None, 10), (None, None));
        assert_eq!(per_unit(Some(Duration::from_secs(1)), 0), (None, None));
        assert_eq!(
            per_unit(Some(Duration::from_millis(59)), 1000),
            (Some(59.0), Some(16949.0))
        );
        assert_eq!(
            per_unit(Some(Duration::from_millis(2470)), 3_000_000),
            (Some(0.82), Some(1_214_575.0))
        );
    }
}
