//! egw NAT event log format: what the log files hold and how to read them back.
//!
//! Every mapping the gateway creates or deletes is one JSON line ([`NatLogRecord`]):
//!
//! ```text
//! {"ts":"2026-11-21T05:40:19.123Z","event":"create","proto":"tcp","pod":"10.244.1.10:40000",
//!  "external":"198.51.100.1:1042","remote":"203.0.113.10:80","core":0,"gateway":"gw-a"}
//! ```
//!
//! (deletes add `"reason"` and `"age_s"`), in files named `*`[`FILE_SUFFIX`]. [`NatLogIndex`]
//! reads a directory of them back, rotated files included, and answers "which pod held external
//! IP:port X at time T" ([`NatLogIndex::holders_of`]).
//!
//! This crate is the half of the log a reader needs: it depends on neither io_uring nor the NAT
//! engine, so `egwctl` can query log files without linking either. The writer (bounded queue,
//! io_uring files, rotation, IPFIX) is `egw-natlog`, which re-exports everything here.

mod error;
mod millis;
mod query;
mod record;

pub use error::{QueryError, TimeError};
pub use millis::UnixMillis;
pub use query::{Mapping, NatLogIndex, RecordFilter};
pub use record::{EventKind, LogProtocol, NatLogRecord, FILE_SUFFIX};
