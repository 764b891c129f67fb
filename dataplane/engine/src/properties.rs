//! Property tests: translation round trips restore the original endpoints, every checksum the
//! engine touches equals a full recomputation, and no input makes the engine panic.

use std::net::Ipv4Addr;

use crate::harness::*;
use crate::{packet, Ingress};
use egw_testkit::{Decoded, PacketBuilder, TcpFlags, L4};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Kind {
    Tcp,
    Udp { zero_checksum: bool },
    Echo,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Tcp),
        any::<bool>().prop_map(|z| Kind::Udp { zero_checksum: z }),
        Just(Kind::Echo)
    ]
}

fn build(b: PacketBuilder, kind: &Kind, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = match kind {
        Kind::Tcp => b.tcp(sport, dport).flags(TcpFlags::SYN),
        Kind::Udp {
            zero_checksum: false,
        } => b.udp(sport, dport),
        Kind::Udp {
            zero_checksum: true,
        } => b.udp(sport, dport).udp_zero_checksum(),
        Kind::Echo => b.icmp_echo_request(sport, dport),
    };
    b.payload(payload).build()
}

fn payload_of(d: &Decoded) -> Vec<u8> {
    match &d.l4 {
        L4::Tcp(t) => t.payload.clone(),
        L4::Udp(u) => u.payload.clone(),
        L4::IcmpEcho(e) => e.payload.clone(),
        _ => vec![],
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Outbound translation then reverse translation of the mirrored reply restores the pod's
    /// endpoint exactly, leaves the payload intact, and every checksum verifies from scratch.
    #[test]
    fn outbound_then_reverse_translation_restores_the_original(
        kind in kind(),
        sport in 1u16..,
        dport in 1u16..,
        remote in any::<u32>().prop_filter("routable", |a| (*a >> 24) != 0 && (*a >> 24) < 224 && (*a >> 24) != 127),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        vlan in proptest::option::of(1u16..4095),
        options in prop_oneof![Just(vec![]), Just(vec![1, 1, 1, 1]), Just(vec![7, 7, 4, 0, 0, 0, 0, 0])],
    ) {
        let remote = Ipv4Addr::from(remote);
        let mut gw = Gateway::new(two_pool_table(1));
        let mut b = from_pod(POD_A).ipv4(POD_A, remote).options(&options);
        if let Some(v) = vlan {
            b = b.vlan(v);
        }
        let original = build(b, &kind, sport, dport, &payload);
        let original_d = Decoded::parse(&original).expect("valid");
        let out = gw.send(Ingress::Inside, &original);
        let out_d = out.decoded();
        prop_assert_eq!(out_d.ipv4.src, EXT_1);
        prop_assert_eq!(out_d.ipv4.dst, remote);
        prop_assert_eq!(payload_of(&out_d), payload.clone());
        prop_assert_eq!(&out_d.ipv4.options, &original_d.ipv4.options);
        if let Kind::Udp { zero_checksum: true } = kind {
            let L4::Udp(u) = &out_d.l4 else { panic!("udp") };
            prop_assert_eq!(u.checksum, 0);
        }

        // Reverse: the reply to the external endpoint comes back to the pod endpoint.
        let (ext_ip, ext_port) = source(&out_d);
        let mut rb = from_internet(remote, ext_ip);
        if let Some(v) = vlan {
            rb = rb.vlan(v);
        }
        let reply = match kind {
            Kind::Tcp => rb.tcp(dport, ext_port).flags(TcpFlags::SYN | TcpFlags::ACK).payload(&payload).build(),
            Kind::Udp { zero_checksum: false } => rb.udp(dport, ext_port).payload(&payload).build(),
            Kind::Udp { zero_checksum: true } => rb.udp(dport, ext_port).udp_zero_checksum().payload(&payload).build(),
            Kind::Echo => rb.icmp_echo_reply(ext_port, dport).payload(&payload).build(),
        };
        let back = gw.send(Ingress::Outside, &reply).decoded();
        prop_assert_eq!(back.ipv4.dst, POD_A);
        prop_assert_eq!(destination(&back), (POD_A, sport));
        prop_assert_eq!(payload_of(&back), payload);

        // And undoing the outbound rewrite on the translated frame gives back the original bytes
        // (bar the TTL the gateway decremented).
        let mut undone = out.frame().to_vec();
        let p = packet::parse(&undone).expect("engine output parses");
        packet::rewrite_endpoint(&mut undone, &p, packet::Endpoint::Source, POD_A, Some(sport));
        let mut expected = original.clone();
        let o = packet::parse(&expected).expect("parses");
        packet::decrement_ttl(&mut expected, &o);
        prop_assert_eq!(undone, expected);
    }

    /// Arbitrary bytes, on either side, never panic: every frame gets a verdict.
    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), outside in any::<bool>()) {
        let mut gw = Gateway::new(two_pool_table(1));
        let ingress = if outside { Ingress::Outside } else { Ingress::Inside };
        let _ = gw.send(ingress, &bytes);
    }

    /// Valid headers with random field values and truncations never panic either.
    #[test]
    fn mutated_valid_frames_never_panic(
        index in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
        kind in kind(),
    ) {
        let mut gw = Gateway::new(two_pool_table(1));
        let mut frame = build(from_pod(POD_A), &kind, 40000, 80, b"payload");
        let i = index.index(frame.len());
        frame[i] = value;
        let len = cut.index(frame.len() + 1);
        let _ = gw.send(Ingress::Inside, &frame[..len]);
        let _ = gw.send(Ingress::Outside, &frame[..len]);
    }

    /// Across many flows to a few destinations, no two flows ever share
    /// (external address, external port, protocol, remote endpoint).
    #[test]
    fn port_allocation_never_duplicates_a_tuple(ports in proptest::collection::vec((1024u16.., 0usize..3), 1..400)) {
        let config = egw_engine::EngineConfig { port_range: (30000, 30063), ..base_config() };
        let mut gw = Gateway::with_config(1, config, two_pool_table(1));
        let remotes = [MIRROR, OTHER_REMOTE, Ipv4Addr::new(203, 0, 113, 30)];
        for (port, r) in ports {
            let frame = from_pod(POD_A).ipv4(POD_A, remotes[r]).udp(port, 53).build();
            let _ = gw.send(Ingress::Inside, &frame);
        }
        let flows = gw.flows();
        let mut seen = std::collections::HashSet::new();
        for f in &flows {
            prop_assert!(seen.insert((f.protocol, f.external, f.remote)), "duplicate tuple {:?}", f);
        }
    }
}
