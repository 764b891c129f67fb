//! NAT events as queued by dataplane workers and as written to the log.

use std::fmt;
use std::net::SocketAddrV4;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use egw_engine::{FlowEvent, FlowInfo, Protocol};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::error::TimeError;

/// A point in time: milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as i64)
            .unwrap_or(0);
        Self(millis)
    }

    /// RFC 3339 with milliseconds in UTC, e.g. `2026-11-21T05:40:19.123Z`.
    pub fn to_rfc3339(self) -> String {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        self.date_time()
            .format(format)
            .unwrap_or_else(|_| format!("@{}ms", self.0))
    }

    /// A compact form for file names, e.g. `20261121T054019.123Z`.
    pub fn to_file_stamp(self) -> String {
        let format =
            format_description!("[year][month][day]T[hour][minute][second].[subsecond digits:3]Z");
        self.date_time()
            .format(format)
            .unwrap_or_else(|_| self.0.to_string())
    }

    /// Parses RFC 3339 (any offset, any sub-second precision; truncated to milliseconds).
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimeError> {
        let parsed = OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|error| TimeError {
            text: text.to_owned(),
            reason: error.to_string(),
        })?;
        Ok(Self((parsed.unix_timestamp_nanos() / 1_000_000) as i64))
    }

    fn date_time(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.to_rfc3339())
    }
}

impl FromStr for UnixMillis {
    type Err = TimeError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse_rfc3339(text)
    }
}

impl Serialize for UnixMillis {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for UnixMillis {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

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

impl From<Protocol> for LogProtocol {
    fn from(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Tcp => Self::Tcp,
            Protocol::Udp => Self::Udp,
            Protocol::Icmp => Self::Icmp,
        }
    }
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

/// One event as queued by a dataplane worker: plain data, no allocation, so that
/// submitting it costs the packet path a copy and an atomic operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatEvent {
    pub at: UnixMillis,
    pub kind: EventKind,
    pub protocol: LogProtocol,
    pub pod: SocketAddrV4,
    pub external: SocketAddrV4,
    /// `external` as the outside world sees it, where a cloud 1:1 NAT (an AWS Elastic IP)
    /// sits behind the gateway: its public address with the same port.
    pub public: Option<SocketAddrV4>,
    pub remote: SocketAddrV4,
    pub core: u16,
    /// Why a mapping was deleted (the engine's reason, e.g. "idle_timeout").
    pub reason: Option<&'static str>,
    /// The mapping's age when deleted, so a deletion whose creation record was
    /// lost or rotated away still bounds when the mapping began.
    pub age_secs: Option<u32>,
}

impl NatEvent {
    /// Converts an engine event observed at `at`.
    pub fn from_flow_event(event: &FlowEvent, at: UnixMillis) -> Self {
        match event {
            FlowEvent::Created(flow) => Self::from_flow(flow, at, EventKind::Create, None),
            FlowEvent::Removed { flow, reason } => {
                Self::from_flow(flow, at, EventKind::Delete, Some(reason))
            }
        }
    }

    /// Sets [`NatEvent::public`] from the public address of the external address, if any.
    pub fn with_public_address(mut self, public_address: Option<std::net::Ipv4Addr>) -> Self {
        self.public = public_address.map(|ip| SocketAddrV4::new(ip, self.external.port()));
        self
    }

    fn from_flow(
        flow: &FlowInfo,
        at: UnixMillis,
        kind: EventKind,
        reason: Option<&'static str>,
    ) -> Self {
        let endpoint = |(ip, port): (std::net::Ipv4Addr, u16)| SocketAddrV4::new(ip, port);
        Self {
            at,
            kind,
            protocol: flow.protocol.into(),
            pod: endpoint(flow.pod),
            external: endpoint(flow.external),
            public: None,
            remote: endpoint(flow.remote),
            core: flow.core,
            reason,
            age_secs: (kind == EventKind::Delete).then_some(flow.age_secs),
        }
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

impl NatLogRecord {
    /// The record of `event` for gateway `gateway`.
    pub fn new(event: &NatEvent, gateway: &str) -> Self {
        Self {
            ts: event.at,
            event: event.kind,
            proto: event.protocol,
            pod: event.pod,
            external: event.external,
            public: event.public,
            remote: event.remote,
            reason: event.reason.map(str::to_owned),
            age_s: event.age_secs,
            core: event.core,
            gateway: gateway.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egw_engine::FlowState;
    use std::net::Ipv4Addr;

    #[test]
    fn timestamps_round_trip_with_milliseconds() {
        let at = UnixMillis(1_795_240_819_123);
        assert_eq!(at.to_rfc3339(), "2026-11-21T06:00:19.123Z");
        assert_eq!(at.to_file_stamp(), "20261121T060019.123Z");
        assert_eq!(UnixMillis::parse_rfc3339(&at.to_rfc3339()).unwrap(), at);
        assert_eq!(
            UnixMillis::parse_rfc3339("2026-11-21T07:00:19.123456+01:00").unwrap(),
            at
        );
        assert!(UnixMillis::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn engine_events_become_log_lines() {
        let flow = FlowInfo {
            core: 3,
            protocol: Protocol::Tcp,
            pod: (Ipv4Addr::new(10, 244, 1, 10), 40000),
            external: (Ipv4Addr::new(198, 51, 100, 1), 1042),
            remote: (Ipv4Addr::new(203, 0, 113, 10), 80),
            state: FlowState::Established,
            age_secs: 75,
            idle_secs: 60,
            packets_out: 1,
            packets_in: 1,
            bytes_out: 60,
            bytes_in: 60,
        };
        let at = UnixMillis(1_795_240_819_123);
        let removed = FlowEvent::Removed {
            flow: flow.clone(),
            reason: "idle_timeout",
        };
        let line = serde_json::to_string(&NatLogRecord::new(
            &NatEvent::from_flow_event(&removed, at),
            "gw-a",
        ))
        .unwrap();
        assert_eq!(
            line,
            r#"{"ts":"2026-11-21T06:00:19.123Z","event":"delete","proto":"tcp","pod":"10.244.1.10:40000","external":"198.51.100.1:1042","remote":"203.0.113.10:80","reason":"idle_timeout","age_s":75,"core":3,"gateway":"gw-a"}"#
        );
        let created = NatEvent::from_flow_event(&FlowEvent::Created(flow), at);
        let record = NatLogRecord::new(&created, "gw-a");
        let line = serde_json::to_string(&record).unwrap();
        assert!(!line.contains("reason") && line.contains(r#""event":"create""#));
        assert_eq!(serde_json::from_str::<NatLogRecord>(&line).unwrap(), record);
    }
}
