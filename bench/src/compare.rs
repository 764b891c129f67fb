//! `egw-bench compare`: one lab per contestant, the same load through each, one after another.
//!
//! Contestants:
//! - `egw`: egw-gateway with the lab's SNAT route table;
//! - `kernel`: Linux forwarding + nftables SNAT + conntrack, conntrack sized for the flow count;
//! - `ceiling`: egw-gateway with a route table that bypasses (forwards without NAT) everything:
//!   the same AF_XDP path with no NAT work, i.e. what the I/O alone allows here. The internet
//!   namespace gets a route back to the pod CIDR for it.
//!
//! Each point: the receiver starts in the internet namespace, the generators (one per worker,
//! each in its own pod) run for the point's duration, and `/proc/stat` is sampled around them.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use egw_lab::gateway::{write_atomically, EgwGatewayConfig, RouteTable};
use egw_lab::topology::{GW_INSIDE_IF, GW_OUTSIDE_ADDRESS, HOST_IF, MIRROR_ADDRESS, POD_CIDR};
use egw_lab::{Gateway, Lab, LabConfig, LabError, ScopedChild};
use serde::{Deserialize, Serialize};

use crate::cpu::{process_times, CpuDelta, CpuError, CpuSample, ProcessTimes};
use crate::generate::{TcpReport, UdpReport};
use crate::receive::ReceiveReport;

/// TCP port of the receiver's listener in the connections-per-second run.
pub const CPS_PORT: u16 = 9100;
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const GATEWAY_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time a generator process may take beyond its run (start-up, ARP, drain).
const PROCESS_SLACK: Duration = Duration::from_secs(20);
const BASELINE_WINDOW: Duration = Duration::from_secs(1);
/// Packets a generator may send per second of its run, as its `--count` bound.
const COUNT_PER_SECOND: u64 = 20_000_000;
/// Time for egw-gateway to apply a route table after SIGHUP.
const RELOAD_SETTLE: Duration = Duration::from_secs(1);
/// Destination ports of point `i` start at `FIRST_DESTINATION_PORT + PORTS_PER_POINT * i`;
/// 1 M flows need 17 of them.
const FIRST_DESTINATION_PORT: u32 = 10_000;
const PORTS_PER_POINT: u32 = 100;
/// Keeps every point's destination ports below 65536.
const MAX_POINTS: usize = 500;
/// What `PORTS_PER_POINT` destination ports carry.
const MAX_FLOWS: u32 = PORTS_PER_POINT * crate::generate::MAX_SOURCE_PORTS;
/// Bound on one warm-up pass (every flow once).
const WARMUP_MAX_SECONDS: u64 = 60;

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

fn step(what: impl Into<String>, detail: impl ToString) -> CompareError {
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

    fn validate(&self) -> Result<(), CompareError> {
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
    fn skipped(
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

/// Runs every contestant and writes the results into `settings.out_dir`.
pub fn run(settings: &CompareSettings) -> Result<(CompareReport, Outputs), CompareError> {
    settings.validate()?;
    let started = Instant::now();
    let gateway_bin = egw_lab::find_gateway_binary(settings.gateway_bin.as_deref()).ok();
    let mut notes = Vec::new();
    let mut points = Vec::new();
    if let Some(note) = restore_stale_host_conntrack() {
        notes.push(note);
    }
    let _host_conntrack =
        if settings.contestants.contains(&Contestant::Kernel) && settings.tune_host_conntrack {
            HostConntrack::raise(conntrack_needed(settings), &mut notes)
        } else {
            None
        };
    for &workers in &settings.workers {
        for &contestant in &settings.contestants {
            let needs_egw = contestant != Contestant::Kernel;
            match (&gateway_bin, needs_egw) {
                (None, true) => {
                    points.extend(planned_points(settings, contestant, workers).into_iter().map(
                        |(kind, flows, frame_len)| {
                            PointResult::skipped(contestant, workers, kind, flows, frame_len, PointStatus::NotRun, "egw-gateway binary not found (--gateway-bin / EGW_GATEWAY_BIN)")
                        },
                    ));
                }
                (binary, _) => {
                    match run_contestant(
                        settings,
                        contestant,
                        workers,
                        binary.as_deref(),
                        &mut notes,
                    ) {
                        Ok(mut results) => points.append(&mut results),
                        Err(error) => {
                            let note = strip_ansi(&format!("{}: {error}", contestant.label()));
                            eprintln!("egw-bench: {note}");
                            points.extend(
                                planned_points(settings, contestant, workers)
                                    .into_iter()
                                    .map(|(kind, flows, frame_len)| {
                                        PointResult::skipped(
                                            contestant,
                                            workers,
                                            kind,
                                            flows,
                                            frame_len,
                                            PointStatus::Failed,
                                            &note,
                                        )
                                    }),
                            );
                        }
                    }
                }
            }
        }
    }
    let report = CompareReport {
        date: today(),
        machine: MachineInfo::collect(),
        settings: settings.clone(),
        gateway_bin: gateway_bin.map(|path| path.display().to_string()),
        notes,
        points,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    let outputs = crate::report::write_all(&report, &settings.out_dir)?;
    Ok((report, outputs))
}

fn planned_points(
    settings: &CompareSettings,
    contestant: Contestant,
    _workers: u32,
) -> Vec<(LoadKind, u32, usize)> {
    let mut planned = Vec::new();
    // Connections first: they then measure connection set-up on an empty table, not what a
    // million UDP flows left behind.
    if settings.cps && contestant != Contestant::Ceiling {
        planned.push((LoadKind::Cps, 0, 0));
    }
    for &flows in &settings.flows {
        for &frame_len in &settings.frame_sizes {
            planned.push((LoadKind::Udp, flows, frame_len));
        }
    }
    planned
}

/// Connections the CPS point may leave in the table (RST-closed ones linger a few seconds).
const CPS_TABLE_SLACK: u64 = 500_000;

/// Table size (kernel conntrack and egw alike) for the whole sweep: every point has its own
/// flows and UDP state outlives a point (30 s unreplied in conntrack, minutes in egw), so the
/// flows of all points plus the connections of the CPS point, with a quarter to spare.
fn conntrack_needed(settings: &CompareSettings) -> u64 {
    let flows: u64 = settings
        .flows
        .iter()
        .map(|&flows| u64::from(flows))
        .sum::<u64>()
        * settings.frame_sizes.len() as u64;
    let connections = if settings.cps { CPS_TABLE_SLACK } else { 0 };
    ((flows + connections) * 5 / 4).max(65_536)
}

fn sysctl_read(name: &str) -> Option<u64> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn sysctl_write(name: &str, value: u64) -> std::io::Result<()> {
    fs::write(
        format!("/proc/sys/{}", name.replace('.', "/")),
        value.to_string(),
    )
}

/// The host's conntrack limit and hash size, raised for the run and put back when dropped.
/// A namespace's `nf_conntrack_max` cannot exceed the initial namespace's, and the hash size
/// is global, so sizing conntrack for 1 M flows needs the host values.
struct HostConntrack {
    previous_max: u64,
    previous_buckets: u64,
}

/// Where the host's original conntrack values wait while raised, so a run killed by a signal
/// (destructors do not run) is repaired by the next `compare`.
const HOST_CONNTRACK_STATE: &str = "/run/egw-bench-host-conntrack";

/// Puts back host values left raised by a `compare` that died; returns a note when it did.
fn restore_stale_host_conntrack() -> Option<String> {
    let text = fs::read_to_string(HOST_CONNTRACK_STATE).ok()?;
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(pid)), Some(Ok(max)), Some(Ok(buckets))) =
        (fields.next(), fields.next(), fields.next())
    else {
        let _ = fs::remove_file(HOST_CONNTRACK_STATE);
        return None;
    };
    if Path::new(&format!("/proc/{pid}")).exists() {
        // Another compare is running and owns the raised values.
        return None;
    }
    let _ = sysctl_write("net.netfilter.nf_conntrack_buckets", buckets);
    let _ = sysctl_write("net.netfilter.nf_conntrack_max", max);
    let _ = fs::remove_file(HOST_CONNTRACK_STATE);
    Some(format!(
        "restored host conntrack max {max} / buckets {buckets} left raised by dead run {pid}"
    ))
}

impl HostConntrack {
    fn raise(needed: u64, notes: &mut Vec<String>) -> Option<Self> {
        if let Some(note) = restore_stale_host_conntrack() {
            notes.push(note);
        }
        if Path::new(HOST_CONNTRACK_STATE).exists() {
            notes.push(
                "kernel: another compare holds the host conntrack limits; not tuned".to_owned(),
            );
            return None;
        }
        let (Some(previous_max), Some(previous_buckets)) = (
            sysctl_read("net.netfilter.nf_conntrack_max"),
            sysctl_read("net.netfilter.nf_conntrack_buckets"),
        ) else {
            notes.push(
                "kernel: host conntrack sysctls unreadable (nf_conntrack not loaded?); not tuned"
                    .to_owned(),
            );
            return None;
        };
        if previous_max >= needed {
            notes.push(format!(
                "kernel: host nf_conntrack_max {previous_max} already >= {needed}"
            ));
            return None;
        }
        let buckets = (needed / 2).next_power_of_two().max(previous_buckets);
        let state = format!("{} {previous_max} {previous_buckets}\n", std::process::id());
        if let Err(error) = fs::write(HOST_CONNTRACK_STATE, state) {
            notes.push(format!("kernel: cannot record host conntrack values in {HOST_CONNTRACK_STATE} ({error}); not tuned"));
            return None;
        }
        let result = sysctl_write("net.netfilter.nf_conntrack_max", needed)
            .and_then(|()| sysctl_write("net.netfilter.nf_conntrack_buckets", buckets));
        match result {
            Ok(()) => {
                notes.push(format!(
                    "kernel: host nf_conntrack_max {previous_max} -> {needed}, buckets {previous_buckets} -> {buckets} for the run (restored after)"
                ));
                Some(HostConntrack {
                    previous_max,
                    previous_buckets,
                })
            }
            Err(error) => {
                let _ = sysctl_write("net.netfilter.nf_conntrack_max", previous_max);
                let _ = fs::remove_file(HOST_CONNTRACK_STATE);
                notes.push(format!("kernel: raising host conntrack limits failed ({error}); kernel capped at {previous_max} entries"));
                None
            }
        }
    }
}

impl Drop for HostConntrack {
    fn drop(&mut self) {
        let _ = sysctl_write("net.netfilter.nf_conntrack_buckets", self.previous_buckets);
        let _ = sysctl_write("net.netfilter.nf_conntrack_max", self.previous_max);
        let _ = fs::remove_file(HOST_CONNTRACK_STATE);
    }
}

/// egw-gateway started by the bench itself (not `Lab::start_gateway`) so it can choose the
/// worker count and the route table.
struct EgwProcess {
    child: ScopedChild,
    table_path: PathBuf,
}

impl EgwProcess {
    fn start(
        lab: &Lab,
        binary: &Path,
        workers: u32,
        flow_capacity_per_core: u64,
        table_yaml: Option<String>,
    ) -> Result<Self, CompareError> {
        let gw = lab.gateway_namespace();
        lab.run_in(
            &gw,
            "sysctl",
            &[
                "-q".to_owned(),
                "-w".to_owned(),
                "net.ipv4.ip_forward=0".to_owned(),
            ],
            Duration::from_secs(20),
        )?;
        let dir = lab.workdir();
        let mut config = EgwGatewayConfig::for_lab(lab.config(), dir);
        config.workers = workers;
        let table = match table_yaml {
            Some(yaml) => yaml,
            None => RouteTable::for_lab(lab.config(), 1).to_yaml()?,
        };
        write_atomically(&config.route_table_file, &table)?;
        let config_path = dir.join("egw-bench-gateway.yaml");
        // Sized like the kernel's conntrack (egw's default is 256 k flows per core).
        let yaml = format!(
            "{}conntrack:\n  capacity_per_core: {flow_capacity_per_core}\n",
            config.to_yaml()?
        );
        write_atomically(&config_path, &yaml)?;
        let mut child = lab.spawn_in(
            &gw,
            "egw-gateway",
            binary,
            &["--config".to_owned(), config_path.display().to_string()],
        )?;
        let socket = config.control.unix_socket.clone();
        let start = Instant::now();
        while !socket.exists() {
            if let Some(status) = child.exited() {
                return Err(step(
                    "egw-gateway exited",
                    format!("{status}: {}", child.log_tail(3000)),
                ));
            }
            if start.elapsed() > GATEWAY_READY_TIMEOUT {
                return Err(step("egw-gateway not ready", child.log_tail(3000)));
            }
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(RELOAD_SETTLE);
        Ok(EgwProcess {
            child,
            table_path: config.route_table_file,
        })
    }

    fn check_alive(&mut self) -> Result<(), CompareError> {
        match self.child.exited() {
            Some(status) => Err(step(
                "egw-gateway died",
                format!("{status}: {}", self.child.log_tail(3000)),
            )),
            None => Ok(()),
        }
    }
}

/// Removes terminal colour sequences (`ESC [ ... letter`) from log text.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A route table that forwards every pod's traffic unchanged: same AF_XDP path, no NAT.
pub fn bypass_route_table() -> String {
    format!(
        "generation: 1\npools: []\npolicies:\n- name: bypass-all\n  rules:\n  - destination: 0.0.0.0/0\n    bypass: true\nsources:\n- cidr: {POD_CIDR}\n  policy: bypass-all\n"
    )
}

fn lab_for(settings: &CompareSettings, workers: u32) -> Result<Lab, CompareError> {
    let mut config = LabConfig::new(workers as usize, settings.bench_bin.clone())?;
    // One gateway worker per veth queue.
    config.gateway_queues = u16::try_from(workers).unwrap_or(u16::MAX);
    Ok(Lab::build(config)?)
}

fn read_in(lab: &Lab, namespace: &str, path: &str) -> Result<String, CompareError> {
    Ok(lab
        .run_in(
            namespace,
            "cat",
            &[path.to_owned()],
            Duration::from_secs(20),
        )?
        .stdout
        .trim()
        .to_owned())
}

fn offload_state(lab: &Lab, namespace: &str, device: &str) -> String {
    lab.run_in(
        namespace,
        "ethtool",
        &["-k".to_owned(), device.to_owned()],
        Duration::from_secs(20),
    )
    .map(|output| {
        output
            .stdout
            .lines()
            .filter(|line| {
                line.starts_with("generic-receive-offload") || line.starts_with("rx-gro-list")
            })
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(", ")
    })
    .unwrap_or_else(|error| format!("unknown ({error})"))
}

/// Builds a lab, starts `contestant`, runs every point.
fn run_contestant(
    settings: &CompareSettings,
    contestant: Contestant,
    workers: u32,
    gateway_bin: Option<&Path>,
    notes: &mut Vec<String>,
) -> Result<Vec<PointResult>, CompareError> {
    if settings.progress {
        eprintln!("egw-bench: {} with {workers} worker(s)", contestant.label());
    }
    let mut lab = lab_for(settings, workers)?;
    let gw = lab.gateway_namespace();
    let inet = lab.inet_namespace();
    let mut egw = None;
    let expected: Vec<Ipv4Addr> = match contestant {
        Contestant::Ceiling => lab.config().pods.iter().map(|pod| pod.address).collect(),
        _ => lab
            .config()
            .pods
            .iter()
            .map(|pod| lab.config().pool_address(&pod.pool))
            .collect::<Result<_, _>>()?,
    };
    match contestant {
        Contestant::Kernel => {
            lab.start_gateway(Gateway::Kernel)?;
            let needed = conntrack_needed(settings);
            let host_max = sysctl_read("net.netfilter.nf_conntrack_max").unwrap_or(needed);
            let wanted = needed.min(host_max);
            let set = lab.run_in(
                &gw,
                "sysctl",
                &[
                    "-q".to_owned(),
                    "-w".to_owned(),
                    format!("net.netfilter.nf_conntrack_max={wanted}"),
                ],
                Duration::from_secs(20),
            );
            let actual =
                read_in(&lab, &gw, "/proc/sys/net/netfilter/nf_conntrack_max").unwrap_or_default();
            let buckets = read_in(&lab, &gw, "/proc/sys/net/netfilter/nf_conntrack_buckets")
                .unwrap_or_default();
            notes.push(format!(
                "kernel: gateway namespace nf_conntrack_max={actual} (wanted {needed}{}), buckets={buckets}; GRO gw-in: {}; gw-out: {}",
                set.err().map(|error| format!("; setting failed: {error}")).unwrap_or_default(),
                offload_state(&lab, &gw, GW_INSIDE_IF),
                offload_state(&lab, &gw, "gw-out"),
            ));
        }
        Contestant::Egw | Contestant::Ceiling => {
            let binary = gateway_bin.ok_or_else(|| step("egw-gateway", "binary not found"))?;
            let table = (contestant == Contestant::Ceiling).then(bypass_route_table);
            if contestant == Contestant::Ceiling {
                lab.run_in(
                    &inet,
                    "ip",
                    &[
                        "route",
                        "add",
                        POD_CIDR,
                        "via",
                        &GW_OUTSIDE_ADDRESS.to_string(),
                    ]
                    .map(str::to_owned),
                    Duration::from_secs(20),
                )?;
            }
            let capacity = conntrack_needed(settings);
            let process = EgwProcess::start(&lab, binary, workers, capacity, table)?;
            notes.push(format!(
                "{}: egw-gateway workers={workers}, conntrack capacity_per_core={capacity}, route table {}; GRO gw-in: {}",
                contestant.label(),
                process.table_path.display(),
                offload_state(&lab, &gw, GW_INSIDE_IF)
            ));
            egw = Some(process);
        }
    }
    let gateway_mac = read_in(&lab, &gw, &format!("/sys/class/net/{GW_INSIDE_IF}/address"))?;
    let baseline = {
        let before = CpuSample::now()?;
        thread::sleep(BASELINE_WINDOW);
        CpuSample::now()?.since(&before).utilisation()
    };
    let mut results = Vec::new();
    for (index, (kind, flows, frame_len)) in planned_points(settings, contestant, workers)
        .into_iter()
        .enumerate()
    {
        if let Some(process) = egw.as_mut() {
            process.check_alive()?;
        }
        let gateway_pid = egw.as_ref().map(|process| process.child.id());
        let point = Point {
            lab: &lab,
            settings,
            contestant,
            workers,
            kind,
            flows,
            frame_len,
            index,
            expected: &expected,
            gateway_mac: &gateway_mac,
            baseline,
            gateway_pid,
        };
        let mut result = point.run().unwrap_or_else(|error| {
            let mut failed = PointResult::skipped(
                contestant,
                workers,
                kind,
                flows,
                frame_len,
                PointStatus::Failed,
                &error.to_string(),
            );
            failed.baseline_utilisation = baseline;
            failed
        });
        if result.status == PointStatus::Failed {
            if let Some(process) = egw.as_ref() {
                result.note = format!(
                    "{}; egw-gateway log tail: {}",
                    result.note,
                    strip_ansi(&process.child.log_tail(1500))
                );
            }
        }
        if settings.progress {
            eprintln!(
                "egw-bench: {:<7} {:?} flows={:<8} size={:<5} -> {:.0}/s delivered, loss {:.2}%, cpu {} ns/unit{}",
                contestant.label(),
                kind,
                flows,
                frame_len,
                result.delivered_per_s,
                result.loss_fraction * 100.0,
                result.cpu_ns_per_unit_attributed.map_or("-".to_owned(), |ns| format!("{ns:.0}")),
                if result.note.is_empty() { String::new() } else { format!(" ({})", result.note) }
            );
        }
        results.push(result);
    }
    drop(egw);
    lab.teardown()?;
    Ok(results)
}

struct Point<'a> {
    lab: &'a Lab,
    settings: &'a CompareSettings,
    contestant: Contestant,
    workers: u32,
    kind: LoadKind,
    flows: u32,
    frame_len: usize,
    index: usize,
    expected: &'a [Ipv4Addr],
    gateway_mac: &'a str,
    baseline: f64,
    gateway_pid: Option<u32>,
}

impl Point<'_> {
    fn file(&self, name: &str) -> PathBuf {
        self.lab
            .workdir()
            .join(format!("point{}-{name}", self.index))
    }

    fn wait_for(
        child: &mut ScopedChild,
        path: &Path,
        timeout: Duration,
    ) -> Result<(), CompareError> {
        let start = Instant::now();
        while !path.exists() {
            if let Some(status) = child.exited() {
                return Err(step(
                    format!("{} exited early", child.label()),
                    format!("{status}: {}", child.log_tail(3000)),
                ));
            }
            if start.elapsed() > timeout {
                return Err(step(
                    format!("{} not ready", child.label()),
                    child.log_tail(3000),
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CompareError> {
        let text = fs::read_to_string(path).map_err(|source| CompareError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text)
            .map_err(|error| step(format!("parsing {}", path.display()), error))
    }

    fn spawn_generators(
        &self,
        tag: &str,
        count: u64,
        seconds: u64,
    ) -> Result<Vec<(ScopedChild, PathBuf)>, CompareError> {
        let lab = self.lab;
        let flows_per_generator = self.flows.div_ceil(self.workers).max(1);
        let cps_target = SocketAddrV4::new(MIRROR_ADDRESS, CPS_PORT);
        let mut generators = Vec::new();
        for (generator_index, pod) in lab.config().pods.iter().enumerate() {
            let output = self.file(&format!("{tag}{generator_index}.json"));
            let mut args: Vec<String> = match self.kind {
                LoadKind::Udp => {
                    let mut args: Vec<String> = vec![
                        "generate".into(),
                        "--interface".into(),
                        HOST_IF.into(),
                        "--destination".into(),
                        MIRROR_ADDRESS.to_string(),
                        "--source".into(),
                        pod.address.to_string(),
                        "--dst-mac".into(),
                        self.gateway_mac.to_owned(),
                        "--flows".into(),
                        flows_per_generator.to_string(),
                        "--size".into(),
                        self.frame_len.to_string(),
                        // Each point its own destination ports: its flows are new to the
                        // gateway unless its own warm-up created them.
                        "--destination-port-base".into(),
                        (FIRST_DESTINATION_PORT + PORTS_PER_POINT * self.index as u32).to_string(),
                    ];
                    if let Some(rate) = self.settings.rate {
                        args.extend(["--rate".into(), rate.to_string()]);
                    }
                    args
                }
                LoadKind::Cps => vec![
                    "generate".into(),
                    "--mode".into(),
                    "tcp".into(),
                    "--target".into(),
                    cps_target.to_string(),
                    "--parallel".into(),
                    self.settings.cps_parallel.to_string(),
                ],
            };
            args.extend([
                "--duration".into(),
                seconds.to_string(),
                "--count".into(),
                count.to_string(),
                "--quiet".into(),
                "--json-out".into(),
                output.display().to_string(),
            ]);
            let namespace = lab.pod_namespace(&pod.name)?;
            let child = lab.spawn_in(
                &namespace,
                &format!("point{}-{tag}{generator_index}", self.index),
                &self.settings.bench_bin,
                &args,
            )?;
            generators.push((child, output));
        }
        Ok(generators)
    }

    /// Waits for every generator; returns their JSON result files.
    fn wait_generators(
        &self,
        generators: Vec<(ScopedChild, PathBuf)>,
        seconds: u64,
    ) -> Result<Vec<PathBuf>, CompareError> {
        let mut failures = Vec::new();
        let mut outputs = Vec::new();
        for (child, output) in generators {
            let label = child.label().to_owned();
            let log = self.lab.workdir().join(format!("{label}.log"));
            match child.wait_or_kill(Duration::from_secs(seconds) + PROCESS_SLACK) {
                Ok(status) if status.success() => outputs.push(output),
                Ok(status) => {
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    let tail: String = text
                        .chars()
                        .rev()
                        .take(2000)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    failures.push(format!("{label}: {status}: {tail}"));
                }
                Err(error) => failures.push(format!("{label}: {error}")),
            }
        }
        if failures.is_empty() {
            Ok(outputs)
        } else {
            Err(step("generator failed", failures.join("; ")))
        }
    }

    fn run(&self) -> Result<PointResult, CompareError> {
        let lab = self.lab;
        let seconds = self.settings.seconds;
        let (ready, stop, received_json) = (
            self.file("receive.ready"),
            self.file("receive.stop"),
            self.file("receive.json"),
        );
        let mut receiver_args: Vec<String> = vec![
            "receive".into(),
            "--interface".into(),
            HOST_IF.into(),
            "--duration".into(),
            (seconds + PROCESS_SLACK.as_secs()).to_string(),
            "--stop-file".into(),
            stop.display().to_string(),
            "--ready-file".into(),
            ready.display().to_string(),
            "--json-out".into(),
            received_json.display().to_string(),
        ];
        for source in self.expected {
            receiver_args.extend(["--expect-source".into(), source.to_string()]);
        }
        let cps_target = SocketAddrV4::new(MIRROR_ADDRESS, CPS_PORT);
        if self.kind == LoadKind::Cps {
            receiver_args.extend([
                "--tcp-listen".into(),
                cps_target.to_string(),
                "--no-udp".into(),
            ]);
        }
        if self.settings.warmup && self.kind == LoadKind::Udp {
            // Every flow once, unmeasured, so the measured run sees established flows rather
            // than flow set-up (the receiver is not running yet, so nothing is counted).
            let count = u64::from(self.flows.div_ceil(self.workers).max(1));
            let warmup = self.spawn_generators("warmup", count, WARMUP_MAX_SECONDS)?;
            self.wait_generators(warmup, WARMUP_MAX_SECONDS)?;
        }
        let mut receiver = lab.spawn_in(
            &lab.inet_namespace(),
            &format!("point{}-receive", self.index),
            &self.settings.bench_bin,
            &receiver_args,
        )?;
        Self::wait_for(&mut receiver, &ready, READY_TIMEOUT)?;

        let gateway_before = self
            .gateway_pid
            .and_then(|pid| process_times(&pid.to_string()));
        let cpu_before = CpuSample::now()?;
        let generators = self.spawn_generators("generate", seconds * COUNT_PER_SECOND, seconds);
        let outputs = generators.and_then(|generators| self.wait_generators(generators, seconds));
        let cpu = CpuSample::now()?.since(&cpu_before);
        let gateway_after = self
            .gateway_pid
            .and_then(|pid| process_times(&pid.to_string()));
        fs::write(&stop, b"stop\n").map_err(|source| CompareError::Io {
            path: stop.clone(),
            source,
        })?;
        let receiver_label = receiver.label().to_owned();
        let receiver_status = receiver.wait_or_kill(Duration::from_secs(10))?;
        let outputs = outputs?;
        if !receiver_status.success() {
            return Err(step(
                receiver_label,
                format!("exited with {receiver_status}"),
            ));
        }
        let received: ReceiveReport = Self::read_json(&received_json)?;
        let mut result = PointResult::skipped(
            self.contestant,
            self.workers,
            self.kind,
            self.flows,
            self.frame_len,
            PointStatus::Ok,
            "",
        );
        result.baseline_utilisation = self.baseline;
        result.cpu = Some(cpu);
        if let (Some(before), Some(after)) = (gateway_before, gateway_after) {
            result.gateway_process = Some(ProcessTimes {
                user_seconds: after.user_seconds - before.user_seconds,
                system_seconds: after.system_seconds - before.system_seconds,
            });
        }
        match self.kind {
            LoadKind::Udp => {
                for output in &outputs {
                    result.generators.push(Self::read_json(output)?);
                }
                result.sent = result.generators.iter().map(|report| report.sent).sum();
                result.delivered = received.packets - received.source_mismatches;
                let seconds = received.seconds.max(f64::EPSILON);
                result.delivered_per_s = result.delivered as f64 / seconds;
            }
            LoadKind::Cps => {
                for output in &outputs {
                    result.connectors.push(Self::read_json(output)?);
                }
                result.sent = result
                    .connectors
                    .iter()
                    .map(|report| report.connected + report.failed)
                    .sum();
                result.delivered = received.tcp_accepted - received.tcp_source_mismatches;
                let seconds = result
                    .connectors
                    .iter()
                    .map(|report| report.seconds)
                    .fold(0.0, f64::max)
                    .max(f64::EPSILON);
                result.delivered_per_s = result.delivered as f64 / seconds;
            }
        }
        if result.sent > 0 {
            result.loss_fraction =
                result.sent.saturating_sub(result.delivered) as f64 / result.sent as f64;
        }
        if result.delivered > 0 {
            let delivered = result.delivered as f64;
            let own_busy = (cpu.busy_cpu_seconds - self.baseline * cpu.total_cpu_seconds).max(0.0);
            result.cpu_ns_per_unit = Some(cpu.busy_cpu_seconds * 1e9 / delivered);
            result.cpu_ns_per_unit_net = Some(own_busy * 1e9 / delivered);
            let user: f64 = result
                .generators
                .iter()
                .map(|report| report.process.user_seconds)
                .sum::<f64>()
                + result
                    .connectors
                    .iter()
                    .map(|report| report.process.user_seconds)
                    .sum::<f64>()
                + received.process.user_seconds
                + result
                    .gateway_process
                    .map_or(0.0, |times| times.user_seconds);
            result.cpu_ns_per_unit_attributed =
                Some((cpu.kernel_cpu_seconds + user) * 1e9 / delivered);
        }
        let mismatches = received.source_mismatches + received.tcp_source_mismatches;
        if mismatches > 0 {
            result.note = format!(
                "{mismatches} arrived from the wrong source (first: {})",
                received.first_mismatch.clone().unwrap_or_default()
            );
            result.status = PointStatus::Failed;
        } else if result.delivered == 0 {
            result.note = "nothing arrived".to_owned();
            result.status = PointStatus::Failed;
        }
        result.receiver = Some(received);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_778), (2026, 11, 21));
    }

    #[test]
    fn bypass_table_routes_the_pod_cidr_without_nat() {
        let table = bypass_route_table();
        assert!(table.contains("bypass: true"));
        assert!(table.contains("cidr: 10.244.0.0/16"));
        assert!(!table.contains("snat"));
    }

    #[test]
    fn quick_profile_is_short_and_points_are_planned_per_contestant() {
        let settings =
            CompareSettings::for_profile(Profile::Quick, PathBuf::from("/x"), PathBuf::from("/y"));
        assert!(
            settings.estimated_seconds() <= 180,
            "{}",
            settings.estimated_seconds()
        );
        let kernel = planned_points(&settings, Contestant::Kernel, 1);
        assert_eq!(kernel.len(), 5);
        assert_eq!(kernel[0].0, LoadKind::Cps);
        // Every point's destination ports fit below 65536 with room for 1 M flows.
        let needed = crate::generate::FlowPlan::new(1_000_000, 1024, 0)
            .unwrap()
            .destination_ports;
        assert!(needed < PORTS_PER_POINT);
        assert!(FIRST_DESTINATION_PORT + PORTS_PER_POINT * (MAX_POINTS as u32 + 1) < 65_536);
        let mut too_many = settings.clone();
        too_many.flows = vec![MAX_FLOWS + 1];
        assert!(too_many.validate().is_err());
        too_many.flows = (1..=300).collect();
        assert!(too_many.validate().is_err());
        // No return path for TCP when nothing is translated: the ceiling runs UDP only.
        assert_eq!(planned_points(&settings, Contestant::Ceiling, 1).len(), 4);
        let full =
            CompareSettings::for_profile(Profile::Full, PathBuf::from("/x"), PathBuf::from("/y"));
        assert_eq!(planned_points(&full, Contestant::Egw, 1).len(), 10);
        assert_eq!(conntrack_needed(&full), (3 * 1_101_000 + 500_000) * 5 / 4);
    }

    #[test]
    fn colour_codes_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[2mINFO\u{1b}[0m ok \u{1b}[3mx\u{1b}[0m=1"),
            "INFO ok x=1"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn contestants_parse_by_label() {
        for contestant in Contestant::ALL {
            assert_eq!(Contestant::parse(contestant.label()), Some(contestant));
        }
        assert_eq!(Contestant::parse("nginx"), None);
    }
}
