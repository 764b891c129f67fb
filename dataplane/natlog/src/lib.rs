//! egw NAT event log: which pod used which external IP:port, and when.
//!
//! Compliance logging in the spirit of RFC 8158: every mapping the gateway creates
//! or deletes becomes one JSON line
//!
//! ```text
//! {"ts":"2026-11-21T05:40:19.123Z","event":"create","proto":"tcp","pod":"10.244.1.10:40000",
//!  "external":"198.51.100.1:1042","remote":"203.0.113.10:80","core":0,"gateway":"gw-a"}
//! ```
//!
//! (deletes add `"reason"` and `"age_s"`). Dataplane workers hand events to a
//! [`NatLogSender`]: a bounded lock-free queue that never blocks; when it is full,
//! events are dropped and counted. One writer thread ([`NatLogWriter`]) formats
//! them into rotating files written through io_uring (plain writes where io_uring
//! is unavailable). [`NatLogIndex`] reads the files back and answers queries; it and the record
//! types live in `egw-natlog-format` (re-exported here), so that readers such as `egwctl` link
//! neither io_uring nor the engine.
//! Optionally the same events go to an IPFIX collector ([`ipfix`], RFC 7011 with
//! RFC 8158 NAT44 session records). [`NatLogStats`] has the counters to export
//! (`egw_natlog_events_dropped_total` is `events_dropped`).
//!
//! # Unsafe code
//!
//! The crate denies `unsafe` (its Cargo.toml `[lints]`) except in its private io_uring module,
//! which allows it for the two submission-queue pushes, each with a `// SAFETY:` note. This crate
//! and `egw-xdp` are the only ones with `unsafe` code; the record format and query
//! (`egw-natlog-format`) have none.
//!
//! ```no_run
//! use egw_natlog::{NatLogConfig, NatLogWriter};
//! # fn main() -> Result<(), egw_natlog::NatLogError> {
//! let writer = NatLogWriter::start(NatLogConfig::new("/var/log/egw/nat", "gw-a"))?;
//! let sender = writer.sender(); // one per worker
//! # let mut engine_events = Vec::new();
//! // In the worker loop, after `engine.take_flow_events(&mut engine_events)`; the route
//! // table names the public address (AWS Elastic IP) of each external address, if any:
//! sender.submit_flow_events(&mut engine_events, |_external| None);
//! let stats = writer.shutdown()?;
//! # let _ = stats;
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]

mod error;
mod event;
pub mod ipfix;
mod uring;
mod writer;

pub use egw_natlog_format::{
    EventKind, LogProtocol, Mapping, NatLogIndex, NatLogRecord, QueryError, RecordFilter,
    TimeError, UnixMillis, FILE_SUFFIX,
};
pub use error::NatLogError;
pub use event::{log_protocol, NatEvent};
pub use ipfix::IpfixConfig;
pub use writer::{
    queue, ActiveBackend, IoBackend, NatLogConfig, NatLogReceiver, NatLogSender, NatLogStats,
    NatLogWriter,
};
