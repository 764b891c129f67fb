//! IPFIX export of NAT events (RFC 7011 messages, RFC 8158 NAT44 session events) to a
//! UDP collector.
//!
//! One template (ID 256) describes every record: the RFC 8158 "NAT44 session create /
//! delete" fields. Over UDP a collector may start listening at any time, so the
//! template is sent in the first message and again every `template_interval`
//! (RFC 7011 §8.4).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use egw_natlog_format::{EventKind, LogProtocol};

use crate::event::NatEvent;

/// IPFIX version number (RFC 7011 §3.1).
pub const IPFIX_VERSION: u16 = 10;
/// Set ID of template sets.
pub const TEMPLATE_SET_ID: u16 = 2;
/// The template (and data set) ID of NAT event records.
pub const NAT_EVENT_TEMPLATE_ID: u16 = 256;
/// natEvent values (IANA "NAT Event Type", RFC 8158 §3.1).
pub const NAT_EVENT_NAT44_SESSION_CREATE: u8 = 4;
pub const NAT_EVENT_NAT44_SESSION_DELETE: u8 = 5;

const MESSAGE_HEADER_BYTES: usize = 16;
/// The smallest useful message: header, template set, one data record.
pub const MIN_MESSAGE_BYTES: usize =
    MESSAGE_HEADER_BYTES + 56 + SET_HEADER_BYTES + NAT_EVENT_RECORD_BYTES;
const SET_HEADER_BYTES: usize = 4;

/// The fields of a NAT event record: (information element ID, length), in order.
pub const NAT_EVENT_FIELDS: [(u16, u16); 12] = [
    (323, 8), // observationTimeMilliseconds
    (230, 1), // natEvent
    (234, 4), // ingressVRFID (always 0: egw has one routing context)
    (4, 1),   // protocolIdentifier
    (8, 4),   // sourceIPv4Address (the pod)
    (7, 2),   // sourceTransportPort
    (225, 4), // postNATSourceIPv4Address (the external address)
    (227, 2), // postNAPTSourceTransportPort
    (12, 4),  // destinationIPv4Address (the remote)
    (11, 2),  // destinationTransportPort
    (226, 4), // postNATDestinationIPv4Address (unchanged: SNAT only)
    (228, 2), // postNAPTDestinationTransportPort
];

/// Bytes of one data record.
pub const NAT_EVENT_RECORD_BYTES: usize = 38;

const _: () = {
    let mut total = 0;
    let mut index = 0;
    while index < NAT_EVENT_FIELDS.len() {
        total += NAT_EVENT_FIELDS[index].1 as usize;
        index += 1;
    }
    assert!(total == NAT_EVENT_RECORD_BYTES);
};

/// Where and how to export.
#[derive(Clone, Debug)]
pub struct IpfixConfig {
    /// The collector (UDP).
    pub collector: SocketAddr,
    /// Identifies this gateway (or this gateway's core group) to the collector.
    pub observation_domain_id: u32,
    /// How often the template is sent again.
    pub template_interval: Duration,
    /// Largest message: keep it below the path MTU (IPv4 + UDP headers take 28 bytes).
    pub max_message_bytes: usize,
}

impl IpfixConfig {
    /// Template every 60 s, messages of at most 1400 bytes.
    pub fn new(collector: SocketAddr, observation_domain_id: u32) -> Self {
        Self {
            collector,
            observation_domain_id,
            template_interval: Duration::from_secs(60),
            max_message_bytes: 1400,
        }
    }
}

/// Builds IPFIX messages; pure, no I/O.
#[derive(Debug)]
pub struct IpfixEncoder {
    observation_domain_id: u32,
    /// Data records sent before the next message (RFC 7011 §3.1 sequence number).
    sequence: u32,
    max_message_bytes: usize,
}

impl IpfixEncoder {
    pub fn new(observation_domain_id: u32, max_message_bytes: usize) -> Self {
        Self {
            observation_domain_id,
            sequence: 0,
            max_message_bytes,
        }
    }

    /// Most data records in one message.
    pub fn records_per_message(&self, with_template: bool) -> usize {
        let overhead = MESSAGE_HEADER_BYTES
            + SET_HEADER_BYTES
            + if with_template {
                template_set_bytes()
            } else {
                0
            };
        (self.max_message_bytes.saturating_sub(overhead) / NAT_EVENT_RECORD_BYTES).max(1)
    }

    /// One message with the template (if asked) and `events` (at most
    /// `records_per_message(with_template)` of them), exported at `export_secs`.
    pub fn message(
        &mut self,
        events: &[NatEvent],
        with_template: bool,
        export_secs: u32,
    ) -> Vec<u8> {
        let mut message = Vec::with_capacity(self.max_message_bytes);
        message.extend_from_slice(&IPFIX_VERSION.to_be_bytes());
        message.extend_from_slice(&[0, 0]); // length, filled in below
        message.extend_from_slice(&export_secs.to_be_bytes());
        message.extend_from_slice(&self.sequence.to_be_bytes());
        message.extend_from_slice(&self.observation_domain_id.to_be_bytes());
        if with_template {
            message.extend_from_slice(&TEMPLATE_SET_ID.to_be_bytes());
            message.extend_from_slice(&(template_set_bytes() as u16).to_be_bytes());
            message.extend_from_slice(&NAT_EVENT_TEMPLATE_ID.to_be_bytes());
            message.extend_from_slice(&(NAT_EVENT_FIELDS.len() as u16).to_be_bytes());
            for (element, length) in NAT_EVENT_FIELDS {
                message.extend_from_slice(&element.to_be_bytes());
                message.extend_from_slice(&length.to_be_bytes());
            }
        }
        if !events.is_empty() {
            let set_bytes = SET_HEADER_BYTES + events.len() * NAT_EVENT_RECORD_BYTES;
            message.extend_from_slice(&NAT_EVENT_TEMPLATE_ID.to_be_bytes());
            message.extend_from_slice(&(set_bytes as u16).to_be_bytes());
            for event in events {
                encode_record(event, &mut message);
            }
        }
        let length = message.len() as u16;
        message[2..4].copy_from_slice(&length.to_be_bytes());
        self.sequence = self.sequence.wrapping_add(events.len() as u32);
        message
    }
}

fn template_set_bytes() -> usize {
    SET_HEADER_BYTES + 4 + NAT_EVENT_FIELDS.len() * 4
}

fn encode_record(event: &NatEvent, out: &mut Vec<u8>) {
    let nat_event = match event.kind {
        EventKind::Create => NAT_EVENT_NAT44_SESSION_CREATE,
        EventKind::Delete => NAT_EVENT_NAT44_SESSION_DELETE,
    };
    let protocol: u8 = match event.protocol {
        LogProtocol::Icmp => 1,
        LogProtocol::Tcp => 6,
        LogProtocol::Udp => 17,
    };
    out.extend_from_slice(&(event.at.0.max(0) as u64).to_be_bytes());
    out.push(nat_event);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.push(protocol);
    out.extend_from_slice(&event.pod.ip().octets());
    out.extend_from_slice(&event.pod.port().to_be_bytes());
    out.extend_from_slice(&event.external.ip().octets());
    out.extend_from_slice(&event.external.port().to_be_bytes());
    out.extend_from_slice(&event.remote.ip().octets());
    out.extend_from_slice(&event.remote.port().to_be_bytes());
    out.extend_from_slice(&event.remote.ip().octets());
    out.extend_from_slice(&event.remote.port().to_be_bytes());
}

/// Sends batches of events to the collector from the writer thread.
#[derive(Debug)]
pub(crate) struct IpfixExporter {
    socket: UdpSocket,
    encoder: IpfixEncoder,
    template_interval: Duration,
    template_sent: Option<Instant>,
    pending: Vec<NatEvent>,
}

impl IpfixExporter {
    pub(crate) fn new(config: &IpfixConfig) -> std::io::Result<Self> {
        let bind: SocketAddr = if config.collector.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(bind)?;
        socket.connect(config.collector)?;
        Ok(Self {
            socket,
            encoder: IpfixEncoder::new(config.observation_domain_id, config.max_message_bytes),
            template_interval: config.template_interval,
            template_sent: None,
            pending: Vec::new(),
        })
    }

    /// Queues `event`, sending a message when one is full. Returns the outcome of
    /// any send: (messages sent, send errors).
    pub(crate) fn add(&mut self, event: NatEvent) -> (u64, u64) {
        self.pending.push(event);
        if self.pending.len() >= self.encoder.records_per_message(self.template_due()) {
            self.flush()
        } else {
            (0, 0)
        }
    }

    /// Sends what is queued (and the template when due).
    pub(crate) fn flush(&mut self) -> (u64, u64) {
        let (mut sent, mut errors) = (0, 0);
        while !self.pending.is_empty() || self.template_due() {
            let with_template = self.template_due();
            let count = self
                .pending
                .len()
                .min(self.encoder.records_per_message(with_template));
            let export_secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs() as u32)
                .unwrap_or(0);
            let message = self
                .encoder
                .message(&self.pending[..count], with_template, export_secs);
            self.pending.drain(..count);
            if with_template {
                self.template_sent = Some(Instant::now());
            }
            // A collector that is down must not stop the file log: count and go on.
            match self.socket.send(&message) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1,
            }
        }
        (sent, errors)
    }

    fn template_due(&self) -> bool {
        self.template_sent
            .is_none_or(|sent| sent.elapsed() >= self.template_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egw_natlog_format::UnixMillis;

    #[test]
    fn a_message_has_the_rfc_7011_layout() {
        let event = NatEvent {
            at: UnixMillis(0x0102_0304_0506),
            kind: EventKind::Delete,
            protocol: LogProtocol::Udp,
            pod: "10.244.1.10:40000".parse().unwrap(),
            external: "198.51.100.1:1042".parse().unwrap(),
            public: None,
            remote: "203.0.113.10:53".parse().unwrap(),
            core: 0,
            reason: Some("idle_timeout"),
            age_secs: Some(1),
        };
        let mut encoder = IpfixEncoder::new(7, 1400);
        let first = encoder.message(&[event, event], true, 1000);
        assert_eq!(first.len(), 16 + 56 + 4 + 2 * 38);
        assert_eq!(&first[0..2], &[0, 10]);
        assert_eq!(
            u16::from_be_bytes([first[2], first[3]]) as usize,
            first.len()
        );
        assert_eq!(&first[8..12], &0u32.to_be_bytes()); // sequence
        assert_eq!(&first[12..16], &7u32.to_be_bytes());
        assert_eq!(&first[16..20], &[0, 2, 0, 56]); // template set, 56 bytes
        assert_eq!(&first[20..24], &[1, 0, 0, 12]); // template 256, 12 fields
        let data = &first[72..];
        assert_eq!(&data[0..4], &[1, 0, 0, 80]); // data set 256
        let record = &data[4..42];
        assert_eq!(&record[0..8], &0x0102_0304_0506u64.to_be_bytes());
        assert_eq!(record[8], NAT_EVENT_NAT44_SESSION_DELETE);
        assert_eq!(record[13], 17);
        assert_eq!(&record[14..20], &[10, 244, 1, 10, 0x9c, 0x40]);
        assert_eq!(&record[20..26], &[198, 51, 100, 1, 0x04, 0x12]);
        let second = encoder.message(&[event], false, 1001);
        assert_eq!(&second[8..12], &2u32.to_be_bytes());
        assert_eq!(second.len(), 16 + 4 + 38);
        assert_eq!(encoder.records_per_message(true), (1400 - 16 - 4 - 56) / 38);
    }
}
