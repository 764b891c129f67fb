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

// The frame parser and the in-place rewrites the pipeline uses stay public: a translation is
// checked by undoing it with these same rewrites (`tests/properties.rs`), which only the parser's
// own view of a frame can do; the module holds no state, so it exposes no engine internals.
pub mod packet;

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
