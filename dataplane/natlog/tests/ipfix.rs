//! IPFIX export to a collector on loopback, decoded independently of the encoder.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use egw_natlog::ipfix::{NAT_EVENT_NAT44_SESSION_CREATE, NAT_EVENT_NAT44_SESSION_DELETE};
use egw_natlog::{
    EventKind, IpfixConfig, LogProtocol, NatEvent, NatLogConfig, NatLogIndex, NatLogWriter,
    UnixMillis,
};

const T0: i64 = 1_795_240_000_000;

fn events(count: u16) -> Vec<NatEvent> {
    (0..count)
        .map(|i| NatEvent {
            at: UnixMillis(T0 + i64::from(i)),
            kind: if i % 2 == 0 {
                EventKind::Create
            } else {
                EventKind::Delete
            },
            protocol: if i % 3 == 0 {
                LogProtocol::Udp
            } else {
                LogProtocol::Tcp
            },
            pod: SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, (i % 200) as u8), 40_000 + i),
            external: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 1024 + i),
            public: None,
            remote: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 443),
            core: 0,
            reason: (i % 2 == 1).then_some("idle_timeout"),
            age_secs: (i % 2 == 1).then_some(5),
        })
        .collect()
}

fn config(dir: &std::path::Path, ipfix: IpfixConfig) -> NatLogConfig {
    let mut config = NatLogConfig::new(dir, "gw-ipfix");
    config.idle_wait = Duration::from_millis(5);
    config.ipfix = Some(ipfix);
    config
}

/// (time ms, natEvent, protocol, pod, external, remote) of one decoded record.
type Decoded = (u64, u8, u8, SocketAddrV4, SocketAddrV4, SocketAddrV4);

fn be16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn endpoint(bytes: &[u8]) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]),
        be16(&bytes[4..]),
    )
}

#[test]
fn events_reach_a_loopback_collector_as_rfc_8158_records() {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut ipfix = IpfixConfig::new(collector.local_addr().unwrap(), 42);
    ipfix.max_message_bytes = 400;
    ipfix.template_interval = Duration::from_secs(3600);
    let writer = NatLogWriter::start(config(dir.path(), ipfix)).unwrap();
    let submitted = events(60);
    let sender = writer.sender();
    for event in &submitted {
        assert!(sender.submit(*event));
    }
    let stats = writer.shutdown().unwrap();
    assert!(stats.ipfix_messages_sent >= 6, "{stats:?}");
    assert_eq!(stats.ipfix_send_errors, 0);

    let mut template: Option<Vec<(u16, u16)>> = None;
    let mut decoded: Vec<Decoded> = Vec::new();
    let mut buffer = [0u8; 2048];
    for message_index in 0..stats.ipfix_messages_sent {
        let length = collector.recv(&mut buffer).unwrap();
        let message = &buffer[..length];
        assert_eq!(be16(message), 10, "IPFIX version");
        assert_eq!(usize::from(be16(&message[2..])), length);
        assert_eq!(
            be32(&message[8..]) as usize,
            decoded.len(),
            "sequence number"
        );
        assert_eq!(be32(&message[12..]), 42, "observation domain");
        let mut offset = 16;
        while offset < length {
            let set_id = be16(&message[offset..]);
            let set_length = usize::from(be16(&message[offset + 2..]));
            let body = &message[offset + 4..offset + set_length];
            match set_id {
                2 => {
                    assert_eq!(message_index, 0, "template only in the first message");
                    assert_eq!(be16(body), 256);
                    let fields = usize::from(be16(&body[2..]));
                    template = Some(
                        (0..fields)
                            .map(|i| (be16(&body[4 + 4 * i..]), be16(&body[6 + 4 * i..])))
                            .collect(),
                    );
                }
                256 => {
                    let template = template.as_ref().expect("template before data");
                    let record_length: usize =
                        template.iter().map(|(_, len)| usize::from(*len)).sum();
                    assert_eq!(body.len() % record_length, 0);
                    for record in body.chunks(record_length) {
                        let mut at = 0;
                        let mut fields = std::collections::HashMap::new();
                        for (element, field_length) in template {
                            let field_length = usize::from(*field_length);
                            fields.insert(*element, &record[at..at + field_length]);
                            at += field_length;
                        }
                        let mut time = [0u8; 8];
                        time.copy_from_slice(fields[&323]);
                        let ip_port = |ip: u16, port: u16| {
                            let mut bytes = fields[&ip].to_vec();
                            bytes.extend_from_slice(fields[&port]);
                            endpoint(&bytes)
                        };
                        decoded.push((
                            u64::from_be_bytes(time),
                            fields[&230][0],
                            fields[&4][0],
                            ip_port(8, 7),
                            ip_port(225, 227),
                            ip_port(12, 11),
                        ));
                        // SNAT leaves the destination alone.
                        assert_eq!(ip_port(226, 228), ip_port(12, 11));
                    }
                }
                other => panic!("unexpected set {other}"),
            }
            offset += set_length;
        }
    }
    let expected: Vec<Decoded> = submitted
        .iter()
        .map(|event| {
            (
                event.at.0 as u64,
                match event.kind {
                    EventKind::Create => NAT_EVENT_NAT44_SESSION_CREATE,
                    EventKind::Delete => NAT_EVENT_NAT44_SESSION_DELETE,
                },
                match event.protocol {
                    LogProtocol::Tcp => 6,
                    LogProtocol::Udp => 17,
                    LogProtocol::Icmp => 1,
                },
                event.pod,
                event.external,
                event.remote,
            )
        })
        .collect();
    assert_eq!(decoded, expected);
}

#[test]
fn a_dead_collector_does_not_stop_the_file_log() {
    let closed = {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut ipfix = IpfixConfig::new(closed, 1);
    ipfix.max_message_bytes = 200;
    let writer = NatLogWriter::start(config(dir.path(), ipfix)).unwrap();
    let sender = writer.sender();
    for event in events(40) {
        assert!(sender.submit(event));
    }
    let stats = writer.shutdown().unwrap();
    assert_eq!(stats.events_written, 40);
    // Every message was attempted; the kernel may refuse some (port unreachable).
    assert!(
        stats.ipfix_messages_sent + stats.ipfix_send_errors >= 10,
        "{stats:?}"
    );
    let index = NatLogIndex::load_dir(dir.path()).unwrap();
    assert_eq!(index.mappings.len(), 20 + 20);
}
