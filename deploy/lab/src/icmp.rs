//! ICMP echo packets tagged with a random token, so the mirror can tell which probe a
//! (possibly NAT-rewritten) echo request came from. Gateways may rewrite the ICMP identifier
//! when they SNAT, so the identifier cannot be the key; the payload is never rewritten.

/// Marks lab probes among whatever other ICMP the namespace sees.
pub const PAYLOAD_MAGIC: &[u8; 8] = b"EGWLAB1\0";
/// Token length in bytes (hex-encoded: 32 characters).
pub const TOKEN_LEN: usize = 16;

const ECHO_REPLY: u8 = 0;
const ECHO_REQUEST: u8 = 8;
const ICMP_HEADER_LEN: usize = 8;

/// Internet checksum (RFC 1071) over `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Builds an ICMP echo request (no IP header) carrying `token`.
pub fn echo_request(identifier: u16, sequence: u16, token: &[u8; TOKEN_LEN]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(ICMP_HEADER_LEN + PAYLOAD_MAGIC.len() + TOKEN_LEN);
    packet.extend_from_slice(&[ECHO_REQUEST, 0, 0, 0]);
    packet.extend_from_slice(&identifier.to_be_bytes());
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(PAYLOAD_MAGIC);
    packet.extend_from_slice(token);
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// What a raw IPv4 ICMP socket delivered, if it is a tagged lab echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedEcho {
    pub is_request: bool,
    pub source: std::net::Ipv4Addr,
    pub token: [u8; TOKEN_LEN],
}

/// Parses a datagram read from a raw `AF_INET/SOCK_RAW/IPPROTO_ICMP` socket (which includes
/// the IPv4 header). Returns `None` for anything that is not a tagged echo request/reply.
pub fn parse_tagged_echo(datagram: &[u8]) -> Option<TaggedEcho> {
    let first = *datagram.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    let source_bytes: [u8; 4] = datagram.get(12..16)?.try_into().ok()?;
    let icmp = datagram.get(header_len..)?;
    let kind = *icmp.first()?;
    if kind != ECHO_REQUEST && kind != ECHO_REPLY {
        return None;
    }
    let payload = icmp.get(ICMP_HEADER_LEN..)?;
    let rest = payload.strip_prefix(PAYLOAD_MAGIC.as_slice())?;
    let token: [u8; TOKEN_LEN] = rest.get(..TOKEN_LEN)?.try_into().ok()?;
    Some(TaggedEcho {
        is_request: kind == ECHO_REQUEST,
        source: std::net::Ipv4Addr::from(source_bytes),
        token,
    })
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A token that is unique enough to tell concurrent probes apart. std's `RandomState` is
/// randomly keyed per process, which together with time and pid is plenty for a test tag.
pub fn random_token() -> [u8; TOKEN_LEN] {
    use std::hash::{BuildHasher, Hasher};
    let mut token = [0u8; TOKEN_LEN];
    for (index, chunk) in token.chunks_mut(8).enumerate() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.write_usize(index);
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_nanos()),
        );
        chunk.copy_from_slice(&hasher.finish().to_le_bytes()[..chunk.len()]);
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_packet_with_checksum_is_zero() {
        let packet = echo_request(0x1234, 1, &[7; TOKEN_LEN]);
        assert_eq!(checksum(&packet), 0);
    }

    #[test]
    fn roundtrip_through_ipv4_header() {
        let token = random_token();
        let icmp = echo_request(9, 1, &token);
        let mut datagram = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 198, 51, 100, 1, 203, 0, 113, 10,
        ];
        datagram.extend_from_slice(&icmp);
        let parsed = parse_tagged_echo(&datagram).unwrap();
        assert!(parsed.is_request);
        assert_eq!(parsed.source, std::net::Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(parsed.token, token);
    }

    #[test]
    fn untagged_echo_is_ignored() {
        let mut datagram = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        datagram.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1, b'x', b'y']);
        assert_eq!(parse_tagged_echo(&datagram), None);
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(random_token(), random_token());
    }
}
