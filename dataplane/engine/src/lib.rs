//! egw's NAT engine: a pure library that parses, classifies and translates IPv4 packets.
//!
//! No I/O, no threads, no clocks: callers pass frames as `&mut [u8]` and the current time, and get
//! back a verdict. One [`engine`] instance runs per core and owns its connection-tracking table, so
//! the per-packet path takes no locks and touches no atomics.
#![forbid(unsafe_code)]

pub mod checksum;
pub mod testkit;
