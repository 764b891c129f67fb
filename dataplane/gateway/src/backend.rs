//! [`ControlBackend`] over the running [`Dataplane`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use egw_engine::FlowState;
use egw_engine::{CompiledRouteTable, FlowFilter, FlowInfo, Protocol};
use egw_proto::v1;
use egw_xdp::AttachMode;
use tracing::warn;

use crate::control::{new_epoch, BackendError, ControlBackend, FlowCursor, FlowPage, FlowQuery};
use crate::dataplane::{CoreSnapshot, Dataplane};

/// Worker requests one `list_flows` call may make before handing back a cursor.
const MAX_LIST_REQUESTS: usize = 64;

/// The gateway's control backend.
pub struct GatewayBackend {
    dataplane: Arc<Dataplane>,
    epoch: u64,
}

impl GatewayBackend {
    pub fn new(dataplane: Arc<Dataplane>) -> Self {
        Self {
            dataplane,
            epoch: new_epoch(),
        }
    }
}

/// The XDP mode in wire form.
pub fn wire_xdp_mode(mode: AttachMode) -> v1::XdpMode {
    match mode {
        AttachMode::Native => v1::XdpMode::Native,
        AttachMode::Generic => v1::XdpMode::Generic,
    }
}

impl CoreSnapshot {
    /// The wire form of the counters.
    pub fn to_wire(&self) -> v1::CoreCounters {
        let mut drops: std::collections::HashMap<String, u64> = self
            .engine
            .drops
            .iter()
            .map(|(reason, count)| (reason.name().to_owned(), count))
            .collect();
        for (name, count) in self.gateway.drops() {
            drops.insert(name.to_owned(), count);
        }
        v1::CoreCounters {
            core: u32::from(self.core),
            rx_packets: self.engine.rx_packets,
            rx_bytes: self.engine.rx_bytes,
            tx_packets: self.gateway.tx_packets,
            tx_bytes: self.gateway.tx_bytes,
            drops,
            flows_created: self.engine.flows_created,
            flows_expired: self.engine.flows_expired,
            handoffs: self.engine.handoffs,
        }
    }
}

fn engine_protocol(protocol: v1::Protocol) -> Option<Protocol> {
    match protocol {
        v1::Protocol::Tcp => Some(Protocol::Tcp),
        v1::Protocol::Udp => Some(Protocol::Udp),
        v1::Protocol::Icmp => Some(Protocol::Icmp),
        v1::Protocol::Unspecified => None,
    }
}

fn wire_protocol(protocol: Protocol) -> v1::Protocol {
    match protocol {
        Protocol::Tcp => v1::Protocol::Tcp,
        Protocol::Udp => v1::Protocol::Udp,
        Protocol::Icmp => v1::Protocol::Icmp,
    }
}

/// The coarse wire state of an engine flow state.
pub fn wire_state(state: FlowState) -> v1::FlowState {
    match state {
        FlowState::Unreplied | FlowState::SynSent | FlowState::SynReceived => v1::FlowState::New,
        FlowState::Replied | FlowState::Established => v1::FlowState::Established,
        FlowState::FinOutbound | FlowState::FinInbound | FlowState::Closing | FlowState::Reset => {
            v1::FlowState::Closing
        }
    }
}

/// The wire form of a flow.
pub fn wire_flow(flow: &FlowInfo) -> v1::Flow {
    v1::Flow {
        protocol: wire_protocol(flow.protocol) as i32,
        pod_ip: flow.pod.0.to_string(),
        pod_port: u32::from(flow.pod.1),
        external_ip: flow.external.0.to_string(),
        external_port: u32::from(flow.external.1),
        remote_ip: flow.remote.0.to_string(),
        remote_port: u32::from(flow.remote.1),
        state: wire_state(flow.state) as i32,
        core: u32::from(flow.core),
        age_seconds: u64::from(flow.age_secs),
        idle_seconds: u64::from(flow.idle_secs),
        packets_out: flow.packets_out,
        bytes_out: flow.bytes_out,
        packets_in: flow.packets_in,
        bytes_in: flow.bytes_in,
    }
}

/// The engine filter for a query; the wire state (coarser than the engine's) is filtered after.
pub fn engine_filter(query: &FlowQuery) -> FlowFilter {
    FlowFilter {
        pod_ip: query.pod_ip,
        external_ip: query.external_ip,
        external_port: query.external_port,
        destination: query.destination,
        protocol: query.protocol.and_then(engine_protocol),
        state: None,
    }
}

/// Sums per-core counters into one (core 0).
pub fn total_counters(cores: &[v1::CoreCounters]) -> v1::CoreCounters {
    let mut total = v1::CoreCounters::default();
    for core in cores {
        total.rx_packets += core.rx_packets;
        total.rx_bytes += core.rx_bytes;
        total.tx_packets += core.tx_packets;
        total.tx_bytes += core.tx_bytes;
        total.flows_created += core.flows_created;
        total.flows_expired += core.flows_expired;
        total.handoffs += core.handoffs;
        for (name, count) in &core.drops {
            *total.drops.entry(name.clone()).or_default() += count;
        }
    }
    total
}

#[derive(Default)]
struct AddressTotals {
    draining: bool,
    flows: u64,
    /// (used, capacity) for TCP, UDP, ICMP.
    usage: [(u64, u64); 3],
}

/// Port usage per external address, summed over cores.
fn external_ips(
    snapshots: &[Arc<CoreSnapshot>],
    table: &CompiledRouteTable,
) -> Vec<v1::ExternalIpStatus> {
    let mut totals: BTreeMap<Ipv4Addr, AddressTotals> = BTreeMap::new();
    for address in table.snat_addresses() {
        totals.entry(address).or_default();
    }
    for snapshot in snapshots {
        for usage in &snapshot.port_usage {
            let entry = totals.entry(usage.address).or_default();
            entry.draining |= usage.draining;
            entry.flows += usage.flows;
            for port_usage in &usage.usage {
                let index = match port_usage.protocol {
                    Protocol::Tcp => 0,
                    Protocol::Udp => 1,
                    Protocol::Icmp => 2,
                };
                entry.usage[index].0 += u64::from(port_usage.ports_in_use);
                entry.usage[index].1 += u64::from(port_usage.ports_total);
            }
        }
    }
    totals
        .into_iter()
        .map(|(address, totals)| {
            let pool = table
                .pools()
                .iter()
                .find(|pool| pool.addresses().contains(&address))
                .map(|pool| pool.name().to_owned())
                .unwrap_or_default();
            let usage = |index: usize| {
                Some(v1::PortUsage {
                    used: totals.usage[index].0,
                    capacity: totals.usage[index].1,
                })
            };
            v1::ExternalIpStatus {
                ip: address.to_string(),
                pool,
                tcp: usage(0),
                udp: usage(1),
                icmp: usage(2),
                draining: totals.draining,
                flows_remaining: totals.flows,
            }
        })
        .collect()
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

impl ControlBackend for GatewayBackend {
    fn apply_route_table(&self, table: v1::RouteTable) -> Result<(), BackendError> {
        let invalid = |message: String| BackendError::InvalidTable { message };
        let compiled = egw_proto::spec::compile(&table).map_err(invalid)?;
        self.dataplane
            .apply_table(compiled)
            .map_err(|error| BackendError::Unavailable {
                message: format!("updating the XDP SNAT address map: {error}"),
            })
    }

    fn initial_route_table(&self) -> Option<v1::RouteTable> {
        self.dataplane.initial_table().cloned()
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn status(&self) -> v1::GetStatusResponse {
        let snapshots = self.dataplane.snapshots();
        let interfaces = self
            .dataplane
            .interfaces()
            .iter()
            .map(|interface| v1::InterfaceStatus {
                name: interface.attached.name.clone(),
                ifindex: interface.attached.ifindex,
                role: match interface.attached.role {
                    egw_xdp::InterfaceRole::Inside => v1::InterfaceRole::Inside,
                    egw_xdp::InterfaceRole::Outside => v1::InterfaceRole::Outside,
                    egw_xdp::InterfaceRole::OneArmed => v1::InterfaceRole::OneArmed,
                } as i32,
                xdp_mode: wire_xdp_mode(interface.attached.mode) as i32,
                socket_mode: if interface.zero_copy {
                    v1::SocketMode::ZeroCopy
                } else {
                    v1::SocketMode::Copy
                } as i32,
                queues: interface.queues,
            })
            .collect();
        let table = self.dataplane.route_table();
        v1::GetStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.dataplane.uptime().as_secs(),
            epoch: self.epoch,
            generation: table.generation(),
            interfaces,
            cores: snapshots
                .iter()
                .map(|snapshot| snapshot.to_wire())
                .collect(),
            conntrack: snapshots
                .iter()
                .map(|snapshot| v1::ConntrackOccupancy {
                    core: u32::from(snapshot.core),
                    used: u64::from(snapshot.occupancy.0),
                    capacity: u64::from(snapshot.occupancy.1),
                })
                .collect(),
            external_ips: external_ips(&snapshots, &table),
        }
    }

    fn list_flows(&self, query: &FlowQuery) -> FlowPage {
        let filter = engine_filter(query);
        let wanted_state = query.state;
        let cores = self.dataplane.cores();
        let start = query.start.unwrap_or(FlowCursor {
            shard: 0,
            position: 0,
        });
        let mut core = u16::try_from(start.shard).unwrap_or(u16::MAX);
        let mut slot = u32::try_from(start.position).unwrap_or(u32::MAX);
        let mut flows = Vec::new();
        for _ in 0..MAX_LIST_REQUESTS {
            if core >= cores {
                return FlowPage { flows, next: None };
            }
            let remaining = query.limit.saturating_sub(flows.len());
            let (found, next) =
                match self
                    .dataplane
                    .list_flows(core, filter.clone(), slot, remaining)
                {
                    Ok(page) => page,
                    Err(message) => {
                        warn!(core, %message, "listing flows failed; the listing ends early");
                        return FlowPage { flows, next: None };
                    }
                };
            flows.extend(
                found
                    .iter()
                    .map(wire_flow)
                    .filter(|flow| wanted_state.is_none_or(|state| flow.state == state as i32)),
            );
            match next {
                Some(next_slot) => slot = next_slot,
                None => {
                    core += 1;
                    slot = 0;
                }
            }
            if flows.len() >= query.limit {
                break;
            }
        }
        let next = (core < cores).then_some(FlowCursor {
            shard: u32::from(core),
            position: u64::from(slot),
        });
        FlowPage { flows, next }
    }

    fn drain(
        &self,
        external_ip: Ipv4Addr,
        undrain: bool,
    ) -> Result<v1::DrainResponse, BackendError> {
        let table = self.dataplane.route_table();
        if !table.snat_addresses().any(|address| address == external_ip) {
            return Err(BackendError::UnknownExternalIp { ip: external_ip });
        }
        self.dataplane
            .set_draining(external_ip, !undrain)
            .map_err(|message| BackendError::Unavailable { message })?;
        let flows_remaining = self
            .dataplane
            .snapshots()
            .iter()
            .flat_map(|snapshot| snapshot.port_usage.iter())
            .filter(|usage| usage.address == external_ip)
            .map(|usage| usage.flows)
            .sum();
        Ok(v1::DrainResponse {
            external_ip: external_ip.to_string(),
            draining: !undrain,
            flows_remaining,
        })
    }

    fn stats_snapshot(&self) -> v1::StatsSnapshot {
        let cores: Vec<v1::CoreCounters> = self
            .dataplane
            .snapshots()
            .iter()
            .map(|snapshot| snapshot.to_wire())
            .collect();
        v1::StatsSnapshot {
            timestamp_unix_ms: now_unix_ms(),
            totals: Some(total_counters(&cores)),
            cores,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::GatewayCounters;
    use egw_engine::DropReason;

    #[test]
    fn flow_states_map_to_wire_states() {
        assert_eq!(wire_state(FlowState::Unreplied), v1::FlowState::New);
        assert_eq!(wire_state(FlowState::SynSent), v1::FlowState::New);
        assert_eq!(wire_state(FlowState::Replied), v1::FlowState::Established);
        assert_eq!(
            wire_state(FlowState::Established),
            v1::FlowState::Established
        );
        assert_eq!(wire_state(FlowState::Reset), v1::FlowState::Closing);
        assert_eq!(wire_state(FlowState::FinInbound), v1::FlowState::Closing);
    }

    #[test]
    fn flows_convert_to_wire_form() {
        let flow = FlowInfo {
            core: 1,
            protocol: Protocol::Udp,
            pod: (Ipv4Addr::new(10, 244, 1, 10), 5000),
            external: (Ipv4Addr::new(198, 51, 100, 1), 40000),
            remote: (Ipv4Addr::new(203, 0, 113, 10), 53),
            state: FlowState::Replied,
            age_secs: 3,
            idle_secs: 1,
            packets_out: 2,
            packets_in: 1,
            bytes_out: 100,
            bytes_in: 50,
        };
        let wire = wire_flow(&flow);
        assert_eq!(wire.protocol, v1::Protocol::Udp as i32);
        assert_eq!(wire.pod_ip, "10.244.1.10");
        assert_eq!(wire.external_port, 40000);
        assert_eq!(wire.remote_port, 53);
        assert_eq!(wire.state, v1::FlowState::Established as i32);
        assert_eq!((wire.packets_out, wire.bytes_in), (2, 50));
        let mut query = FlowQuery::all(10);
        query.state = Some(v1::FlowState::Established);
        assert!(query.matches(&wire));
        query.state = Some(v1::FlowState::New);
        assert!(!query.matches(&wire));
    }

    #[test]
    fn query_maps_to_engine_filter() {
        let mut query = FlowQuery::all(5);
        query.pod_ip = Some(Ipv4Addr::new(10, 0, 0, 1));
        query.protocol = Some(v1::Protocol::Tcp);
        query.state = Some(v1::FlowState::Closing);
        let filter = engine_filter(&query);
        assert_eq!(filter.pod_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(filter.protocol, Some(Protocol::Tcp));
        assert_eq!(
            filter.state, None,
            "wire states are filtered after conversion"
        );
    }

    #[test]
    fn counters_carry_engine_and_gateway_drops_and_sum() {
        let mut snapshot = CoreSnapshot {
            core: 0,
            ..CoreSnapshot::default()
        };
        snapshot.engine.rx_packets = 10;
        snapshot.engine.drops.record(DropReason::NoFlow);
        snapshot.gateway.neighbour_unresolved = 2;
        snapshot.gateway.tx_packets = 7;
        let first = snapshot.to_wire();
        assert_eq!(first.drops["no_flow"], 1);
        assert_eq!(first.drops["neighbour_unresolved"], 2);
        assert_eq!(first.drops["handoff_ring_full"], 0);
        assert_eq!(first.tx_packets, 7);
        let mut second = first.clone();
        second.core = 1;
        let total = total_counters(&[first, second]);
        assert_eq!(total.rx_packets, 20);
        assert_eq!(total.drops["neighbour_unresolved"], 4);
    }

    #[test]
    fn core_snapshot_reports_every_gateway_drop_reason() {
        let wire = CoreSnapshot::default().to_wire();
        for (name, _) in GatewayCounters::default().drops() {
            assert_eq!(wire.drops.get(name), Some(&0), "{name}");
        }
        for reason in egw_engine::DropReason::ALL {
            assert_eq!(wire.drops.get(reason.name()), Some(&0), "{reason}");
        }
    }
}
