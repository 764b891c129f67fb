//! The load generator's frames: a UDP/IPv4 template per (size, source, destination), patched per
//! packet with the flow's ports, a sequence number and a CLOCK_MONOTONIC send timestamp, with the
//! UDP checksum updated incrementally (RFC 1624) so a 1500-byte frame costs no more to stamp than
//! a 64-byte one. The receiver parses the same layout back.

use std::net::Ipv4Addr;

use egw_testkit::{MacAddr, PacketBuilder};

/// Marks a benchmark payload: "EGWB".
pub const PAYLOAD_MAGIC: u32 = 0x4547_5742;
/// magic (4) + sequence (8) + send timestamp in ns (8).
pub const STAMP_LEN: usize = 20;
const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;
/// Offset of the UDP header in a template frame.
const UDP_OFFSET: usize = ETH_LEN + IPV4_LEN;
/// Offset of the payload (the stamp) in a template frame.
pub const PAYLOAD_OFFSET: usize = UDP_OFFSET + UDP_LEN;
/// Smallest frame (without FCS) that carries the stamp.
pub const MIN_FRAME_LEN: usize = PAYLOAD_OFFSET + STAMP_LEN;
/// Largest frame (without FCS) for a 1500-byte MTU.
pub const MAX_FRAME_LEN: usize = ETH_LEN + 1500;
const ETHERTYPE_IPV4: u16 = 0x0800;
const PROTOCOL_UDP: u8 = 17;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame size {size} is outside {MIN_FRAME_LEN}..={MAX_FRAME_LEN} bytes (Ethernet frame without FCS)")]
    FrameSize { size: usize },
    #[error("building the template frame failed: {0}")]
    Build(String),
}

/// What goes into every frame of one generator run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    /// Ethernet frame length without the FCS (64 means 68 bytes on the wire).
    pub frame_len: usize,
}

/// A pre-built frame with ports and stamp zeroed, plus its UDP checksum for those zeros.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Vec<u8>,
    /// One's-complement sum folded to 16 bits of the template's UDP checksum input, i.e. the
    /// complement of the checksum field.
    base_sum: u16,
}

impl Template {
    pub fn new(spec: &FrameSpec) -> Result<Self, WireError> {
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&spec.frame_len) {
            return Err(WireError::FrameSize {
                size: spec.frame_len,
            });
        }
        let mut payload = vec![0u8; spec.frame_len - PAYLOAD_OFFSET];
        payload[..4].copy_from_slice(&PAYLOAD_MAGIC.to_be_bytes());
        let bytes = PacketBuilder::new()
            .eth(MacAddr(spec.src_mac), MacAddr(spec.dst_mac))
            .ipv4(spec.src_ip, spec.dst_ip)
            .dont_fragment(true)
            .udp(0, 0)
            .payload(&payload)
            .try_build()
            .map_err(|error| WireError::Build(error.to_string()))?;
        if bytes.len() != spec.frame_len {
            return Err(WireError::Build(format!(
                "builder produced {} bytes, wanted {}",
                bytes.len(),
                spec.frame_len
            )));
        }
        let checksum = u16::from_be_bytes([bytes[UDP_OFFSET + 6], bytes[UDP_OFFSET + 7]]);
        Ok(Template {
            bytes,
            base_sum: !checksum,
        })
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Writes the frame for one packet into `out` (at least [`Self::len`] bytes); returns its
    /// length.
    pub fn write(&self, out: &mut [u8], stamp: &Stamp) -> usize {
        let len = self.bytes.len();
        let out = &mut out[..len];
        out.copy_from_slice(&self.bytes);
        out[UDP_OFFSET..UDP_OFFSET + 2].copy_from_slice(&stamp.src_port.to_be_bytes());
        out[UDP_OFFSET + 2..UDP_OFFSET + 4].copy_from_slice(&stamp.dst_port.to_be_bytes());
        let payload = PAYLOAD_OFFSET + 4;
        out[payload..payload + 8].copy_from_slice(&stamp.sequence.to_be_bytes());
        out[payload + 8..payload + 16].copy_from_slice(&stamp.sent_ns.to_be_bytes());
        // The template's ports and stamp words were zero, so the new checksum is the old sum
        // plus the new words (RFC 1624, eqn. 3 with m = 0).
        let mut sum = u32::from(self.base_sum);
        sum += u32::from(stamp.src_port) + u32::from(stamp.dst_port);
        for word in split_words(stamp.sequence)
            .into_iter()
            .chain(split_words(stamp.sent_ns))
        {
            sum += u32::from(word);
        }
        let mut checksum = !fold(sum);
        if checksum == 0 {
            // UDP transmits a computed zero as all ones; zero means "no checksum".
            checksum = 0xffff;
        }
        out[UDP_OFFSET + 6..UDP_OFFSET + 8].copy_from_slice(&checksum.to_be_bytes());
        len
    }
}

fn split_words(value: u64) -> [u16; 4] {
    [
        (value >> 48) as u16,
        (value >> 32) as u16,
        (value >> 16) as u16,
        value as u16,
    ]
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The per-packet fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub src_port: u16,
    pub dst_port: u16,
    pub sequence: u64,
    pub sent_ns: u64,
}

/// What the receiver reads out of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// `Some` when the payload carries a benchmark stamp.
    pub stamp: Option<(u64, u64)>,
}

/// Parses an untagged Ethernet/IPv4/UDP frame; `None` for anything else (ARP, TCP, ICMP, ...).
pub fn parse(frame: &[u8]) -> Option<Received> {
    if frame.len() < ETH_LEN + IPV4_LEN
        || u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV4
    {
        return None;
    }
    let ip = &frame[ETH_LEN..];
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || header_len < IPV4_LEN || ip[9] != PROTOCOL_UDP {
        return None;
    }
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let udp = ip.get(header_len..header_len + UDP_LEN)?;
    let payload = &ip[header_len + UDP_LEN..];
    let stamp = (payload.len() >= STAMP_LEN
        && u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) == PAYLOAD_MAGIC)
        .then(|| {
            let mut sequence = [0u8; 8];
            let mut sent = [0u8; 8];
            sequence.copy_from_slice(&payload[4..12]);
            sent.copy_from_slice(&payload[12..20]);
            (u64::from_be_bytes(sequence), u64::from_be_bytes(sent))
        });
    Some(Received {
        src_ip,
        dst_ip,
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        stamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use egw_testkit::Decoded;

    fn spec(frame_len: usize) -> FrameSpec {
        FrameSpec {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 244, 1, 10),
            dst_ip: Ipv4Addr::new(203, 0, 113, 10),
            frame_len,
        }
    }

    #[test]
    fn stamped_frames_have_valid_checksums_and_parse_back() {
        for frame_len in [MIN_FRAME_LEN, 64, 512, MAX_FRAME_LEN] {
            let template = Template::new(&spec(frame_len)).unwrap();
            let mut buffer = vec![0u8; 2048];
            for (index, stamp) in [
                Stamp {
                    src_port: 1024,
                    dst_port: 9000,
                    sequence: 0,
                    sent_ns: 1,
                },
                Stamp {
                    src_port: 65535,
                    dst_port: 65535,
                    sequence: u64::MAX,
                    sent_ns: u64::MAX,
                },
                Stamp {
                    src_port: 40000,
                    dst_port: 9017,
                    sequence: 123_456_789,
                    sent_ns: 987_654_321_000,
                },
            ]
            .iter()
            .enumerate()
            {
                let len = template.write(&mut buffer, stamp);
                assert_eq!(len, frame_len);
                let decoded = Decoded::parse(&buffer[..len]).unwrap();
                assert!(decoded.checksums_ok(), "size {frame_len} stamp {index}");
                let received = parse(&buffer[..len]).unwrap();
                assert_eq!(received.src_ip, Ipv4Addr::new(10, 244, 1, 10));
                assert_eq!(received.dst_ip, Ipv4Addr::new(203, 0, 113, 10));
                assert_eq!(
                    (received.src_port, received.dst_port),
                    (stamp.src_port, stamp.dst_port)
                );
                assert_eq!(received.stamp, Some((stamp.sequence, stamp.sent_ns)));
            }
        }
    }

    #[test]
    fn sizes_outside_the_range_are_rejected() {
        assert!(Template::new(&spec(MIN_FRAME_LEN - 1)).is_err());
        assert!(Template::new(&spec(MAX_FRAME_LEN + 1)).is_err());
    }

    #[test]
    fn foreign_frames_are_not_stamped() {
        let tcp = PacketBuilder::new().tcp(1, 2).build();
        assert_eq!(parse(&tcp), None);
        let udp = PacketBuilder::new().udp(1, 2).payload(&[0u8; 32]).build();
        assert_eq!(parse(&udp).unwrap().stamp, None);
        assert_eq!(parse(&[0u8; 10]), None);
    }
}
