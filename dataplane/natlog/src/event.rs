//! NAT events as queued by dataplane workers, made from the engine's flow events, and the log
//! record each becomes (the record format itself is `egw-natlog-format`).

use std::net::SocketAddrV4;

use egw_engine::{FlowEvent, FlowInfo, Protocol};
use egw_natlog_format::{EventKind, LogProtocol, NatLogRecord, UnixMillis};

/// The log's name for an engine protocol. (A function, not a `From` impl: neither type is this
/// crate's since the record format moved to `egw-natlog-format`.)
pub fn log_protocol(protocol: Protocol) -> LogProtocol {
    match protocol {
        Protocol::Tcp => LogProtocol::Tcp,
        Protocol::Udp => LogProtocol::Udp,
        Protocol::Icmp => LogProtocol::Icmp,
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

    /// The log line of this event for gateway `gateway`.
    pub fn to_record(&self, gateway: &str) -> NatLogRecord {
        NatLogRecord {
            ts: self.at,
            event: self.kind,
            proto: self.protocol,
            pod: self.pod,
            external: self.external,
            public: self.public,
            remote: self.remote,
            reason: self.reason.map(str::to_owned),
            age_s: self.age_secs,
            core: self.core,
            gateway: gateway.to_owned(),
        }
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
            protocol: log_protocol(flow.protocol),
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

#[cfg(test)]
mod tests {
    use super::*;
    use egw_engine::FlowState;
    use std::net::Ipv4Addr;

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
        let line =
            serde_json::to_string(&NatEvent::from_flow_event(&removed, at).to_record("gw-a"))
                .unwrap();
        assert_eq!(
            line,
            r#"{"ts":"2026-11-21T06:00:19.123Z","event":"delete","proto":"tcp","pod":"10.244.1.10:40000","external":"198.51.100.1:1042","remote":"203.0.113.10:80","reason":"idle_timeout","age_s":75,"core":3,"gateway":"gw-a"}"#
        );
        let created = NatEvent::from_flow_event(&FlowEvent::Created(flow), at);
        let record = created.to_record("gw-a");
        let line = serde_json::to_string(&record).unwrap();
        assert!(!line.contains("reason") && line.contains(r#""event":"create""#));
        assert_eq!(serde_json::from_str::<NatLogRecord>(&line).unwrap(), record);
    }
}
