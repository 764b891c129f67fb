//! What `egw-bench compare` is asked to do and what it found: settings, contestants, points,
//! the report, and its error type. A leaf: the comparison (`compare`) fills these in and the
//! renderer (`report`) reads them.

use std::fs;
use std::path::PathBuf;
use std::thread;

use egw_testbed::LabError;
use serde::{Deserialize, Serialize};

use crate::cpu::{CpuDelta, CpuError, ProcessTimes};
use crate::generate::{TcpReport, UdpReport};
use crate::receive::ReceiveReport;

/// Destination ports of point `i` start at `FIRST_DESTINATION_PORT + PORTS_PER_POINT * i`;
/// 1 M flows need 17 of them.
pub(crate) const FIRST_DESTINATION_PORT: u32 = 10_000;
pub(crate) const PORTS_PER_POINT: u32 = 100;
/// Keeps every point's destination ports below 65536.
pub(crate) const MAX_POINTS: usize = 500;
/// What `PORTS_PER_POINT` destination ports carry.
pub(crate) const MAX_FLOWS: u32 = PORTS_PER_POINT * crate::generate::MAX_SOURCE_PORTS;

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("lab: {0}")]
    Lab(#[from] LabError),
    #[error(transparent)]
    Cpu(#[from] CpuError),
    #[error("{what}: {detail}")]
    Step { what: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid settings: {0}")]
    Config(String),
}

pub(crate) fn step(what: impl Into<String>, detail: impl ToString) -> CompareError {
    CompareError::Step {
        what: what.into(),
        detail: detail.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Contestant {
    Egw,
    Kernel,
    Ceiling,
}

impl Contestant {
    pub const ALL: [Contestant; 3] = [Contestant::Egw, Contestant::Kernel, Contestant::Ceiling];

    pub fn label(self) -> &'static str {
        match self {
            Contestant::Egw => "egw",
            Contestant::Kernel => "kernel",
            Contestant::Ceiling => "ceiling",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|contestant| contestant.label() == text)
    }
}

/// `quick`: a few seconds per point, reduced sweep (about 2–3 minutes here).
/// `full`: the whole sweep, 10 s per point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Quick,
    Full,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareSettings {
    pub profile: Profile,
    /// The sweep was changed from the profile's on the command line.
    pub overridden: bool,
    pub flows: Vec<u32>,
    pub frame_sizes: Vec<usize>,
    pub seconds: u64,
    pub cps: bool,
    pub cps_parallel: usize,
    pub workers: Vec<u32>,
    pub contestants: Vec<Contestant>,
    /// Packets per second per generator; `None`: as fast as possible.
    pub rate: Option<u64>,
    pub gateway_bin: Option<PathBuf>,
    /// This executable (run inside the namespaces as generator and receiver).
    pub bench_bin: PathBuf,
    pub out_dir: PathBuf,
    /// Raise the host's (initial namespace's) conntrack limit and hash size when the flow count
    /// needs it; restored afterwards. Without it the kernel contestant is capped by the host.
    pub tune_host_conntrack: bool,
    /// One line per point on stderr as it finishes.
    pub progress: bool,
    /// Before each UDP point, send every flow once (unmeasured), so the point measures
    /// established flows, not flow set-up.
    pub warmup: bool,
}

impl CompareSettings {
    pub fn for_profile(profile: Profile, bench_bin: PathBuf, out_dir: PathBuf) -> Self {
        let (flows, frame_sizes, seconds) = match profile {
            Profile::Quick => (vec![1_000, 1_000_000], vec![64, 1514], 3),
            Profile::Full => (vec![1_000, 100_000, 1_000_000], vec![64, 512, 1514], 10),
        };
        CompareSettings {
            profile,
            overridden: false,
            flows,
            frame_sizes,
            seconds,
            cps: true,
            cps_parallel: 64,
            workers: vec![1],
            contestants: Contestant::ALL.to_vec(),
            rate: None,
            gateway_bin: None,
            bench_bin,
            out_dir,
            tune_host_conntrack: true,
            warmup: profile == Profile::Full,
            progress: true,
        }
    }

    /// Rough wall time: every point plus lab set-up, per contestant and worker count.
    pub fn estimated_seconds(&self) -> u64 {
        let points = (self.flows.len() * self.frame_sizes.len() + usize::from(self.cps)) as u64;
        // Warm-up sends every flow once; ~100 kpps is what this class of machine forwards.
        let warmup: u64 = if self.warmup {
            self.flows
                .iter()
                .map(|&flows| u64::from(flows) / 100_000 + 1)
                .sum::<u64>()
                * self.frame_sizes.len() as u64
        } else {
            0
        };
        let per_contestant = points * (self.seconds + 2) + warmup + 6;
        per_contestant * self.contestants.len() as u64 * self.workers.len() as u64
    }

    pub(crate) fn validate(&self) -> Result<(), CompareError> {
        if self.flows.len() * self.frame_sizes.len() + 1 > MAX_POINTS {
            return Err(CompareError::Config(format!(
                "at most {MAX_POINTS} points per contestant"
            )));
        }
        if self
            .flows
            .iter()
            .any(|&flows| flows == 0 || flows > MAX_FLOWS)
        {
            return Err(CompareError::Config(format!(
                "flows must be in 1..={MAX_FLOWS}"
            )));
        }
        if self.seconds == 0 || self.seconds > 120 {
            return Err(CompareError::Config(
                "seconds per point must be in 1..=120".to_owned(),
            ));
        }
        if self
            .workers
            .iter()
            .any(|workers| !(1..=64).contains(workers))
        {
            return Err(CompareError::Config("workers must be in 1..=64".to_owned()));
        }
        if self.contestants.is_empty() || (self.flows.is_empty() && !self.cps) {
            return Err(CompareError::Config("nothing to run".to_owned()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadKind {
    Udp,
    Cps,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointStatus {
    Ok,
    NotRun,
    Failed,
}

/// One measured (or skipped) point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointResult {
    pub contestant: Contestant,
    pub workers: u32,
    pub kind: LoadKind,
    pub flows: u32,
    pub frame_len: usize,
    pub status: PointStatus,
    pub note: String,
    pub generators: Vec<UdpReport>,
    pub connectors: Vec<TcpReport>,
    pub receiver: Option<ReceiveReport>,
    pub cpu: Option<CpuDelta>,
    /// Busy CPU fraction of the machine just before the contestant's points, with nothing of
    /// ours running: the other tenants' share.
    pub baseline_utilisation: f64,
    /// Packets (or connections) per second that arrived with the right source.
    pub delivered_per_s: f64,
    /// Whole-machine busy CPU nanoseconds per delivered packet (or connection).
    pub cpu_ns_per_unit: Option<f64>,
    /// The same with the baseline (other tenants) subtracted; noisy when they fluctuate.
    pub cpu_ns_per_unit_net: Option<f64>,
    /// Machine-wide system+irq+softirq time plus the user time of our own processes
    /// (generators, receiver, egw-gateway) per unit: what the benchmark itself costs, robust
    /// against other tenants' user-space work on a shared machine.
    pub cpu_ns_per_unit_attributed: Option<f64>,
    /// egw-gateway's own CPU time during the run.
    pub gateway_process: Option<ProcessTimes>,
    pub sent: u64,
    pub delivered: u64,
    pub loss_fraction: f64,
}

impl PointResult {
    pub(crate) fn skipped(
        contestant: Contestant,
        workers: u32,
        kind: LoadKind,
        flows: u32,
        frame_len: usize,
        status: PointStatus,
        note: &str,
    ) -> Self {
        PointResult {
            contestant,
            workers,
            kind,
            flows,
            frame_len,
            status,
            note: note.to_owned(),
            generators: Vec::new(),
            connectors: Vec::new(),
            receiver: None,
            cpu: None,
            baseline_utilisation: 0.0,
            delivered_per_s: 0.0,
            cpu_ns_per_unit: None,
            cpu_ns_per_unit_net: None,
            cpu_ns_per_unit_attributed: None,
            gateway_process: None,
            sent: 0,
            delivered: 0,
            loss_fraction: 0.0,
        }
    }
}

/// Machine and environment facts written with the results.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MachineInfo {
    pub host: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_gib: f64,
}

impl MachineInfo {
    pub fn collect() -> Self {
        let read = |path: &str| {
            fs::read_to_string(path)
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        MachineInfo {
            host: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
            cpu_model: cpuinfo
                .lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_default(),
            cpus: thread::available_parallelism().map_or(1, usize::from),
            memory_gib: meminfo
                .lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse::<f64>().ok())
                .map_or(0.0, |kib| kib / 1024.0 / 1024.0),
        }
    }
}

/// Everything `compare` produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareReport {
    pub date: String,
    pub machine: MachineInfo,
    pub settings: CompareSettings,
    pub gateway_bin: Option<String>,
    /// Per contestant: conntrack sizing, offload state, XDP modes, anything needed to read the
    /// numbers right.
    pub notes: Vec<String>,
    pub points: Vec<PointResult>,
    pub wall_seconds: f64,
}

/// The paths `compare` wrote.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub json: PathBuf,
    pub markdown: PathBuf,
    pub svg: PathBuf,
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Today (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    format!("{year:04}-{month:02}-{day:02}")
}
