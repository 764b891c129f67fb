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
//! use egw_testkit::{Decoded, L4, PacketBuilder, TcpFlags};
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
//! use egw_testkit::{fragment_packet, icmp_quote, ip_packet_of, reassemble, PacketBuilder};
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
//! # assert!(egw_testkit::Decoded::parse(&frag_needed).unwrap().checksums_ok());
//! ```
//!
//! Builders never panic on their own input except [`PacketBuilder::build`], which is the
//! infallible convenience form of [`PacketBuilder::try_build`] for tests.

//!
//! This crate depends on nothing of the engine, on purpose: it computes its own checksums (a plain
//! word-at-a-time RFC 1071 sum, not the engine's wide-word one), so a shared bug cannot hide in
//! both. The engine uses it as a dev-dependency only.

mod assertions;
mod builder;
mod checksum;
mod decode;
mod fragment;
mod summary;
mod wire;

pub use assertions::{assert_frames_eq, field_at, frame_difference, summarize};
pub use builder::{BuildError, PacketBuilder};
pub use decode::{
    DecodeError, Decoded, DecodedInner, EthInfo, IcmpEchoInfo, IcmpErrorInfo, IcmpOtherInfo,
    InnerL4, Ipv4Info, TcpInfo, UdpInfo, L4,
};
pub use fragment::{
    fragment_packet, icmp_quote, ip_packet_of, reassemble, truncated, FragmentError,
    ReassembleError,
};
pub use wire::{
    EchoKind, MacAddr, TcpFlags, VlanTag, ETHERTYPE_IPV4, ETHERTYPE_VLAN, ICMP_DEST_UNREACHABLE,
    ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_TIME_EXCEEDED, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
};
