//! Looking into a running engine: flow listing with filters, port usage, occupancy, and the
//! flow create/remove events NAT logs are written from.

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

use super::{secs, Engine};
use crate::conntrack::{Flow, FlowState};
use crate::packet::Protocol;
use crate::ports::PortUsage;

/// A filter over flows for listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    pub pod_ip: Option<Ipv4Addr>,
    pub external_ip: Option<Ipv4Addr>,
    pub external_port: Option<u16>,
    pub destination: Option<Ipv4Net>,
    pub protocol: Option<Protocol>,
    pub state: Option<FlowState>,
}

impl FlowFilter {
    pub(super) fn matches(&self, f: &Flow) -> bool {
        self.pod_ip.is_none_or(|ip| ip == f.pod_ip)
            && self.external_ip.is_none_or(|ip| ip == f.external_ip())
            && self.external_port.is_none_or(|p| p == f.external_port())
            && self
                .destination
                .is_none_or(|net| net.contains(&f.remote_ip))
            && self.protocol.is_none_or(|p| p == f.protocol)
            && self.state.is_none_or(|s| s == f.state)
    }
}

/// A copy of one flow's state, for listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowInfo {
    pub core: u16,
    pub protocol: Protocol,
    pub pod: (Ipv4Addr, u16),
    pub external: (Ipv4Addr, u16),
    pub remote: (Ipv4Addr, u16),
    pub state: FlowState,
    pub age_secs: u32,
    pub idle_secs: u32,
    pub packets_out: u64,
    pub packets_in: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

/// One external address's port usage on this core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalUsage {
    pub address: Ipv4Addr,
    pub draining: bool,
    pub usage: [PortUsage; 3],
    pub flows: u64,
}

/// A flow created or removed, for NAT event logs (RFC 8158-style). Recorded only when enabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowEvent {
    Created(FlowInfo),
    Removed {
        flow: FlowInfo,
        reason: &'static str,
    },
}

impl Engine {
    /// (flows tracked, capacity).
    pub fn occupancy(&self) -> (u32, u32) {
        (self.flows.len(), self.flows.capacity())
    }

    /// Bytes the flow table holds at full capacity.
    pub fn flow_table_bytes(&self) -> usize {
        self.flows.memory_bytes()
    }

    pub fn port_usage(&self) -> Vec<ExternalUsage> {
        self.externals
            .iter()
            .map(|e| ExternalUsage {
                address: e.address(),
                draining: e.draining(),
                usage: Protocol::ALL.map(|p| e.usage(p)),
                flows: e.total_leases(),
            })
            .collect()
    }

    /// Starts recording flow create/remove events, keeping at most `capacity` until taken.
    /// When full, events (never packets) are dropped and counted.
    pub fn enable_flow_events(&mut self, capacity: usize) {
        self.events = Some(Vec::with_capacity(capacity));
        self.event_capacity = capacity;
    }

    /// Moves recorded events into `out`.
    pub fn take_flow_events(&mut self, out: &mut Vec<FlowEvent>) {
        if let Some(events) = self.events.as_mut() {
            out.append(events);
        }
    }

    pub fn flow_events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Copies up to `limit` flows matching `filter` into `out`, scanning from slot `cursor` and at
    /// most `scan_budget` slots. Returns the cursor to continue from, or `None` at the end.
    pub fn list_flows(
        &self,
        filter: &FlowFilter,
        cursor: u32,
        limit: usize,
        scan_budget: u32,
        now: Duration,
        out: &mut Vec<FlowInfo>,
    ) -> Option<u32> {
        let now_s = secs(now);
        let mut last = None;
        let mut scanned = 0u32;
        for (slot, flow) in self.flows.iter_from(cursor) {
            scanned += 1;
            last = Some(slot);
            if filter.matches(flow) {
                out.push(flow_info(self.config.core, flow, now_s));
                if out.len() >= limit {
                    break;
                }
            }
            if scanned >= scan_budget {
                break;
            }
        }
        let next = last? + 1;
        (self.flows.iter_from(next).next().is_some()).then_some(next)
    }

    pub(super) fn record_created(&mut self, slot: u32, now_s: u32) {
        let Some(events) = self.events.as_ref() else {
            return;
        };
        if events.len() >= self.event_capacity {
            self.events_dropped += 1;
            return;
        }
        let info = self
            .flows
            .get(slot)
            .map(|f| flow_info(self.config.core, f, now_s));
        if let (Some(info), Some(events)) = (info, self.events.as_mut()) {
            events.push(FlowEvent::Created(info));
        }
    }

    /// Address ranges of the engine's large tables (see `FlowTable::memory_regions`).
    pub fn memory_regions(&self) -> Vec<(usize, usize)> {
        self.flows.memory_regions()
    }
}

pub(super) fn flow_info(core: u16, f: &Flow, now_s: u32) -> FlowInfo {
    FlowInfo {
        core,
        protocol: f.protocol,
        pod: (f.pod_ip, f.pod_port),
        external: (f.external_ip(), f.external_port()),
        remote: (f.remote_ip, f.remote_port),
        state: f.state,
        age_secs: now_s.saturating_sub(f.created),
        idle_secs: now_s.saturating_sub(f.last_seen),
        packets_out: u64::from(f.packets_out),
        packets_in: u64::from(f.packets_in),
        bytes_out: f.bytes_out,
        bytes_in: f.bytes_in,
    }
}
