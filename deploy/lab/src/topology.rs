//! The lab topology and its RAII guard.
//!
//! ```text
//!  [prefix]pod-a (eth0 10.244.1.10/16) ─┐
//!  [prefix]pod-b (eth0 10.244.1.11/16) ─┤ [prefix]switch: br0
//!                                       └─ gw-in 10.244.0.1/16  [prefix]gw  gw-out 203.0.113.1/24
//!                                                                          + 198.51.100.x/32 (SNAT)
//!                                                  [prefix]inet: eth0 203.0.113.254/24, mirror 203.0.113.10
//!                                                                route 198.51.100.0/24 via 203.0.113.1
//! ```
//! Every interface is created directly inside a lab namespace, so nothing ever appears in (or
//! collides with) the host's root namespace, and deleting the namespaces removes everything.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd::{self, CommandOutput};
use crate::error::{LabError, Result};
use crate::gateway::{self, Gateway, RouteTable, KERNEL_NFT_TABLE};
use crate::probe::{IcmpEcho, UploadReport};

/// Every lab namespace name starts with this; `egw-lab down` never touches anything else.
pub const LAB_PREFIX_ROOT: &str = "egwlab-";
pub const POD_CIDR: &str = "10.244.0.0/16";
pub const POD_PREFIX_LEN: u8 = 16;
pub const GW_INSIDE_IF: &str = "gw-in";
pub const GW_OUTSIDE_IF: &str = "gw-out";
pub const GW_INSIDE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
pub const GW_OUTSIDE_ADDRESS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const INET_ROUTER_ADDRESS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
pub const TRANSIT_PREFIX_LEN: u8 = 24;
pub const SNAT_CIDR: &str = "198.51.100.0/24";
pub const MIRROR_ADDRESS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const MIRROR_TCP_PORT: u16 = 8080;
pub const MIRROR_UDP_PORT: u16 = 8081;
/// Interface name of a pod's (and the internet host's) link, inside its own namespace.
pub const HOST_IF: &str = "eth0";
const BRIDGE: &str = "br0";
const GW_SWITCH_PORT: &str = "gwport";
const INET_SWITCH_PORT: &str = "inetport";
const MAX_PODS: usize = 200;

/// How long the mirror may take to bind its sockets.
pub const MIRROR_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long egw-gateway may take to create its control socket.
pub const GATEWAY_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one probe process (the 200 MB upload gets [`UPLOAD_TIMEOUT`] instead).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// Mirror TCP endpoint.
pub fn mirror_tcp() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(MIRROR_ADDRESS, MIRROR_TCP_PORT))
}

/// Mirror UDP endpoint.
pub fn mirror_udp() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(MIRROR_ADDRESS, MIRROR_UDP_PORT))
}

/// An SNAT pool: a name (as in the route table) and its external address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    pub address: Ipv4Addr,
}

/// A pod: namespace suffix, address, and the pool its traffic must leave through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub name: String,
    pub address: Ipv4Addr,
    pub pool: String,
}

/// How the gateway is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arms {
    /// Pods on `gw-in`, internet on `gw-out`.
    #[default]
    Two,
    /// Pods and internet on the same bridge, both reached through `gw-in`.
    One,
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabConfig {
    pub pods: Vec<PodSpec>,
    pub pools: Vec<PoolSpec>,
    /// The egw-lab binary, run inside namespaces for the mirror and probes.
    pub lab_binary: PathBuf,
    /// Namespace name prefix; `None` picks a unique `egwlab-<pid>-<n>-`.
    pub prefix: Option<String>,
    pub arms: Arms,
    /// RX/TX queues of the gateway's veths: one egw-gateway worker serves each queue, so a
    /// multi-worker run needs as many queues as workers.
    pub gateway_queues: u16,
    /// egw only: serve `/metrics` on [`gateway::EGW_METRICS_LISTEN`] in the gateway namespace and
    /// write the NAT event log to `<workdir>/`[`gateway::EGW_NAT_LOG_DIR`]. Off by default.
    pub egw_observability: bool,
}

impl LabConfig {
    /// `pod_count` pods `pod-a`, `pod-b`, ... at 10.244.1.10, .11, ..., alternating between
    /// `pool-a` (198.51.100.1) and `pool-b` (198.51.100.2).
    pub fn new(pod_count: usize, lab_binary: PathBuf) -> Result<Self> {
        if !(1..=MAX_PODS).contains(&pod_count) {
            return Err(LabError::Config(format!(
                "pod count must be between 1 and {MAX_PODS}, got {pod_count}"
            )));
        }
        let pools = vec![
            PoolSpec {
                name: "pool-a".to_owned(),
                address: Ipv4Addr::new(198, 51, 100, 1),
            },
            PoolSpec {
                name: "pool-b".to_owned(),
                address: Ipv4Addr::new(198, 51, 100, 2),
            },
        ];
        let pods = (0..pod_count)
            .map(|index| {
                let name = match u8::try_from(index) {
                    Ok(letter @ 0..=25) => format!("pod-{}", char::from(b'a' + letter)),
                    _ => format!("pod-{index}"),
                };
                PodSpec {
                    name,
                    address: Ipv4Addr::new(10, 244, 1, 10 + index as u8),
                    pool: pools[index % pools.len()].name.clone(),
                }
            })
            .collect();
        Ok(LabConfig {
            pods,
            pools,
            lab_binary,
            prefix: None,
            arms: Arms::Two,
            gateway_queues: 1,
            egw_observability: false,
        })
    }

    /// The gateway interface facing the internet: `gw-out`, or `gw-in` when one-armed.
    pub fn outside_interface(&self) -> &'static str {
        match self.arms {
            Arms::Two => GW_OUTSIDE_IF,
            Arms::One => GW_INSIDE_IF,
        }
    }

    /// External address of `pool`.
    pub fn pool_address(&self, pool: &str) -> Result<Ipv4Addr> {
        self.pools
            .iter()
            .find(|candidate| candidate.name == pool)
            .map(|candidate| candidate.address)
            .ok_or_else(|| LabError::Config(format!("unknown pool {pool:?}")))
    }

    /// The pod called `name`.
    pub fn pod(&self, name: &str) -> Result<&PodSpec> {
        self.pods
            .iter()
            .find(|pod| pod.name == name)
            .ok_or_else(|| LabError::Config(format!("unknown pod {name:?}")))
    }

    /// The address `pod`'s traffic must appear from on the internet side.
    pub fn expected_egress(&self, pod: &str) -> Result<Ipv4Addr> {
        self.pool_address(&self.pod(pod)?.pool)
    }

    fn validate(&self) -> Result<()> {
        for pod in &self.pods {
            self.pool_address(&pod.pool)?;
            if self
                .pods
                .iter()
                .filter(|other| other.name == pod.name)
                .count()
                > 1
            {
                return Err(LabError::Config(format!(
                    "duplicate pod name {:?}",
                    pod.name
                )));
            }
        }
        for pod in &self.pods {
            if !is_name_safe(&pod.name) {
                return Err(LabError::Config(format!(
                    "pod name {:?} must be non-empty lower-case letters, digits and '-'",
                    pod.name
                )));
            }
        }
        if let Some(prefix) = &self.prefix {
            // Build removes stale namespaces with its prefix first, so a prefix must name
            // exactly one lab: `egwlab-<id>-`, never the bare root that matches all labs.
            let id = prefix
                .strip_prefix(LAB_PREFIX_ROOT)
                .and_then(|rest| rest.strip_suffix('-'));
            if !id.is_some_and(is_name_safe) {
                return Err(LabError::Config(format!(
                    "prefix {prefix:?} must look like {LAB_PREFIX_ROOT}<id>- (id: lower-case letters, digits, '-')"
                )));
            }
        }
        Ok(())
    }
}

fn is_name_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

/// Fails unless the effective uid is 0. Read from /proc to stay free of unsafe FFI.
pub fn require_root() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|source| LabError::io("reading /proc/self/status", source))?;
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse::<u32>().ok())
        .ok_or_else(|| LabError::BadOutput {
            command: "/proc/self/status".to_owned(),
            output: "no Uid line".to_owned(),
        })?;
    if euid == 0 {
        Ok(())
    } else {
        Err(LabError::NotRoot { euid })
    }
}

/// Prefixes of labs alive in this process, for the signal handler.
static ACTIVE_PREFIXES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

fn register_prefix(prefix: &str) {
    if let Ok(mut active) = ACTIVE_PREFIXES.lock() {
        active.push(prefix.to_owned());
    }
}

fn unregister_prefix(prefix: &str) {
    if let Ok(mut active) = ACTIVE_PREFIXES.lock() {
        active.retain(|candidate| candidate != prefix);
    }
}

/// Removes the namespaces of every lab alive in this process (used on SIGINT/SIGTERM, when
/// destructors will not run). Returns the namespaces removed.
pub fn teardown_active_labs() -> Vec<String> {
    let prefixes = ACTIVE_PREFIXES
        .lock()
        .map(|active| active.clone())
        .unwrap_or_default();
    prefixes
        .iter()
        .flat_map(|prefix| remove_namespaces_with_prefix(prefix).unwrap_or_default())
        .collect()
}

/// Spawns a thread that, on SIGINT or SIGTERM, tears down every active lab and exits with
/// 128 + signal number.
pub fn install_signal_teardown() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|source| LabError::io("installing signal handlers", source))?;
    thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let removed = teardown_active_labs();
            eprintln!(
                "egw-lab: signal {signal}: removed {} namespaces",
                removed.len()
            );
            std::process::exit(128 + signal);
        }
    });
    Ok(())
}

/// Names of all network namespaces (`ip netns list`).
pub fn list_namespaces() -> Result<Vec<String>> {
    let output = cmd::run_args("ip", ["netns", "list"])?;
    Ok(output
        .stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Lab namespaces whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Result<Vec<String>> {
    Ok(list_namespaces()?
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .collect())
}

/// Kills every process inside namespace `name` (all of them were started by a lab) and
/// deletes it. A namespace that vanished meanwhile is not an error.
fn remove_namespace(name: &str) -> Result<()> {
    let own_pid = std::process::id().to_string();
    if let Ok(output) = cmd::run_args("ip", ["netns", "pids", name]) {
        let pids: Vec<&str> = output
            .stdout
            .split_whitespace()
            .filter(|pid| *pid != own_pid)
            .collect();
        if !pids.is_empty() {
            let mut args = vec!["-KILL"];
            args.extend(pids);
            // A pid may exit between listing and killing; that is the goal anyway.
            let _ = cmd::run_args("kill", args);
        }
    }
    match cmd::run_args("ip", ["netns", "delete", name]) {
        Ok(_) => Ok(()),
        Err(error) => {
            if list_namespaces()?.iter().any(|existing| existing == name) {
                Err(error)
            } else {
                Ok(())
            }
        }
    }
}

/// Removes lab work directories (logs, gateway config) in the temp dir whose name starts with
/// `prefix` and whose owner `keep` does not veto. Best effort: they are only disk clutter.
fn remove_workdirs(prefix: &str, keep: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && !keep(&name) && entry.path().is_dir() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether the process that created lab `name` (`egwlab-<pid>-...`) is still running.
fn lab_owner_alive(name: &str) -> bool {
    name.strip_prefix(LAB_PREFIX_ROOT)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes every namespace starting with `prefix` (which must start with [`LAB_PREFIX_ROOT`]),
/// killing processes inside first, and the matching work directories. Returns the namespaces
/// removed.
pub fn remove_namespaces_with_prefix(prefix: &str) -> Result<Vec<String>> {
    if !prefix.starts_with(LAB_PREFIX_ROOT) {
        return Err(LabError::Config(format!(
            "refusing to remove namespaces for prefix {prefix:?}: it does not start with {LAB_PREFIX_ROOT:?}"
        )));
    }
    let names = namespaces_with_prefix(prefix)?;
    for name in &names {
        remove_namespace(name)?;
    }
    remove_workdirs(prefix, |_| false);
    Ok(names)
}

/// Removes namespaces of labs whose creating process no longer exists (prefix
/// `egwlab-<pid>-...` with no `/proc/<pid>`): leftovers of a SIGKILLed run. Labs of live
/// processes, e.g. tests running in parallel, are left alone.
pub fn remove_stale_labs() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in namespaces_with_prefix(LAB_PREFIX_ROOT)? {
        if !lab_owner_alive(&name) {
            remove_namespace(&name)?;
            removed.push(name);
        }
    }
    remove_workdirs(LAB_PREFIX_ROOT, lab_owner_alive);
    Ok(removed)
}

/// A process the lab started; killed when dropped.
pub struct ScopedChild {
    label: String,
    child: Child,
    log: Option<PathBuf>,
}

impl ScopedChild {
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` if it already exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Last `max_bytes` of its log file, for error messages.
    pub fn log_tail(&self, max_bytes: usize) -> String {
        let Some(path) = &self.log else {
            return String::new();
        };
        let text = std::fs::read(path).unwrap_or_default();
        let start = text.len().saturating_sub(max_bytes);
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn stop(mut self) {
        cmd::kill_and_reap(&mut self.child);
    }

    /// Waits up to `timeout` for it to exit by itself; kills it otherwise.
    pub fn wait_or_kill(mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        match cmd::wait_bounded(&mut self.child, timeout) {
            Ok(Some(status)) => Ok(status),
            Ok(None) => {
                cmd::kill_and_reap(&mut self.child);
                Err(LabError::Timeout {
                    command: self.label.clone(),
                    timeout,
                })
            }
            Err(source) => Err(LabError::io(format!("waiting for {}", self.label), source)),
        }
    }
}

impl Drop for ScopedChild {
    fn drop(&mut self) {
        cmd::kill_and_reap(&mut self.child);
    }
}

/// A long-lived TCP connection from a pod to the mirror (see `probe tcp-hold`).
pub struct TcpHold {
    child: ScopedChild,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    first: SocketAddr,
    local: SocketAddr,
}

impl TcpHold {
    const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

    fn next_seen(
        lines: &mpsc::Receiver<String>,
        child: &ScopedChild,
    ) -> Result<(SocketAddr, SocketAddr)> {
        let line = lines
            .recv_timeout(Self::REPLY_TIMEOUT)
            .map_err(|_| LabError::NotReady {
                process: "tcp-hold probe".to_owned(),
                waited: Self::REPLY_TIMEOUT,
                detail: child.log_tail(2000),
            })?;
        let parse = || -> Option<(SocketAddr, SocketAddr)> {
            let mut fields = line.split_whitespace();
            let seen = fields.next()?.strip_prefix("seen=")?.parse().ok()?;
            let local = fields.next()?.strip_prefix("local=")?.parse().ok()?;
            Some((seen, local))
        };
        parse().ok_or_else(|| LabError::BadOutput {
            command: "egw-lab probe tcp-hold".to_owned(),
            output: line.clone(),
        })
    }

    /// Source the mirror saw when the connection was opened.
    pub fn first_seen(&self) -> SocketAddr {
        self.first
    }

    /// The pod-side (pre-NAT) address of the connection.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Asks again over the same connection.
    pub fn seen_now(&mut self) -> Result<SocketAddr> {
        self.stdin
            .write_all(b"again\n")
            .and_then(|()| self.stdin.flush())
            .map_err(|source| LabError::io("signalling tcp-hold probe", source))?;
        let (seen, local) = Self::next_seen(&self.lines, &self.child)?;
        if local != self.local {
            return Err(LabError::ProbeFailed(format!(
                "tcp-hold reconnected: local {local} != {}",
                self.local
            )));
        }
        Ok(seen)
    }
}

/// Per-pod result of `probe icmp` plus the mirror's record of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpObservation {
    pub reply_from: Ipv4Addr,
    pub egress: Ipv4Addr,
}

enum ActiveGateway {
    Kernel,
    Egw {
        process: ScopedChild,
        binary: PathBuf,
        control_socket: PathBuf,
        route_table_file: PathBuf,
        generation: u64,
    },
}

/// A built lab. Dropping it kills every process it started and deletes every namespace it
/// created, also while unwinding from a panic.
pub struct Lab {
    prefix: String,
    config: LabConfig,
    workdir: tempfile::TempDir,
    namespaces: Vec<String>,
    mirror: Option<ScopedChild>,
    gateway: Option<ActiveGateway>,
    controller: Option<ScopedChild>,
}

fn ip(args: &[&str]) -> Result<CommandOutput> {
    cmd::run_args("ip", args)
}

/// `ip -n <namespace> <words...>`; every word is a lab-chosen name or address without spaces.
fn ipn(namespace: &str, words: &str) -> Result<CommandOutput> {
    let mut args = vec!["-n", namespace];
    args.extend(words.split_whitespace());
    ip(&args)
}

impl Lab {
    /// Builds the topology only (no mirror, no gateway). Partial builds are torn down.
    pub fn build(config: LabConfig) -> Result<Lab> {
        require_root()?;
        config.validate()?;
        let prefix = config.prefix.clone().unwrap_or_else(|| {
            format!(
                "{LAB_PREFIX_ROOT}{}-{}-",
                std::process::id(),
                LAB_COUNTER.fetch_add(1, Ordering::SeqCst)
            )
        });
        // A previous process with the same pid may have been SIGKILLed mid-run.
        remove_namespaces_with_prefix(&prefix)?;
        let workdir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir()
            .map_err(|source| LabError::io("creating lab work directory", source))?;
        register_prefix(&prefix);
        let mut lab = Lab {
            prefix,
            config,
            workdir,
            namespaces: Vec::new(),
            mirror: None,
            gateway: None,
            controller: None,
        };
        lab.create_topology()?;
        Ok(lab)
    }

    /// Builds the topology, starts the mirror and the gateway.
    pub fn up(config: LabConfig, gateway: Gateway) -> Result<Lab> {
        let mut lab = Lab::build(config)?;
        lab.start_mirror()?;
        lab.start_gateway(gateway)?;
        Ok(lab)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn config(&self) -> &LabConfig {
        &self.config
    }

    /// Directory holding logs, gateway config and control socket; removed with the lab.
    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    /// Namespaces created so far.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    pub fn pod_namespace(&self, pod: &str) -> Result<String> {
        Ok(format!("{}{}", self.prefix, self.config.pod(pod)?.name))
    }

    pub fn switch_namespace(&self) -> String {
        format!("{}switch", self.prefix)
    }

    pub fn gateway_namespace(&self) -> String {
        format!("{}gw", self.prefix)
    }

    pub fn inet_namespace(&self) -> String {
        format!("{}inet", self.prefix)
    }

    fn add_namespace(&mut self, name: String) -> Result<()> {
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn sysctl(namespace: &str, settings: &[String]) -> Result<()> {
        let mut args = vec!["-q".to_owned(), "-w".to_owned()];
        args.extend(settings.iter().cloned());
        cmd::run(
            cmd::in_netns(namespace, "sysctl", &args),
            cmd::ADMIN_COMMAND_TIMEOUT,
        )?;
        Ok(())
    }

    /// Veths default to TX checksum offload: the sender leaves only the pseudo-header sum in
    /// the TCP/UDP checksum field (CHECKSUM_PARTIAL) and nobody ever completes it, because a
    /// veth peer trusts the skb metadata. AF_XDP (and XDP) see raw frame bytes without that
    /// metadata, so egw would forward packets with wrong checksums that the real receiver
    /// drops. With TX checksumming off, the stack writes complete checksums (and, since TSO
    /// needs checksum offload, segments to MTU-sized frames) before the frame hits the wire.
    fn disable_tx_offload(namespace: &str, device: &str) -> Result<()> {
        cmd::run(
            cmd::in_netns(namespace, "ethtool", ["-K", device, "tx", "off"]),
            cmd::ADMIN_COMMAND_TIMEOUT,
        )?;
        Ok(())
    }

    fn create_topology(&mut self) -> Result<()> {
        let switch = self.switch_namespace();
        let gw = self.gateway_namespace();
        let inet = self.inet_namespace();
        for namespace in [&switch, &gw, &inet] {
            self.add_namespace(namespace.clone())?;
        }
        ipn(&switch, &format!("link add {BRIDGE} type bridge"))?;
        ipn(&switch, &format!("link set {BRIDGE} up"))?;

        let pods = self.config.pods.clone();
        for (index, pod) in pods.iter().enumerate() {
            let namespace = format!("{}{}", self.prefix, pod.name);
            self.add_namespace(namespace.clone())?;
            let port = format!("p{index}");
            ipn(
                &namespace,
                &format!("link add {HOST_IF} type veth peer name {port} netns {switch}"),
            )?;
            ipn(&switch, &format!("link set {port} master {BRIDGE} up"))?;
            ipn(
                &namespace,
                &format!("addr add {}/{POD_PREFIX_LEN} dev {HOST_IF}", pod.address),
            )?;
            ipn(&namespace, &format!("link set {HOST_IF} up"))?;
            ipn(
                &namespace,
                &format!("route add default via {GW_INSIDE_ADDRESS}"),
            )?;
            Self::disable_tx_offload(&namespace, HOST_IF)?;
            Self::disable_tx_offload(&switch, &port)?;
        }

        let queues = self.config.gateway_queues.max(1);
        let q = format!("numtxqueues {queues} numrxqueues {queues}");
        ipn(
            &gw,
            &format!("link add {GW_INSIDE_IF} {q} type veth peer name {GW_SWITCH_PORT} {q} netns {switch}"),
        )?;
        ipn(
            &switch,
            &format!("link set {GW_SWITCH_PORT} master {BRIDGE} up"),
        )?;
        ipn(
            &gw,
            &format!("addr add {GW_INSIDE_ADDRESS}/{POD_PREFIX_LEN} dev {GW_INSIDE_IF}"),
        )?;
        let outside = self.config.outside_interface();
        match self.config.arms {
            Arms::Two => {
                ipn(
                    &gw,
                    &format!("link add {GW_OUTSIDE_IF} {q} type veth peer name {HOST_IF} {q} netns {inet}"),
                )?;
            }
            // The internet host hangs off the same bridge: pods and internet share gw-in.
            Arms::One => {
                ipn(
                    &inet,
                    &format!(
                        "link add {HOST_IF} type veth peer name {INET_SWITCH_PORT} netns {switch}"
                    ),
                )?;
                ipn(
                    &switch,
                    &format!("link set {INET_SWITCH_PORT} master {BRIDGE} up"),
                )?;
                Self::disable_tx_offload(&switch, INET_SWITCH_PORT)?;
            }
        }
        ipn(
            &gw,
            &format!("addr add {GW_OUTSIDE_ADDRESS}/{TRANSIT_PREFIX_LEN} dev {outside}"),
        )?;
        // The SNAT addresses live on the outside interface as /32s so the kernel answers ARP
        // for them; the internet side then simply routes the pool prefix to the gateway.
        for pool in self.config.pools.clone() {
            ipn(&gw, &format!("addr add {}/32 dev {outside}", pool.address))?;
        }
        ipn(&gw, &format!("link set {GW_INSIDE_IF} up"))?;
        ipn(&gw, &format!("link set {outside} up"))?;
        ipn(
            &inet,
            &format!("addr add {INET_ROUTER_ADDRESS}/{TRANSIT_PREFIX_LEN} dev {HOST_IF}"),
        )?;
        ipn(
            &inet,
            &format!("addr add {MIRROR_ADDRESS}/32 dev {HOST_IF}"),
        )?;
        ipn(&inet, &format!("link set {HOST_IF} up"))?;
        ipn(
            &inet,
            &format!("route add {SNAT_CIDR} via {GW_OUTSIDE_ADDRESS}"),
        )?;

        // rp_filter would drop un-NATed or asymmetric packets in ways that hide gateway bugs
        // behind "no reply"; the tests want to see exactly what the gateway emits.
        let mut gw_settings = vec!["net.ipv4.ip_forward=1".to_owned()];
        for device in ["all", "default", GW_INSIDE_IF, outside] {
            gw_settings.push(format!("net.ipv4.conf.{device}.rp_filter=0"));
        }
        // One-armed, every forwarded packet leaves on the interface it arrived on, which makes
        // the kernel send ICMP redirects to the pods; they would only add noise.
        for device in ["all", "default", GW_INSIDE_IF] {
            gw_settings.push(format!("net.ipv4.conf.{device}.send_redirects=0"));
        }
        Self::sysctl(&gw, &gw_settings)?;
        Self::sysctl(
            &inet,
            &[
                "net.ipv4.conf.all.rp_filter=0".to_owned(),
                format!("net.ipv4.conf.{HOST_IF}.rp_filter=0"),
            ],
        )?;
        Self::disable_tx_offload(&gw, GW_INSIDE_IF)?;
        Self::disable_tx_offload(&switch, GW_SWITCH_PORT)?;
        Self::disable_tx_offload(&inet, HOST_IF)?;
        if self.config.arms == Arms::Two {
            Self::disable_tx_offload(&gw, GW_OUTSIDE_IF)?;
        }
        Ok(())
    }

    /// Spawns `program args` inside `namespace`, output appended to `<workdir>/<label>.log`.
    pub fn spawn_in(
        &self,
        namespace: &str,
        label: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[String],
    ) -> Result<ScopedChild> {
        let log_path = self.workdir.path().join(format!("{label}.log"));
        let log = File::create(&log_path)
            .map_err(|source| LabError::io(format!("creating {}", log_path.display()), source))?;
        let log_err = log
            .try_clone()
            .map_err(|source| LabError::io("duplicating log handle", source))?;
        let mut command = cmd::in_netns(namespace, program, args);
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let description = cmd::describe(&command);
        let child = command.spawn().map_err(|source| LabError::Spawn {
            command: description,
            source,
        })?;
        Ok(ScopedChild {
            label: label.to_owned(),
            child,
            log: Some(log_path),
        })
    }

    /// Runs `program args` inside `namespace` to completion, bounded by `timeout`.
    pub fn run_in(
        &self,
        namespace: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[String],
        timeout: Duration,
    ) -> Result<CommandOutput> {
        cmd::run(cmd::in_netns(namespace, program, args), timeout)
    }

    fn wait_ready(
        child: &mut ScopedChild,
        timeout: Duration,
        ready: impl Fn() -> bool,
    ) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if ready() {
                return Ok(());
            }
            if let Some(status) = child.exited() {
                return Err(LabError::NotReady {
                    process: child.label().to_owned(),
                    waited: start.elapsed(),
                    detail: format!("exited with {status}; log: {}", child.log_tail(4000)),
                });
            }
            thread::sleep(cmd::POLL_INTERVAL);
        }
        Err(LabError::NotReady {
            process: child.label().to_owned(),
            waited: timeout,
            detail: format!("log: {}", child.log_tail(4000)),
        })
    }

    /// Starts `egw-lab mirror` in the internet namespace and waits until it has bound.
    pub fn start_mirror(&mut self) -> Result<()> {
        let ready_file = self.workdir.path().join("mirror.ready");
        let args = vec![
            "mirror".to_owned(),
            "--tcp".to_owned(),
            mirror_tcp().to_string(),
            "--udp".to_owned(),
            mirror_udp().to_string(),
            "--ready-file".to_owned(),
            ready_file.display().to_string(),
        ];
        let mut child = self.spawn_in(
            &self.inet_namespace(),
            "mirror",
            &self.config.lab_binary,
            &args,
        )?;
        Self::wait_ready(&mut child, MIRROR_READY_TIMEOUT, || ready_file.exists())?;
        self.mirror = Some(child);
        Ok(())
    }

    /// Starts the gateway. Only one gateway per lab.
    pub fn start_gateway(&mut self, gateway: Gateway) -> Result<()> {
        if self.gateway.is_some() {
            return Err(LabError::Config(
                "a gateway is already running in this lab".to_owned(),
            ));
        }
        match gateway {
            Gateway::Kernel => {
                self.apply_kernel_ruleset()?;
                self.gateway = Some(ActiveGateway::Kernel);
            }
            Gateway::Egw { binary } => {
                // Forwarding stays on: traffic a `Bypass` rule sends out unchanged comes back
                // addressed to the pod, which the XDP program leaves to the kernel to route.
                Self::sysctl(
                    &self.gateway_namespace(),
                    &["net.ipv4.ip_forward=1".to_owned()],
                )?;
                let config_path = gateway::write_egw_files(&self.config, self.workdir.path())?;
                let gateway_config =
                    gateway::EgwGatewayConfig::for_lab(&self.config, self.workdir.path());
                let control_socket = gateway_config.control.unix_socket.clone();
                let process = self.spawn_egw(&binary, &config_path, &control_socket)?;
                self.gateway = Some(ActiveGateway::Egw {
                    process,
                    binary,
                    control_socket,
                    route_table_file: gateway_config.route_table_file,
                    generation: 1,
                });
            }
        }
        Ok(())
    }

    fn apply_kernel_ruleset(&self) -> Result<()> {
        let ruleset_path = self.workdir.path().join("egw_lab.nft");
        gateway::write_atomically(&ruleset_path, &gateway::kernel_ruleset(&self.config)?)?;
        self.run_in(
            &self.gateway_namespace(),
            "nft",
            &["-f".to_owned(), ruleset_path.display().to_string()],
            cmd::ADMIN_COMMAND_TIMEOUT,
        )?;
        Ok(())
    }

    /// The nftables ruleset currently loaded in the gateway namespace (`nft list table`).
    pub fn kernel_ruleset_loaded(&self) -> Result<String> {
        Ok(self
            .run_in(
                &self.gateway_namespace(),
                "nft",
                &[
                    "list".to_owned(),
                    "table".to_owned(),
                    "ip".to_owned(),
                    KERNEL_NFT_TABLE.to_owned(),
                ],
                cmd::ADMIN_COMMAND_TIMEOUT,
            )?
            .stdout)
    }

    /// Moves `pod` to `pool` in the running gateway. New connections use the new pool;
    /// established ones keep their mapping (kernel: conntrack; egw: its session table).
    /// For egw this rewrites the route table file (generation + 1) and sends SIGHUP.
    pub fn set_pod_pool(&mut self, pod: &str, pool: &str) -> Result<()> {
        self.config.pool_address(pool)?;
        let index = self
            .config
            .pods
            .iter()
            .position(|candidate| candidate.name == pod)
            .ok_or_else(|| LabError::Config(format!("unknown pod {pod:?}")))?;
        self.config.pods[index].pool = pool.to_owned();
        let config = self.config.clone();
        match &mut self.gateway {
            None => Ok(()),
            Some(ActiveGateway::Kernel) => self.apply_kernel_ruleset(),
            Some(ActiveGateway::Egw {
                route_table_file,
                generation,
                ..
            }) => {
                // Over gRPC, as an operator or the controller would.
                *generation += 1;
                let yaml = RouteTable::for_lab(&config, *generation).to_yaml()?;
                gateway::write_atomically(route_table_file, &yaml)?;
                self.apply_route_table_yaml(&yaml)?;
                Ok(())
            }
        }
    }

    fn lab_probe(&self, namespace: &str, args: &[String], timeout: Duration) -> Result<String> {
        let output = self.run_in(namespace, &self.config.lab_binary, args, timeout)?;
        Ok(output.stdout.trim().to_owned())
    }

    fn pod_probe(&self, pod: &str, args: &[&str], timeout: Duration) -> Result<String> {
        let namespace = self.pod_namespace(pod)?;
        let mut full = vec!["probe".to_owned()];
        full.extend(args.iter().map(|arg| (*arg).to_owned()));
        self.lab_probe(&namespace, &full, timeout)
    }

    fn parse_addr<T: std::str::FromStr>(text: &str, what: &str) -> Result<T> {
        text.trim().parse().map_err(|_| LabError::BadOutput {
            command: what.to_owned(),
            output: text.to_owned(),
        })
    }

    fn spawn_egw(&self, binary: &Path, config_path: &Path, socket: &Path) -> Result<ScopedChild> {
        // A socket left by a killed gateway must not pass for readiness.
        let _ = std::fs::remove_file(socket);
        let args = vec!["--config".to_owned(), config_path.display().to_string()];
        let mut process = self.spawn_in(&self.gateway_namespace(), "egw-gateway", binary, &args)?;
        Self::wait_ready(&mut process, GATEWAY_READY_TIMEOUT, || socket.exists())?;
        Ok(process)
    }

    /// Runs `egwctl` against this lab's egw-gateway; returns its standard output.
    pub fn egwctl(&self, args: &[&str]) -> Result<String> {
        let Some(ActiveGateway::Egw {
            binary,
            control_socket,
            ..
        }) = &self.gateway
        else {
            return Err(LabError::Config("egwctl needs the egw gateway".to_owned()));
        };
        let egwctl = gateway::find_egwctl_binary(binary)?;
        let server = format!("unix://{}", control_socket.display());
        let mut full = vec!["--server", server.as_str()];
        full.extend_from_slice(args);
        Ok(cmd::run_args(&egwctl.display().to_string(), full)?.stdout)
    }

    /// Applies a route table (egw YAML form) over gRPC with `egwctl routes apply`.
    pub fn apply_route_table_yaml(&self, yaml: &str) -> Result<String> {
        let path = self.workdir.path().join("applied-table.yaml");
        gateway::write_atomically(&path, yaml)?;
        self.egwctl(&["routes", "apply", "-f", &path.display().to_string()])
    }

    /// Kills egw-gateway with SIGKILL (no chance to clean up) and waits until it is gone.
    pub fn kill_gateway(&mut self) -> Result<()> {
        let Some(ActiveGateway::Egw { process, .. }) = &mut self.gateway else {
            return Err(LabError::Config("kill needs the egw gateway".to_owned()));
        };
        cmd::run_args("kill", ["-KILL", &process.id().to_string()])?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while process.exited().is_none() {
            if std::time::Instant::now() > deadline {
                return Err(LabError::Config(
                    "egw-gateway survived SIGKILL for 10 s".to_owned(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops egw-gateway with SIGTERM (its clean shutdown: NAT log flushed, XDP detached) and
    /// waits up to `timeout` for it to exit; returns its exit status.
    pub fn terminate_gateway(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let Some(ActiveGateway::Egw { process, .. }) = &mut self.gateway else {
            return Err(LabError::Config(
                "terminate needs the egw gateway".to_owned(),
            ));
        };
        if let Some(status) = process.exited() {
            return Ok(status);
        }
        cmd::run_args("kill", ["-TERM", &process.id().to_string()])?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = process.exited() {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(LabError::Config(format!(
                    "egw-gateway did not exit within {timeout:?} of SIGTERM; log: {}",
                    process.log_tail(4000)
                )));
            }
            thread::sleep(cmd::POLL_INTERVAL);
        }
    }

    /// egw-gateway's `/metrics` text, fetched inside the gateway namespace (needs
    /// [`LabConfig::egw_observability`]).
    pub fn egw_metrics(&self) -> Result<String> {
        self.egw_http_get("/metrics")
    }

    /// `GET path` from egw-gateway's metrics listener, inside the gateway namespace.
    pub fn egw_http_get(&self, path: &str) -> Result<String> {
        if !self.config.egw_observability {
            return Err(LabError::Config(
                "the egw metrics listener needs LabConfig::egw_observability".to_owned(),
            ));
        }
        let args = vec![
            "probe".to_owned(),
            "get".to_owned(),
            gateway::EGW_METRICS_LISTEN.to_owned(),
            path.to_owned(),
        ];
        Ok(self
            .run_in(
                &self.gateway_namespace(),
                &self.config.lab_binary,
                &args,
                PROBE_TIMEOUT,
            )?
            .stdout)
    }

    /// Where egw-gateway writes its NAT event log (with [`LabConfig::egw_observability`]).
    pub fn egw_nat_log_dir(&self) -> PathBuf {
        self.workdir.path().join(gateway::EGW_NAT_LOG_DIR)
    }

    /// Starts egw-gateway again with the lab's configuration (after [`kill_gateway`](Self::kill_gateway)).
    pub fn restart_gateway(&mut self) -> Result<()> {
        let Some(ActiveGateway::Egw {
            binary,
            control_socket,
            ..
        }) = &self.gateway
        else {
            return Err(LabError::Config("restart needs the egw gateway".to_owned()));
        };
        let (binary, socket) = (binary.clone(), control_socket.clone());
        let config_path = self.workdir.path().join(gateway::EGW_CONFIG_FILE);
        let fresh = self.spawn_egw(&binary, &config_path, &socket)?;
        if let Some(ActiveGateway::Egw {
            process,
            generation,
            ..
        }) = &mut self.gateway
        {
            *process = fresh;
            *generation = 1;
        }
        Ok(())
    }

    /// Where [`start_controller`](Self::start_controller) keeps its manifests.
    pub fn manifest_dir(&self) -> PathBuf {
        self.workdir.path().join("manifests")
    }

    /// Starts `egw-controller --local` on manifests describing this lab (an EgressGateway whose
    /// one instance is this lab's egw-gateway with `addresses`, a policy, annotated namespaces and
    /// the pods), and waits until it has pushed its first route table.
    pub fn start_controller(&mut self, addresses: &[Ipv4Addr]) -> Result<()> {
        let Some(ActiveGateway::Egw {
            binary,
            control_socket,
            ..
        }) = &self.gateway
        else {
            return Err(LabError::Config(
                "the controller drives the egw gateway".to_owned(),
            ));
        };
        let controller = crate::controller::find_controller_binary(binary)?;
        let dir = self.manifest_dir();
        crate::controller::write_manifests(&dir, &self.config, control_socket, addresses)?;
        let before = self.served_generation()?;
        let args = vec!["--local".to_owned(), dir.display().to_string()];
        // Any namespace will do: the controller talks to the gateway over a unix socket.
        let child = self.spawn_in(
            &self.gateway_namespace(),
            "egw-controller",
            &controller,
            &args,
        )?;
        self.controller = Some(child);
        self.wait_for_generation_above(before)?;
        Ok(())
    }

    /// Rewrites the EgressGateway manifest with new addresses (as an operator editing the file).
    pub fn edit_gateway_addresses(&self, addresses: &[Ipv4Addr]) -> Result<()> {
        let Some(ActiveGateway::Egw { control_socket, .. }) = &self.gateway else {
            return Err(LabError::Config("no egw gateway".to_owned()));
        };
        gateway::write_atomically(
            &self.manifest_dir().join(crate::controller::GATEWAY_FILE),
            &crate::controller::gateway_manifest(control_socket, addresses),
        )
    }

    /// The route table the gateway serves, in the YAML form `egwctl routes get -o yaml` prints.
    pub fn served_table(&self) -> Result<String> {
        self.egwctl(&["-o", "yaml", "routes", "get"])
    }

    /// The generation of the route table the gateway serves.
    pub fn served_generation(&self) -> Result<u64> {
        let yaml = self.served_table()?;
        let table = egw_proto::yaml::RouteTable::from_yaml_str(&yaml).map_err(|e| {
            LabError::Config(format!(
                "egwctl routes get printed an unreadable table: {e}"
            ))
        })?;
        Ok(table.generation)
    }

    /// Waits (bounded) until the gateway serves a generation above `generation`.
    pub fn wait_for_generation_above(&self, generation: u64) -> Result<u64> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.served_generation()?;
            if now > generation {
                return Ok(now);
            }
            if std::time::Instant::now() > deadline {
                let log = self
                    .controller
                    .as_ref()
                    .map(|c| c.log_tail(2000))
                    .unwrap_or_default();
                return Err(LabError::Config(format!(
                    "the gateway still serves generation {now} after 20 s; controller log:\n{log}"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The egress `pod` should have towards the mirror according to the table the gateway serves.
    pub fn expected_egress_from_table(
        &self,
        pod: &str,
    ) -> Result<std::result::Result<Vec<Ipv4Addr>, String>> {
        let address = self.config.pod(pod)?.address;
        crate::controller::expected_egress(&self.served_table()?, address, MIRROR_ADDRESS)
    }

    /// What the mirror saw for one TCP connection from `pod`.
    pub fn probe_tcp(&self, pod: &str) -> Result<SocketAddr> {
        let out = self.pod_probe(pod, &["tcp", &mirror_tcp().to_string()], PROBE_TIMEOUT)?;
        Self::parse_addr(&out, "egw-lab probe tcp")
    }

    /// What the mirror saw for one UDP datagram from `pod`.
    pub fn probe_udp(&self, pod: &str) -> Result<SocketAddr> {
        let out = self.pod_probe(pod, &["udp", &mirror_udp().to_string()], PROBE_TIMEOUT)?;
        Self::parse_addr(&out, "egw-lab probe udp")
    }

    /// Whether a UDP datagram from `pod` to `target` (a closed port) comes back as a translated
    /// ICMP port-unreachable (see `probe::udp_refused`).
    pub fn probe_udp_refused(&self, pod: &str, target: SocketAddr) -> Result<bool> {
        let out = self.pod_probe(pod, &["udp-refused", &target.to_string()], PROBE_TIMEOUT)?;
        Ok(out == "refused")
    }

    /// Pings the mirror from `pod` and asks the mirror (from inside the internet namespace,
    /// not through the gateway) which source the echo request had.
    pub fn probe_icmp(&self, pod: &str) -> Result<IcmpObservation> {
        let out = self.pod_probe(pod, &["icmp", &MIRROR_ADDRESS.to_string()], PROBE_TIMEOUT)?;
        let echo = parse_icmp_probe_output(&out)?;
        let query = vec![
            "probe".to_owned(),
            "get".to_owned(),
            mirror_tcp().to_string(),
            format!("/icmp-seen?token={}", echo.token),
        ];
        // The mirror records requests from a separate thread; the reply can beat it.
        let mut last_error = None;
        for _ in 0..50 {
            match self.lab_probe(&self.inet_namespace(), &query, PROBE_TIMEOUT) {
                Ok(seen) => {
                    return Ok(IcmpObservation {
                        reply_from: echo.reply_from,
                        egress: Self::parse_addr(&seen, "icmp-seen")?,
                    });
                }
                Err(error) => last_error = Some(error),
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err(last_error
            .unwrap_or_else(|| LabError::ProbeFailed("icmp-seen never answered".to_owned())))
    }

    /// Uploads `bytes` from `pod` to the mirror and compares SHA-256 on both sides.
    pub fn probe_upload(&self, pod: &str, bytes: u64) -> Result<UploadReport> {
        let out = self.pod_probe(
            pod,
            &[
                "tcp-upload",
                &mirror_tcp().to_string(),
                "--bytes",
                &bytes.to_string(),
            ],
            UPLOAD_TIMEOUT,
        )?;
        parse_upload_output(&out)
    }

    /// Downloads `bytes` from the mirror into `pod`, verifying every byte; returns bytes received.
    pub fn probe_download(&self, pod: &str, bytes: u64) -> Result<u64> {
        let out = self.pod_probe(
            pod,
            &[
                "tcp-download",
                &mirror_tcp().to_string(),
                "--bytes",
                &bytes.to_string(),
            ],
            UPLOAD_TIMEOUT,
        )?;
        out.strip_prefix("verified=").map_or_else(
            || {
                Err(LabError::BadOutput {
                    command: "egw-lab probe tcp-download".to_owned(),
                    output: out.clone(),
                })
            },
            |count| Self::parse_addr(count, "egw-lab probe tcp-download"),
        )
    }

    /// Opens one TCP connection from `pod` and keeps it for repeated queries.
    pub fn tcp_hold(&self, pod: &str) -> Result<TcpHold> {
        let namespace = self.pod_namespace(pod)?;
        let log_path = self.workdir.path().join(format!("tcp-hold-{pod}.log"));
        let log = File::create(&log_path)
            .map_err(|source| LabError::io(format!("creating {}", log_path.display()), source))?;
        let mut command: Command = cmd::in_netns(
            &namespace,
            &self.config.lab_binary,
            ["probe", "tcp-hold", &mirror_tcp().to_string()],
        );
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        let description = cmd::describe(&command);
        let mut child = command.spawn().map_err(|source| LabError::Spawn {
            command: description,
            source,
        })?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let child = ScopedChild {
            label: format!("tcp-hold {pod}"),
            child,
            log: Some(log_path),
        };
        let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
            return Err(LabError::ProbeFailed(
                "tcp-hold probe has no stdio pipes".to_owned(),
            ));
        };
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let (first, local) = TcpHold::next_seen(&lines, &child)?;
        Ok(TcpHold {
            child,
            stdin,
            lines,
            first,
            local,
        })
    }

    /// Stops everything and deletes the namespaces, reporting the first error.
    pub fn teardown(mut self) -> Result<()> {
        self.teardown_inner()
    }

    fn teardown_inner(&mut self) -> Result<()> {
        if let Some(ActiveGateway::Egw { process, .. }) = self.gateway.take() {
            process.stop();
        }
        if let Some(mirror) = self.mirror.take() {
            mirror.stop();
        }
        let mut first_error = None;
        for name in std::mem::take(&mut self.namespaces).iter().rev() {
            if let Err(error) = remove_namespace(name) {
                first_error.get_or_insert(error);
            }
        }
        // Anything with our prefix that was not (yet) recorded, e.g. a namespace whose
        // `ip netns add` succeeded but whose follow-up failed.
        if let Err(error) = remove_namespaces_with_prefix(&self.prefix) {
            first_error.get_or_insert(error);
        }
        unregister_prefix(&self.prefix);
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The work directory (and with it every log) is about to go; when a test is failing,
        // the gateway's and mirror's last words are the most useful thing to keep.
        if thread::panicking() {
            if let Some(ActiveGateway::Egw { process, .. }) = &self.gateway {
                eprintln!(
                    "egw-lab: {} log tail:\n{}",
                    process.label(),
                    process.log_tail(8000)
                );
            }
            if let Some(mirror) = &self.mirror {
                eprintln!("egw-lab: mirror log tail:\n{}", mirror.log_tail(2000));
            }
        }
        if let Err(error) = self.teardown_inner() {
            eprintln!("egw-lab: teardown of {} failed: {error}", self.prefix);
        }
    }
}

/// Parses `reply-from=<ip> token=<hex>`.
pub fn parse_icmp_probe_output(text: &str) -> Result<IcmpEcho> {
    let parse = || -> Option<IcmpEcho> {
        let mut fields = text.split_whitespace();
        let reply_from = fields.next()?.strip_prefix("reply-from=")?.parse().ok()?;
        let token = fields.next()?.strip_prefix("token=")?.to_owned();
        Some(IcmpEcho { reply_from, token })
    };
    parse().ok_or_else(|| LabError::BadOutput {
        command: "egw-lab probe icmp".to_owned(),
        output: text.to_owned(),
    })
}

/// Parses `bytes=<n> sha256=<hex> remote-sha256=<hex>`.
pub fn parse_upload_output(text: &str) -> Result<UploadReport> {
    let parse = || -> Option<UploadReport> {
        let mut fields = text.split_whitespace();
        let bytes = fields.next()?.strip_prefix("bytes=")?.parse().ok()?;
        let local_sha256 = fields.next()?.strip_prefix("sha256=")?.to_owned();
        let remote_sha256 = fields.next()?.strip_prefix("remote-sha256=")?.to_owned();
        Some(UploadReport {
            bytes,
            local_sha256,
            remote_sha256,
        })
    };
    parse().ok_or_else(|| LabError::BadOutput {
        command: "egw-lab probe tcp-upload".to_owned(),
        output: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_prefix(prefix: &str) -> LabConfig {
        let mut config = LabConfig::new(2, PathBuf::from("/x")).unwrap();
        config.prefix = Some(prefix.to_owned());
        config
    }

    #[test]
    fn prefix_must_name_exactly_one_lab() {
        assert!(config_with_prefix("egwlab-ci-1-").validate().is_ok());
        for bad in [
            "egwlab-",
            "egwlab",
            "cni-1-",
            "egwlab-x",
            "egwlab-A-",
            "egwlab-a b-",
        ] {
            assert!(config_with_prefix(bad).validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn default_pods_alternate_pools() {
        let config = LabConfig::new(3, PathBuf::from("/x")).unwrap();
        let names: Vec<_> = config.pods.iter().map(|pod| pod.name.as_str()).collect();
        assert_eq!(names, ["pod-a", "pod-b", "pod-c"]);
        assert_eq!(
            config.expected_egress("pod-a").unwrap(),
            Ipv4Addr::new(198, 51, 100, 1)
        );
        assert_eq!(
            config.expected_egress("pod-b").unwrap(),
            Ipv4Addr::new(198, 51, 100, 2)
        );
        assert_eq!(
            config.expected_egress("pod-c").unwrap(),
            Ipv4Addr::new(198, 51, 100, 1)
        );
        assert_eq!(config.pods[2].address, Ipv4Addr::new(10, 244, 1, 12));
        assert!(LabConfig::new(0, PathBuf::from("/x")).is_err());
        assert!(LabConfig::new(201, PathBuf::from("/x")).is_err());
    }

    #[test]
    fn unsafe_pod_names_are_rejected() {
        let mut config = LabConfig::new(1, PathBuf::from("/x")).unwrap();
        config.pods[0].name = "pod a".to_owned();
        assert!(config.validate().is_err());
    }
}
