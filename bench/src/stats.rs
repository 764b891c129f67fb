//! Shared measurement pieces: the monotonic clock both namespaces share, latency summaries from
//! hdrhistogram, and the live progress line.

use std::io::Write;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// CLOCK_MONOTONIC in nanoseconds. Network namespaces share it (time namespaces would not, and
/// the lab creates none), so a send stamp taken in a pod compares with a receive time taken in
/// the internet namespace.
pub fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    // tv_sec is never negative for CLOCK_MONOTONIC.
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// Percentiles of one histogram, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Percentiles {
            samples: histogram.len(),
            p50_ns: histogram.value_at_quantile(0.50),
            p90_ns: histogram.value_at_quantile(0.90),
            p99_ns: histogram.value_at_quantile(0.99),
            p999_ns: histogram.value_at_quantile(0.999),
            max_ns: histogram.max(),
        }
    }
}

/// A histogram of nanosecond values from 1 ns to 100 s at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}

/// Records `value` clamped into the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, value: u64) {
    let clamped = value.clamp(1, histogram.high());
    // In range by construction, so `saturating_record` and `record` agree.
    histogram.saturating_record(clamped);
}

/// Rewrites one stderr line at most once a second.
pub struct Progress {
    enabled: bool,
    started: Instant,
    last: Instant,
    last_count: u64,
    printed: bool,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        let now = Instant::now();
        Progress {
            enabled,
            started: now,
            last: now,
            last_count: 0,
            printed: false,
        }
    }

    /// Prints `label`, the rate since the last line and `extra`, when a second has passed.
    pub fn tick(&mut self, label: &str, count: u64, extra: impl FnOnce() -> String) {
        if !self.enabled {
            return;
        }
        let elapsed = self.last.elapsed();
        if elapsed < Duration::from_secs(1) {
            return;
        }
        let rate = (count - self.last_count.min(count)) as f64 / elapsed.as_secs_f64();
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r{label} t={:>5.1}s total={count} rate={} {}   ",
            self.started.elapsed().as_secs_f64(),
            human_rate(rate),
            extra()
        );
        let _ = stderr.flush();
        self.last = Instant::now();
        self.last_count = count;
        self.printed = true;
    }

    /// Ends the progress line so the next output starts on a fresh line.
    pub fn finish(&mut self) {
        if self.printed {
            eprintln!();
            self.printed = false;
        }
    }
}

/// `1.23 Mpps`-style rendering.
pub fn human_rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2}M/s", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1}k/s", per_second / 1e3)
    } else {
        format!("{per_second:.0}/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_the_samples() {
        let mut histogram = new_histogram();
        for value in 1..=1000u64 {
            record(&mut histogram, value * 1000);
        }
        let summary = Percentiles::of(&histogram);
        assert_eq!(summary.samples, 1000);
        assert!((499_000..=501_000).contains(&summary.p50_ns), "{summary:?}");
        assert!((989_000..=991_000).contains(&summary.p99_ns), "{summary:?}");
        assert!(summary.max_ns >= 999_000);
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut histogram = new_histogram();
        record(&mut histogram, 0);
        record(&mut histogram, u64::MAX);
        assert_eq!(histogram.len(), 2);
    }

    #[test]
    fn the_clock_moves_forward() {
        let first = monotonic_ns();
        let second = monotonic_ns();
        assert!(first > 0 && second >= first);
    }
}
