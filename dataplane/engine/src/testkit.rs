//! Packet builders and an independent, fully checked decoder, for tests, benchmarks and the lab's
//! traffic generator.
//!
//! The kit is deliberately separate from the engine's own parser: a test that runs a frame through
//! the engine and then [`Decoded::parse`]s the result checks the engine against a second,
//! independent reading of the wire format. Every checksum the decoder reports is a full
//! recomputation (RFC 1071), so a passing test proves the engine's incremental updates (RFC 1624)
//! are right.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use egw_engine::testkit::{Decoded, L4, PacketBuilder, TcpFlags};
//!
//! let frame = PacketBuilder::new()
//!     .eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
//!     .vlan(100)
//!     .ipv4(Ipv4Addr::new(10, 244, 1, 10), Ipv4Addr::new(203, 0, 113, 10))
//!     .ttl(63)
//!     .id(0x1234)
//!     .dont_fragment(true)
//!     .tcp(40000, 80)
//!     .flags(TcpFlags::SYN)
//!     .seq(1)
//!     .build();
//!
//! let decoded = Decoded::parse(&frame).unwrap();
//! assert!(decoded.checksums_ok(), "{decoded}");
//! assert_eq!(decoded.eth.vlan.map(|tag| tag.vid), Some(100));
//! let L4::Tcp(tcp) = &decoded.l4 else { panic!("not tcp: {decoded}") };
//! assert_eq!((tcp.src_port, tcp.dst_port, tcp.flags), (40000, 80, TcpFlags::SYN));
//! assert_eq!(
//!     decoded.to_string(),
//!     "eth 02:00:00:00:00:01>02:00:00:00:00:02 vlan 100 | ipv4 10.244.1.10>203.0.113.10 ttl 63 \
//!      id 0x1234 DF | tcp 40000>80 [S] seq 1 ack 0 win 65535 len 0 csum ok"
//! );
//! ```
//!
//! What the kit holds:
//!
//! - [`PacketBuilder`]: Ethernet (+ one 802.1Q tag) / IPv4 (options, fragment fields) / TCP, UDP,
//!   ICMP echo, ICMP error quoting another packet, or raw payload; deliberate faults for negative
//!   tests ([`bad_ip_checksum`](PacketBuilder::bad_ip_checksum), ...); [`build`](PacketBuilder::build)
//!   into a `Vec` or [`build_into`](PacketBuilder::build_into) a caller's buffer without allocating.
//! - [`Decoded`]: every header field, each checksum recomputed, and a one-line `Display` summary.
//! - [`ip_packet_of`], [`icmp_quote`], [`truncated`]: slices to quote in ICMP errors.
//! - [`fragment_packet`] and [`reassemble`]: RFC 791 fragmentation of a built frame and the way
//!   back, to send fragments in any order and verify transport checksums after translation.
//! - [`assert_frames_eq`], [`frame_difference`], [`field_at`], [`summarize`]: byte-exact
//!   assertions whose failure names the header field that differs.
//!
//! ```
//! use egw_engine::testkit::{fragment_packet, icmp_quote, ip_packet_of, reassemble, PacketBuilder};
//!
//! let big = PacketBuilder::new().udp(5000, 53).payload(&[7; 3000]).build();
//! let mut fragments = fragment_packet(&big, 1500).unwrap();
//! fragments.reverse();
//! assert_eq!(reassemble(&fragments).unwrap(), big);
//!
//! // "Fragmentation needed", quoting the IPv4 header and 8 bytes of the offending packet.
//! let frag_needed = PacketBuilder::new()
//!     .icmp_error(3, 4, 1400, icmp_quote(ip_packet_of(&big).unwrap()))
//!     .build();
//! # assert!(egw_engine::testkit::Decoded::parse(&frag_needed).unwrap().checksums_ok());
//! ```
//!
//! Builders never panic on their own input except [`PacketBuilder::build`], which is the
//! infallible convenience form of [`PacketBuilder::try_build`] for tests.

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::{BitOr, BitOrAssign};

use crate::checksum::{checksum, finish, pseudo_header_sum, sum_bytes};

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType (TPID) of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// ICMP type: echo reply.
pub const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP type: destination unreachable (code 4 = fragmentation needed, carries the next-hop MTU).
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
/// ICMP type: echo request.
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMP type: time exceeded.
pub const ICMP_TIME_EXCEEDED: u8 = 11;

const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV4_MAX_OPTIONS_LEN: usize = 40;
const TCP_MIN_HEADER_LEN: usize = 20;
const TCP_MAX_OPTIONS_LEN: usize = 40;
const UDP_HEADER_LEN: usize = 8;
const ICMP_HEADER_LEN: usize = 8;
const MAX_FRAGMENT_OFFSET: u16 = 0x1fff;
const MAX_VLAN_ID: u16 = 0x0fff;

/// An Ethernet MAC address, printed as `02:00:00:00:00:01`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An 802.1Q tag control field: priority, drop-eligible bit and VLAN id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VlanTag {
    /// Priority code point, 0..=7.
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier, 0..=4095.
    pub vid: u16,
}

impl VlanTag {
    fn tci(self) -> u16 {
        (u16::from(self.pcp & 0x7) << 13) | (u16::from(self.dei) << 12) | (self.vid & MAX_VLAN_ID)
    }

    fn from_tci(tci: u16) -> Self {
        VlanTag {
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & MAX_VLAN_ID,
        }
    }
}

/// TCP header flags (the low byte of the flags field), combinable with `|`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const NONE: TcpFlags = TcpFlags(0);
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const URG: TcpFlags = TcpFlags(0x20);
    pub const ECE: TcpFlags = TcpFlags(0x40);
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// Whether every flag in `other` is set in `self`.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

/// tcpdump notation: `[S]`, `[S.]`, `[P.]`, `[F.]`, `[R]`, `[none]`.
impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const LETTERS: [(TcpFlags, char); 8] = [
            (TcpFlags::FIN, 'F'),
            (TcpFlags::SYN, 'S'),
            (TcpFlags::RST, 'R'),
            (TcpFlags::PSH, 'P'),
            (TcpFlags::ACK, '.'),
            (TcpFlags::URG, 'U'),
            (TcpFlags::ECE, 'E'),
            (TcpFlags::CWR, 'W'),
        ];
        if self.0 == 0 {
            return f.write_str("[none]");
        }
        f.write_str("[")?;
        for (flag, letter) in LETTERS {
            if self.contains(flag) {
                write!(f, "{letter}")?;
            }
        }
        f.write_str("]")
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Whether an ICMP echo message is a request (type 8) or a reply (type 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EchoKind {
    Request,
    Reply,
}

impl EchoKind {
    fn icmp_type(self) -> u8 {
        match self {
            EchoKind::Request => ICMP_ECHO_REQUEST,
            EchoKind::Reply => ICMP_ECHO_REPLY,
        }
    }
}

/// Why a [`PacketBuilder`] could not produce a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("output buffer holds {available} bytes but the frame needs {needed}")]
    BufferTooSmall { needed: usize, available: usize },
    #[error(
        "IPv4 options are {len} bytes (padded to a multiple of 4), at most 40 fit in a header"
    )]
    Ipv4OptionsTooLong { len: usize },
    #[error("TCP options are {len} bytes (padded to a multiple of 4), at most 40 fit in a header")]
    TcpOptionsTooLong { len: usize },
    #[error(
        "IPv4 packet would be {len} bytes, more than the 65535 the total-length field can say"
    )]
    PacketTooLong { len: usize },
    #[error("fragment offset {offset} does not fit the 13-bit field (max 8191 units of 8 bytes)")]
    FragmentOffsetTooLarge { offset: u16 },
    #[error("VLAN id {vid} does not fit the 12-bit field (max 4095)")]
    VlanIdTooLarge { vid: u16 },
}

/// Which transport header the builder writes after the IPv4 header.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Transport {
    Raw {
        protocol: u8,
    },
    Tcp {
        src_port: u16,
        dst_port: u16,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    IcmpEcho {
        kind: EchoKind,
        id: u16,
        seq: u16,
    },
    IcmpError {
        icmp_type: u8,
        code: u8,
        next_hop_mtu: u16,
        quoted: Vec<u8>,
    },
}

impl Transport {
    fn protocol(&self) -> u8 {
        match self {
            Transport::Raw { protocol } => *protocol,
            Transport::Tcp { .. } => PROTO_TCP,
            Transport::Udp { .. } => PROTO_UDP,
            Transport::IcmpEcho { .. } | Transport::IcmpError { .. } => PROTO_ICMP,
        }
    }
}

/// Builds Ethernet frames carrying IPv4 (or, for negative tests, anything else), with all lengths
/// and checksums computed.
///
/// Every setter may be called in any order; later calls win. Defaults: MACs 02:00:00:00:00:01 >
/// 02:00:00:00:00:02, no VLAN, IPv4 10.0.0.1 > 10.0.0.2, TTL 64, id 0, TOS 0, no DF, no options,
/// and an empty payload of protocol 253 (RFC 3692 experimental) until a transport is chosen. TCP
/// fields default to seq 0, ack 0, no flags, window 65535; they are used only once
/// [`tcp`](Self::tcp) is chosen.
///
/// Checksums of TCP, UDP and ICMP cover exactly the bytes this builder writes. For a fragment built
/// directly with [`fragment`](Self::fragment) that is not the checksum of any real datagram; to get
/// real fragments build the whole datagram and split it with [`fragment_packet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketBuilder {
    src_mac: MacAddr,
    dst_mac: MacAddr,
    vlan: Option<VlanTag>,
    non_ipv4_ethertype: Option<u16>,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    ttl: u8,
    id: u16,
    tos: u8,
    dont_fragment: bool,
    more_fragments: bool,
    fragment_offset: u16,
    ip_options: Vec<u8>,
    transport: Transport,
    tcp_seq: u32,
    tcp_ack: u32,
    tcp_flags: TcpFlags,
    tcp_window: u16,
    tcp_urgent: u16,
    tcp_options: Vec<u8>,
    udp_zero_checksum: bool,
    payload: Vec<u8>,
    bad_ip_checksum: bool,
    bad_l4_checksum: bool,
    total_length_override: Option<u16>,
    ihl_override: Option<u8>,
    trailing_padding: usize,
}

impl Default for PacketBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Byte counts of one frame, computed once and shared by every writer.
#[derive(Clone, Copy, Debug)]
struct Layout {
    l2_len: usize,
    ip_header_len: usize,
    l4_header_len: usize,
    ip_total_len: usize,
    frame_len: usize,
}

impl PacketBuilder {
    pub fn new() -> Self {
        PacketBuilder {
            src_mac: MacAddr([0x02, 0, 0, 0, 0, 0x01]),
            dst_mac: MacAddr([0x02, 0, 0, 0, 0, 0x02]),
            vlan: None,
            non_ipv4_ethertype: None,
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            ttl: 64,
            id: 0,
            tos: 0,
            dont_fragment: false,
            more_fragments: false,
            fragment_offset: 0,
            ip_options: Vec::new(),
            transport: Transport::Raw { protocol: 253 },
            tcp_seq: 0,
            tcp_ack: 0,
            tcp_flags: TcpFlags::NONE,
            tcp_window: 65535,
            tcp_urgent: 0,
            tcp_options: Vec::new(),
            udp_zero_checksum: false,
            payload: Vec::new(),
            bad_ip_checksum: false,
            bad_l4_checksum: false,
            total_length_override: None,
            ihl_override: None,
            trailing_padding: 0,
        }
    }

    // ---- Ethernet ------------------------------------------------------------------------------

    /// Source and destination MAC (on the wire the destination comes first).
    pub fn eth(mut self, src: impl Into<MacAddr>, dst: impl Into<MacAddr>) -> Self {
        self.src_mac = src.into();
        self.dst_mac = dst.into();
        self
    }

    /// Adds a single 802.1Q tag with priority 0.
    pub fn vlan(mut self, vid: u16) -> Self {
        self.vlan = Some(VlanTag {
            pcp: 0,
            dei: false,
            vid,
        });
        self
    }

    /// Adds a single 802.1Q tag with every field given.
    pub fn vlan_tag(mut self, tag: VlanTag) -> Self {
        self.vlan = Some(tag);
        self
    }

    /// Makes the frame carry `payload` under `ethertype` instead of IPv4 (ARP, IPv6, ...): every
    /// IPv4 and transport setting is then ignored.
    pub fn non_ipv4(mut self, ethertype: u16, payload: &[u8]) -> Self {
        self.non_ipv4_ethertype = Some(ethertype);
        self.payload = payload.to_vec();
        self
    }

    /// Appends `len` zero bytes after the IPv4 packet, as NICs pad short frames to 60 bytes. The
    /// IPv4 total length does not count them; a translator must not checksum them.
    pub fn trailing_padding(mut self, len: usize) -> Self {
        self.trailing_padding = len;
        self
    }

    // ---- IPv4 ----------------------------------------------------------------------------------

    pub fn ipv4(mut self, src: impl Into<Ipv4Addr>, dst: impl Into<Ipv4Addr>) -> Self {
        self.src_ip = src.into();
        self.dst_ip = dst.into();
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn id(mut self, id: u16) -> Self {
        self.id = id;
        self
    }

    /// The whole TOS byte (DSCP << 2 | ECN).
    pub fn tos(mut self, tos: u8) -> Self {
        self.tos = tos;
        self
    }

    pub fn dont_fragment(mut self, df: bool) -> Self {
        self.dont_fragment = df;
        self
    }

    /// IPv4 options, padded with End-of-Option-List (0) bytes to a multiple of 4.
    pub fn options(mut self, options: &[u8]) -> Self {
        self.ip_options = options.to_vec();
        self
    }

    /// Marks the packet as a fragment: `offset` in 8-byte units, and the MF flag.
    pub fn fragment(mut self, offset: u16, more_fragments: bool) -> Self {
        self.fragment_offset = offset;
        self.more_fragments = more_fragments;
        self
    }

    // ---- Transport -----------------------------------------------------------------------------

    /// TCP header; see [`flags`](Self::flags), [`seq`](Self::seq), [`ack`](Self::ack),
    /// [`window`](Self::window), [`tcp_options`](Self::tcp_options).
    pub fn tcp(mut self, src_port: u16, dst_port: u16) -> Self {
        self.transport = Transport::Tcp { src_port, dst_port };
        self
    }

    pub fn flags(mut self, flags: TcpFlags) -> Self {
        self.tcp_flags = flags;
        self
    }

    pub fn seq(mut self, seq: u32) -> Self {
        self.tcp_seq = seq;
        self
    }

    pub fn ack(mut self, ack: u32) -> Self {
        self.tcp_ack = ack;
        self
    }

    pub fn window(mut self, window: u16) -> Self {
        self.tcp_window = window;
        self
    }

    pub fn urgent_pointer(mut self, urgent: u16) -> Self {
        self.tcp_urgent = urgent;
        self
    }

    /// TCP options (e.g. MSS `[2, 4, 0x05, 0xb4]`), padded with zero bytes to a multiple of 4.
    pub fn tcp_options(mut self, options: &[u8]) -> Self {
        self.tcp_options = options.to_vec();
        self
    }

    pub fn udp(mut self, src_port: u16, dst_port: u16) -> Self {
        self.transport = Transport::Udp { src_port, dst_port };
        self
    }

    /// Sends UDP with checksum 0, "no checksum" (RFC 768); translators must keep it 0.
    pub fn udp_zero_checksum(mut self) -> Self {
        self.udp_zero_checksum = true;
        self
    }

    pub fn icmp_echo_request(mut self, id: u16, seq: u16) -> Self {
        self.transport = Transport::IcmpEcho {
            kind: EchoKind::Request,
            id,
            seq,
        };
        self
    }

    pub fn icmp_echo_reply(mut self, id: u16, seq: u16) -> Self {
        self.transport = Transport::IcmpEcho {
            kind: EchoKind::Reply,
            id,
            seq,
        };
        self
    }

    /// An ICMP error (destination unreachable, time exceeded, ...) quoting `quoted_ip_packet`, the
    /// leading bytes of the offending IPv4 packet as the router saw it; see [`ip_packet_of`],
    /// [`icmp_quote`] and [`truncated`]. `next_hop_mtu` fills the low 16 bits of the second header
    /// word (RFC 1191; give 0 for anything but type 3 code 4).
    pub fn icmp_error(
        mut self,
        icmp_type: u8,
        code: u8,
        next_hop_mtu: u16,
        quoted_ip_packet: &[u8],
    ) -> Self {
        self.transport = Transport::IcmpError {
            icmp_type,
            code,
            next_hop_mtu,
            quoted: quoted_ip_packet.to_vec(),
        };
        self
    }

    /// Raw IPv4 payload with any protocol number and no transport header of ours.
    pub fn ipv4_payload(mut self, protocol: u8, bytes: &[u8]) -> Self {
        self.transport = Transport::Raw { protocol };
        self.payload = bytes.to_vec();
        self
    }

    /// Transport payload: after the TCP/UDP/ICMP echo header; after the quote of an ICMP error.
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    // ---- Deliberate faults, for negative tests -------------------------------------------------

    /// Writes a wrong IPv4 header checksum.
    pub fn bad_ip_checksum(mut self) -> Self {
        self.bad_ip_checksum = true;
        self
    }

    /// Writes a wrong TCP/UDP/ICMP checksum (never 0 for UDP, which would mean "none", and never
    /// the other one's-complement zero of the right value). No effect on raw payloads.
    pub fn bad_l4_checksum(mut self) -> Self {
        self.bad_l4_checksum = true;
        self
    }

    /// Writes `total_length` into the IPv4 total-length field instead of the real length. Frame
    /// contents and transport checksums stay those of the real packet.
    pub fn total_length_override(mut self, total_length: u16) -> Self {
        self.total_length_override = Some(total_length);
        self
    }

    /// Writes `ihl` (low 4 bits) into the IHL field instead of the real header length. The header
    /// checksum is computed over the bytes actually written.
    pub fn ihl_override(mut self, ihl: u8) -> Self {
        self.ihl_override = Some(ihl);
        self
    }

    // ---- Output --------------------------------------------------------------------------------

    /// The length [`build`](Self::build) would return.
    pub fn frame_len(&self) -> Result<usize, BuildError> {
        self.layout().map(|layout| layout.frame_len)
    }

    /// Builds the frame.
    ///
    /// # Panics
    /// When [`try_build`](Self::try_build) fails: options or packet too long, fragment offset or
    /// VLAN id out of range. These are mistakes in the test, not in a packet under test.
    pub fn build(&self) -> Vec<u8> {
        match self.try_build() {
            Ok(frame) => frame,
            Err(error) => panic!("PacketBuilder cannot build this packet: {error}"),
        }
    }

    pub fn try_build(&self) -> Result<Vec<u8>, BuildError> {
        let layout = self.layout()?;
        let mut frame = vec![0; layout.frame_len];
        self.write(&layout, &mut frame);
        Ok(frame)
    }

    /// Writes the frame to the start of `out` without allocating; returns its length.
    pub fn build_into(&self, out: &mut [u8]) -> Result<usize, BuildError> {
        let layout = self.layout()?;
        let available = out.len();
        let frame = out
            .get_mut(..layout.frame_len)
            .ok_or(BuildError::BufferTooSmall {
                needed: layout.frame_len,
                available,
            })?;
        self.write(&layout, frame);
        Ok(layout.frame_len)
    }

    fn layout(&self) -> Result<Layout, BuildError> {
        if let Some(tag) = self.vlan {
            if tag.vid > MAX_VLAN_ID {
                return Err(BuildError::VlanIdTooLarge { vid: tag.vid });
            }
        }
        let l2_len = ETH_HEADER_LEN + if self.vlan.is_some() { VLAN_TAG_LEN } else { 0 };
        if self.non_ipv4_ethertype.is_some() {
            let frame_len = l2_len + self.payload.len() + self.trailing_padding;
            return Ok(Layout {
                l2_len,
                ip_header_len: 0,
                l4_header_len: 0,
                ip_total_len: self.payload.len(),
                frame_len,
            });
        }
        let ip_options_len = padded_to_4(self.ip_options.len());
        if ip_options_len > IPV4_MAX_OPTIONS_LEN {
            return Err(BuildError::Ipv4OptionsTooLong {
                len: ip_options_len,
            });
        }
        if self.fragment_offset > MAX_FRAGMENT_OFFSET {
            return Err(BuildError::FragmentOffsetTooLarge {
                offset: self.fragment_offset,
            });
        }
        let ip_header_len = IPV4_MIN_HEADER_LEN + ip_options_len;
        let l4_header_len = match &self.transport {
            Transport::Raw { .. } => 0,
            Transport::Tcp { .. } => {
                let tcp_options_len = padded_to_4(self.tcp_options.len());
                if tcp_options_len > TCP_MAX_OPTIONS_LEN {
                    return Err(BuildError::TcpOptionsTooLong {
                        len: tcp_options_len,
                    });
                }
                TCP_MIN_HEADER_LEN + tcp_options_len
            }
            Transport::Udp { .. } => UDP_HEADER_LEN,
            Transport::IcmpEcho { .. } => ICMP_HEADER_LEN,
            Transport::IcmpError { quoted, .. } => ICMP_HEADER_LEN + quoted.len(),
        };
        let ip_total_len = ip_header_len + l4_header_len + self.payload.len();
        if ip_total_len > usize::from(u16::MAX) {
            return Err(BuildError::PacketTooLong { len: ip_total_len });
        }
        Ok(Layout {
            l2_len,
            ip_header_len,
            l4_header_len,
            ip_total_len,
            frame_len: l2_len + ip_total_len + self.trailing_padding,
        })
    }

    /// Writes the whole frame; `frame` is exactly `layout.frame_len` long.
    fn write(&self, layout: &Layout, frame: &mut [u8]) {
        let (l2, rest) = frame.split_at_mut(layout.l2_len);
        l2[0..6].copy_from_slice(&self.dst_mac.0);
        l2[6..12].copy_from_slice(&self.src_mac.0);
        let ethertype = self.non_ipv4_ethertype.unwrap_or(ETHERTYPE_IPV4);
        match self.vlan {
            Some(tag) => {
                put_u16(l2, 12, ETHERTYPE_VLAN);
                put_u16(l2, 14, tag.tci());
                put_u16(l2, 16, ethertype);
            }
            None => put_u16(l2, 12, ethertype),
        }
        let (packet, padding) = rest.split_at_mut(layout.ip_total_len);
        padding.fill(0);
        if self.non_ipv4_ethertype.is_some() {
            packet.copy_from_slice(&self.payload);
        } else {
            self.write_ipv4(layout, packet);
        }
    }

    fn write_ipv4(&self, layout: &Layout, packet: &mut [u8]) {
        let (header, l4) = packet.split_at_mut(layout.ip_header_len);
        let ihl = self
            .ihl_override
            .unwrap_or((layout.ip_header_len / 4) as u8)
            & 0x0f;
        header[0] = 0x40 | ihl;
        header[1] = self.tos;
        // layout() has checked the length fits a u16.
        put_u16(
            header,
            2,
            self.total_length_override
                .unwrap_or(layout.ip_total_len as u16),
        );
        put_u16(header, 4, self.id);
        let flags_and_offset = (u16::from(self.dont_fragment) << 14)
            | (u16::from(self.more_fragments) << 13)
            | self.fragment_offset;
        put_u16(header, 6, flags_and_offset);
        header[8] = self.ttl;
        header[9] = self.transport.protocol();
        put_u16(header, 10, 0);
        header[12..16].copy_from_slice(&self.src_ip.octets());
        header[16..20].copy_from_slice(&self.dst_ip.octets());
        let options = &mut header[IPV4_MIN_HEADER_LEN..];
        options.fill(0);
        options[..self.ip_options.len()].copy_from_slice(&self.ip_options);
        let header_checksum = checksum(header);
        put_u16(
            header,
            10,
            self.maybe_corrupt(self.bad_ip_checksum, header_checksum),
        );

        self.write_transport(layout, l4);
    }

    fn write_transport(&self, layout: &Layout, l4: &mut [u8]) {
        // layout() has checked the whole IPv4 packet fits a u16, so the segment does too.
        let segment_len = l4.len() as u16;
        let (l4_header, payload) = l4.split_at_mut(layout.l4_header_len);
        payload.copy_from_slice(&self.payload);
        match &self.transport {
            Transport::Raw { .. } => {}
            Transport::Tcp { src_port, dst_port } => {
                put_u16(l4_header, 0, *src_port);
                put_u16(l4_header, 2, *dst_port);
                l4_header[4..8].copy_from_slice(&self.tcp_seq.to_be_bytes());
                l4_header[8..12].copy_from_slice(&self.tcp_ack.to_be_bytes());
                l4_header[12] = ((layout.l4_header_len / 4) as u8) << 4;
                l4_header[13] = self.tcp_flags.0;
                put_u16(l4_header, 14, self.tcp_window);
                put_u16(l4_header, 16, 0);
                put_u16(l4_header, 18, self.tcp_urgent);
                let options = &mut l4_header[TCP_MIN_HEADER_LEN..];
                options.fill(0);
                options[..self.tcp_options.len()].copy_from_slice(&self.tcp_options);
                let sum = self.pseudo_header(PROTO_TCP, segment_len);
                let tcp_checksum = finish(sum_bytes(sum, l4));
                put_u16(
                    l4,
                    16,
                    self.maybe_corrupt(self.bad_l4_checksum, tcp_checksum),
                );
            }
            Transport::Udp { src_port, dst_port } => {
                put_u16(l4_header, 0, *src_port);
                put_u16(l4_header, 2, *dst_port);
                put_u16(l4_header, 4, segment_len);
                put_u16(l4, 6, 0);
                let sum = self.pseudo_header(PROTO_UDP, segment_len);
                let udp_checksum = match finish(sum_bytes(sum, l4)) {
                    0 => 0xffff, // RFC 768: a computed zero is sent as all ones.
                    computed => computed,
                };
                let udp_checksum = if self.bad_l4_checksum {
                    corrupt(udp_checksum)
                } else if self.udp_zero_checksum {
                    0
                } else {
                    udp_checksum
                };
                put_u16(l4, 6, udp_checksum);
            }
            Transport::IcmpEcho { kind, id, seq } => {
                l4_header[0] = kind.icmp_type();
                l4_header[1] = 0;
                put_u16(l4_header, 2, 0);
                put_u16(l4_header, 4, *id);
                put_u16(l4_header, 6, *seq);
                self.write_icmp_checksum(l4);
            }
            Transport::IcmpError {
                icmp_type,
                code,
                next_hop_mtu,
                quoted,
            } => {
                l4_header[0] = *icmp_type;
                l4_header[1] = *code;
                put_u16(l4_header, 2, 0);
                put_u16(l4_header, 4, 0);
                put_u16(l4_header, 6, *next_hop_mtu);
                l4_header[ICMP_HEADER_LEN..].copy_from_slice(quoted);
                self.write_icmp_checksum(l4);
            }
        }
    }

    fn write_icmp_checksum(&self, icmp: &mut [u8]) {
        let icmp_checksum = checksum(icmp);
        put_u16(
            icmp,
            2,
            self.maybe_corrupt(self.bad_l4_checksum, icmp_checksum),
        );
    }

    fn pseudo_header(&self, protocol: u8, segment_len: u16) -> u32 {
        pseudo_header_sum(self.src_ip, self.dst_ip, protocol, segment_len)
    }

    fn maybe_corrupt(&self, corrupt_it: bool, value: u16) -> u16 {
        if corrupt_it {
            corrupt(value)
        } else {
            value
        }
    }
}

/// A checksum value that is wrong for data whose right checksum is `right`: differs from it in one
/// bit, so it is never its one's-complement twin (0x0000 vs 0xffff), and is never 0, which would
/// read as "no checksum" in UDP.
fn corrupt(right: u16) -> u16 {
    match right ^ 0x0001 {
        0 => right ^ 0x0002,
        wrong => wrong,
    }
}

fn padded_to_4(len: usize) -> usize {
    len.div_ceil(4) * 4
}

fn put_u16(bytes: &mut [u8], offset: usize, value: u16) {
    bytes[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
}

fn get_u16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_be_bytes([bytes[offset], bytes[offset + 1]])
}

fn get_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_be_bytes([
        bytes[offset],
        bytes[offset + 1],
        bytes[offset + 2],
        bytes[offset + 3],
    ])
}

// ================================================================================================
// Decoding
// ================================================================================================

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

    fn header_len(&self) -> usize {
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

fn parse_eth(frame: &[u8]) -> Result<(EthInfo, usize), DecodeError> {
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

fn require(layer: &'static str, bytes: &[u8], needed: usize) -> Result<(), DecodeError> {
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
fn parse_ipv4_header(bytes: &[u8]) -> Result<Ipv4Info, DecodeError> {
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
fn bounded_ipv4_packet<'a>(after_l2: &'a [u8], ipv4: &Ipv4Info) -> Result<&'a [u8], DecodeError> {
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
fn transport_checksum_ok(ipv4: &Ipv4Info, protocol: u8, segment: &[u8]) -> bool {
    let Ok(len) = u16::try_from(segment.len()) else {
        return false;
    };
    finish(sum_bytes(
        pseudo_header_sum(ipv4.src, ipv4.dst, protocol, len),
        segment,
    )) == 0
}

fn decode_l4(ipv4: &Ipv4Info, segment: &[u8]) -> Result<L4, DecodeError> {
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
    let verify = |ok: bool| whole.then_some(ok);
    let l4 = match protocol {
        PROTO_TCP => {
            if segment.len() < TCP_MIN_HEADER_LEN {
                return if whole {
                    Err(DecodeError::Truncated {
                        layer: "tcp",
                        needed: TCP_MIN_HEADER_LEN,
                        available: segment.len(),
                    })
                } else {
                    Ok(fragment())
                };
            }
            let data_offset = segment[12] >> 4;
            let header_len = usize::from(data_offset) * 4;
            if header_len < TCP_MIN_HEADER_LEN || header_len > segment.len() {
                return Err(DecodeError::BadTcpDataOffset {
                    data_offset,
                    segment_len: segment.len(),
                });
            }
            L4::Tcp(TcpInfo {
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
            })
        }
        PROTO_UDP => {
            if segment.len() < UDP_HEADER_LEN {
                return if whole {
                    Err(DecodeError::Truncated {
                        layer: "udp",
                        needed: UDP_HEADER_LEN,
                        available: segment.len(),
                    })
                } else {
                    Ok(fragment())
                };
            }
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
            L4::Udp(UdpInfo {
                src_port: get_u16(segment, 0),
                dst_port: get_u16(segment, 2),
                length,
                checksum,
                checksum_ok,
                payload: datagram[UDP_HEADER_LEN..].to_vec(),
            })
        }
        PROTO_ICMP => {
            if segment.len() < ICMP_HEADER_LEN {
                return if whole {
                    Err(DecodeError::Truncated {
                        layer: "icmp",
                        needed: ICMP_HEADER_LEN,
                        available: segment.len(),
                    })
                } else {
                    Ok(fragment())
                };
            }
            let icmp_type = segment[0];
            let code = segment[1];
            let checksum_value = get_u16(segment, 2);
            let checksum_ok = verify(checksum(segment) == 0);
            match icmp_type {
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
            }
        }
        _ => L4::Other {
            protocol,
            payload: segment.to_vec(),
        },
    };
    Ok(l4)
}

/// Decodes the packet quoted by an ICMP error. The quote must hold the whole inner IPv4 header;
/// the transport header may be cut anywhere.
fn decode_inner(quote: &[u8]) -> Result<DecodedInner, DecodeError> {
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

// ---- One-line summaries ------------------------------------------------------------------------

struct ChecksumNote {
    value: u16,
    ok: Option<bool>,
}

impl fmt::Display for ChecksumNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ok {
            Some(true) => f.write_str("csum ok"),
            Some(false) => write!(f, "csum BAD {:#06x}", self.value),
            None => write!(f, "csum {:#06x} unverified", self.value),
        }
    }
}

/// `eth 02:..>02:.. vlan 100 | ipv4 10.244.1.10>203.0.113.10 ttl 63 id 0x1234 DF | tcp 40000>80
/// [S] seq 1 ack 0 win 65535 len 0 csum ok`
impl fmt::Display for Decoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "eth {}>{}", self.eth.src, self.eth.dst)?;
        if let Some(tag) = self.eth.vlan {
            write!(f, " vlan {}", tag.vid)?;
            if tag.pcp != 0 || tag.dei {
                write!(f, " pcp {}{}", tag.pcp, if tag.dei { " DEI" } else { "" })?;
            }
        }
        write!(f, " | {}", self.ipv4)?;
        if self.trailing_len != 0 {
            write!(f, " +{}B pad", self.trailing_len)?;
        }
        f.write_str(" | ")?;
        match &self.l4 {
            L4::Tcp(tcp) => write!(
                f,
                "tcp {}>{} {} seq {} ack {} win {} len {} {}",
                tcp.src_port,
                tcp.dst_port,
                tcp.flags,
                tcp.seq,
                tcp.ack,
                tcp.window,
                tcp.payload.len(),
                ChecksumNote {
                    value: tcp.checksum,
                    ok: tcp.checksum_ok
                }
            ),
            L4::Udp(udp) => {
                write!(
                    f,
                    "udp {}>{} len {} ",
                    udp.src_port,
                    udp.dst_port,
                    udp.payload.len()
                )?;
                if udp.checksum == 0 {
                    f.write_str("csum none")
                } else {
                    write!(
                        f,
                        "{}",
                        ChecksumNote {
                            value: udp.checksum,
                            ok: udp.checksum_ok
                        }
                    )
                }
            }
            L4::IcmpEcho(echo) => write!(
                f,
                "icmp echo {} id {} seq {} len {} {}",
                match echo.kind {
                    EchoKind::Request => "request",
                    EchoKind::Reply => "reply",
                },
                echo.id,
                echo.seq,
                echo.payload.len(),
                ChecksumNote {
                    value: echo.checksum,
                    ok: echo.checksum_ok
                }
            ),
            L4::IcmpError(error) => {
                write!(f, "icmp error type {} code {}", error.icmp_type, error.code)?;
                if error.next_hop_mtu != 0 {
                    write!(f, " mtu {}", error.next_hop_mtu)?;
                }
                write!(
                    f,
                    " {} [inner {}B: {}",
                    ChecksumNote {
                        value: error.checksum,
                        ok: error.checksum_ok
                    },
                    error.inner.quoted_len,
                    error.inner.ipv4
                )?;
                write!(f, " | {}]", error.inner.l4)
            }
            L4::Icmp(icmp) => write!(
                f,
                "icmp type {} code {} {}",
                icmp.icmp_type,
                icmp.code,
                ChecksumNote {
                    value: icmp.checksum,
                    ok: icmp.checksum_ok
                }
            ),
            L4::Fragment {
                protocol,
                payload_len,
            } => {
                write!(f, "fragment proto {protocol} len {payload_len}")
            }
            L4::Other { protocol, payload } => write!(f, "proto {protocol} len {}", payload.len()),
        }
    }
}

impl fmt::Display for Ipv4Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ipv4 {}>{} ttl {} id {:#06x}",
            self.src, self.dst, self.ttl, self.id
        )?;
        if self.tos != 0 {
            write!(f, " tos {:#04x}", self.tos)?;
        }
        if self.reserved_flag {
            f.write_str(" RF")?;
        }
        if self.dont_fragment {
            f.write_str(" DF")?;
        }
        if self.more_fragments {
            f.write_str(" MF")?;
        }
        if self.fragment_offset != 0 {
            write!(f, " frag {}", usize::from(self.fragment_offset) * 8)?;
        }
        if !self.options.is_empty() {
            write!(f, " opts {}B", self.options.len())?;
        }
        if !self.header_checksum_ok {
            write!(f, " hdr csum BAD {:#06x}", self.header_checksum)?;
        }
        Ok(())
    }
}

impl fmt::Display for InnerL4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let note = |f: &mut fmt::Formatter<'_>, value: u16, ok: Option<bool>| match ok {
            Some(_) => write!(f, " {}", ChecksumNote { value, ok }),
            None => write!(f, " csum {value:#06x}"),
        };
        match self {
            InnerL4::Tcp {
                src_port,
                dst_port,
                seq,
                checksum,
                checksum_ok,
            } => {
                write!(f, "tcp {src_port}>{dst_port} seq {seq}")?;
                match checksum {
                    Some(value) => note(f, *value, *checksum_ok),
                    None => Ok(()),
                }
            }
            InnerL4::Udp {
                src_port,
                dst_port,
                checksum,
                checksum_ok,
                ..
            } => {
                write!(f, "udp {src_port}>{dst_port}")?;
                note(f, *checksum, *checksum_ok)
            }
            InnerL4::IcmpEcho {
                kind,
                id,
                seq,
                checksum,
                checksum_ok,
            } => {
                let kind = match kind {
                    EchoKind::Request => "request",
                    EchoKind::Reply => "reply",
                };
                write!(f, "icmp echo {kind} id {id} seq {seq}")?;
                note(f, *checksum, *checksum_ok)
            }
            InnerL4::Icmp { icmp_type, code } => write!(f, "icmp type {icmp_type} code {code}"),
            InnerL4::Fragment { protocol } => write!(f, "fragment proto {protocol}"),
            InnerL4::Truncated {
                protocol,
                available,
            } => {
                write!(f, "proto {protocol} truncated at {available}B")
            }
            InnerL4::Other { protocol } => write!(f, "proto {protocol}"),
        }
    }
}

// ================================================================================================
// Slicing, fragmentation and reassembly
// ================================================================================================

/// The IPv4 packet inside an Ethernet frame (after any VLAN tag), cut to its total length.
pub fn ip_packet_of(frame: &[u8]) -> Result<&[u8], DecodeError> {
    let (eth, ip_offset) = parse_eth(frame)?;
    if eth.ethertype != ETHERTYPE_IPV4 {
        return Err(DecodeError::NotIpv4 {
            ethertype: eth.ethertype,
        });
    }
    let after_l2 = &frame[ip_offset..];
    let ipv4 = parse_ipv4_header(after_l2)?;
    bounded_ipv4_packet(after_l2, &ipv4)
}

/// What RFC 792 routers quote in an ICMP error: the IPv4 header (options included, per its IHL)
/// and the first 8 bytes of its payload, or less if the packet is shorter.
pub fn icmp_quote(ip_packet: &[u8]) -> &[u8] {
    let header_len = ip_packet
        .first()
        .map_or(0, |first| usize::from(first & 0x0f) * 4);
    truncated(ip_packet, header_len + 8)
}

/// The first `len` bytes of `bytes` (all of them if shorter): e.g. a quote that ends mid-header,
/// or the 576-byte-style quotes of RFC 1812 routers.
pub fn truncated(bytes: &[u8], len: usize) -> &[u8] {
    &bytes[..len.min(bytes.len())]
}

/// Why [`fragment_packet`] could not split a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error("frame does not hold a decodable IPv4 packet: {0}")]
    Decode(#[from] DecodeError),
    #[error("MTU {mtu} leaves no room for 8 data bytes after a {header_len}-byte IPv4 header")]
    MtuTooSmall { mtu: usize, header_len: usize },
    #[error("fragment at byte offset {offset} lies beyond the 13-bit offset field")]
    OffsetTooLarge { offset: usize },
}

/// Splits the IPv4 packet of `frame` into fragment frames of at most `mtu` IPv4 bytes each, as a
/// router would (RFC 791): same L2 header, data cut at multiples of 8 bytes, MF on all but the last
/// (which keeps the original MF, so fragments of fragments work), offsets counted from the
/// original's, only options with the copy bit repeated after the first fragment, and fresh header
/// checksums. DF is kept as it was: this is a test tool, not a router. A packet that already fits
/// comes back as one frame. Trailing L2 padding is dropped.
pub fn fragment_packet(frame: &[u8], mtu: usize) -> Result<Vec<Vec<u8>>, FragmentError> {
    let (_, ip_offset) = parse_eth(frame)?;
    let packet = ip_packet_of(frame)?;
    let l2 = &frame[..ip_offset];
    if packet.len() <= mtu {
        return Ok(vec![frame[..ip_offset + packet.len()].to_vec()]);
    }
    let original = parse_ipv4_header(packet)?;
    let first_header = &packet[..original.header_len()];
    let data = &packet[original.header_len()..];
    let later_header = header_for_later_fragments(first_header);

    let mut fragments = Vec::new();
    let mut sent = 0;
    while sent < data.len() {
        let header = if sent == 0 {
            first_header
        } else {
            later_header.as_slice()
        };
        let room = mtu.saturating_sub(header.len()) / 8 * 8;
        if room == 0 {
            return Err(FragmentError::MtuTooSmall {
                mtu,
                header_len: header.len(),
            });
        }
        let chunk = &data[sent..data.len().min(sent + room)];
        let is_last = sent + chunk.len() == data.len();
        let offset_units = usize::from(original.fragment_offset) + sent / 8;
        let offset_units = u16::try_from(offset_units)
            .ok()
            .filter(|units| *units <= MAX_FRAGMENT_OFFSET)
            .ok_or(FragmentError::OffsetTooLarge {
                offset: offset_units * 8,
            })?;
        let more_fragments = !is_last || original.more_fragments;

        let mut fragment = Vec::with_capacity(l2.len() + header.len() + chunk.len());
        fragment.extend_from_slice(l2);
        fragment.extend_from_slice(header);
        fragment.extend_from_slice(chunk);
        // Bounded by mtu <= packet.len() <= 65535.
        let total_length = (header.len() + chunk.len()) as u16;
        let flags = get_u16(header, 6) & 0xc000 | if more_fragments { 0x2000 } else { 0 };
        rewrite_ipv4_header(
            &mut fragment[ip_offset..],
            total_length,
            flags | offset_units,
        );
        fragments.push(fragment);
        sent += chunk.len();
    }
    Ok(fragments)
}

/// The header of second and later fragments: the fixed part plus the options whose copy bit is
/// set (RFC 791 section 3.1), padded with zeros.
fn header_for_later_fragments(first_header: &[u8]) -> Vec<u8> {
    let mut header = first_header[..IPV4_MIN_HEADER_LEN].to_vec();
    let options = &first_header[IPV4_MIN_HEADER_LEN..];
    let mut at = 0;
    while let Some(&option_type) = options.get(at) {
        match option_type {
            0 => break,   // End of option list.
            1 => at += 1, // No-op: single byte, copy bit clear.
            _ => {
                let Some(&len) = options.get(at + 1) else {
                    break;
                };
                let len = usize::from(len);
                let Some(option) = options.get(at..at + len).filter(|_| len >= 2) else {
                    break;
                };
                if option_type & 0x80 != 0 {
                    header.extend_from_slice(option);
                }
                at += len;
            }
        }
    }
    header.resize(padded_to_4(header.len()), 0);
    header[0] = 0x40 | (header.len() / 4) as u8;
    header
}

/// Sets total length and flags/offset of the IPv4 header at the start of `packet` and recomputes
/// its checksum.
fn rewrite_ipv4_header(packet: &mut [u8], total_length: u16, flags_and_offset: u16) {
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    put_u16(packet, 2, total_length);
    put_u16(packet, 6, flags_and_offset);
    put_u16(packet, 10, 0);
    let header_checksum = checksum(&packet[..header_len]);
    put_u16(packet, 10, header_checksum);
}

/// Why [`reassemble`] could not rebuild a datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassembleError {
    #[error("no fragments given")]
    Empty,
    #[error("fragment {index}: {source}")]
    Decode { index: usize, source: DecodeError },
    #[error("fragment {index} belongs to another datagram (src, dst, protocol or id differ)")]
    ForeignFragment { index: usize },
    #[error("no fragment at offset 0")]
    MissingFirst,
    #[error("bytes {from}..{to} are missing")]
    Gap { from: usize, to: usize },
    #[error("fragment at byte {offset} overlaps earlier data with different content")]
    Overlap { offset: usize },
    #[error("no last fragment (one with MF clear)")]
    MissingLast,
    #[error("data continues past the fragment at byte {offset} that has MF clear")]
    DataAfterLast { offset: usize },
    #[error("data at byte {offset} of a non-last fragment is not a multiple of 8 bytes long")]
    UnalignedFragment { offset: usize },
    #[error("reassembled datagram would be {len} bytes, over 65535")]
    TooLong { len: usize },
}

/// Rebuilds the datagram from fragment frames given in any order (exact duplicates are allowed),
/// so its transport checksum can be verified with [`Decoded::parse`]. The result carries the L2
/// header and IPv4 header (options included) of the offset-0 fragment, with MF cleared, offset 0,
/// the full total length and a fresh header checksum.
pub fn reassemble<B: AsRef<[u8]>>(fragments: &[B]) -> Result<Vec<u8>, ReassembleError> {
    struct Piece<'a> {
        frame: &'a [u8],
        ip_offset: usize,
        header_len: usize,
        offset: usize,
        more_fragments: bool,
        data: &'a [u8],
    }
    let mut pieces = Vec::with_capacity(fragments.len());
    let mut datagram_key = None;
    for (index, fragment) in fragments.iter().enumerate() {
        let frame = fragment.as_ref();
        let decode = |error| ReassembleError::Decode {
            index,
            source: error,
        };
        let (_, ip_offset) = parse_eth(frame).map_err(decode)?;
        let packet = ip_packet_of(frame).map_err(decode)?;
        let ipv4 = parse_ipv4_header(packet).map_err(decode)?;
        let key = (ipv4.src, ipv4.dst, ipv4.protocol, ipv4.id);
        if *datagram_key.get_or_insert(key) != key {
            return Err(ReassembleError::ForeignFragment { index });
        }
        pieces.push(Piece {
            frame,
            ip_offset,
            header_len: ipv4.header_len(),
            offset: usize::from(ipv4.fragment_offset) * 8,
            more_fragments: ipv4.more_fragments,
            data: &packet[ipv4.header_len()..],
        });
    }
    pieces.sort_by_key(|piece| piece.offset);
    let first = pieces.first().ok_or(ReassembleError::Empty)?;
    if first.offset != 0 {
        return Err(ReassembleError::MissingFirst);
    }
    let l2_and_header = &first.frame[..first.ip_offset + first.header_len];
    let mut datagram = l2_and_header.to_vec();
    let mut data_len = 0;
    let mut complete = false;
    for piece in &pieces {
        if piece.offset < data_len {
            // Only an exact duplicate of data already placed is harmless.
            let placed = &datagram[l2_and_header.len() + piece.offset..];
            if piece.offset + piece.data.len() > data_len || !placed.starts_with(piece.data) {
                return Err(ReassembleError::Overlap {
                    offset: piece.offset,
                });
            }
            continue;
        }
        if complete {
            return Err(ReassembleError::DataAfterLast {
                offset: piece.offset,
            });
        }
        if piece.offset > data_len {
            return Err(ReassembleError::Gap {
                from: data_len,
                to: piece.offset,
            });
        }
        if piece.more_fragments && piece.data.len() % 8 != 0 {
            return Err(ReassembleError::UnalignedFragment {
                offset: piece.offset,
            });
        }
        datagram.extend_from_slice(piece.data);
        data_len += piece.data.len();
        complete = !piece.more_fragments;
    }
    if !complete {
        return Err(ReassembleError::MissingLast);
    }
    let total_len = first.header_len + data_len;
    let total_length =
        u16::try_from(total_len).map_err(|_| ReassembleError::TooLong { len: total_len })?;
    let packet = &mut datagram[first.ip_offset..];
    let dont_fragment = get_u16(packet, 6) & 0x4000;
    rewrite_ipv4_header(packet, total_length, dont_fragment);
    Ok(datagram)
}

// ================================================================================================
// Assertions
// ================================================================================================

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
/// use egw_engine::testkit::{assert_frames_eq, PacketBuilder};
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

fn to_hex(bytes: &[u8]) -> String {
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
