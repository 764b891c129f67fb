//! Zero-copy parsing and in-place rewriting of Ethernet / IPv4 / TCP / UDP / ICMP frames.
//!
//! [`parse`] validates a frame once and records the offsets and fields the engine needs in a
//! [`Parsed`] value; the rewrite helpers then patch addresses, ports and TTL in the caller's buffer
//! and update every affected checksum incrementally (RFC 1624). Nothing here allocates.
#![expect(
    clippy::indexing_slicing,
    reason = "a checked view of one frame: `parse` and `parse_plain` check every length before they record an offset, and the rewrites index only at offsets a `Parsed` or `Plain` recorded; `.get()` on every field would add nothing but noise on the hot path"
)]

use std::net::Ipv4Addr;

use crate::checksum::{self, read_u16, write_u16, ChecksumDelta};
use crate::counters::DropReason;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETH_HEADER_LEN: usize = 14;
pub const VLAN_TAG_LEN: usize = 4;
pub const IPV4_MIN_HEADER_LEN: usize = 20;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// Destination unreachable code "fragmentation needed and DF set" (RFC 792, RFC 1191).
pub const ICMP_CODE_FRAG_NEEDED: u8 = 4;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Byte offsets inside an IPv4 header.
mod ip {
    pub const TOTAL_LEN: usize = 2;
    pub const ID: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTO: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

const IP_FLAG_DF: u16 = 0x4000;
const IP_FLAG_MF: u16 = 0x2000;
const IP_FRAG_OFFSET_MASK: u16 = 0x1fff;

/// The IP transport protocols the engine translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Protocol {
    Icmp = PROTO_ICMP,
    Tcp = PROTO_TCP,
    Udp = PROTO_UDP,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Icmp];

    pub fn from_number(number: u8) -> Option<Self> {
        match number {
            PROTO_ICMP => Some(Self::Icmp),
            PROTO_TCP => Some(Self::Tcp),
            PROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }

    pub fn number(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Icmp => "icmp",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    /// Dense index for per-protocol arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            Self::Tcp => 0,
            Self::Udp => 1,
            Self::Icmp => 2,
        }
    }
}

/// IPv4 fragmentation fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragmentation {
    pub id: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// Offset in 8-byte units.
    pub offset: u16,
}

impl Fragmentation {
    /// Whether this packet is a fragment at all (the parser's own tests check it).
    #[cfg(test)]
    pub fn is_fragment(&self) -> bool {
        self.more_fragments || self.offset != 0
    }

    /// The first fragment carries the transport header; later ones carry only payload.
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }
}

/// The transport-layer view of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: u8,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    /// ICMP echo request or reply; `id` plays the role of a port.
    IcmpEcho {
        request: bool,
        id: u16,
    },
    /// An ICMP error quoting an earlier packet (RFC 792 "internet header + 64 bits").
    IcmpError(IcmpErrorQuote),
    /// A fragment other than the first: no transport header.
    LaterFragment,
}

/// The packet quoted inside an ICMP error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpErrorQuote {
    pub icmp_type: u8,
    pub code: u8,
    /// Offset of the quoted IPv4 header inside the frame.
    pub inner_l3: usize,
    pub inner_header_len: usize,
    pub protocol: Protocol,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Source port, or ICMP echo id for a quoted echo.
    pub src_port: u16,
    /// Destination port, or 0 for a quoted echo.
    pub dst_port: u16,
    /// Bytes of quoted transport header present in the frame.
    pub inner_l4_len: usize,
}

/// The validated layout and fields of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Offset of the IPv4 header.
    pub l3: usize,
    pub header_len: usize,
    /// IPv4 total length: the frame may carry Ethernet padding past it.
    pub total_len: usize,
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub frag: Fragmentation,
    pub transport: Transport,
}

impl Parsed {
    pub fn l4(&self) -> usize {
        self.l3 + self.header_len
    }

    /// Frame length up to the end of the IPv4 packet (Ethernet padding excluded).
    pub fn frame_len(&self) -> usize {
        self.l3 + self.total_len
    }

    /// The (source port, destination port) pair, with an echo's id as the source "port".
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.transport {
            Transport::Tcp {
                src_port, dst_port, ..
            }
            | Transport::Udp { src_port, dst_port } => Some((src_port, dst_port)),
            Transport::IcmpEcho { id, .. } => Some((id, 0)),
            _ => None,
        }
    }
}

fn ipv4_at(bytes: &[u8], offset: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        bytes[offset],
        bytes[offset + 1],
        bytes[offset + 2],
        bytes[offset + 3],
    )
}

/// Validates a frame and returns its layout. Every way a frame can be malformed maps to a named
/// [`DropReason`]; nothing here panics on any input.
#[inline]
pub fn parse(frame: &[u8]) -> Result<Parsed, DropReason> {
    if frame.len() < ETH_HEADER_LEN {
        return Err(DropReason::BadEthernet);
    }
    let mut l3 = ETH_HEADER_LEN;
    let mut ethertype = read_u16(frame, 12);
    if ethertype == ETHERTYPE_VLAN {
        if frame.len() < ETH_HEADER_LEN + VLAN_TAG_LEN {
            return Err(DropReason::BadEthernet);
        }
        ethertype = read_u16(frame, 16);
        l3 += VLAN_TAG_LEN;
    }
    if ethertype != ETHERTYPE_IPV4 {
        return Err(DropReason::NotIpv4);
    }
    let ip = &frame[l3..];
    if ip.len() < IPV4_MIN_HEADER_LEN || ip[0] >> 4 != 4 {
        return Err(DropReason::BadIpv4Header);
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total_len = usize::from(read_u16(ip, ip::TOTAL_LEN));
    if header_len < IPV4_MIN_HEADER_LEN || total_len < header_len || total_len > ip.len() {
        return Err(DropReason::BadIpv4Header);
    }
    if checksum::checksum(&ip[..header_len]) != 0 {
        return Err(DropReason::BadIpv4Checksum);
    }
    let flags_frag = read_u16(ip, ip::FLAGS_FRAG);
    let frag = Fragmentation {
        id: read_u16(ip, ip::ID),
        dont_fragment: flags_frag & IP_FLAG_DF != 0,
        more_fragments: flags_frag & IP_FLAG_MF != 0,
        offset: flags_frag & IP_FRAG_OFFSET_MASK,
    };
    let protocol = ip[ip::PROTO];
    let l4 = &ip[header_len..total_len];
    let transport = if !frag.is_first() {
        Transport::LaterFragment
    } else {
        parse_transport(protocol, l4, l3 + header_len, frag.more_fragments)?
    };
    Ok(Parsed {
        l3,
        header_len,
        total_len,
        protocol,
        src: ipv4_at(ip, ip::SRC),
        dst: ipv4_at(ip, ip::DST),
        ttl: ip[ip::TTL],
        frag,
        transport,
    })
}

/// A plain TCP or UDP packet: IPv4 without options, not a fragment. Nearly every packet of an
/// established flow is one, and [`parse_plain`] reads it with a fraction of [`parse`]'s work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plain {
    /// Offset of the IPv4 header.
    pub l3: usize,
    pub total_len: usize,
    pub protocol: Protocol,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub ttl: u8,
    pub id: u16,
    pub dont_fragment: bool,
    /// TCP flags; 0 for UDP.
    pub tcp_flags: u8,
}

impl Plain {
    /// The [`Parsed`] view [`parse`] gives of the same frame, so that a packet the fast path
    /// declines goes on to the full path without being parsed again.
    #[inline]
    pub(crate) fn to_parsed(self) -> Parsed {
        let transport = match self.protocol {
            Protocol::Tcp => Transport::Tcp {
                src_port: self.src_port,
                dst_port: self.dst_port,
                flags: self.tcp_flags,
            },
            // parse_plain reads nothing but TCP and UDP.
            Protocol::Udp | Protocol::Icmp => Transport::Udp {
                src_port: self.src_port,
                dst_port: self.dst_port,
            },
        };
        Parsed {
            l3: self.l3,
            header_len: IPV4_MIN_HEADER_LEN,
            total_len: self.total_len,
            protocol: self.protocol.number(),
            src: self.src,
            dst: self.dst,
            ttl: self.ttl,
            frag: Fragmentation {
                id: self.id,
                dont_fragment: self.dont_fragment,
                more_fragments: false,
                offset: 0,
            },
            transport,
        }
    }
}

/// Reads a plain packet (see [`Plain`]), or `None` for anything else — other shapes and every
/// malformed frame — which [`parse`] then handles in full. Makes the same checks as [`parse`]
/// for the shapes it accepts, so `parse_plain(f)` is `Some` only where `parse(f)` is `Ok` with the
/// same fields.
#[inline]
pub(crate) fn parse_plain(frame: &[u8]) -> Option<Plain> {
    let l3 = match frame.get(12..14)? {
        [0x08, 0x00] => ETH_HEADER_LEN,
        [0x81, 0x00] if frame.get(16..18)? == [0x08, 0x00] => ETH_HEADER_LEN + VLAN_TAG_LEN,
        _ => return None,
    };
    let packet = frame.get(l3..)?;
    let header: &[u8; IPV4_MIN_HEADER_LEN] = packet.get(..IPV4_MIN_HEADER_LEN)?.try_into().ok()?;
    // Version 4, no options.
    if header[0] != 0x45 {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if total_len < IPV4_MIN_HEADER_LEN || total_len > packet.len() {
        return None;
    }
    let flags_frag = u16::from_be_bytes([header[6], header[7]]);
    if flags_frag & (IP_FLAG_MF | IP_FRAG_OFFSET_MASK) != 0 {
        return None;
    }
    if !checksum::header_checksum_valid(header) {
        return None;
    }
    let l4 = &packet[IPV4_MIN_HEADER_LEN..total_len];
    let (protocol, tcp_flags) = match header[ip::PROTO] {
        PROTO_TCP => {
            let tcp: &[u8; 20] = l4.get(..20)?.try_into().ok()?;
            let data_offset = usize::from(tcp[12] >> 4) * 4;
            if data_offset < 20 || data_offset > l4.len() {
                return None;
            }
            (Protocol::Tcp, tcp[13])
        }
        PROTO_UDP => {
            let udp: &[u8; 8] = l4.get(..8)?.try_into().ok()?;
            // Unfragmented: the UDP length is exactly the IPv4 payload.
            if usize::from(u16::from_be_bytes([udp[4], udp[5]])) != l4.len() {
                return None;
            }
            (Protocol::Udp, 0)
        }
        _ => return None,
    };
    Some(Plain {
        l3,
        total_len,
        protocol,
        src: Ipv4Addr::new(header[12], header[13], header[14], header[15]),
        dst: Ipv4Addr::new(header[16], header[17], header[18], header[19]),
        src_port: u16::from_be_bytes([l4[0], l4[1]]),
        dst_port: u16::from_be_bytes([l4[2], l4[3]]),
        ttl: header[ip::TTL],
        id: u16::from_be_bytes([header[ip::ID], header[ip::ID + 1]]),
        dont_fragment: flags_frag & IP_FLAG_DF != 0,
        tcp_flags,
    })
}

/// [`rewrite_endpoint_and_decrement_ttl`] for a [`Plain`] packet, with the same incremental
/// checksum arithmetic and so the same bytes. Every bounds check happens before the first write:
/// `None` means `frame` is not the frame `p` was read from, and nothing was changed.
///
/// One's-complement sums commute with byte swapping (RFC 1071 section 2 (B)), so every 16-bit
/// word is read and written in memory order and no byte is swapped on the way.
#[inline(always)]
pub(crate) fn rewrite_plain(
    frame: &mut [u8],
    p: &Plain,
    which: Endpoint,
    addr: Ipv4Addr,
    port: u16,
) -> Option<()> {
    let l4_checksum_at = match p.protocol {
        Protocol::Tcp => 16,
        _ => 6,
    };
    let packet = frame.get_mut(p.l3..p.l3 + IPV4_MIN_HEADER_LEN + l4_checksum_at + 2)?;
    let (header, l4) = packet.split_at_mut(IPV4_MIN_HEADER_LEN);
    let header: &mut [u8; IPV4_MIN_HEADER_LEN] = header.try_into().ok()?;
    let (addr_at, port_at) = match which {
        Endpoint::Source => (ip::SRC, 0),
        Endpoint::Destination => (ip::DST, 2),
    };
    let word = |bytes: &[u8], at: usize| u16::from_ne_bytes([bytes[at], bytes[at + 1]]);
    let new_addr = addr.octets();
    let address_delta = ChecksumDelta::new()
        .word(word(header, addr_at), word(&new_addr, 0))
        .word(word(header, addr_at + 2), word(&new_addr, 2));

    let old_ttl_word = word(header, ip::TTL);
    header[ip::TTL] = header[ip::TTL].saturating_sub(1);
    let header_delta = address_delta.word(old_ttl_word, word(header, ip::TTL));
    header[addr_at..addr_at + 4].copy_from_slice(&new_addr);
    let header_sum = header_delta.apply(word(header, ip::CHECKSUM));
    header[ip::CHECKSUM..ip::CHECKSUM + 2].copy_from_slice(&header_sum.to_ne_bytes());

    let new_port = port.to_be_bytes();
    // The pseudo-header covers the addresses.
    let l4_delta = address_delta.word(word(l4, port_at), word(&new_port, 0));
    l4[port_at..port_at + 2].copy_from_slice(&new_port);
    let l4_sum = word(l4, l4_checksum_at);
    // apply_udp's zero tests mean the same in either byte order.
    let l4_sum = match p.protocol {
        Protocol::Udp => l4_delta.apply_udp(l4_sum),
        _ => l4_delta.apply(l4_sum),
    };
    l4[l4_checksum_at..l4_checksum_at + 2].copy_from_slice(&l4_sum.to_ne_bytes());
    Some(())
}

#[inline]
fn parse_transport(
    protocol: u8,
    l4: &[u8],
    l4_offset: usize,
    fragmented: bool,
) -> Result<Transport, DropReason> {
    match protocol {
        PROTO_TCP => {
            if l4.len() < 20 || usize::from(l4[12] >> 4) * 4 < 20 {
                return Err(DropReason::BadTransportHeader);
            }
            let data_offset = usize::from(l4[12] >> 4) * 4;
            if data_offset > l4.len() {
                return Err(DropReason::BadTransportHeader);
            }
            Ok(Transport::Tcp {
                src_port: read_u16(l4, 0),
                dst_port: read_u16(l4, 2),
                flags: l4[13],
            })
        }
        PROTO_UDP => {
            if l4.len() < 8 {
                return Err(DropReason::BadTransportHeader);
            }
            let udp_len = usize::from(read_u16(l4, 4));
            // A first fragment holds only part of the datagram the UDP length describes.
            let consistent = if fragmented {
                udp_len >= l4.len()
            } else {
                udp_len == l4.len()
            };
            if udp_len < 8 || !consistent {
                return Err(DropReason::BadTransportHeader);
            }
            Ok(Transport::Udp {
                src_port: read_u16(l4, 0),
                dst_port: read_u16(l4, 2),
            })
        }
        PROTO_ICMP => parse_icmp(l4, l4_offset, fragmented),
        _ => Err(DropReason::UnsupportedProtocol),
    }
}

fn parse_icmp(l4: &[u8], l4_offset: usize, fragmented: bool) -> Result<Transport, DropReason> {
    if l4.len() < 8 {
        return Err(DropReason::BadTransportHeader);
    }
    match l4[0] {
        ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY => Ok(Transport::IcmpEcho {
            request: l4[0] == ICMP_ECHO_REQUEST,
            id: read_u16(l4, 4),
        }),
        ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM => {
            // RFC 5508 REQ-3: an ICMP error whose checksum fails is dropped, not translated. A
            // fragmented ICMP error cannot be checked (nor sensibly translated).
            if fragmented {
                return Err(DropReason::BadIcmpError);
            }
            if checksum::checksum(l4) != 0 {
                return Err(DropReason::BadIcmpChecksum);
            }
            parse_quote(l4[0], l4[1], &l4[8..], l4_offset + 8).map(Transport::IcmpError)
        }
        _ => Err(DropReason::UnsupportedIcmp),
    }
}

fn parse_quote(
    icmp_type: u8,
    code: u8,
    quote: &[u8],
    inner_l3: usize,
) -> Result<IcmpErrorQuote, DropReason> {
    if quote.len() < IPV4_MIN_HEADER_LEN || quote[0] >> 4 != 4 {
        return Err(DropReason::BadIcmpError);
    }
    let inner_header_len = usize::from(quote[0] & 0x0f) * 4;
    if inner_header_len < IPV4_MIN_HEADER_LEN || quote.len() < inner_header_len + 8 {
        return Err(DropReason::BadIcmpError);
    }
    // Only a quote of a first fragment (or unfragmented packet) names ports we can match.
    if read_u16(quote, ip::FLAGS_FRAG) & IP_FRAG_OFFSET_MASK != 0 {
        return Err(DropReason::BadIcmpError);
    }
    let inner_l4 = &quote[inner_header_len..];
    let protocol = Protocol::from_number(quote[ip::PROTO]).ok_or(DropReason::BadIcmpError)?;
    let (src_port, dst_port) = match protocol {
        Protocol::Tcp | Protocol::Udp => (read_u16(inner_l4, 0), read_u16(inner_l4, 2)),
        // Only a quoted echo request/reply has an id we map; an error about an error is dropped.
        Protocol::Icmp => match inner_l4[0] {
            ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY => (read_u16(inner_l4, 4), 0),
            _ => return Err(DropReason::BadIcmpError),
        },
    };
    Ok(IcmpErrorQuote {
        icmp_type,
        code,
        inner_l3,
        inner_header_len,
        protocol,
        src: ipv4_at(quote, ip::SRC),
        dst: ipv4_at(quote, ip::DST),
        src_port,
        dst_port,
        inner_l4_len: inner_l4.len(),
    })
}

/// Where a transport protocol keeps its checksum, relative to its header.
fn l4_checksum_offset(protocol: u8) -> Option<usize> {
    match protocol {
        PROTO_TCP => Some(16),
        PROTO_UDP => Some(6),
        PROTO_ICMP => Some(2),
        _ => None,
    }
}

/// Which endpoint of the packet a rewrite changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Source,
    Destination,
}

/// Rewrites one endpoint (address, and port or echo id where the packet has one) of a parsed
/// packet and updates the IPv4 and transport checksums incrementally.
///
/// `port` is ignored for later fragments, which carry no transport header; for the first
/// fragment the transport checksum is still updated because it covers the whole datagram and the
/// delta is the same.
pub fn rewrite_endpoint(
    frame: &mut [u8],
    p: &Parsed,
    which: Endpoint,
    addr: Ipv4Addr,
    port: Option<u16>,
) {
    rewrite(frame, p, which, addr, port, false);
}

/// [`rewrite_endpoint`] plus the TTL decrement forwarding needs, folded into the same IPv4
/// header checksum update. Callers check `ttl > 1` first.
#[inline]
pub fn rewrite_endpoint_and_decrement_ttl(
    frame: &mut [u8],
    p: &Parsed,
    which: Endpoint,
    addr: Ipv4Addr,
    port: Option<u16>,
) {
    rewrite(frame, p, which, addr, port, true);
}

#[inline]
fn rewrite(
    frame: &mut [u8],
    p: &Parsed,
    which: Endpoint,
    addr: Ipv4Addr,
    port: Option<u16>,
    decrement_ttl: bool,
) {
    let (addr_off, old_addr) = match which {
        Endpoint::Source => (ip::SRC, p.src),
        Endpoint::Destination => (ip::DST, p.dst),
    };
    let ip_delta = ChecksumDelta::new().address(old_addr, addr);
    let mut header_delta = ip_delta;
    if decrement_ttl {
        let ttl_off = p.l3 + ip::TTL;
        let old_word = read_u16(frame, ttl_off);
        frame[ttl_off] = frame[ttl_off].saturating_sub(1);
        header_delta = header_delta.word(old_word, read_u16(frame, ttl_off));
    }
    frame[p.l3 + addr_off..p.l3 + addr_off + 4].copy_from_slice(&addr.octets());
    let ip_sum = read_u16(frame, p.l3 + ip::CHECKSUM);
    write_u16(frame, p.l3 + ip::CHECKSUM, header_delta.apply(ip_sum));

    let l4 = p.l4();
    match p.transport {
        Transport::Tcp { .. } | Transport::Udp { .. } => {
            let port_off = l4 + if which == Endpoint::Source { 0 } else { 2 };
            let mut delta = ip_delta; // pseudo-header covers the addresses
            if let Some(new_port) = port {
                delta = delta.word(read_u16(frame, port_off), new_port);
                write_u16(frame, port_off, new_port);
            }
            let sum_off = l4 + if p.protocol == PROTO_TCP { 16 } else { 6 };
            let sum = read_u16(frame, sum_off);
            let updated = if p.protocol == PROTO_UDP {
                delta.apply_udp(sum)
            } else {
                delta.apply(sum)
            };
            write_u16(frame, sum_off, updated);
        }
        Transport::IcmpEcho { .. } => {
            // The ICMP checksum has no pseudo-header: only the id change matters.
            if let Some(new_id) = port {
                let old_id = read_u16(frame, l4 + 4);
                write_u16(frame, l4 + 4, new_id);
                let sum = read_u16(frame, l4 + 2);
                write_u16(
                    frame,
                    l4 + 2,
                    ChecksumDelta::new().word(old_id, new_id).apply(sum),
                );
            }
        }
        Transport::IcmpError(_) | Transport::LaterFragment => {}
    }
}

/// Rewrites the quoted packet inside an ICMP error (RFC 5508 REQ-3): one endpoint of the quoted
/// header (address + port/id), the quoted IPv4 checksum, the quoted transport checksum when the
/// quote is long enough to hold it, and the outer ICMP checksum, which covers all of them.
pub fn rewrite_quoted_endpoint(
    frame: &mut [u8],
    p: &Parsed,
    q: &IcmpErrorQuote,
    which: Endpoint,
    addr: Ipv4Addr,
    port: u16,
) {
    let inner = q.inner_l3;
    let inner_l4 = inner + q.inner_header_len;
    let (addr_off, old_addr) = match which {
        Endpoint::Source => (ip::SRC, q.src),
        Endpoint::Destination => (ip::DST, q.dst),
    };
    // A quoted echo keeps its id at offset 4 whichever endpoint is rewritten.
    let port_off = match (q.protocol, which) {
        (Protocol::Icmp, _) => 4,
        (_, Endpoint::Source) => 0,
        (_, Endpoint::Destination) => 2,
    };
    let mut icmp_delta = ChecksumDelta::new();

    // Quoted address + quoted IPv4 header checksum.
    let addr_delta = ChecksumDelta::new().address(old_addr, addr);
    frame[inner + addr_off..inner + addr_off + 4].copy_from_slice(&addr.octets());
    icmp_delta = icmp_delta.merge(addr_delta);
    let old_ip_sum = read_u16(frame, inner + ip::CHECKSUM);
    let new_ip_sum = addr_delta.apply(old_ip_sum);
    write_u16(frame, inner + ip::CHECKSUM, new_ip_sum);
    icmp_delta = icmp_delta.word(old_ip_sum, new_ip_sum);

    // Quoted port / echo id.
    let old_port = read_u16(frame, inner_l4 + port_off);
    write_u16(frame, inner_l4 + port_off, port);
    let port_delta = ChecksumDelta::new().word(old_port, port);
    icmp_delta = icmp_delta.merge(port_delta);

    // Quoted transport checksum, when the quote includes it.
    if let Some(sum_off) = l4_checksum_offset(q.protocol.number()) {
        if q.inner_l4_len >= sum_off + 2 {
            let old_sum = read_u16(frame, inner_l4 + sum_off);
            let inner_delta = match q.protocol {
                Protocol::Icmp => port_delta,
                Protocol::Tcp | Protocol::Udp => addr_delta.merge(port_delta),
            };
            let new_sum = if q.protocol == Protocol::Udp {
                inner_delta.apply_udp(old_sum)
            } else {
                inner_delta.apply(old_sum)
            };
            write_u16(frame, inner_l4 + sum_off, new_sum);
            icmp_delta = icmp_delta.word(old_sum, new_sum);
        }
    }

    let icmp_sum_off = p.l4() + 2;
    let icmp_sum = read_u16(frame, icmp_sum_off);
    write_u16(frame, icmp_sum_off, icmp_delta.apply(icmp_sum));
}

/// Decrements the TTL and patches the IPv4 checksum. Callers check `ttl > 1` first.
pub fn decrement_ttl(frame: &mut [u8], p: &Parsed) {
    let ttl_off = p.l3 + ip::TTL;
    let old_word = read_u16(frame, ttl_off);
    frame[ttl_off] = frame[ttl_off].saturating_sub(1);
    let new_word = read_u16(frame, ttl_off);
    let sum = read_u16(frame, p.l3 + ip::CHECKSUM);
    write_u16(
        frame,
        p.l3 + ip::CHECKSUM,
        ChecksumDelta::new().word(old_word, new_word).apply(sum),
    );
}

/// The largest ICMP error the engine builds: RFC 1812 4.3.2.3 asks for as much of the original as
/// fits in 576 bytes.
pub const ICMP_ERROR_MAX_LEN: usize = 576;
const ICMP_HEADER_LEN: usize = 8;

/// Turns the packet in `frame` into an ICMP error about itself, in place: the original IPv4
/// packet is moved back to become the quote, and a new IPv4 + ICMP header is written in front of
/// it. The Ethernet header (and VLAN tag) stays where it is; the I/O layer rewrites the MACs.
///
/// Returns the new frame length, or `None` if `frame` cannot hold even the minimal quote.
pub fn build_icmp_error_in_place(
    frame: &mut [u8],
    p: &Parsed,
    icmp_type: u8,
    code: u8,
    next_hop_mtu: u16,
    from: Ipv4Addr,
) -> Option<usize> {
    let prefix = IPV4_MIN_HEADER_LEN + ICMP_HEADER_LEN;
    let room = frame.len().checked_sub(p.l3 + prefix)?;
    let quote_len = p.total_len.min(ICMP_ERROR_MAX_LEN - prefix).min(room);
    if quote_len < p.header_len + 8 {
        return None;
    }
    let to = p.src;
    frame.copy_within(p.l3..p.l3 + quote_len, p.l3 + prefix);

    let total = prefix + quote_len;
    let ip = &mut frame[p.l3..p.l3 + IPV4_MIN_HEADER_LEN];
    ip.copy_from_slice(&[
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, PROTO_ICMP, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    write_u16(ip, ip::TOTAL_LEN, total as u16);
    ip[ip::SRC..ip::SRC + 4].copy_from_slice(&from.octets());
    ip[ip::DST..ip::DST + 4].copy_from_slice(&to.octets());
    let ip_sum = checksum::checksum(ip);
    write_u16(ip, ip::CHECKSUM, ip_sum);

    let icmp_off = p.l3 + IPV4_MIN_HEADER_LEN;
    let icmp = &mut frame[icmp_off..icmp_off + ICMP_HEADER_LEN + quote_len];
    icmp[..ICMP_HEADER_LEN].copy_from_slice(&[icmp_type, code, 0, 0, 0, 0, 0, 0]);
    write_u16(icmp, 6, next_hop_mtu);
    let icmp_sum = checksum::checksum(icmp);
    write_u16(icmp, 2, icmp_sum);
    Some(p.l3 + total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_udp_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let total = 20 + 8 + payload.len();
        let mut ip = vec![
            0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, PROTO_UDP, 0, 0, 10, 244, 1, 10, 203, 0, 113,
            10,
        ];
        write_u16(&mut ip, 2, total as u16);
        let s = checksum::checksum(&ip);
        write_u16(&mut ip, 10, s);
        f.extend_from_slice(&ip);
        let mut udp = vec![0x9c, 0x40, 0x1f, 0x91, 0, 0, 0, 0];
        write_u16(&mut udp, 4, (8 + payload.len()) as u16);
        udp.extend_from_slice(payload);
        let acc = checksum::pseudo_header_sum(
            Ipv4Addr::new(10, 244, 1, 10),
            Ipv4Addr::new(203, 0, 113, 10),
            PROTO_UDP,
            udp.len() as u16,
        );
        let s = checksum::finish(checksum::sum_bytes(acc, &udp));
        write_u16(&mut udp, 6, s);
        f.extend_from_slice(&udp);
        f
    }

    #[test]
    fn parses_udp() {
        let f = ipv4_udp_frame(b"hello");
        let p = parse(&f).expect("valid");
        assert_eq!(p.l3, 14);
        assert_eq!(
            p.transport,
            Transport::Udp {
                src_port: 40000,
                dst_port: 8081
            }
        );
        assert!(p.frag.dont_fragment);
    }

    #[test]
    fn every_truncation_is_a_named_drop_not_a_panic() {
        let f = ipv4_udp_frame(b"hello");
        for len in 0..f.len() {
            assert!(
                parse(&f[..len]).is_err(),
                "truncated to {len} must not parse"
            );
        }
    }

    #[test]
    fn corrupted_header_checksum_is_rejected() {
        let mut f = ipv4_udp_frame(b"x");
        f[14 + 8] ^= 1; // TTL changed without fixing the checksum
        assert_eq!(parse(&f), Err(DropReason::BadIpv4Checksum));
    }

    fn plain_candidates() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use egw_testkit::{PacketBuilder, TcpFlags};
        use proptest::prelude::*;
        (
            any::<bool>(),
            any::<(u16, u16, u8, u8)>(),
            proptest::option::of(1u16..4095),
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<bool>(),
        )
            .prop_map(|(tcp, (sport, dport, ttl, flags), vlan, payload, zero)| {
                let mut b = PacketBuilder::new()
                    .ipv4(Ipv4Addr::new(10, 244, 1, 10), Ipv4Addr::new(203, 0, 113, 9))
                    .ttl(ttl);
                if let Some(v) = vlan {
                    b = b.vlan(v);
                }
                b = if tcp {
                    b.tcp(sport, dport).flags(TcpFlags(flags))
                } else if zero {
                    b.udp(sport, dport).udp_zero_checksum()
                } else {
                    b.udp(sport, dport)
                };
                b.payload(&payload).build()
            })
    }

    proptest::proptest! {
        /// `parse_plain` accepts a frame only where `parse` does, with the same fields (and
        /// `to_parsed` gives exactly what `parse` gives), and
        /// accepts every valid plain one: checked on valid frames with one byte changed and the
        /// frame cut anywhere.
        #[test]
        fn parse_plain_agrees_with_parse(
            mut frame in plain_candidates(),
            index in proptest::prelude::any::<proptest::sample::Index>(),
            value in proptest::prelude::any::<u8>(),
            mutate in proptest::prelude::any::<bool>(),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            if mutate {
                let i = index.index(frame.len());
                frame[i] = value;
            }
            let len = if mutate { cut.index(frame.len() + 1) } else { frame.len() };
            let frame = &frame[..len];
            let full = parse(frame);
            match parse_plain(frame) {
                Some(plain) => {
                    let p = full.expect("parse accepts what parse_plain accepts");
                    proptest::prop_assert_eq!(plain.to_parsed(), p);
                    proptest::prop_assert_eq!(p.l3, plain.l3);
                    proptest::prop_assert_eq!(p.header_len, IPV4_MIN_HEADER_LEN);
                    proptest::prop_assert_eq!(p.total_len, plain.total_len);
                    proptest::prop_assert_eq!(p.protocol, plain.protocol.number());
                    proptest::prop_assert_eq!((p.src, p.dst, p.ttl), (plain.src, plain.dst, plain.ttl));
                    proptest::prop_assert!(!p.frag.is_fragment());
                    proptest::prop_assert_eq!(p.frag.dont_fragment, plain.dont_fragment);
                    proptest::prop_assert_eq!(p.ports(), Some((plain.src_port, plain.dst_port)));
                    let flags = match p.transport {
                        Transport::Tcp { flags, .. } => flags,
                        _ => 0,
                    };
                    proptest::prop_assert_eq!(flags, plain.tcp_flags);
                }
                None => {
                    // Only what parse rejects, or shapes that are not plain, are declined.
                    if let Ok(p) = full {
                        let plain_shape = p.header_len == IPV4_MIN_HEADER_LEN
                            && !p.frag.is_fragment()
                            && matches!(p.transport, Transport::Tcp { .. } | Transport::Udp { .. });
                        proptest::prop_assert!(!plain_shape, "a plain packet was declined: {p:?}");
                    }
                }
            }
        }

        /// `rewrite_plain` writes exactly the bytes `rewrite_endpoint_and_decrement_ttl` writes.
        #[test]
        fn rewrite_plain_equals_rewrite(
            frame in plain_candidates(),
            source in proptest::prelude::any::<bool>(),
            addr in proptest::prelude::any::<u32>(),
            port in proptest::prelude::any::<u16>(),
        ) {
            let which = if source { Endpoint::Source } else { Endpoint::Destination };
            let addr = Ipv4Addr::from(addr);
            let p = parse(&frame).expect("valid");
            let plain = parse_plain(&frame).expect("plain");
            let mut expected = frame.clone();
            rewrite_endpoint_and_decrement_ttl(&mut expected, &p, which, addr, Some(port));
            let mut got = frame.clone();
            proptest::prop_assert_eq!(rewrite_plain(&mut got, &plain, which, addr, port), Some(()));
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn rewrite_plain_refuses_a_shorter_frame_and_leaves_it_alone() {
        let f = ipv4_udp_frame(b"hello");
        let plain = parse_plain(&f).expect("plain");
        let mut short = f[..30].to_vec();
        assert_eq!(
            rewrite_plain(&mut short, &plain, Endpoint::Source, Ipv4Addr::LOCALHOST, 1),
            None
        );
        assert_eq!(short, f[..30]);
    }
}
