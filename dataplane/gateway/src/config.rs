//! The gateway configuration: a YAML file, with command-line flags overriding some fields.
//!
//! ```yaml
//! inside_interface: gw-in
//! outside_interface: gw-out        # omitted or = inside_interface → one-armed
//! inside_address: 10.244.0.1       # source of ICMP errors to pods
//! pod_cidrs: [10.244.0.0/16]
//! snat_addresses: [198.51.100.1]   # steered by XDP in addition to the route table's pools
//! workers: 1
//! control: { unix_socket: /run/egw/egw.sock }
//! route_table_file: /etc/egw/table.yaml
//! conntrack: { capacity_per_core: 262144, udp_filtering: address_and_port_dependent }
//! mtu: 1500                        # optional; default: each interface's MTU
//! log_format: text                 # or json
//! metrics:                         # optional: /metrics (OpenMetrics) and /healthz over HTTP
//!   listen: 0.0.0.0:9464
//!   port_exhaustion_threshold: 0.9 # egw_port_exhaustion is 1 at or above this utilisation
//! nat_log:                         # optional: NAT event log (egw_natlog), one JSON line per mapping
//!   dir: /var/log/egw/nat
//!   gateway_name: gw-a             # default: $NODE_NAME, else the host name
//!   max_file_bytes: 67108864       # default 64 MiB
//!   keep_files: 48
//!   rotate_every_s: 3600           # default 3600; 0: size-only rotation
//!   queue_capacity: 65536          # events queued for the writer; more are dropped and counted
//!   ipfix_collector: 192.0.2.10:4739   # optional RFC 8158 export over UDP
//!   ipfix_observation_domain: 1
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use egw_engine::PortPartition;
use egw_engine::{EngineConfig, Filtering, Timeouts};
use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::control::{
    ControlServerConfig, MtlsConfig, TcpListenerConfig, UnixSocketConfig,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_SOCKET_MODE, DEFAULT_SOCKET_PATH,
};

/// Flows each core tracks at most when the configuration does not say.
pub const DEFAULT_FLOWS_PER_CORE: u32 = 1 << 18;
/// Most workers a gateway runs (one AF_XDP queue each).
pub const MAX_WORKERS: u16 = 64;

/// Why a configuration was refused. Messages name the offending field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading configuration file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("configuration field `{field}`: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("configuration field `control.tcp`")]
    Tls(#[from] crate::control::ControlError),
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// RFC 4787 filtering of unsolicited inbound UDP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UdpFiltering {
    #[default]
    AddressAndPortDependent,
    AddressDependent,
    EndpointIndependent,
}

impl From<UdpFiltering> for Filtering {
    fn from(filtering: UdpFiltering) -> Self {
        match filtering {
            UdpFiltering::AddressAndPortDependent => Filtering::AddressAndPortDependent,
            UdpFiltering::AddressDependent => Filtering::AddressDependent,
            UdpFiltering::EndpointIndependent => Filtering::EndpointIndependent,
        }
    }
}

/// Connection tracking settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackConfig {
    #[serde(default = "default_flows_per_core")]
    pub capacity_per_core: u32,
    #[serde(default)]
    pub udp_filtering: UdpFiltering,
    /// SNAT source ports `[first, last]`, split between workers.
    #[serde(default = "default_port_range")]
    pub port_range: (u16, u16),
    /// Idle timeouts in seconds; the RFC minimums are enforced.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// When the table is full, evict a flow that never got an answer for a new one (default
    /// true, as conntrack does); `false` drops new flows instead. Answered flows are never evicted.
    #[serde(default = "default_true")]
    pub early_drop_unreplied: bool,
}

fn default_port_range() -> (u16, u16) {
    EngineConfig::default().port_range
}

/// Idle timeouts in seconds (defaults: the engine's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    pub tcp_established: u32,
    pub tcp_transitory: u32,
    pub udp: u32,
    pub icmp: u32,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        let timeouts = Timeouts::default();
        Self {
            tcp_established: timeouts.tcp_established,
            tcp_transitory: timeouts.tcp_transitory,
            udp: timeouts.udp,
            icmp: timeouts.icmp,
        }
    }
}

impl From<TimeoutsConfig> for Timeouts {
    fn from(config: TimeoutsConfig) -> Self {
        Timeouts {
            tcp_established: config.tcp_established,
            tcp_transitory: config.tcp_transitory,
            udp: config.udp,
            icmp: config.icmp,
        }
    }
}

fn default_flows_per_core() -> u32 {
    DEFAULT_FLOWS_PER_CORE
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        Self {
            capacity_per_core: DEFAULT_FLOWS_PER_CORE,
            udp_filtering: UdpFiltering::default(),
            port_range: default_port_range(),
            timeouts: TimeoutsConfig::default(),
            early_drop_unreplied: true,
        }
    }
}

/// The mTLS TCP listener of the control server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlTcpConfig {
    pub listen: SocketAddr,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_ca: PathBuf,
    #[serde(default)]
    pub admin_identities: Vec<String>,
    #[serde(default)]
    pub reader_identities: Vec<String>,
}

/// Control server listeners.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Unix socket path; every caller on it is an admin.
    #[serde(default = "default_socket_path")]
    pub unix_socket: Option<PathBuf>,
    /// Unix socket permission bits (octal in YAML: `0o660` or `432`).
    #[serde(default = "default_socket_mode")]
    pub unix_socket_mode: u32,
    #[serde(default)]
    pub tcp: Option<ControlTcpConfig>,
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

fn default_socket_path() -> Option<PathBuf> {
    Some(PathBuf::from(DEFAULT_SOCKET_PATH))
}
fn default_socket_mode() -> u32 {
    DEFAULT_SOCKET_MODE
}
fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            unix_socket: default_socket_path(),
            unix_socket_mode: DEFAULT_SOCKET_MODE,
            tcp: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

impl ControlConfig {
    /// The control server settings; reads the TLS files.
    pub fn server_config(&self) -> Result<ControlServerConfig, ConfigError> {
        let tcp = match &self.tcp {
            None => None,
            Some(tcp) => Some(TcpListenerConfig {
                addr: tcp.listen,
                tls: MtlsConfig::from_files(
                    &tcp.server_cert,
                    &tcp.server_key,
                    &tcp.client_ca,
                    tcp.admin_identities.clone(),
                    tcp.reader_identities.clone(),
                )?,
            }),
        };
        Ok(ControlServerConfig {
            unix_socket: self.unix_socket.as_ref().map(|path| UnixSocketConfig {
                path: path.clone(),
                mode: self.unix_socket_mode,
            }),
            tcp,
            max_message_bytes: self.max_message_bytes,
        })
    }
}

/// AF_XDP socket tuning.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XdpConfig {
    /// UMEM frames per worker.
    #[serde(default = "default_frame_count")]
    pub frame_count: u32,
    /// Entries of each AF_XDP ring (a power of two).
    #[serde(default = "default_ring_size")]
    pub ring_size: u32,
    /// Try zero-copy sockets first (falls back to copy mode, logged).
    #[serde(default = "default_true")]
    pub zero_copy: bool,
}

fn default_frame_count() -> u32 {
    4096
}
fn default_ring_size() -> u32 {
    1024
}
fn default_true() -> bool {
    true
}

impl Default for XdpConfig {
    fn default() -> Self {
        Self {
            frame_count: default_frame_count(),
            ring_size: default_ring_size(),
            zero_copy: true,
        }
    }
}

/// Default utilisation at which `egw_port_exhaustion` fires.
pub const DEFAULT_PORT_EXHAUSTION_THRESHOLD: f64 = 0.9;

/// The HTTP listener of `/metrics` and `/healthz`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
    /// Port utilisation (0..=1) at or above which `egw_port_exhaustion` is 1.
    #[serde(default = "default_port_exhaustion_threshold")]
    pub port_exhaustion_threshold: f64,
}

fn default_port_exhaustion_threshold() -> f64 {
    DEFAULT_PORT_EXHAUSTION_THRESHOLD
}

/// The NAT event log (see [`egw_natlog`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatLogFileConfig {
    /// Directory of the log files (created if missing).
    pub dir: PathBuf,
    /// Written in every record; default: `NODE_NAME` from the environment, else the host name.
    #[serde(default)]
    pub gateway_name: Option<String>,
    /// Start a new file at this size (default 64 MiB; 0: no size limit).
    #[serde(default)]
    pub max_file_bytes: Option<u64>,
    /// Files kept, the current one included (default 48).
    #[serde(default)]
    pub keep_files: Option<usize>,
    /// Start a new file after this many seconds (default 3600; 0: no time limit).
    #[serde(default)]
    pub rotate_every_s: Option<u64>,
    /// Events queued between the workers and the writer (default 65536); more are dropped and
    /// counted in `egw_natlog_events_dropped_total`.
    #[serde(default)]
    pub queue_capacity: Option<usize>,
    /// Also export the events as IPFIX (RFC 8158) to this UDP collector.
    #[serde(default)]
    pub ipfix_collector: Option<SocketAddr>,
    /// The IPFIX observation domain identifying this gateway to the collector (default 1).
    #[serde(default)]
    pub ipfix_observation_domain: Option<u32>,
}

impl NatLogFileConfig {
    /// The writer's configuration.
    pub fn writer_config(&self) -> egw_natlog::NatLogConfig {
        let gateway = self.gateway_name.clone().unwrap_or_else(host_name);
        let mut config = egw_natlog::NatLogConfig::new(&self.dir, gateway);
        if let Some(bytes) = self.max_file_bytes {
            config.max_file_bytes = bytes;
        }
        if let Some(keep) = self.keep_files {
            config.keep_files = keep;
        }
        if let Some(seconds) = self.rotate_every_s {
            config.rotate_every = (seconds > 0).then(|| std::time::Duration::from_secs(seconds));
        }
        if let Some(capacity) = self.queue_capacity {
            config.queue_capacity = capacity;
        }
        let domain = self.ipfix_observation_domain.unwrap_or(1);
        config.ipfix = self
            .ipfix_collector
            .map(|collector| egw_natlog::IpfixConfig::new(collector, domain));
        config
    }
}

/// `NODE_NAME` (set from the downward API in the DaemonSet), else the kernel's host name, else
/// `egw-gateway`.
fn host_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "egw-gateway".to_owned())
}

/// The whole gateway configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Pod-facing interface (and the only one when one-armed).
    pub inside_interface: String,
    /// Internet-facing interface; omitted → one-armed on `inside_interface`.
    #[serde(default)]
    pub outside_interface: Option<String>,
    /// Source address of the ICMP errors the gateway sends to pods.
    pub inside_address: Ipv4Addr,
    /// Source CIDRs steered to the dataplane on the inside interface.
    pub pod_cidrs: Vec<Ipv4Net>,
    /// External addresses steered on the outside interface, in addition to the route table's.
    #[serde(default)]
    pub snat_addresses: Vec<Ipv4Addr>,
    /// Dataplane workers: one per AF_XDP queue (queues 0..workers), each pinned to a CPU.
    #[serde(default = "default_workers")]
    pub workers: u16,
    /// CPUs to pin workers to (worker `i` → `cpus[i]`); default: CPU `i`.
    #[serde(default)]
    pub cpus: Option<Vec<usize>>,
    #[serde(default)]
    pub control: ControlConfig,
    /// Initial route table (the `egw_proto::yaml` format); default: deny everything.
    #[serde(default)]
    pub route_table_file: Option<PathBuf>,
    #[serde(default)]
    pub conntrack: ConntrackConfig,
    /// Overrides the MTU read from the interfaces.
    #[serde(default)]
    pub mtu: Option<u16>,
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default)]
    pub xdp: XdpConfig,
    /// `/metrics` and `/healthz`; off when absent.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// The NAT event log; off when absent.
    #[serde(default)]
    pub nat_log: Option<NatLogFileConfig>,
}

fn default_workers() -> u16 {
    1
}

/// Command-line overrides of configuration fields.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Pod-facing interface.
    #[arg(long)]
    pub inside_interface: Option<String>,
    /// Internet-facing interface.
    #[arg(long)]
    pub outside_interface: Option<String>,
    /// Number of dataplane workers.
    #[arg(long)]
    pub workers: Option<u16>,
    /// Control Unix socket path.
    #[arg(long)]
    pub control_socket: Option<PathBuf>,
    /// Initial route table file.
    #[arg(long)]
    pub route_table_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Interface MTU override.
    #[arg(long)]
    pub mtu: Option<u16>,
    /// Serve `/metrics` and `/healthz` on this address (e.g. 0.0.0.0:9464).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
}

impl GatewayConfig {
    /// Parses YAML text (no validation).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads, parses, applies `overrides` and validates.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::from_yaml(&text, path)?;
        config.apply(overrides);
        config.normalize();
        config.validate()?;
        Ok(config)
    }

    pub fn apply(&mut self, overrides: &Overrides) {
        if let Some(name) = &overrides.inside_interface {
            self.inside_interface = name.clone();
        }
        if let Some(name) = &overrides.outside_interface {
            self.outside_interface = Some(name.clone());
        }
        if let Some(workers) = overrides.workers {
            self.workers = workers;
        }
        if let Some(path) = &overrides.control_socket {
            self.control.unix_socket = Some(path.clone());
        }
        if let Some(path) = &overrides.route_table_file {
            self.route_table_file = Some(path.clone());
        }
        if let Some(format) = overrides.log_format {
            self.log_format = format;
        }
        if let Some(mtu) = overrides.mtu {
            self.mtu = Some(mtu);
        }
        if let Some(listen) = overrides.metrics_listen {
            match &mut self.metrics {
                Some(metrics) => metrics.listen = listen,
                None => {
                    self.metrics = Some(MetricsConfig {
                        listen,
                        port_exhaustion_threshold: DEFAULT_PORT_EXHAUSTION_THRESHOLD,
                    })
                }
            }
        }
    }

    /// An outside interface equal to the inside one means one-armed, as when it is omitted.
    pub fn normalize(&mut self) {
        if self.outside_interface.as_deref() == Some(self.inside_interface.as_str()) {
            self.outside_interface = None;
        }
    }

    /// Checks what the types alone do not, one group of fields at a time (the first problem
    /// found is reported, in this order).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_addresses()?;
        self.validate_workers_and_control()?;
        self.validate_conntrack()?;
        self.validate_mtu_and_xdp()?;
        self.validate_metrics()?;
        self.validate_nat_log()
    }

    /// Interface names, the inside address, pod CIDRs and SNAT addresses.
    fn validate_addresses(&self) -> Result<(), ConfigError> {
        check_interface_name("inside_interface", &self.inside_interface)?;
        if let Some(outside) = &self.outside_interface {
            check_interface_name("outside_interface", outside)?;
        }
        if self.inside_address.is_unspecified() || self.inside_address.is_broadcast() {
            return Err(invalid(
                "inside_address",
                format!("{} is not a usable unicast address", self.inside_address),
            ));
        }
        if self.pod_cidrs.is_empty() {
            return Err(invalid("pod_cidrs", "at least one pod CIDR is required"));
        }
        for cidr in &self.pod_cidrs {
            if cidr.network() != cidr.addr() {
                return Err(invalid(
                    "pod_cidrs",
                    format!("{cidr} has host bits set; did you mean {}?", cidr.trunc()),
                ));
            }
        }
        for address in &self.snat_addresses {
            if address.is_unspecified()
                || address.is_broadcast()
                || address.is_multicast()
                || address.is_loopback()
            {
                return Err(invalid(
                    "snat_addresses",
                    format!("{address} cannot be used for SNAT"),
                ));
            }
        }
        Ok(())
    }

    /// Worker count, their CPUs, and that the control server listens somewhere.
    fn validate_workers_and_control(&self) -> Result<(), ConfigError> {
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return Err(invalid(
                "workers",
                format!("must be between 1 and {MAX_WORKERS}, got {}", self.workers),
            ));
        }
        if let Some(cpus) = &self.cpus {
            if cpus.len() < usize::from(self.workers) {
                return Err(invalid(
                    "cpus",
                    format!(
                        "lists {} CPUs for {} workers; list one per worker",
                        cpus.len(),
                        self.workers
                    ),
                ));
            }
        }
        if self.control.unix_socket.is_none() && self.control.tcp.is_none() {
            return Err(invalid(
                "control",
                "no listener: set control.unix_socket or control.tcp",
            ));
        }
        Ok(())
    }

    /// Flow-table capacity, the port range (split among the workers) and timeouts.
    fn validate_conntrack(&self) -> Result<(), ConfigError> {
        let capacity = self.conntrack.capacity_per_core;
        if capacity == 0 || capacity > egw_engine::MAX_FLOWS_PER_CORE {
            return Err(invalid(
                "conntrack.capacity_per_core",
                format!(
                    "must be between 1 and {}, got {capacity}",
                    egw_engine::MAX_FLOWS_PER_CORE
                ),
            ));
        }
        let (first, last) = self.conntrack.port_range;
        if first == 0 || PortPartition::new(first, last, self.workers).is_none() {
            return Err(invalid(
                "conntrack.port_range",
                format!(
                    "[{first}, {last}] must be ascending, start above 0 and give each of the {} workers at least one port",
                    self.workers
                ),
            ));
        }
        Timeouts::from(self.conntrack.timeouts)
            .validate()
            .map_err(|problem| invalid("conntrack.timeouts", problem))?;
        Ok(())
    }

    /// The MTU override and the AF_XDP ring and UMEM sizes.
    fn validate_mtu_and_xdp(&self) -> Result<(), ConfigError> {
        if let Some(mtu) = self.mtu {
            if !(68..=9000).contains(&mtu) {
                return Err(invalid("mtu", format!("must be 68..=9000, got {mtu}")));
            }
        }
        if !self.xdp.ring_size.is_power_of_two() {
            return Err(invalid(
                "xdp.ring_size",
                format!("must be a power of two, got {}", self.xdp.ring_size),
            ));
        }
        if self.xdp.frame_count < self.xdp.ring_size.saturating_mul(2) {
            return Err(invalid(
                "xdp.frame_count",
                format!(
                    "must be at least twice xdp.ring_size ({}), got {}",
                    self.xdp.ring_size, self.xdp.frame_count
                ),
            ));
        }
        Ok(())
    }

    /// The port-exhaustion threshold of the metrics endpoint.
    fn validate_metrics(&self) -> Result<(), ConfigError> {
        if let Some(metrics) = &self.metrics {
            let threshold = metrics.port_exhaustion_threshold;
            if !(threshold > 0.0 && threshold <= 1.0) {
                return Err(invalid(
                    "metrics.port_exhaustion_threshold",
                    format!("must be in (0, 1], got {threshold}"),
                ));
            }
        }
        Ok(())
    }

    /// The NAT event log section.
    fn validate_nat_log(&self) -> Result<(), ConfigError> {
        if let Some(nat_log) = &self.nat_log {
            if nat_log.dir.as_os_str().is_empty() {
                return Err(invalid("nat_log.dir", "must not be empty"));
            }
            if nat_log.keep_files == Some(0) {
                return Err(invalid(
                    "nat_log.keep_files",
                    "must be at least 1 (the file being written)",
                ));
            }
            if nat_log.queue_capacity == Some(0) {
                return Err(invalid("nat_log.queue_capacity", "must be at least 1"));
            }
            if nat_log
                .gateway_name
                .as_deref()
                .is_some_and(|name| name.trim().is_empty())
            {
                return Err(invalid("nat_log.gateway_name", "must not be empty"));
            }
        }
        Ok(())
    }

    /// True when one interface carries both directions.
    pub fn one_armed(&self) -> bool {
        self.outside_interface.is_none()
    }

    /// The interface facing the internet (the inside one when one-armed).
    pub fn outside_interface_name(&self) -> &str {
        self.outside_interface
            .as_deref()
            .unwrap_or(&self.inside_interface)
    }

    /// The CPU worker `index` is pinned to.
    pub fn cpu_for_worker(&self, index: u16) -> usize {
        self.cpus
            .as_ref()
            .and_then(|cpus| cpus.get(usize::from(index)).copied())
            .unwrap_or(usize::from(index))
    }
}

fn check_interface_name(field: &'static str, name: &str) -> Result<(), ConfigError> {
    // IFNAMSIZ is 16 including the terminating NUL.
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
        return Err(invalid(
            field,
            format!("`{name}` is not a valid interface name (1-15 bytes, no '/' or spaces)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB_FILE: &str = r#"
inside_interface: gw-in
outside_interface: gw-out        # omitted → one-armed on inside_interface
inside_address: 10.244.0.1       # source of ICMP errors to pods
pod_cidrs: [10.244.0.0/16]
snat_addresses: [198.51.100.1, 198.51.100.2]   # steered by XDP in addition to the route table's pool addresses
workers: 1
control: { unix_socket: /tmp/x/egw.sock }      # optional tcp + mTLS settings as ControlServerConfig offers
route_table_file: /tmp/x/table.yaml            # optional initial table (egw_proto::yaml format)
"#;

    fn parse(text: &str) -> Result<GatewayConfig, ConfigError> {
        let mut config = GatewayConfig::from_yaml(text, Path::new("test.yaml"))?;
        config.normalize();
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn accepts_the_lab_file_exactly() {
        let config = parse(LAB_FILE).unwrap();
        assert_eq!(config.inside_interface, "gw-in");
        assert_eq!(config.outside_interface.as_deref(), Some("gw-out"));
        assert_eq!(config.inside_address, Ipv4Addr::new(10, 244, 0, 1));
        assert_eq!(config.pod_cidrs, vec!["10.244.0.0/16".parse().unwrap()]);
        assert_eq!(
            config.snat_addresses,
            vec![
                Ipv4Addr::new(198, 51, 100, 1),
                Ipv4Addr::new(198, 51, 100, 2)
            ]
        );
        assert_eq!(config.workers, 1);
        assert_eq!(
            config.control.unix_socket.as_deref(),
            Some(Path::new("/tmp/x/egw.sock"))
        );
        assert_eq!(config.control.unix_socket_mode, DEFAULT_SOCKET_MODE);
        assert!(config.control.tcp.is_none());
        assert_eq!(
            config.route_table_file.as_deref(),
            Some(Path::new("/tmp/x/table.yaml"))
        );
        assert_eq!(config.conntrack, ConntrackConfig::default());
        assert_eq!(config.log_format, LogFormat::Text);
        assert!(!config.one_armed());
        let server = config.control.server_config().unwrap();
        assert_eq!(
            server.unix_socket.unwrap().path,
            PathBuf::from("/tmp/x/egw.sock")
        );
    }

    #[test]
    fn optional_fields_parse() {
        let config = parse(
            "inside_interface: eth0\ninside_address: 10.0.0.1\npod_cidrs: [10.1.0.0/16]\n\
             conntrack: {capacity_per_core: 1000, udp_filtering: endpoint_independent, port_range: [2000, 2999], timeouts: {udp: 600}, early_drop_unreplied: false}\n\
             mtu: 9000\nlog_format: json\ncpus: [3]\nxdp: {frame_count: 8192, ring_size: 2048, zero_copy: false}\n",
        )
        .unwrap();
        assert!(config.one_armed());
        assert_eq!(config.outside_interface_name(), "eth0");
        assert_eq!(config.conntrack.capacity_per_core, 1000);
        assert_eq!(
            Filtering::from(config.conntrack.udp_filtering),
            Filtering::EndpointIndependent
        );
        assert_eq!(config.conntrack.port_range, (2000, 2999));
        assert_eq!(config.conntrack.timeouts.udp, 600);
        assert!(!config.conntrack.early_drop_unreplied);
        assert_eq!(
            config.conntrack.timeouts.tcp_established,
            Timeouts::default().tcp_established
        );
        assert_eq!(config.mtu, Some(9000));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.cpu_for_worker(0), 3);
        assert!(!config.xdp.zero_copy);
        assert_eq!(
            config.control.unix_socket.as_deref(),
            Some(Path::new(DEFAULT_SOCKET_PATH))
        );
    }

    /// The error and its sources, as `main` prints them.
    fn chain(error: &dyn std::error::Error) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    }

    #[test]
    fn unknown_fields_are_refused() {
        let error = parse(&format!("{LAB_FILE}\nworkerz: 2\n")).unwrap_err();
        assert!(chain(&error).contains("workerz"), "{error}");
        assert!(chain(&error).contains("test.yaml"), "{error}");
        let error = parse(&format!("{LAB_FILE}\nconntrack: {{size: 3}}\n")).unwrap_err();
        assert!(chain(&error).contains("size"), "{error}");
    }

    #[test]
    fn invalid_values_name_their_field() {
        let cases = [
            ("workers: 1", "workers: 0", "workers"),
            ("gw-out ", "gw/out ", "outside_interface"),
            ("[10.244.0.0/16]", "[10.244.0.1/16]", "pod_cidrs"),
            ("[10.244.0.0/16]", "[]", "pod_cidrs"),
            ("198.51.100.2]", "255.255.255.255]", "snat_addresses"),
            (
                "inside_address: 10.244.0.1",
                "inside_address: 0.0.0.0",
                "inside_address",
            ),
        ];
        for (from, to, field) in cases {
            let text = LAB_FILE.replacen(from, to, 1);
            assert_ne!(text, LAB_FILE, "case {field} did not change the file");
            let error = parse(&text).unwrap_err();
            assert!(
                matches!(&error, ConfigError::Invalid { field: f, .. } if *f == field),
                "{field}: {error}"
            );
        }
        for (extra, field) in [
            (
                "conntrack: {port_range: [3000, 2000]}",
                "conntrack.port_range",
            ),
            ("conntrack: {port_range: [0, 2000]}", "conntrack.port_range"),
            ("conntrack: {timeouts: {udp: 10}}", "conntrack.timeouts"),
            (
                "conntrack: {capacity_per_core: 0}",
                "conntrack.capacity_per_core",
            ),
        ] {
            let error = parse(&format!("{LAB_FILE}{extra}\n")).unwrap_err();
            assert!(
                matches!(&error, ConfigError::Invalid { field: f, .. } if *f == field),
                "{field}: {error}"
            );
        }
        let error = parse(&LAB_FILE.replacen("10.244.0.1 ", "10.244.0.300 ", 1)).unwrap_err();
        assert!(matches!(error, ConfigError::Parse { .. }), "{error}");
        assert!(parse("inside_interface: gw-in\n").is_err());
    }

    #[test]
    fn metrics_and_nat_log_are_opt_in() {
        let config = parse(LAB_FILE).unwrap();
        assert!(config.metrics.is_none());
        assert!(config.nat_log.is_none());
        let config = parse(&format!(
            "{LAB_FILE}metrics: {{listen: 127.0.0.1:9464}}\n\
             nat_log: {{dir: /tmp/nat, gateway_name: gw-a, max_file_bytes: 1000, keep_files: 3, rotate_every_s: 0, \
             queue_capacity: 10, ipfix_collector: 127.0.0.1:4739, ipfix_observation_domain: 7}}\n"
        ))
        .unwrap();
        let metrics = config.metrics.unwrap();
        assert_eq!(metrics.listen, "127.0.0.1:9464".parse().unwrap());
        assert_eq!(
            metrics.port_exhaustion_threshold,
            DEFAULT_PORT_EXHAUSTION_THRESHOLD
        );
        let writer = config.nat_log.unwrap().writer_config();
        assert_eq!(writer.directory, PathBuf::from("/tmp/nat"));
        assert_eq!(writer.gateway, "gw-a");
        assert_eq!(writer.max_file_bytes, 1000);
        assert_eq!(writer.keep_files, 3);
        assert_eq!(writer.rotate_every, None);
        assert_eq!(writer.queue_capacity, 10);
        let ipfix = writer.ipfix.unwrap();
        assert_eq!(ipfix.collector, "127.0.0.1:4739".parse().unwrap());
        assert_eq!(ipfix.observation_domain_id, 7);
        let defaults = parse(&format!("{LAB_FILE}nat_log: {{dir: /tmp/nat}}\n"))
            .unwrap()
            .nat_log
            .unwrap()
            .writer_config();
        assert!(!defaults.gateway.is_empty());
        assert!(defaults.ipfix.is_none());
        assert_eq!(
            defaults.rotate_every,
            Some(std::time::Duration::from_secs(3600))
        );
        for (extra, field) in [
            (
                "metrics: {listen: 127.0.0.1:9464, port_exhaustion_threshold: 1.5}",
                "metrics.port_exhaustion_threshold",
            ),
            (
                "metrics: {listen: 127.0.0.1:9464, port_exhaustion_threshold: 0}",
                "metrics.port_exhaustion_threshold",
            ),
            (
                "nat_log: {dir: /tmp/nat, keep_files: 0}",
                "nat_log.keep_files",
            ),
            ("nat_log: {dir: ''}", "nat_log.dir"),
            (
                "nat_log: {dir: /tmp/nat, queue_capacity: 0}",
                "nat_log.queue_capacity",
            ),
        ] {
            let error = parse(&format!("{LAB_FILE}{extra}\n")).unwrap_err();
            assert!(
                matches!(&error, ConfigError::Invalid { field: f, .. } if *f == field),
                "{field}: {error}"
            );
        }
        let error = parse(&format!("{LAB_FILE}nat_log: {{directory: /tmp/nat}}\n")).unwrap_err();
        assert!(chain(&error).contains("directory"), "{error}");
    }

    #[test]
    fn metrics_listen_flag_turns_metrics_on_or_moves_them() {
        let mut config = parse(LAB_FILE).unwrap();
        let overrides = Overrides {
            metrics_listen: Some("127.0.0.1:9999".parse().unwrap()),
            ..Overrides::default()
        };
        config.apply(&overrides);
        assert_eq!(
            config.metrics.as_ref().unwrap().listen,
            "127.0.0.1:9999".parse().unwrap()
        );
        let mut config = parse(&format!(
            "{LAB_FILE}metrics: {{listen: 0.0.0.0:9464, port_exhaustion_threshold: 0.5}}\n"
        ))
        .unwrap();
        config.apply(&overrides);
        let metrics = config.metrics.unwrap();
        assert_eq!(metrics.listen, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(metrics.port_exhaustion_threshold, 0.5);
    }

    /// The `gateway.yaml` of a ConfigMap manifest under `deploy/kubernetes`, parsed and validated.
    fn configmap_gateway_config(relative: &str) -> GatewayConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/kubernetes")
            .join(relative);
        let manifest: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let embedded = manifest["data"]["gateway.yaml"]
            .as_str()
            .expect("the ConfigMap has data.gateway.yaml");
        parse(embedded).unwrap_or_else(|error| panic!("{relative}: {error}"))
    }

    /// The EKS overlay's ConfigMap: one-armed on the primary ENI, same ports and paths.
    #[test]
    fn the_eks_configmap_is_a_valid_one_armed_gateway_config() {
        let config = configmap_gateway_config("overlays/aws/gateway-config-eks.yaml");
        assert!(config.one_armed());
        assert_eq!(config.inside_interface, "eth0");
        assert_eq!(
            config.control.tcp.as_ref().map(|tcp| tcp.listen.port()),
            Some(7443)
        );
        assert_eq!(
            config.metrics.as_ref().map(|metrics| metrics.listen.port()),
            Some(9464)
        );
    }

    /// The Kubernetes ConfigMap's `gateway.yaml` is what the DaemonSet passes to `--config`.
    #[test]
    fn the_kubernetes_configmap_is_a_valid_gateway_config() {
        let config = configmap_gateway_config("base/gateway-configmap.yaml");
        assert_eq!(
            config.metrics.as_ref().map(|metrics| metrics.listen.port()),
            Some(9464),
            "the DaemonSet's metrics port"
        );
        assert_eq!(
            config.control.tcp.as_ref().map(|tcp| tcp.listen.port()),
            Some(7443),
            "the DaemonSet's grpc port"
        );
        assert_eq!(
            config.nat_log.as_ref().map(|nat_log| nat_log.dir.clone()),
            Some(PathBuf::from("/var/log/egw/nat")),
            "the DaemonSet's natlog volume"
        );
        assert_eq!(
            config.control.unix_socket.as_deref(),
            Some(Path::new("/run/egw/egw.sock"))
        );
    }

    #[test]
    fn outside_equal_to_inside_means_one_armed() {
        let config = parse(&LAB_FILE.replacen("gw-out ", "gw-in ", 1)).unwrap();
        assert!(config.one_armed());
        assert_eq!(config.outside_interface_name(), "gw-in");
    }

    #[test]
    fn overrides_win() {
        let mut config = parse(LAB_FILE).unwrap();
        config.apply(&Overrides {
            workers: Some(2),
            control_socket: Some(PathBuf::from("/tmp/y.sock")),
            log_format: Some(LogFormat::Json),
            outside_interface: Some("eth9".into()),
            ..Overrides::default()
        });
        config.validate().unwrap();
        assert_eq!(config.workers, 2);
        assert_eq!(config.outside_interface.as_deref(), Some("eth9"));
        assert_eq!(
            config.control.unix_socket.as_deref(),
            Some(Path::new("/tmp/y.sock"))
        );
        assert_eq!(config.log_format, LogFormat::Json);
    }
}
