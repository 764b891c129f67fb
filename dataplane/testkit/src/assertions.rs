//! Byte-exact frame assertions whose failure names the header field that differs.

use crate::decode::*;
use crate::wire::*;

/// A one-line summary of any frame: the [`Decoded`] summary, or why it does not decode.
pub fn summarize(frame: &[u8]) -> String {
    match Decoded::parse(frame) {
        Ok(decoded) => decoded.to_string(),
        Err(error) => format!("undecodable {}-byte frame: {error}", frame.len()),
    }
}

/// Asserts two frames are identical byte for byte. On failure the message names the first
/// differing byte and the header field it lies in, and shows both frames as summaries and hex.
///
/// ```should_panic
/// use egw_testkit::{assert_frames_eq, PacketBuilder};
/// let sent = PacketBuilder::new().udp(1000, 53).build();
/// let translated = PacketBuilder::new().udp(2000, 53).build();
/// // Panics: "frames differ at byte 34 (udp source port) ..."
/// assert_frames_eq(&translated, &sent);
/// ```
#[track_caller]
pub fn assert_frames_eq(actual: &[u8], expected: &[u8]) {
    if let Some(difference) = frame_difference(actual, expected) {
        panic!("{difference}");
    }
}

/// `None` when the frames are identical, otherwise the message [`assert_frames_eq`] panics with.
pub fn frame_difference(actual: &[u8], expected: &[u8]) -> Option<String> {
    if actual == expected {
        return None;
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    let show = |byte: Option<&u8>| byte.map_or_else(|| "end".to_string(), |b| format!("{b:#04x}"));
    Some(format!(
        "frames differ at byte {first} ({}): actual {} expected {} (lengths {} and {})\n  \
         actual:   {}\n  expected: {}\n  actual hex:   {}\n  expected hex: {}",
        field_at(expected, first),
        show(actual.get(first)),
        show(expected.get(first)),
        actual.len(),
        expected.len(),
        summarize(actual),
        summarize(expected),
        to_hex(actual),
        to_hex(expected),
    ))
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The name of the header field that byte `offset` of `frame` belongs to, read from the frame's
/// own layout (as far as it decodes).
pub fn field_at(frame: &[u8], offset: usize) -> &'static str {
    const ETH: [(usize, &str); 3] = [
        (6, "eth destination"),
        (12, "eth source"),
        (14, "ethertype or VLAN TPID"),
    ];
    if let Some(&(_, name)) = ETH.iter().find(|(end, _)| offset < *end) {
        return name;
    }
    let Ok((eth, ip_offset)) = parse_eth(frame) else {
        return "beyond a truncated ethernet header";
    };
    if offset < ip_offset {
        return if offset < 16 {
            "VLAN tag control"
        } else {
            "ethertype after VLAN tag"
        };
    }
    if eth.ethertype != ETHERTYPE_IPV4 {
        return "non-IPv4 payload";
    }
    let at = offset - ip_offset;
    const IPV4: [(usize, &str); 11] = [
        (1, "ipv4 version/IHL"),
        (2, "ipv4 TOS"),
        (4, "ipv4 total length"),
        (6, "ipv4 id"),
        (8, "ipv4 flags/fragment offset"),
        (9, "ipv4 TTL"),
        (10, "ipv4 protocol"),
        (12, "ipv4 header checksum"),
        (16, "ipv4 source address"),
        (20, "ipv4 destination address"),
        (usize::MAX, ""),
    ];
    let Ok(ipv4) = parse_ipv4_header(&frame[ip_offset..]) else {
        return IPV4
            .iter()
            .find(|(end, _)| at < *end)
            .map_or("ipv4 header", |(_, name)| name);
    };
    if at < IPV4_MIN_HEADER_LEN {
        return IPV4
            .iter()
            .find(|(end, _)| at < *end)
            .map_or("ipv4 header", |(_, name)| name);
    }
    if at < ipv4.header_len() {
        return "ipv4 options";
    }
    if at >= usize::from(ipv4.total_length) {
        return "trailing bytes after the IPv4 packet";
    }
    if ipv4.fragment_offset != 0 {
        return "fragment data";
    }
    let l4 = at - ipv4.header_len();
    let fields: &[(usize, &'static str)] = match ipv4.protocol {
        PROTO_TCP => &[
            (2, "tcp source port"),
            (4, "tcp destination port"),
            (8, "tcp sequence number"),
            (12, "tcp acknowledgment number"),
            (13, "tcp data offset"),
            (14, "tcp flags"),
            (16, "tcp window"),
            (18, "tcp checksum"),
            (20, "tcp urgent pointer"),
        ],
        PROTO_UDP => &[
            (2, "udp source port"),
            (4, "udp destination port"),
            (6, "udp length"),
            (8, "udp checksum"),
        ],
        PROTO_ICMP => &[
            (1, "icmp type"),
            (2, "icmp code"),
            (4, "icmp checksum"),
            (6, "icmp id (echo) or unused (error)"),
            (8, "icmp sequence (echo) or next-hop MTU (error)"),
        ],
        _ => &[],
    };
    fields.iter().find(|(end, _)| l4 < *end).map_or(
        match ipv4.protocol {
            PROTO_TCP => "tcp options or payload",
            PROTO_UDP => "udp payload",
            PROTO_ICMP => "icmp payload or quoted packet",
            _ => "ipv4 payload",
        },
        |(_, name)| name,
    )
}
