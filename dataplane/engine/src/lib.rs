//! egw's NAT engine: a pure library that parses, classifies and translates IPv4 packets.
//!
//! No I/O, no threads, no clocks: callers pass frames as `&mut [u8]` and the current time, and get
//! back a [`Verdict`]. One [`Engine`] runs per core and owns its connection-tracking table, so the
//! per-packet path takes no locks and touches no atomics. See `docs/architecture.md`.
//!
//! The modules are private: what other crates use is re-exported here, and the connection-tracking
//! internals (flow table, flows, keys, buckets) stay inside. The route-table types come from
//! `egw-policy`; the ones the engine's own API hands out are re-exported for convenience.
#![forbid(unsafe_code)]

mod checksum;
mod conntrack;
mod counters;
mod frag;
mod pipeline;
mod ports;

mod packet;

// The property tests undo a translation with the engine's own rewrites (`packet` is private), so
// they live inside the crate. They share the integration tests' harness, which names the crate
// by its public name: `extern crate self` lets that one file serve both.
#[cfg(test)]
extern crate self as egw_engine;
#[cfg(test)]
#[path = "../tests/harness/mod.rs"]
mod harness;
#[cfg(test)]
mod properties;

pub use checksum::ChecksumDelta;
pub use conntrack::{FlowState, Timeouts};
pub use counters::{Counters, DropCounters, DropReason};
pub use egw_policy::{CompiledRouteTable, Decision, PoolId, RouteTableSpec};
pub use frag::FragmentConfig;
pub use packet::Protocol;
pub use pipeline::{
    ConfigError, Engine, EngineConfig, ExternalUsage, Filtering, FlowEvent, FlowFilter, FlowInfo,
    Ingress, Side, Verdict, MAX_FLOWS_PER_CORE, PREFETCH_BATCH,
};
pub use ports::{PortPartition, PortUsage};
