//! Output documents: the wire messages reshaped for people and scripts
//! (enum names instead of numbers, addresses joined with ports).
//!
//! JSON and YAML output serialise these types; their field names are part of
//! egwctl's scripting interface.

use std::collections::BTreeMap;

use egw_proto::v1;
use serde::Serialize;

/// `egwctl status`.
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// Gateway version.
    pub version: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Process epoch.
    pub epoch: u64,
    /// Route table generation.
    pub generation: u64,
    /// Interfaces.
    pub interfaces: Vec<InterfaceView>,
    /// Per-core counters.
    pub cores: Vec<CountersView>,
    /// Conntrack occupancy.
    pub conntrack: Vec<ConntrackView>,
    /// External IP usage.
    pub external_ips: Vec<ExternalIpView>,
}

/// One interface.
#[derive(Debug, Serialize)]
pub struct InterfaceView {
    /// Name.
    pub name: String,
    /// Kernel index.
    pub ifindex: u32,
    /// inside, outside or one-armed.
    pub role: &'static str,
    /// native or generic.
    pub xdp_mode: &'static str,
    /// zero-copy or copy.
    pub socket_mode: &'static str,
    /// Queue count.
    pub queues: u32,
}

/// Counters of one core, or totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CountersView {
    /// Core index (absent for totals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core: Option<u32>,
    /// Received packets.
    pub rx_packets: u64,
    /// Received bytes.
    pub rx_bytes: u64,
    /// Transmitted packets.
    pub tx_packets: u64,
    /// Transmitted bytes.
    pub tx_bytes: u64,
    /// Drops by reason.
    pub drops: BTreeMap<String, u64>,
    /// Flows created.
    pub flows_created: u64,
    /// Flows expired.
    pub flows_expired: u64,
    /// Cross-core handoffs.
    pub handoffs: u64,
}

impl CountersView {
    /// All drops, whatever the reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.values().copied().fold(0, u64::saturating_add)
    }
}

/// Conntrack occupancy of a core.
#[derive(Debug, Serialize)]
pub struct ConntrackView {
    /// Core.
    pub core: u32,
    /// Used entries.
    pub used: u64,
    /// Capacity.
    pub capacity: u64,
}

/// Port usage of one protocol.
#[derive(Debug, Default, Serialize)]
pub struct PortUsageView {
    /// Used.
    pub used: u64,
    /// Capacity.
    pub capacity: u64,
}

/// One external IP.
#[derive(Debug, Serialize)]
pub struct ExternalIpView {
    /// Address.
    pub ip: String,
    /// Pool.
    pub pool: String,
    /// TCP ports.
    pub tcp: PortUsageView,
    /// UDP ports.
    pub udp: PortUsageView,
    /// ICMP identifiers.
    pub icmp: PortUsageView,
    /// Draining.
    pub draining: bool,
    /// Flows still using it.
    pub flows_remaining: u64,
}

/// One flow.
#[derive(Debug, Serialize)]
pub struct FlowView {
    /// tcp, udp or icmp.
    pub protocol: &'static str,
    /// Pod address.
    pub pod_ip: String,
    /// Pod port.
    pub pod_port: u32,
    /// External address.
    pub external_ip: String,
    /// External port.
    pub external_port: u32,
    /// Remote address.
    pub remote_ip: String,
    /// Remote port.
    pub remote_port: u32,
    /// new, established or closing.
    pub state: &'static str,
    /// Owning core.
    pub core: u32,
    /// Age.
    pub age_seconds: u64,
    /// Idle time.
    pub idle_seconds: u64,
    /// Packets pod → remote.
    pub packets_out: u64,
    /// Bytes pod → remote.
    pub bytes_out: u64,
    /// Packets remote → pod.
    pub packets_in: u64,
    /// Bytes remote → pod.
    pub bytes_in: u64,
}

/// `egwctl flows`.
#[derive(Debug, Serialize)]
pub struct FlowListView {
    /// The flows fetched.
    pub flows: Vec<FlowView>,
    /// Token for the next page when not all pages were fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// One stats snapshot.
#[derive(Debug, Serialize)]
pub struct StatsView {
    /// Milliseconds since the Unix epoch.
    pub timestamp_unix_ms: u64,
    /// Per-core counters.
    pub cores: Vec<CountersView>,
    /// Totals.
    pub totals: CountersView,
}

/// `egwctl routes apply`.
#[derive(Debug, Serialize)]
pub struct ApplyView {
    /// The generation served now.
    pub generation: u64,
    /// True when the gateway already served this table.
    pub unchanged: bool,
}

/// `egwctl drain`.
#[derive(Debug, Serialize)]
pub struct DrainView {
    /// The address.
    pub external_ip: String,
    /// Whether it takes no new flows.
    pub draining: bool,
    /// Flows still using it.
    pub flows_remaining: u64,
}

/// The name of a protocol value.
pub fn protocol_name(value: i32) -> &'static str {
    match v1::Protocol::try_from(value) {
        Ok(v1::Protocol::Tcp) => "tcp",
        Ok(v1::Protocol::Udp) => "udp",
        Ok(v1::Protocol::Icmp) => "icmp",
        _ => "unknown",
    }
}

fn state_name(value: i32) -> &'static str {
    match v1::FlowState::try_from(value) {
        Ok(v1::FlowState::New) => "new",
        Ok(v1::FlowState::Established) => "established",
        Ok(v1::FlowState::Closing) => "closing",
        _ => "unknown",
    }
}

fn role_name(value: i32) -> &'static str {
    match v1::InterfaceRole::try_from(value) {
        Ok(v1::InterfaceRole::Inside) => "inside",
        Ok(v1::InterfaceRole::Outside) => "outside",
        Ok(v1::InterfaceRole::OneArmed) => "one-armed",
        _ => "unknown",
    }
}

fn xdp_mode_name(value: i32) -> &'static str {
    match v1::XdpMode::try_from(value) {
        Ok(v1::XdpMode::Native) => "native",
        Ok(v1::XdpMode::Generic) => "generic",
        _ => "unknown",
    }
}

fn socket_mode_name(value: i32) -> &'static str {
    match v1::SocketMode::try_from(value) {
        Ok(v1::SocketMode::ZeroCopy) => "zero-copy",
        Ok(v1::SocketMode::Copy) => "copy",
        _ => "unknown",
    }
}

impl From<&v1::CoreCounters> for CountersView {
    fn from(counters: &v1::CoreCounters) -> Self {
        CountersView {
            core: Some(counters.core),
            rx_packets: counters.rx_packets,
            rx_bytes: counters.rx_bytes,
            tx_packets: counters.tx_packets,
            tx_bytes: counters.tx_bytes,
            drops: counters
                .drops
                .iter()
                .map(|(reason, count)| (reason.clone(), *count))
                .collect(),
            flows_created: counters.flows_created,
            flows_expired: counters.flows_expired,
            handoffs: counters.handoffs,
        }
    }
}

fn port_usage(usage: Option<&v1::PortUsage>) -> PortUsageView {
    usage.map_or_else(PortUsageView::default, |usage| PortUsageView {
        used: usage.used,
        capacity: usage.capacity,
    })
}

impl From<&v1::GetStatusResponse> for StatusView {
    fn from(status: &v1::GetStatusResponse) -> Self {
        StatusView {
            version: status.version.clone(),
            uptime_seconds: status.uptime_seconds,
            epoch: status.epoch,
            generation: status.generation,
            interfaces: status
                .interfaces
                .iter()
                .map(|interface| InterfaceView {
                    name: interface.name.clone(),
                    ifindex: interface.ifindex,
                    role: role_name(interface.role),
                    xdp_mode: xdp_mode_name(interface.xdp_mode),
                    socket_mode: socket_mode_name(interface.socket_mode),
                    queues: interface.queues,
                })
                .collect(),
            cores: status.cores.iter().map(CountersView::from).collect(),
            conntrack: status
                .conntrack
                .iter()
                .map(|occupancy| ConntrackView {
                    core: occupancy.core,
                    used: occupancy.used,
                    capacity: occupancy.capacity,
                })
                .collect(),
            external_ips: status
                .external_ips
                .iter()
                .map(|external| ExternalIpView {
                    ip: external.ip.clone(),
                    pool: external.pool.clone(),
                    tcp: port_usage(external.tcp.as_ref()),
                    udp: port_usage(external.udp.as_ref()),
                    icmp: port_usage(external.icmp.as_ref()),
                    draining: external.draining,
                    flows_remaining: external.flows_remaining,
                })
                .collect(),
        }
    }
}

impl From<&v1::Flow> for FlowView {
    fn from(flow: &v1::Flow) -> Self {
        FlowView {
            protocol: protocol_name(flow.protocol),
            pod_ip: flow.pod_ip.clone(),
            pod_port: flow.pod_port,
            external_ip: flow.external_ip.clone(),
            external_port: flow.external_port,
            remote_ip: flow.remote_ip.clone(),
            remote_port: flow.remote_port,
            state: state_name(flow.state),
            core: flow.core,
            age_seconds: flow.age_seconds,
            idle_seconds: flow.idle_seconds,
            packets_out: flow.packets_out,
            bytes_out: flow.bytes_out,
            packets_in: flow.packets_in,
            bytes_in: flow.bytes_in,
        }
    }
}

impl From<&v1::StatsSnapshot> for StatsView {
    fn from(snapshot: &v1::StatsSnapshot) -> Self {
        let mut totals = snapshot
            .totals
            .as_ref()
            .map(CountersView::from)
            .unwrap_or_default();
        totals.core = None;
        StatsView {
            timestamp_unix_ms: snapshot.timestamp_unix_ms,
            cores: snapshot.cores.iter().map(CountersView::from).collect(),
            totals,
        }
    }
}
