//! The records of the log: one JSON object per line, and the kinds and protocols they name.

use std::fmt;
use std::net::SocketAddrV4;

use serde::{Deserialize, Serialize};

use crate::millis::UnixMillis;

/// Log file name suffix; the writer names its files with it and queries read every file with it.
pub const FILE_SUFFIX: &str = ".jsonl";

/// Whether a mapping was created or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A pod endpoint was mapped to an external endpoint.
    Create,
    /// The mapping ended.
    Delete,
}

/// The translated protocol, as written in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogProtocol {
    Tcp,
    Udp,
    /// ICMP echo; the "port" is the echo identifier.
    Icmp,
}

impl fmt::Display for LogProtocol {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
        })
    }
}

/// One line of the log file (JSON), e.g.
/// `{"ts":"2026-11-21T05:40:19.123Z","event":"create","proto":"tcp","pod":"10.244.1.10:40000",
/// "external":"198.51.100.1:1042","remote":"203.0.113.10:80","core":0,"gateway":"gw-a"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatLogRecord {
    pub ts: UnixMillis,
    pub event: EventKind,
    pub proto: LogProtocol,
    pub pod: SocketAddrV4,
    pub external: SocketAddrV4,
    /// `external` as the outside world sees it (AWS Elastic IP, same port), when the route
    /// table names a public address for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<SocketAddrV4>,
    pub remote: SocketAddrV4,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_s: Option<u32>,
    pub core: u16,
    pub gateway: String,
}
