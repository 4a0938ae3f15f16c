//! Liveness of RAPL counters at probe start.
//!
//! Some virtual machines expose a RAPL counter (perf event or powercap file) that opens and reads
//! fine but never advances: every window would then read a *measured* 0 J. RAPL updates about
//! every millisecond, so a live counter moves within a few milliseconds; the probes poll their raw
//! values for up to [`DEFAULT_TIMEOUT`] (stopping as soon as every domain has moved) and drop the
//! domains that stayed put. A probe with no live domain left is
//! [`Unavailable::Stalled`], so the meter falls back to the next
//! probe or to the labelled estimate.
//!
//! ```
//! use joulecut_energy::liveness::wait_for_advance;
//! use std::time::Duration;
//!
//! // Domain 0 moves on the second poll, domain 1 never does.
//! let mut polls = vec![vec![Some(7), Some(5)], vec![Some(9), Some(5)]].into_iter();
//! let mut last = vec![Some(7), Some(5)];
//! let live = wait_for_advance(
//!     || { if let Some(v) = polls.next() { last = v; } last.clone() },
//!     Duration::from_millis(5),
//!     Duration::from_millis(1),
//! );
//! assert_eq!(live.advanced, [true, false]);
//! ```

use std::time::{Duration, Instant};

use crate::probe::{DomainInfo, Unavailable};

/// How long a probe waits for its counters to move before calling them stalled. RAPL updates
/// about every 1 ms, so 50 ms is many update periods yet cheap at start-up (a live counter ends
/// the wait after one or two polls).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// Pause between polls while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// The outcome of a liveness check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    /// Per domain, in reading order: whether its counter moved.
    pub advanced: Vec<bool>,
    /// How long the check waited.
    pub waited: Duration,
}

impl Liveness {
    /// True when every domain moved.
    pub fn all_live(&self) -> bool {
        self.advanced.iter().all(|&a| a)
    }
}

/// Which domains advanced between two reading sets. A read that failed (`None`) at either end
/// counts as not advanced; a value that changed in either direction counts as advanced (a wrap or
/// a reset is movement too).
pub fn advanced(first: &[Option<u64>], now: &[Option<u64>]) -> Vec<bool> {
    first
        .iter()
        .zip(now)
        .map(|(a, b)| matches!((a, b), (Some(a), Some(b)) if a != b))
        .collect()
}

/// Reads raw counter values with `read` (one entry per domain, `None` for a failed read) until
/// every domain has moved from its first value or `timeout` has passed, sleeping `poll` between
/// reads. A `timeout` of zero skips the check and reports every domain live.
pub fn wait_for_advance(
    mut read: impl FnMut() -> Vec<Option<u64>>,
    timeout: Duration,
    poll: Duration,
) -> Liveness {
    let start = Instant::now();
    let first = read();
    if timeout.is_zero() {
        return Liveness {
            advanced: vec![true; first.len()],
            waited: Duration::ZERO,
        };
    }
    let mut seen = vec![false; first.len()];
    loop {
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Liveness {
                advanced: seen,
                waited: elapsed,
            };
        }
        std::thread::sleep(poll.min(timeout - elapsed));
        let now = read();
        for (s, a) in seen.iter_mut().zip(advanced(&first, &now)) {
            *s |= a;
        }
        if seen.iter().all(|&s| s) {
            return Liveness {
                advanced: seen,
                waited: start.elapsed(),
            };
        }
    }
}

/// The `Stalled` detail for one domain.
pub(crate) fn stalled_detail(domain: &str, what: &str, waited: Duration) -> String {
    format!(
        "{domain} ({what}): counter did not advance in {} ms (virtualised?)",
        waited.as_millis()
    )
}

/// Keeps the live entries of a probe's parallel `items` and `domains`; returns one
/// [`Unavailable::Stalled`] per dropped domain, or the combined reason when none is left.
pub(crate) fn retain_live<T>(
    items: &mut Vec<T>,
    domains: &mut Vec<DomainInfo>,
    live: &Liveness,
    what: impl Fn(&T) -> String,
) -> Result<Vec<Unavailable>, Unavailable> {
    let mut stalled = Vec::new();
    let mut keep_items = Vec::with_capacity(items.len());
    let mut keep_domains = Vec::with_capacity(domains.len());
    for ((item, domain), &ok) in items.drain(..).zip(domains.drain(..)).zip(&live.advanced) {
        if ok {
            keep_items.push(item);
            keep_domains.push(domain);
        } else {
            stalled.push(stalled_detail(&domain.name, &what(&item), live.waited));
        }
    }
    *items = keep_items;
    *domains = keep_domains;
    if items.is_empty() {
        return Err(Unavailable::Stalled {
            detail: stalled.join("; "),
        });
    }
    Ok(stalled
        .into_iter()
        .map(|detail| Unavailable::Stalled { detail })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advanced_compares_pairwise() {
        assert_eq!(
            advanced(
                &[Some(1), Some(2), None, Some(4)],
                &[Some(1), Some(3), Some(3), None]
            ),
            [false, true, false, false]
        );
        // A wrap (smaller value) is movement.
        assert_eq!(advanced(&[Some(10)], &[Some(2)]), [true]);
    }

    #[test]
    fn stops_as_soon_as_everything_moved() {
        let mut n = 0u64;
        let live = wait_for_advance(
            || {
                n += 1;
                vec![Some(n), Some(n * 2)]
            },
            Duration::from_secs(10),
            Duration::from_millis(1),
        );
        assert!(live.all_live());
        assert_eq!(n, 2, "one read to start, one poll to see movement");
        assert!(live.waited < Duration::from_secs(1));
    }

    #[test]
    fn a_dead_counter_times_out_and_is_named() {
        let mut n = 0u64;
        let live = wait_for_advance(
            || {
                n += 1;
                vec![Some(n), Some(0)]
            },
            Duration::from_millis(20),
            Duration::from_millis(2),
        );
        assert_eq!(live.advanced, [true, false]);
        assert!(live.waited >= Duration::from_millis(20));
        assert!(!live.all_live());
        let d = stalled_detail("psys", "power/energy-psys/", live.waited);
        assert!(d.contains("psys") && d.contains("did not advance"), "{d}");
    }

    #[test]
    fn zero_timeout_skips_the_check() {
        let mut reads = 0;
        let live = wait_for_advance(
            || {
                reads += 1;
                vec![Some(0)]
            },
            Duration::ZERO,
            Duration::from_millis(1),
        );
        assert!(live.all_live());
        assert_eq!(reads, 1);
    }
}
