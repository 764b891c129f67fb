//! egw's NAT engine: a pure library that parses, classifies and translates IPv4 packets.
//!
//! No I/O, no threads, no clocks: callers pass frames as `&mut [u8]` and the current time, and get
//! back a [`Verdict`]. One [`Engine`] runs per core and owns its connection-tracking table, so the
//! per-packet path takes no locks and touches no atomics. See `docs/architecture.md`.
#![forbid(unsafe_code)]

pub mod checksum;
pub mod conntrack;
pub mod counters;
pub mod frag;
pub mod packet;
pub mod pipeline;
pub mod ports;

pub use conntrack::{FlowState, Timeouts};
pub use counters::{Counters, DropReason};
pub use egw_policy::{RouteTable, RouteTableSpec};
pub use packet::Protocol;
pub use pipeline::{
    ConfigError, Engine, EngineConfig, ExternalUsage, Filtering, FlowEvent, FlowFilter, FlowInfo,
    Ingress, Side, Verdict,
};
