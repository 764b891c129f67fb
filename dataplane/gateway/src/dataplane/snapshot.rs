//! The counters a worker publishes between batches (every `PUBLISH_INTERVAL`) for the control
//! side and `/metrics` to read without touching the packet path.

use egw_engine::{Counters, ExternalUsage};
use egw_xdp::xsk::WorkerCounters;

/// Drops the gateway (not the engine) counts, by stable name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayCounters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// The next hop's MAC address was unknown; the kernel was asked to resolve it.
    pub neighbour_unresolved: u64,
    /// No kernel route through the egress interface covers the destination.
    pub no_route: u64,
    /// The hand-off ring to the owning core was full.
    pub handoff_ring_full: u64,
    /// No UMEM frame was free for a handed-off or released frame.
    pub no_frame: u64,
    /// The TX ring was full.
    pub tx_ring_full: u64,
    /// The translated packet did not fit its frame (never expected).
    pub frame_too_large: u64,
    pub handoffs_received: u64,
}

impl GatewayCounters {
    /// (name, count) of every gateway-level drop reason.
    pub fn drops(&self) -> [(&'static str, u64); 6] {
        [
            ("neighbour_unresolved", self.neighbour_unresolved),
            ("no_route", self.no_route),
            ("handoff_ring_full", self.handoff_ring_full),
            ("no_frame", self.no_frame),
            ("tx_ring_full", self.tx_ring_full),
            ("frame_too_large", self.frame_too_large),
        ]
    }
}

/// One core's published state.
#[derive(Debug, Clone, Default)]
pub struct CoreSnapshot {
    pub core: u16,
    pub engine: Counters,
    pub gateway: GatewayCounters,
    pub xsk: WorkerCounters,
    /// (flows tracked, capacity).
    pub occupancy: (u32, u32),
    pub port_usage: Vec<ExternalUsage>,
    pub table_generation: u64,
}
