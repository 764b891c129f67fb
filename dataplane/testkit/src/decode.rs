//! [`Decoded`]: an independent, fully checked reading of a frame — every header field, each
//! checksum recomputed from scratch.

use std::net::Ipv4Addr;

use crate::checksum::{checksum, finish, pseudo_header_sum, sum_bytes};
use crate::wire::*;

#[cfg(doc)]
use crate::reassemble;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{layer} truncated: needs {needed} bytes, {available} available")]
    Truncated {
        layer: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("ethertype {ethertype:#06x} is not IPv4")]
    NotIpv4 { ethertype: u16 },
    #[error("IP version {version}, expected 4")]
    BadIpVersion { version: u8 },
    #[error("IPv4 IHL {ihl} is below the minimum of 5")]
    BadIhl { ihl: u8 },
    #[error("IPv4 total length {total_length} is shorter than its {header_len}-byte header")]
    TotalLengthTooShort {
        total_length: u16,
        header_len: usize,
    },
    #[error("IPv4 total length {total_length} exceeds the {available} bytes after the L2 header")]
    TotalLengthExceedsFrame { total_length: u16, available: usize },
    #[error("TCP data offset {data_offset} is invalid for a {segment_len}-byte segment")]
    BadTcpDataOffset { data_offset: u8, segment_len: usize },
    #[error("UDP length {length} is invalid for a {segment_len}-byte datagram")]
    BadUdpLength { length: u16, segment_len: usize },
    #[error("ICMP error quotes an undecodable packet: {0}")]
    Inner(Box<DecodeError>),
}

/// The Ethernet header of a decoded frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthInfo {
    pub src: MacAddr,
    pub dst: MacAddr,
    pub vlan: Option<VlanTag>,
    /// The EtherType after any VLAN tag.
    pub ethertype: u16,
}

/// Every field of an IPv4 header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Info {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Header length in 32-bit words.
    pub ihl: u8,
    pub tos: u8,
    pub total_length: u16,
    pub id: u16,
    /// The reserved ("evil") bit, which must be zero.
    pub reserved_flag: bool,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// In 8-byte units.
    pub fragment_offset: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub header_checksum: u16,
    /// The header sums to all ones (RFC 1071 verification, recomputed from the bytes).
    pub header_checksum_ok: bool,
    /// The option bytes, padding included.
    pub options: Vec<u8>,
}

impl Ipv4Info {
    /// Any fragment, first or not.
    pub fn is_fragment(&self) -> bool {
        self.more_fragments || self.fragment_offset != 0
    }

    pub(crate) fn header_len(&self) -> usize {
        usize::from(self.ihl) * 4
    }
}

/// A TCP segment. `checksum_ok` is `None` in a first fragment, whose checksum covers bytes that
/// are not in it (reassemble first, see [`reassemble`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpInfo {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    /// Header length in 32-bit words.
    pub data_offset: u8,
    pub flags: TcpFlags,
    pub window: u16,
    pub checksum: u16,
    pub checksum_ok: Option<bool>,
    pub urgent_pointer: u16,
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

/// A UDP datagram. `checksum` 0 means the sender computed none; `checksum_ok` is then `None`, as it
/// is in a first fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpInfo {
    pub src_port: u16,
    pub dst_port: u16,
    pub length: u16,
    pub checksum: u16,
    pub checksum_ok: Option<bool>,
    pub payload: Vec<u8>,
}

/// An ICMP echo request or reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpEchoInfo {
    pub kind: EchoKind,
    pub id: u16,
    pub seq: u16,
    pub checksum: u16,
    /// `None` in a first fragment.
    pub checksum_ok: Option<bool>,
    pub payload: Vec<u8>,
}

/// An ICMP error message (types 3, 4, 5, 11, 12) and the packet it quotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpErrorInfo {
    pub icmp_type: u8,
    pub code: u8,
    /// The low 16 bits of the second header word: the next-hop MTU of type 3 code 4 (RFC 1191).
    pub next_hop_mtu: u16,
    pub checksum: u16,
    /// `None` in a first fragment.
    pub checksum_ok: Option<bool>,
    pub inner: Box<DecodedInner>,
}

/// Any other ICMP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpOtherInfo {
    pub icmp_type: u8,
    pub code: u8,
    pub checksum: u16,
    pub checksum_ok: Option<bool>,
}

/// The transport layer of a decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp(TcpInfo),
    Udp(UdpInfo),
    IcmpEcho(IcmpEchoInfo),
    IcmpError(IcmpErrorInfo),
    Icmp(IcmpOtherInfo),
    /// A non-first fragment, or a first fragment too short to hold its transport header.
    Fragment {
        protocol: u8,
        payload_len: usize,
    },
    /// A protocol this kit does not decode; the bytes after the IPv4 header.
    Other {
        protocol: u8,
        payload: Vec<u8>,
    },
}

/// The packet quoted by an ICMP error: usually only its IPv4 header and first 8 payload bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedInner {
    /// Header fields as quoted; `total_length` is the original packet's, not the quote's.
    pub ipv4: Ipv4Info,
    pub l4: InnerL4,
    /// Bytes of the inner packet present in the quote.
    pub quoted_len: usize,
}

/// The transport header of a quoted packet, as far as the quote goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InnerL4 {
    /// `checksum` is present when the quote reaches byte 18 of the segment; `checksum_ok` only
    /// when the whole unfragmented segment is quoted.
    Tcp {
        src_port: u16,
        dst_port: u16,
        seq: u32,
        checksum: Option<u16>,
        checksum_ok: Option<bool>,
    },
    /// `checksum_ok` only when the whole unfragmented datagram is quoted and the checksum is set.
    Udp {
        src_port: u16,
        dst_port: u16,
        length: u16,
        checksum: u16,
        checksum_ok: Option<bool>,
    },
    IcmpEcho {
        kind: EchoKind,
        id: u16,
        seq: u16,
        checksum: u16,
        checksum_ok: Option<bool>,
    },
    Icmp {
        icmp_type: u8,
        code: u8,
    },
    /// A non-first fragment was quoted.
    Fragment {
        protocol: u8,
    },
    /// The quote ends before the first 8 bytes of the transport header.
    Truncated {
        protocol: u8,
        available: usize,
    },
    Other {
        protocol: u8,
    },
}

/// An owned, fully checked decode of one Ethernet frame carrying IPv4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub eth: EthInfo,
    /// Offset of the IPv4 header in the frame: 14, or 18 behind a VLAN tag.
    pub ip_offset: usize,
    pub ipv4: Ipv4Info,
    pub l4: L4,
    /// Bytes after the IPv4 total length (Ethernet padding).
    pub trailing_len: usize,
}

impl Decoded {
    /// Decodes `frame`, recomputing every checksum.
    pub fn parse(frame: &[u8]) -> Result<Decoded, DecodeError> {
        let (eth, ip_offset) = parse_eth(frame)?;
        if eth.ethertype != ETHERTYPE_IPV4 {
            return Err(DecodeError::NotIpv4 {
                ethertype: eth.ethertype,
            });
        }
        let after_l2 = &frame[ip_offset..];
        let ipv4 = parse_ipv4_header(after_l2)?;
        let packet = bounded_ipv4_packet(after_l2, &ipv4)?;
        let l4 = decode_l4(&ipv4, &packet[ipv4.header_len()..])?;
        Ok(Decoded {
            eth,
            ip_offset,
            trailing_len: after_l2.len() - packet.len(),
            ipv4,
            l4,
        })
    }

    /// Whether the IPv4 header checksum and every transport checksum that can be verified (see
    /// the `checksum_ok` fields) verify, including those of the IPv4 header and transport of a
    /// packet quoted by an ICMP error.
    pub fn checksums_ok(&self) -> bool {
        let verified = |ok: Option<bool>| ok != Some(false);
        self.ipv4.header_checksum_ok
            && match &self.l4 {
                L4::Tcp(tcp) => verified(tcp.checksum_ok),
                L4::Udp(udp) => verified(udp.checksum_ok),
                L4::IcmpEcho(echo) => verified(echo.checksum_ok),
                L4::Icmp(icmp) => verified(icmp.checksum_ok),
                L4::IcmpError(error) => {
                    verified(error.checksum_ok)
                        && error.inner.ipv4.header_checksum_ok
                        && verified(error.inner.l4.checksum_ok())
                }
                L4::Fragment { .. } | L4::Other { .. } => true,
            }
    }

    /// Source and destination ports of TCP/UDP, or the echo id twice for ICMP echo: the flow key
    /// a NAT rewrites. `None` for anything else.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match &self.l4 {
            L4::Tcp(tcp) => Some((tcp.src_port, tcp.dst_port)),
            L4::Udp(udp) => Some((udp.src_port, udp.dst_port)),
            L4::IcmpEcho(echo) => Some((echo.id, echo.id)),
            _ => None,
        }
    }
}

impl InnerL4 {
    /// The verification result of the quoted transport checksum, where it could be verified.
    pub fn checksum_ok(&self) -> Option<bool> {
        match self {
            InnerL4::Tcp { checksum_ok, .. }
            | InnerL4::Udp { checksum_ok, .. }
            | InnerL4::IcmpEcho { checksum_ok, .. } => *checksum_ok,
            _ => None,
        }
    }
}

pub(crate) fn parse_eth(frame: &[u8]) -> Result<(EthInfo, usize), DecodeError> {
    require("ethernet", frame, ETH_HEADER_LEN)?;
    let mut dst = [0; 6];
    let mut src = [0; 6];
    dst.copy_from_slice(&frame[0..6]);
    src.copy_from_slice(&frame[6..12]);
    let outer_type = get_u16(frame, 12);
    let (vlan, ethertype, ip_offset) = if outer_type == ETHERTYPE_VLAN {
        require("802.1Q tag", frame, ETH_HEADER_LEN + VLAN_TAG_LEN)?;
        let tag = VlanTag::from_tci(get_u16(frame, 14));
        (Some(tag), get_u16(frame, 16), ETH_HEADER_LEN + VLAN_TAG_LEN)
    } else {
        (None, outer_type, ETH_HEADER_LEN)
    };
    Ok((
        EthInfo {
            src: MacAddr(src),
            dst: MacAddr(dst),
            vlan,
            ethertype,
        },
        ip_offset,
    ))
}

pub(crate) fn require(layer: &'static str, bytes: &[u8], needed: usize) -> Result<(), DecodeError> {
    if bytes.len() < needed {
        return Err(DecodeError::Truncated {
            layer,
            needed,
            available: bytes.len(),
        });
    }
    Ok(())
}

/// Reads an IPv4 header from the start of `bytes`, which must hold at least the whole header.
pub(crate) fn parse_ipv4_header(bytes: &[u8]) -> Result<Ipv4Info, DecodeError> {
    require("ipv4 header", bytes, IPV4_MIN_HEADER_LEN)?;
    let version = bytes[0] >> 4;
    if version != 4 {
        return Err(DecodeError::BadIpVersion { version });
    }
    let ihl = bytes[0] & 0x0f;
    if usize::from(ihl) * 4 < IPV4_MIN_HEADER_LEN {
        return Err(DecodeError::BadIhl { ihl });
    }
    let header_len = usize::from(ihl) * 4;
    require("ipv4 options", bytes, header_len)?;
    let header = &bytes[..header_len];
    let flags_and_offset = get_u16(header, 6);
    Ok(Ipv4Info {
        src: Ipv4Addr::new(header[12], header[13], header[14], header[15]),
        dst: Ipv4Addr::new(header[16], header[17], header[18], header[19]),
        ihl,
        tos: header[1],
        total_length: get_u16(header, 2),
        id: get_u16(header, 4),
        reserved_flag: flags_and_offset & 0x8000 != 0,
        dont_fragment: flags_and_offset & 0x4000 != 0,
        more_fragments: flags_and_offset & 0x2000 != 0,
        fragment_offset: flags_and_offset & MAX_FRAGMENT_OFFSET,
        ttl: header[8],
        protocol: header[9],
        header_checksum: get_u16(header, 10),
        header_checksum_ok: checksum(header) == 0,
        options: header[IPV4_MIN_HEADER_LEN..].to_vec(),
    })
}

/// The IPv4 packet at the start of `after_l2`, cut to its total length (dropping L2 padding).
pub(crate) fn bounded_ipv4_packet<'a>(
    after_l2: &'a [u8],
    ipv4: &Ipv4Info,
) -> Result<&'a [u8], DecodeError> {
    let total = usize::from(ipv4.total_length);
    if total < ipv4.header_len() {
        return Err(DecodeError::TotalLengthTooShort {
            total_length: ipv4.total_length,
            header_len: ipv4.header_len(),
        });
    }
    after_l2
        .get(..total)
        .ok_or(DecodeError::TotalLengthExceedsFrame {
            total_length: ipv4.total_length,
            available: after_l2.len(),
        })
}

/// Receiver-side verification: the segment plus pseudo-header sums to all ones, so both
/// one's-complement zeros (0x0000 and 0xffff) are accepted where the data allows either.
pub(crate) fn transport_checksum_ok(ipv4: &Ipv4Info, protocol: u8, segment: &[u8]) -> bool {
    let Ok(len) = u16::try_from(segment.len()) else {
        return false;
    };
    finish(sum_bytes(
        pseudo_header_sum(ipv4.src, ipv4.dst, protocol, len),
        segment,
    )) == 0
}

pub(crate) fn decode_l4(ipv4: &Ipv4Info, segment: &[u8]) -> Result<L4, DecodeError> {
    let protocol = ipv4.protocol;
    let fragment = || L4::Fragment {
        protocol,
        payload_len: segment.len(),
    };
    if ipv4.fragment_offset != 0 {
        return Ok(fragment());
    }
    // A first fragment carries the transport header but only part of what its checksum covers.
    let whole = !ipv4.more_fragments;
    let minimum = match protocol {
        PROTO_TCP => Some(("tcp", TCP_MIN_HEADER_LEN)),
        PROTO_UDP => Some(("udp", UDP_HEADER_LEN)),
        PROTO_ICMP => Some(("icmp", ICMP_HEADER_LEN)),
        _ => None,
    };
    if let Some((layer, needed)) = minimum {
        if segment.len() < needed {
            return if whole {
                Err(DecodeError::Truncated {
                    layer,
                    needed,
                    available: segment.len(),
                })
            } else {
                Ok(fragment())
            };
        }
    }
    match protocol {
        PROTO_TCP => decode_tcp(ipv4, segment, whole),
        PROTO_UDP => decode_udp(ipv4, segment, whole),
        PROTO_ICMP => decode_icmp(segment, whole),
        _ => Ok(L4::Other {
            protocol,
            payload: segment.to_vec(),
        }),
    }
}

/// A TCP segment at least [`TCP_MIN_HEADER_LEN`] long; `whole`: not a first fragment, so its
/// checksum can be verified.
fn decode_tcp(ipv4: &Ipv4Info, segment: &[u8], whole: bool) -> Result<L4, DecodeError> {
    let verify = |ok: bool| whole.then_some(ok);
    let data_offset = segment[12] >> 4;
    let header_len = usize::from(data_offset) * 4;
    if header_len < TCP_MIN_HEADER_LEN || header_len > segment.len() {
        return Err(DecodeError::BadTcpDataOffset {
            data_offset,
            segment_len: segment.len(),
        });
    }
    Ok(L4::Tcp(TcpInfo {
        src_port: get_u16(segment, 0),
        dst_port: get_u16(segment, 2),
        seq: get_u32(segment, 4),
        ack: get_u32(segment, 8),
        data_offset,
        flags: TcpFlags(segment[13]),
        window: get_u16(segment, 14),
        checksum: get_u16(segment, 16),
        checksum_ok: verify(transport_checksum_ok(ipv4, PROTO_TCP, segment)),
        urgent_pointer: get_u16(segment, 18),
        options: segment[TCP_MIN_HEADER_LEN..header_len].to_vec(),
        payload: segment[header_len..].to_vec(),
    }))
}

/// A UDP datagram at least [`UDP_HEADER_LEN`] long; `whole` as for [`decode_tcp`].
fn decode_udp(ipv4: &Ipv4Info, segment: &[u8], whole: bool) -> Result<L4, DecodeError> {
    let verify = |ok: bool| whole.then_some(ok);
    let length = get_u16(segment, 4);
    let claimed = usize::from(length);
    // In a first fragment the length field counts bytes that come in later fragments.
    if claimed < UDP_HEADER_LEN || (whole && claimed > segment.len()) {
        return Err(DecodeError::BadUdpLength {
            length,
            segment_len: segment.len(),
        });
    }
    let datagram = &segment[..claimed.min(segment.len())];
    let checksum = get_u16(segment, 6);
    let checksum_ok = if checksum == 0 {
        None
    } else {
        verify(transport_checksum_ok(ipv4, PROTO_UDP, datagram))
    };
    Ok(L4::Udp(UdpInfo {
        src_port: get_u16(segment, 0),
        dst_port: get_u16(segment, 2),
        length,
        checksum,
        checksum_ok,
        payload: datagram[UDP_HEADER_LEN..].to_vec(),
    }))
}

/// An ICMP message at least [`ICMP_HEADER_LEN`] long; `whole` as for [`decode_tcp`].
fn decode_icmp(segment: &[u8], whole: bool) -> Result<L4, DecodeError> {
    let verify = |ok: bool| whole.then_some(ok);
    let icmp_type = segment[0];
    let code = segment[1];
    let checksum_value = get_u16(segment, 2);
    let checksum_ok = verify(checksum(segment) == 0);
    Ok(match icmp_type {
        ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY => L4::IcmpEcho(IcmpEchoInfo {
            kind: if icmp_type == ICMP_ECHO_REQUEST {
                EchoKind::Request
            } else {
                EchoKind::Reply
            },
            id: get_u16(segment, 4),
            seq: get_u16(segment, 6),
            checksum: checksum_value,
            checksum_ok,
            payload: segment[ICMP_HEADER_LEN..].to_vec(),
        }),
        // Destination unreachable, source quench, redirect, time exceeded, parameter
        // problem: the messages that quote the packet they are about.
        3 | 4 | 5 | 11 | 12 => L4::IcmpError(IcmpErrorInfo {
            icmp_type,
            code,
            next_hop_mtu: get_u16(segment, 6),
            checksum: checksum_value,
            checksum_ok,
            inner: Box::new(
                decode_inner(&segment[ICMP_HEADER_LEN..])
                    .map_err(|error| DecodeError::Inner(Box::new(error)))?,
            ),
        }),
        _ => L4::Icmp(IcmpOtherInfo {
            icmp_type,
            code,
            checksum: checksum_value,
            checksum_ok,
        }),
    })
}

/// Decodes the packet quoted by an ICMP error. The quote must hold the whole inner IPv4 header;
/// the transport header may be cut anywhere.
pub(crate) fn decode_inner(quote: &[u8]) -> Result<DecodedInner, DecodeError> {
    let ipv4 = parse_ipv4_header(quote)?;
    let header_len = ipv4.header_len();
    let inner_end = usize::from(ipv4.total_length).clamp(header_len, quote.len());
    let segment = &quote[header_len..inner_end];
    let complete = usize::from(ipv4.total_length) <= quote.len() && !ipv4.is_fragment();
    let protocol = ipv4.protocol;
    let l4 = if ipv4.fragment_offset != 0 {
        InnerL4::Fragment { protocol }
    } else if segment.len() < 8 {
        InnerL4::Truncated {
            protocol,
            available: segment.len(),
        }
    } else {
        match protocol {
            PROTO_TCP => InnerL4::Tcp {
                src_port: get_u16(segment, 0),
                dst_port: get_u16(segment, 2),
                seq: get_u32(segment, 4),
                checksum: (segment.len() >= 18).then(|| get_u16(segment, 16)),
                checksum_ok: (complete && segment.len() >= TCP_MIN_HEADER_LEN)
                    .then(|| transport_checksum_ok(&ipv4, PROTO_TCP, segment)),
            },
            PROTO_UDP => {
                let checksum = get_u16(segment, 6);
                let length = get_u16(segment, 4);
                let datagram = segment.get(..usize::from(length));
                InnerL4::Udp {
                    src_port: get_u16(segment, 0),
                    dst_port: get_u16(segment, 2),
                    length,
                    checksum,
                    checksum_ok: match datagram {
                        Some(datagram) if complete && checksum != 0 && datagram.len() >= 8 => {
                            Some(transport_checksum_ok(&ipv4, PROTO_UDP, datagram))
                        }
                        _ => None,
                    },
                }
            }
            PROTO_ICMP => match segment[0] {
                icmp_type @ (ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY) => InnerL4::IcmpEcho {
                    kind: if icmp_type == ICMP_ECHO_REQUEST {
                        EchoKind::Request
                    } else {
                        EchoKind::Reply
                    },
                    id: get_u16(segment, 4),
                    seq: get_u16(segment, 6),
                    checksum: get_u16(segment, 2),
                    checksum_ok: complete.then(|| checksum(segment) == 0),
                },
                icmp_type => InnerL4::Icmp {
                    icmp_type,
                    code: segment[1],
                },
            },
            _ => InnerL4::Other { protocol },
        }
    };
    Ok(DecodedInner {
        quoted_len: quote.len(),
        ipv4,
        l4,
    })
}
