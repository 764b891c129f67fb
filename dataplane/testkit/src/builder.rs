//! [`PacketBuilder`]: Ethernet / 802.1Q / IPv4 / TCP, UDP, ICMP frames with every length and
//! checksum computed, plus deliberate faults for negative tests.

use std::net::Ipv4Addr;

use crate::checksum::{checksum, finish, pseudo_header_sum, sum_bytes};
use crate::wire::*;

#[cfg(doc)]
use crate::{fragment_packet, icmp_quote, ip_packet_of, truncated};

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
pub(crate) struct Layout {
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
pub(crate) fn corrupt(right: u16) -> u16 {
    match right ^ 0x0001 {
        0 => right ^ 0x0002,
        wrong => wrong,
    }
}
