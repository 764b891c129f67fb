//! Whole-machine CPU time from `/proc/stat`. The kernel forwards in the softirq of whichever CPU
//! the sender runs on, and egw burns its own cores, so only the machine total compares the two.

use serde::{Deserialize, Serialize};

/// USER_HZ: the unit of `/proc/stat`; 100 on every Linux architecture egw targets.
pub const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("reading /proc/stat failed: {0}")]
    Read(#[from] std::io::Error),
    #[error("/proc/stat has no parsable aggregate `cpu` line")]
    Parse,
}

/// Aggregate CPU counters at one instant, in ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuSample {
    pub busy: u64,
    pub idle: u64,
    /// system + irq + softirq: where the kernel forwards, and where AF_XDP copies happen.
    pub kernel: u64,
}

impl CpuSample {
    pub fn now() -> Result<Self, CpuError> {
        Self::parse(&std::fs::read_to_string("/proc/stat")?)
    }

    /// Parses the first (`cpu `) line: user nice system idle iowait irq softirq steal ...
    /// (guest time is already inside user/nice and is not added twice).
    pub fn parse(text: &str) -> Result<Self, CpuError> {
        let line = text
            .lines()
            .find(|line| line.starts_with("cpu "))
            .ok_or(CpuError::Parse)?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| CpuError::Parse)?;
        if fields.len() < 8 {
            return Err(CpuError::Parse);
        }
        let idle = fields[3] + fields[4];
        let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7];
        let kernel = fields[2] + fields[5] + fields[6];
        Ok(CpuSample { busy, idle, kernel })
    }

    /// CPU seconds used (busy) and available (busy + idle) between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuSample) -> CpuDelta {
        let busy = self.busy.saturating_sub(earlier.busy) as f64 / TICKS_PER_SECOND;
        let idle = self.idle.saturating_sub(earlier.idle) as f64 / TICKS_PER_SECOND;
        CpuDelta {
            busy_cpu_seconds: busy,
            total_cpu_seconds: busy + idle,
            kernel_cpu_seconds: self.kernel.saturating_sub(earlier.kernel) as f64
                / TICKS_PER_SECOND,
        }
    }
}

/// CPU use over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuDelta {
    pub busy_cpu_seconds: f64,
    pub total_cpu_seconds: f64,
    /// Machine-wide system + irq + softirq seconds.
    pub kernel_cpu_seconds: f64,
}

impl CpuDelta {
    /// Fraction of the machine that was busy.
    pub fn utilisation(&self) -> f64 {
        if self.total_cpu_seconds > 0.0 {
            self.busy_cpu_seconds / self.total_cpu_seconds
        } else {
            0.0
        }
    }
}

/// User and system CPU seconds of one process, from `/proc/<pid>/stat` text.
pub fn parse_process_times(text: &str) -> Option<ProcessTimes> {
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcessTimes {
        user_seconds: user as f64 / TICKS_PER_SECOND,
        system_seconds: system as f64 / TICKS_PER_SECOND,
    })
}

/// CPU time of process `pid` (`"self"` for this one); `None` once it is gone.
pub fn process_times(pid: &str) -> Option<ProcessTimes> {
    parse_process_times(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU seconds a process used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessTimes {
    pub user_seconds: f64,
    pub system_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_idle_come_from_the_aggregate_line() {
        let text = "cpu  100 5 50 1000 10 1 4 2 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\nintr 5\n";
        let sample = CpuSample::parse(text).unwrap();
        assert_eq!(
            sample,
            CpuSample {
                busy: 162,
                idle: 1010,
                kernel: 55
            }
        );
        let later = CpuSample {
            busy: 262,
            idle: 1110,
            kernel: 105,
        };
        let delta = later.since(&sample);
        assert!((delta.busy_cpu_seconds - 1.0).abs() < 1e-9);
        assert!((delta.total_cpu_seconds - 2.0).abs() < 1e-9);
        assert!((delta.utilisation() - 0.5).abs() < 1e-9);
        assert!((delta.kernel_cpu_seconds - 0.5).abs() < 1e-9);
    }

    #[test]
    fn process_times_survive_odd_command_names() {
        let text = "4242 (egw (bench) x) R 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 1 0 100 0 0\n";
        let times = parse_process_times(text).unwrap();
        assert!((times.user_seconds - 2.5).abs() < 1e-9);
        assert!((times.system_seconds - 0.75).abs() < 1e-9);
        assert!(parse_process_times("garbage").is_none());
        assert!(process_times("self").is_some());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(CpuSample::parse("intr 1\n").is_err());
        assert!(CpuSample::parse("cpu  a b c\n").is_err());
        assert!(CpuSample::parse("cpu  1 2 3\n").is_err());
    }

    #[test]
    fn this_machine_reports_cpu_time() {
        let sample = CpuSample::now().unwrap();
        assert!(sample.busy + sample.idle > 0);
    }
}
