//! Behaviour of the NAT engine, one test per RFC requirement or product rule, driven through the
//! packet builders and checked by the independent decoder (every output checksum is verified by
//! full recomputation in `Outcome::decoded`).

mod harness;

use std::net::Ipv4Addr;

use egw_engine::{
    DropReason, EngineConfig, Filtering, FlowFilter, FlowState, Ingress, Protocol, Side, Timeouts,
};
use egw_policy::{ActionSpec, PoolSpec, RuleSpec};
use egw_testkit::{fragment_packet, icmp_quote, ip_packet_of, reassemble, truncated, TcpFlags, L4};
use harness::*;

fn udp_out(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    from_pod(src)
        .ipv4(src, dst)
        .udp(sport, dport)
        .payload(b"ping")
        .build()
}

fn udp_in(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    from_internet(src, dst)
        .udp(sport, dport)
        .payload(b"pong")
        .build()
}

fn tcp_out(src: Ipv4Addr, sport: u16, flags: TcpFlags) -> Vec<u8> {
    from_pod(src).tcp(sport, 80).flags(flags).build()
}

fn tcp_in(ext: (Ipv4Addr, u16), flags: TcpFlags) -> Vec<u8> {
    from_internet(MIRROR, ext.0)
        .tcp(80, ext.1)
        .flags(flags)
        .build()
}

/// Opens a TCP connection through the gateway; returns the external endpoint.
fn handshake(gw: &mut Gateway, src: Ipv4Addr, sport: u16) -> (Ipv4Addr, u16) {
    let syn = gw.expect_forward(Ingress::Inside, &tcp_out(src, sport, TcpFlags::SYN));
    let ext = source(&syn);
    gw.expect_forward(
        Ingress::Outside,
        &tcp_in(ext, TcpFlags::SYN | TcpFlags::ACK),
    );
    gw.expect_forward(Ingress::Inside, &tcp_out(src, sport, TcpFlags::ACK));
    ext
}

#[test]
fn pods_get_the_external_address_of_their_policy() {
    let mut gw = Gateway::new(two_pool_table(1));
    let a = gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000, MIRROR, 8081));
    let b = gw.expect_forward(Ingress::Inside, &udp_out(POD_B, 40000, MIRROR, 8081));
    assert_eq!(a.ipv4.src, EXT_1);
    assert_eq!(b.ipv4.src, EXT_2);
    assert_eq!(a.ipv4.ttl, 63, "TTL decremented");
    // The reply reaches the right pod and port.
    let reply = gw.expect_forward(Ingress::Outside, &udp_in(MIRROR, 8081, EXT_1, source(&a).1));
    assert_eq!(destination(&reply), (POD_A, 40000));
}

#[test]
fn rfc4787_req1_endpoint_independent_mapping() {
    let mut gw = Gateway::new(two_pool_table(1));
    let first = gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000, MIRROR, 8081));
    let second = gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000, OTHER_REMOTE, 53));
    assert_eq!(
        source(&first),
        source(&second),
        "same pod endpoint, same external endpoint\n{}",
        gw.dump()
    );
    let tcp = handshake(&mut gw, POD_A, 40001);
    let tcp2 = source(
        &gw.expect_forward(
            Ingress::Inside,
            &from_pod(POD_A)
                .ipv4(POD_A, OTHER_REMOTE)
                .tcp(40001, 443)
                .flags(TcpFlags::SYN)
                .build(),
        ),
    );
    assert_eq!(
        tcp, tcp2,
        "RFC 5382 REQ-1: TCP mapping is endpoint independent too"
    );
}

#[test]
fn rfc4787_req2_paired_address_pooling() {
    let mut spec = two_pool_table(1);
    let pool: Vec<Ipv4Addr> = (1..=4).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect();
    spec.pools = vec![PoolSpec {
        name: "pool-a".into(),
        addresses: pool.clone(),
        pairing: true,
    }];
    spec.policies = vec![policy("via-a", "pool-a"), policy("via-b", "pool-a")];
    let mut gw = Gateway::new(spec);
    let mut seen = std::collections::HashSet::new();
    for port in 0..64u16 {
        let dst = Ipv4Addr::new(203, 0, 113, (port % 7) as u8 + 1);
        seen.insert(
            gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 30000 + port, dst, 9))
                .ipv4
                .src,
        );
    }
    assert_eq!(
        seen.len(),
        1,
        "all of a pod's flows use one address of a paired pool: {seen:?}"
    );
}

#[test]
fn unpaired_pool_spreads_flows_across_addresses() {
    let mut spec = two_pool_table(1);
    let pool: Vec<Ipv4Addr> = (1..=4).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect();
    spec.pools = vec![PoolSpec {
        name: "pool-a".into(),
        addresses: pool.clone(),
        pairing: false,
    }];
    spec.policies = vec![policy("via-a", "pool-a"), policy("via-b", "pool-a")];
    let mut gw = Gateway::new(spec);
    let mut seen = std::collections::HashSet::new();
    for port in 0..200u16 {
        seen.insert(
            gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 30000 + port, MIRROR, 9))
                .ipv4
                .src,
        );
    }
    assert_eq!(seen.len(), 4, "flow hash uses every address: {seen:?}");
}

#[test]
fn rfc4787_req8_filtering_modes() {
    // Default: address-and-port-dependent. An unsolicited packet to a mapped port is dropped.
    let mut gw = Gateway::new(two_pool_table(1));
    let ext = source(&gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000, MIRROR, 8081)));
    gw.expect_drop(
        Ingress::Outside,
        &udp_in(MIRROR, 9999, ext.0, ext.1),
        DropReason::NoFlow,
    );
    gw.expect_drop(
        Ingress::Outside,
        &udp_in(OTHER_REMOTE, 8081, ext.0, ext.1),
        DropReason::NoFlow,
    );

    // Endpoint-independent filtering (REQ-8 option): any remote reaches the mapped pod endpoint.
    let config = EngineConfig {
        udp_filtering: Filtering::EndpointIndependent,
        ..base_config()
    };
    let mut gw = Gateway::with_config(1, config, two_pool_table(1));
    let ext = source(&gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000, MIRROR, 8081)));
    let d = gw.expect_forward(Ingress::Outside, &udp_in(OTHER_REMOTE, 5000, ext.0, ext.1));
    assert_eq!(destination(&d), (POD_A, 40000));
    // ...and the pod's answer to that remote leaves from the same external endpoint.
    let back = gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000, OTHER_REMOTE, 5000));
    assert_eq!(source(&back), ext);

    // Address-dependent filtering: a known remote address on a new port passes; others do not.
    let config = EngineConfig {
        udp_filtering: Filtering::AddressDependent,
        ..base_config()
    };
    let mut gw = Gateway::with_config(1, config, two_pool_table(1));
    let ext = source(&gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000, MIRROR, 8081)));
    gw.expect_forward(Ingress::Outside, &udp_in(MIRROR, 7777, ext.0, ext.1));
    gw.expect_drop(
        Ingress::Outside,
        &udp_in(OTHER_REMOTE, 8081, ext.0, ext.1),
        DropReason::NoFlow,
    );
}

#[test]
fn rfc4787_req5_udp_mapping_lives_five_minutes_by_default() {
    let mut gw = Gateway::new(two_pool_table(1));
    let ext = source(&gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000, MIRROR, 8081)));
    gw.advance(299);
    gw.expect_forward(Ingress::Outside, &udp_in(MIRROR, 8081, ext.0, ext.1));
    gw.advance(299);
    assert_eq!(
        gw.flows().len(),
        1,
        "refreshed by the inbound packet\n{}",
        gw.dump()
    );
    gw.advance(2);
    assert!(
        gw.flows().is_empty(),
        "expired 300 s after the last packet\n{}",
        gw.dump()
    );
    gw.expect_drop(
        Ingress::Outside,
        &udp_in(MIRROR, 8081, ext.0, ext.1),
        DropReason::NoFlow,
    );
    let usage = gw.engines[0].port_usage();
    assert!(
        usage.iter().all(|u| u.flows == 0),
        "expiry returned the port lease: {usage:?}"
    );
}

#[test]
fn rfc_minimum_timeouts_are_enforced() {
    for timeouts in [
        Timeouts {
            udp: 119,
            ..Timeouts::default()
        },
        Timeouts {
            tcp_established: 7439,
            ..Timeouts::default()
        },
        Timeouts {
            tcp_transitory: 239,
            ..Timeouts::default()
        },
        Timeouts {
            icmp: 59,
            ..Timeouts::default()
        },
    ] {
        let config = EngineConfig {
            timeouts,
            ..base_config()
        };
        assert!(
            egw_engine::Engine::new(config).is_err(),
            "{timeouts:?} must be refused"
        );
    }
}

#[test]
fn rfc5382_req5_established_tcp_lives_two_hours_four_minutes() {
    let mut gw = Gateway::new(two_pool_table(1));
    handshake(&mut gw, POD_A, 40000);
    assert_eq!(gw.flows()[0].state, FlowState::Established);
    gw.advance(7439);
    assert_eq!(
        gw.flows().len(),
        1,
        "still alive after 2 h 3 min 59 s idle\n{}",
        gw.dump()
    );
    gw.advance(1);
    assert!(
        gw.flows().is_empty(),
        "expired at 2 h 4 min idle\n{}",
        gw.dump()
    );
}

#[test]
fn rfc5382_req5_transitory_tcp_lives_four_minutes() {
    let mut gw = Gateway::new(two_pool_table(1));
    gw.expect_forward(Ingress::Inside, &tcp_out(POD_A, 40000, TcpFlags::SYN));
    assert_eq!(gw.flows()[0].state, FlowState::SynSent);
    gw.advance(239);
    assert_eq!(gw.flows().len(), 1);
    gw.advance(1);
    assert!(
        gw.flows().is_empty(),
        "half-open connection expired after 4 min\n{}",
        gw.dump()
    );

    // Closing: FIN both ways shortens an established flow's timeout to 4 minutes.
    let ext = handshake(&mut gw, POD_A, 40001);
    gw.expect_forward(
        Ingress::Inside,
        &tcp_out(POD_A, 40001, TcpFlags::FIN | TcpFlags::ACK),
    );
    gw.expect_forward(
        Ingress::Outside,
        &tcp_in(ext, TcpFlags::FIN | TcpFlags::ACK),
    );
    assert_eq!(gw.flows()[0].state, FlowState::Closing);
    gw.advance(240);
    assert!(
        gw.flows().is_empty(),
        "closed connection expired after 4 min\n{}",
        gw.dump()
    );
}

#[test]
fn rfc7857_rst_keeps_the_session_for_the_transitory_timeout() {
    let mut gw = Gateway::new(two_pool_table(1));
    let ext = handshake(&mut gw, POD_A, 40000);
    gw.expect_forward(Ingress::Outside, &tcp_in(ext, TcpFlags::RST));
    assert_eq!(gw.flows()[0].state, FlowState::Reset);
    gw.advance(200);
    // A late segment from the pod is still translated, not leaked with the pod address.
    let late = gw.expect_forward(Ingress::Inside, &tcp_out(POD_A, 40000, TcpFlags::ACK));
    assert_eq!(source(&late), ext);
    gw.advance(240);
    assert!(gw.flows().is_empty());
}

#[test]
fn tcp_segment_other_than_syn_cannot_open_a_flow() {
    let mut gw = Gateway::new(two_pool_table(1));
    gw.expect_drop(
        Ingress::Inside,
        &tcp_out(POD_A, 40000, TcpFlags::ACK),
        DropReason::TcpNotSyn,
    );
    assert!(gw.flows().is_empty());
}

#[test]
fn rfc5508_icmp_echo_id_translation_and_query_timeout() {
    let mut gw = Gateway::new(two_pool_table(1));
    let req = gw.expect_forward(
        Ingress::Inside,
        &from_pod(POD_A)
            .icmp_echo_request(0x1234, 1)
            .payload(b"abc")
            .build(),
    );
    let ext_id = match &req.l4 {
        L4::IcmpEcho(e) => e.id,
        other => panic!("expected echo, got {other:?}"),
    };
    assert_eq!(req.ipv4.src, EXT_1);
    assert!(ext_id >= 1024, "the id comes from the SNAT range");
    let reply = gw.expect_forward(
        Ingress::Outside,
        &from_internet(MIRROR, EXT_1)
            .icmp_echo_reply(ext_id, 1)
            .payload(b"abc")
            .build(),
    );
    assert_eq!(destination(&reply), (POD_A, 0x1234));
    gw.advance(59);
    assert_eq!(gw.flows().len(), 1);
    gw.advance(1);
    assert!(
        gw.flows().is_empty(),
        "RFC 5508 REQ-1: ICMP query mapping times out after 60 s"
    );
    // An unsolicited echo request to the external address is dropped.
    gw.expect_drop(
        Ingress::Outside,
        &from_internet(MIRROR, EXT_1).icmp_echo_request(9, 1).build(),
        DropReason::NoFlow,
    );
}

#[test]
fn rfc5508_req3_inbound_icmp_error_reaches_the_pod_translated() {
    let mut gw = Gateway::new(two_pool_table(1));
    let out = gw.send(
        Ingress::Inside,
        &from_pod(POD_A)
            .tcp(40000, 80)
            .flags(TcpFlags::SYN)
            .dont_fragment(true)
            .payload(&[7; 40])
            .build(),
    );
    let out_frame = out.frame().to_vec();
    let ext = source(&out.decoded());
    // A router on the way answers "fragmentation needed" quoting the translated packet (PMTUD).
    for quote_len in [28usize, 60, 1000] {
        let quoted = truncated(ip_packet_of(&out_frame).expect("ip"), quote_len).to_vec();
        let err = from_internet(Ipv4Addr::new(203, 0, 113, 1), ext.0)
            .icmp_error(3, 4, 1400, &quoted)
            .build();
        let d = gw.expect_forward(Ingress::Outside, &err);
        assert_eq!(d.ipv4.dst, POD_A, "outer destination translated");
        let L4::IcmpError(e) = &d.l4 else {
            panic!("expected ICMP error, got {d}")
        };
        assert_eq!((e.icmp_type, e.code, e.next_hop_mtu), (3, 4, 1400));
        assert_eq!(e.inner.ipv4.src, POD_A, "quoted source translated back");
        assert!(
            e.inner.ipv4.header_checksum_ok,
            "quoted IPv4 checksum fixed"
        );
        match e.inner.l4 {
            egw_testkit::InnerL4::Tcp { src_port, .. } => assert_eq!(src_port, 40000),
            ref other => panic!("quoted TCP expected, got {other:?}"),
        }
    }
    assert_eq!(gw.engines[0].counters().icmp_errors_translated, 3);
}

#[test]
fn rfc5508_req3_outbound_icmp_error_from_a_pod_is_translated() {
    let mut gw = Gateway::new(two_pool_table(1));
    let ext = source(&gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000, MIRROR, 8081)));
    let inbound = gw.send(Ingress::Outside, &udp_in(MIRROR, 8081, ext.0, ext.1));
    let delivered = inbound.frame().to_vec();
    // The pod answers "port unreachable" quoting what it received.
    let quote = icmp_quote(ip_packet_of(&delivered).expect("ip")).to_vec();
    let err = from_pod(POD_A).icmp_error(3, 3, 0, &quote).build();
    let d = gw.expect_forward(Ingress::Inside, &err);
    assert_eq!(d.ipv4.src, EXT_1);
    let L4::IcmpError(e) = &d.l4 else {
        panic!("expected ICMP error")
    };
    assert_eq!(
        e.inner.ipv4.dst, ext.0,
        "quoted destination is the external address again"
    );
    match e.inner.l4 {
        egw_testkit::InnerL4::Udp { dst_port, .. } => assert_eq!(dst_port, ext.1),
        ref other => panic!("quoted UDP expected, got {other:?}"),
    }
}

/// A flow of pod A's, and the frame pod A received on it (what an error would quote).
fn delivered_to_pod_a(gw: &mut Gateway) -> Vec<u8> {
    let ext = source(&gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000, MIRROR, 8081)));
    gw.send(Ingress::Outside, &udp_in(MIRROR, 8081, ext.0, ext.1))
        .frame()
        .to_vec()
}

#[test]
fn outbound_icmp_error_from_another_source_than_the_quoted_pod_is_dropped() {
    // Pod B (another tenant) quotes pod A's live flow to send an error from pod A's external
    // address: the outer source is not the quoted destination.
    let mut gw = Gateway::new(two_pool_table(1));
    let quote = icmp_quote(ip_packet_of(&delivered_to_pod_a(&mut gw)).expect("ip")).to_vec();
    let forged = from_pod(POD_B).icmp_error(3, 3, 0, &quote).build();
    gw.expect_drop(Ingress::Inside, &forged, DropReason::BadIcmpError);
    let unknown = from_pod(POD_UNKNOWN).icmp_error(3, 3, 0, &quote).build();
    gw.expect_drop(Ingress::Inside, &unknown, DropReason::BadIcmpError);
    assert_eq!(gw.engines[0].counters().icmp_errors_translated, 0);
}

#[test]
fn outbound_icmp_error_to_another_destination_than_the_quoted_source_is_dropped() {
    // Pod A itself aims an error built on its flow with MIRROR at a different host.
    let mut gw = Gateway::new(two_pool_table(1));
    let quote = icmp_quote(ip_packet_of(&delivered_to_pod_a(&mut gw)).expect("ip")).to_vec();
    let elsewhere = from_pod(POD_A)
        .ipv4(POD_A, OTHER_REMOTE)
        .icmp_error(3, 3, 0, &quote)
        .build();
    gw.expect_drop(Ingress::Inside, &elsewhere, DropReason::BadIcmpError);
}

#[test]
fn outbound_icmp_error_follows_the_senders_current_policy() {
    let mut gw = Gateway::new(two_pool_table(1));
    let quote = icmp_quote(ip_packet_of(&delivered_to_pod_a(&mut gw)).expect("ip")).to_vec();
    let err = from_pod(POD_A).icmp_error(3, 3, 0, &quote).build();
    // A new table without pod A: its flow lives on, but its errors no longer leave translated.
    let mut without_a = two_pool_table(2);
    without_a.sources.retain(|s| s.cidr.addr() != POD_A);
    gw.apply(without_a);
    gw.expect_drop(Ingress::Inside, &err, DropReason::NoPolicy);
    assert_eq!(gw.engines[0].counters().icmp_errors_translated, 0);
}

#[test]
fn rfc5508_req3_icmp_error_with_bad_checksum_is_dropped() {
    let mut gw = Gateway::new(two_pool_table(1));
    let out = gw.send(Ingress::Inside, &udp_out(POD_A, 40000, MIRROR, 8081));
    let quote = icmp_quote(ip_packet_of(out.frame()).expect("ip")).to_vec();
    let mut err = from_internet(MIRROR, EXT_1)
        .icmp_error(3, 3, 0, &quote)
        .build();
    let last = err.len() - 1;
    err[last] ^= 0xff; // corrupt the quote without fixing the ICMP checksum
    gw.expect_drop(Ingress::Outside, &err, DropReason::BadIcmpChecksum);
}

#[test]
fn unrelated_icmp_error_is_dropped() {
    let mut gw = Gateway::new(two_pool_table(1));
    let never_sent = from_internet(EXT_1, MIRROR).udp(5555, 53).build();
    let quote = icmp_quote(ip_packet_of(&never_sent).expect("ip")).to_vec();
    gw.expect_drop(
        Ingress::Outside,
        &from_internet(MIRROR, EXT_1)
            .icmp_error(3, 3, 0, &quote)
            .build(),
        DropReason::NoFlow,
    );
}

#[test]
fn ttl_expiring_at_the_gateway_gets_time_exceeded() {
    let mut gw = Gateway::new(two_pool_table(1));
    let probe = from_pod(POD_A)
        .ttl(1)
        .udp(40000, 33434)
        .payload(b"traceroute")
        .build();
    let d = match gw.send(Ingress::Inside, &probe) {
        out @ harness::Outcome::Forwarded {
            side: Side::Inside, ..
        } => out.decoded(),
        other => panic!("expected an ICMP error back to the pod, got {other:?}"),
    };
    assert_eq!((d.ipv4.src, d.ipv4.dst), (GW_INSIDE, POD_A));
    let L4::IcmpError(e) = &d.l4 else {
        panic!("expected ICMP error")
    };
    assert_eq!((e.icmp_type, e.code), (11, 0));
    assert_eq!(e.inner.ipv4.src, POD_A, "quotes the original packet");
    assert_eq!(gw.drops(DropReason::TtlExceeded), 1);
    assert!(
        gw.flows().is_empty(),
        "no flow for a packet that was not forwarded"
    );
}

#[test]
fn oversized_df_packet_gets_fragmentation_needed() {
    let config = EngineConfig {
        outside_mtu: 1400,
        ..base_config()
    };
    let mut gw = Gateway::with_config(1, config, two_pool_table(1));
    let big = from_pod(POD_A)
        .dont_fragment(true)
        .tcp(40000, 80)
        .flags(TcpFlags::SYN)
        .payload(&[1; 1460])
        .build();
    let out = gw.send(Ingress::Inside, &big);
    let d = out.decoded();
    let L4::IcmpError(e) = &d.l4 else {
        panic!("expected ICMP error, got {d}")
    };
    assert_eq!((e.icmp_type, e.code, e.next_hop_mtu), (3, 4, 1400));
    assert_eq!(d.ipv4.dst, POD_A);
    assert_eq!(gw.drops(DropReason::FragmentationNeeded), 1);
    let not_df = from_pod(POD_A)
        .dont_fragment(false)
        .udp(40000, 80)
        .payload(&[1; 1460])
        .build();
    gw.expect_drop(Ingress::Inside, &not_df, DropReason::TooBigToForward);
}

#[test]
fn rfc4787_req14_fragments_in_order_are_translated_consistently() {
    let mut gw = Gateway::new(two_pool_table(1));
    let datagram = from_pod(POD_A)
        .dont_fragment(false)
        .id(0x7777)
        .udp(40000, 8081)
        .payload(&[9; 3000])
        .build();
    let fragments = fragment_packet(&datagram, 1000).expect("fragments");
    assert!(fragments.len() >= 3);
    let out: Vec<Vec<u8>> = fragments
        .iter()
        .map(|f| gw.send(Ingress::Inside, f).frame().to_vec())
        .collect();
    let whole = reassemble(&out).expect("reassembles");
    let d = egw_testkit::Decoded::parse(&whole).expect("decodes");
    assert!(
        d.checksums_ok(),
        "UDP checksum of the reassembled datagram verifies: {d}"
    );
    assert_eq!(d.ipv4.src, EXT_1);
}

#[test]
fn rfc4787_req14_fragments_out_of_order_are_translated_consistently() {
    let mut gw = Gateway::new(two_pool_table(1));
    let datagram = from_pod(POD_A)
        .dont_fragment(false)
        .id(0x7778)
        .udp(40000, 8081)
        .payload(&[5; 2500])
        .build();
    let fragments = fragment_packet(&datagram, 1000).expect("fragments");
    // Later fragments first: stashed until the first fragment shows which flow they belong to.
    let mut out = vec![];
    for f in fragments.iter().skip(1).rev() {
        assert_eq!(gw.send(Ingress::Inside, f), harness::Outcome::Stashed);
    }
    out.push(gw.send(Ingress::Inside, &fragments[0]).frame().to_vec());
    for released in gw.released() {
        out.push(released.frame().to_vec());
    }
    assert_eq!(
        out.len(),
        fragments.len(),
        "every fragment came out\n{}",
        gw.dump()
    );
    let whole = reassemble(&out).expect("reassembles");
    let d = egw_testkit::Decoded::parse(&whole).expect("decodes");
    assert!(d.checksums_ok(), "{d}");
    assert_eq!(source(&d).0, EXT_1);
    // Inbound fragments of the reply are translated back.
    let ext = source(&d);
    let reply = from_internet(MIRROR, ext.0)
        .dont_fragment(false)
        .id(0x9999)
        .udp(8081, ext.1)
        .payload(&[6; 2500])
        .build();
    let back: Vec<Vec<u8>> = fragment_packet(&reply, 1000)
        .expect("fragments")
        .iter()
        .map(|f| gw.send(Ingress::Outside, f).frame().to_vec())
        .collect();
    let whole = reassemble(&back).expect("reassembles");
    let d = egw_testkit::Decoded::parse(&whole).expect("decodes");
    assert!(d.checksums_ok());
    assert_eq!(destination(&d), (POD_A, 40000));
}

#[test]
fn stray_fragment_times_out_and_is_counted() {
    let mut gw = Gateway::new(two_pool_table(1));
    let datagram = from_pod(POD_A)
        .dont_fragment(false)
        .udp(40000, 8081)
        .payload(&[5; 2500])
        .build();
    let fragments = fragment_packet(&datagram, 1000).expect("fragments");
    assert_eq!(
        gw.send(Ingress::Inside, &fragments[1]),
        harness::Outcome::Stashed
    );
    gw.advance(31);
    assert_eq!(gw.drops(DropReason::FragmentTimeout), 1);
}

#[test]
fn udp_zero_checksum_is_preserved() {
    let mut gw = Gateway::new(two_pool_table(1));
    let d = gw.expect_forward(
        Ingress::Inside,
        &from_pod(POD_A)
            .udp(40000, 8081)
            .udp_zero_checksum()
            .payload(b"x")
            .build(),
    );
    let L4::Udp(u) = &d.l4 else { panic!("udp") };
    assert_eq!(
        u.checksum, 0,
        "RFC 768: zero means no checksum and must stay zero"
    );
}

#[test]
fn vlan_tag_and_ip_options_survive_translation() {
    let mut gw = Gateway::new(two_pool_table(1));
    let frame = from_pod(POD_A)
        .vlan(100)
        .options(&[1, 1, 1, 1])
        .tcp(40000, 80)
        .flags(TcpFlags::SYN)
        .build();
    let d = gw.expect_forward(Ingress::Inside, &frame);
    assert_eq!(d.eth.vlan.map(|v| v.vid), Some(100));
    assert_eq!(d.ipv4.options, vec![1, 1, 1, 1]);
    assert_eq!(d.ipv4.src, EXT_1);
}

#[test]
fn bypass_rule_forwards_unchanged_and_deny_rule_drops() {
    let mut spec = two_pool_table(1);
    spec.policies[0].rules.push(RuleSpec {
        destination: "203.0.113.128/25".parse().expect("cidr"),
        action: ActionSpec::Bypass,
        description: "internal partner network".into(),
    });
    spec.policies[0].rules.push(RuleSpec {
        destination: "192.0.2.0/24".parse().expect("cidr"),
        action: ActionSpec::Deny {
            reason: "partner blocked".into(),
        },
        description: String::new(),
    });
    let mut gw = Gateway::new(spec);
    let bypass_dst = Ipv4Addr::new(203, 0, 113, 200);
    let d = gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000, bypass_dst, 53));
    assert_eq!(source(&d), (POD_A, 40000), "bypass keeps the pod address");
    assert_eq!(d.ipv4.ttl, 63);
    assert_eq!(gw.engines[0].counters().bypassed_packets, 1);
    gw.expect_drop(
        Ingress::Inside,
        &udp_out(POD_A, 40000, Ipv4Addr::new(192, 0, 2, 5), 53),
        DropReason::Denied,
    );
    assert!(gw.flows().is_empty());
}

#[test]
fn unknown_source_is_denied_by_default_no_open_relay() {
    let mut gw = Gateway::new(two_pool_table(1));
    gw.expect_drop(
        Ingress::Inside,
        &udp_out(POD_UNKNOWN, 40000, MIRROR, 8081),
        DropReason::NoPolicy,
    );
}

#[test]
fn unsolicited_and_spoofed_inbound_packets_are_dropped() {
    let mut gw = Gateway::new(two_pool_table(1));
    gw.expect_drop(
        Ingress::Outside,
        &udp_in(MIRROR, 8081, EXT_1, 5000),
        DropReason::NoFlow,
    );
    let ext = handshake(&mut gw, POD_A, 40000);
    // Right external port, wrong remote port: a spoofed return packet with no conntrack entry.
    gw.expect_drop(
        Ingress::Outside,
        &from_internet(MIRROR, ext.0)
            .tcp(81, ext.1)
            .flags(TcpFlags::ACK)
            .build(),
        DropReason::NoFlow,
    );
    gw.expect_drop(
        Ingress::Outside,
        &from_internet(OTHER_REMOTE, ext.0)
            .tcp(80, ext.1)
            .flags(TcpFlags::ACK)
            .build(),
        DropReason::NoFlow,
    );
    gw.expect_drop(
        Ingress::Outside,
        &udp_in(MIRROR, 8081, Ipv4Addr::new(198, 51, 100, 77), 5000),
        DropReason::NotForGateway,
    );
}

#[test]
fn route_table_swap_keeps_existing_flows_and_moves_new_ones() {
    let mut gw = Gateway::new(two_pool_table(1));
    let old = handshake(&mut gw, POD_A, 40000);
    assert_eq!(old.0, EXT_1);
    // Pod A now goes through pool B.
    let mut spec = two_pool_table(2);
    spec.sources[0].policy = "via-b".into();
    gw.apply(spec);
    let same = gw.expect_forward(Ingress::Inside, &tcp_out(POD_A, 40000, TcpFlags::ACK));
    assert_eq!(source(&same), old, "the open connection keeps its mapping");
    gw.expect_forward(Ingress::Outside, &tcp_in(old, TcpFlags::ACK));
    let new = gw.expect_forward(Ingress::Inside, &tcp_out(POD_A, 40001, TcpFlags::SYN));
    assert_eq!(new.ipv4.src, EXT_2, "new connections follow the new table");
    // A new flow from the old endpoint to a new remote does not reuse the old pool's mapping.
    let eim = gw.expect_forward(
        Ingress::Inside,
        &from_pod(POD_A)
            .ipv4(POD_A, OTHER_REMOTE)
            .tcp(40000, 80)
            .flags(TcpFlags::SYN)
            .build(),
    );
    assert_eq!(eim.ipv4.src, EXT_2);
}

#[test]
fn full_table_drops_new_flows_and_keeps_established_ones() {
    let config = EngineConfig {
        flow_capacity: 8,
        ..base_config()
    };
    let mut gw = Gateway::with_config(1, config, two_pool_table(1));
    let exts: Vec<_> = (0..8)
        .map(|i| handshake(&mut gw, POD_A, 40000 + i))
        .collect();
    gw.expect_drop(
        Ingress::Inside,
        &tcp_out(POD_A, 50000, TcpFlags::SYN),
        DropReason::TableFull,
    );
    for (i, ext) in exts.iter().enumerate() {
        gw.expect_forward(
            Ingress::Inside,
            &tcp_out(POD_A, 40000 + i as u16, TcpFlags::ACK),
        );
        gw.expect_forward(Ingress::Outside, &tcp_in(*ext, TcpFlags::ACK));
    }
}

#[test]
fn port_exhaustion_is_counted_and_ports_return() {
    let config = EngineConfig {
        port_range: (20000, 20003),
        ..base_config()
    };
    let mut gw = Gateway::with_config(1, config, two_pool_table(1));
    for i in 0..4 {
        gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000 + i, MIRROR, 8081));
    }
    // Same destination, every port leased towards it: nothing to share.
    gw.expect_drop(
        Ingress::Inside,
        &udp_out(POD_A, 41000, MIRROR, 8081),
        DropReason::PortsExhausted,
    );
    // Another destination can reuse a port (per-destination reuse).
    gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 41000, OTHER_REMOTE, 8081));
    gw.advance(301);
    gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 41000, MIRROR, 8081));
}

#[test]
fn one_external_address_serves_more_than_64k_flows_across_destinations() {
    let config = EngineConfig {
        flow_capacity: 140_000,
        ..base_config()
    };
    let mut gw = Gateway::with_config(1, config, two_pool_table(1));
    let mut tuples = std::collections::HashSet::new();
    let remotes = [MIRROR, OTHER_REMOTE];
    for i in 0..130_000u32 {
        let pod_port = 1024 + (i % 60_000) as u16;
        let pod = Ipv4Addr::new(10, 244, 1, 10);
        let remote = remotes[(i / 60_000) as usize % 2];
        let dport = 1 + (i / 120_000) as u16;
        let d = gw.expect_forward(Ingress::Inside, &udp_out(pod, pod_port, remote, dport));
        assert!(
            tuples.insert((source(&d), remote, dport)),
            "duplicate (external, port, destination) tuple"
        );
    }
    let usage = gw.engines[0].port_usage();
    let ext1 = usage.iter().find(|u| u.address == EXT_1).expect("ext1");
    assert_eq!(ext1.flows, 130_000, "all flows on one external address");
}

#[test]
fn draining_address_gets_no_new_flows_but_keeps_existing_ones() {
    let mut spec = two_pool_table(1);
    spec.pools[0].addresses = vec![EXT_1, Ipv4Addr::new(198, 51, 100, 3)];
    let mut gw = Gateway::new(spec);
    let first = gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000, MIRROR, 8081));
    let used = first.ipv4.src;
    gw.engines[0].set_draining(used, true);
    gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000, MIRROR, 8081));
    let fresh = gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40001, MIRROR, 8081));
    assert_ne!(fresh.ipv4.src, used, "new flows avoid the draining address");
    let usage = gw.engines[0].port_usage();
    assert!(
        usage
            .iter()
            .any(|u| u.address == used && u.draining && u.flows == 1),
        "{usage:?}"
    );
}

#[test]
fn return_packets_are_handed_to_the_core_that_owns_the_port() {
    let cores = 4;
    let mut gw = Gateway::with_config(cores, base_config(), two_pool_table(1));
    for i in 0..64u16 {
        // Outbound packets may arrive on any core; each pod endpoint is owned by exactly one.
        let rx = i % cores;
        let out = gw.send_on(
            rx,
            Ingress::Inside,
            &udp_out(POD_A, 30000 + i, MIRROR, 8081),
        );
        let harness::Outcome::Forwarded { core: owner, .. } = out else {
            panic!("{out:?}")
        };
        let ext = source(&out.decoded());
        assert_eq!(
            gw.engines[0].inbound_owner(ext.1),
            Some(owner),
            "port comes from the owner's block"
        );
        for rx_in in 0..cores {
            let back = gw.send_on(rx_in, Ingress::Outside, &udp_in(MIRROR, 8081, ext.0, ext.1));
            let harness::Outcome::Forwarded { core, .. } = back else {
                panic!("{back:?}\n{}", gw.dump())
            };
            assert_eq!(core, owner);
        }
    }
    let handoffs: u64 = gw.engines.iter().map(|e| e.counters().handoffs).sum();
    assert!(handoffs > 0);
    let flows: usize = gw.flows().len();
    assert_eq!(flows, 64, "no core created a duplicate flow\n{}", gw.dump());
}

#[test]
fn malformed_frames_are_dropped_with_a_reason() {
    let mut gw = Gateway::new(two_pool_table(1));
    let good = udp_out(POD_A, 40000, MIRROR, 8081);
    gw.expect_drop(Ingress::Inside, &good[..10], DropReason::BadEthernet);
    gw.expect_drop(
        Ingress::Inside,
        &from_pod(POD_A).udp(1, 2).bad_ip_checksum().build(),
        DropReason::BadIpv4Checksum,
    );
    gw.expect_drop(
        Ingress::Inside,
        &from_pod(POD_A).udp(1, 2).ihl_override(4).build(),
        DropReason::BadIpv4Header,
    );
    gw.expect_drop(
        Ingress::Inside,
        &from_pod(POD_A)
            .udp(1, 2)
            .total_length_override(2000)
            .build(),
        DropReason::BadIpv4Header,
    );
    gw.expect_drop(
        Ingress::Inside,
        &from_pod(POD_A).ipv4_payload(47, &[0; 8]).build(),
        DropReason::UnsupportedProtocol,
    );
    let arp = egw_testkit::PacketBuilder::new()
        .non_ipv4(0x0806, &[0; 28])
        .build();
    gw.expect_drop(Ingress::Inside, &arp, DropReason::NotIpv4);
}

#[test]
fn flow_listing_filters_and_pages() {
    let mut gw = Gateway::new(two_pool_table(1));
    for i in 0..30 {
        gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000 + i, MIRROR, 8081));
        gw.expect_forward(Ingress::Inside, &udp_out(POD_B, 40000 + i, MIRROR, 8081));
    }
    let filter = FlowFilter {
        pod_ip: Some(POD_B),
        protocol: Some(Protocol::Udp),
        ..FlowFilter::default()
    };
    let mut all = vec![];
    let mut cursor = Some(0);
    let mut pages = 0;
    while let Some(c) = cursor {
        let mut page = vec![];
        cursor = gw.engines[0].list_flows(&filter, c, 7, u32::MAX, gw.now, &mut page);
        assert!(page.len() <= 7);
        all.extend(page);
        pages += 1;
        assert!(pages < 100);
    }
    assert_eq!(all.len(), 30);
    assert!(all
        .iter()
        .all(|f| f.pod.0 == POD_B && f.external.0 == EXT_2));
}

#[test]
fn flow_events_record_create_and_remove() {
    let mut gw = Gateway::new(two_pool_table(1));
    gw.engines[0].enable_flow_events(16);
    gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000, MIRROR, 8081));
    gw.advance(301);
    let mut events = vec![];
    gw.engines[0].take_flow_events(&mut events);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(&events[0], egw_engine::FlowEvent::Created(f) if f.pod == (POD_A, 40000)));
    assert!(matches!(
        &events[1],
        egw_engine::FlowEvent::Removed {
            reason: "idle_timeout",
            ..
        }
    ));
}

#[test]
fn icmp_errors_the_gateway_generates_are_rate_limited() {
    let config = EngineConfig {
        icmp_errors_per_second: 5,
        ..base_config()
    };
    let mut gw = Gateway::with_config(1, config, two_pool_table(1));
    let probe = from_pod(POD_A).ttl(1).udp(40000, 33434).build();
    let sent = (0..20)
        .filter(|_| {
            matches!(
                gw.send(Ingress::Inside, &probe),
                harness::Outcome::Forwarded { .. }
            )
        })
        .count();
    assert_eq!(
        sent,
        5,
        "a burst gets at most the per-second budget\n{}",
        gw.dump()
    );
    let c = *gw.engines[0].counters();
    assert_eq!((c.icmp_errors_sent, c.icmp_errors_rate_limited), (5, 15));
    assert_eq!(
        gw.drops(DropReason::TtlExceeded),
        20,
        "every expired packet is counted once"
    );
    gw.advance(1);
    assert!(
        matches!(
            gw.send(Ingress::Inside, &probe),
            harness::Outcome::Forwarded { .. }
        ),
        "the budget refills"
    );
}

#[test]
fn fragments_follow_their_first_fragment_to_the_owning_core() {
    let cores = 4;
    let mut gw = Gateway::with_config(cores, base_config(), two_pool_table(1));
    // Find a pod port whose endpoint is owned by a core other than the receiving core 0.
    let port = (40000u16..41000)
        .find(|&p| gw.engines[0].outbound_owner(Protocol::Udp, POD_A, p) != 0)
        .expect("some endpoint is owned by another core");
    let owner = gw.engines[0].outbound_owner(Protocol::Udp, POD_A, port);
    let datagram = from_pod(POD_A)
        .dont_fragment(false)
        .id(0x3131)
        .udp(port, 8081)
        .payload(&[3; 2500])
        .build();
    let fragments = fragment_packet(&datagram, 1000).expect("fragments");

    // A later fragment before the first: stashed on the receiving core.
    assert_eq!(
        gw.send_on(0, Ingress::Inside, &fragments[2]),
        harness::Outcome::Stashed
    );
    let mut out = vec![];
    match gw.send_on(0, Ingress::Inside, &fragments[0]) {
        harness::Outcome::Forwarded { core, frame, .. } => {
            assert_eq!(
                core, owner,
                "the first fragment is translated by the owning core"
            );
            out.push(frame);
        }
        other => panic!("{other:?}\n{}", gw.dump()),
    }
    // The stashed fragment and the in-order middle one go to the owner too.
    for released in gw.released() {
        let harness::Outcome::Forwarded { core, frame, .. } = released else {
            panic!("{released:?}")
        };
        assert_eq!(core, owner);
        out.push(frame);
    }
    match gw.send_on(0, Ingress::Inside, &fragments[1]) {
        harness::Outcome::Forwarded { core, frame, .. } => {
            assert_eq!(core, owner);
            out.push(frame);
        }
        other => panic!("{other:?}\n{}", gw.dump()),
    }
    let whole = reassemble(&out).expect("all fragments out");
    let d = egw_testkit::Decoded::parse(&whole).expect("decodes");
    assert!(d.checksums_ok(), "{d}");
    assert_eq!(d.ipv4.src, EXT_1);
}

#[test]
fn full_table_early_drops_unanswered_flows_but_never_answered_ones() {
    let config = EngineConfig {
        flow_capacity: 8,
        ..base_config()
    };
    let mut gw = Gateway::with_config(1, config, two_pool_table(1));
    // Eight UDP flows nobody answers (a flood, or a dead destination).
    for i in 0..8 {
        gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000 + i, MIRROR, 8081));
    }
    // A new flow is admitted by evicting one of them, as conntrack's early drop does.
    gw.expect_forward(Ingress::Inside, &udp_out(POD_B, 50000, MIRROR, 8081));
    let c = *gw.engines[0].counters();
    assert_eq!(c.flows_early_dropped, 1, "\n{}", gw.dump());
    assert_eq!(gw.flows().len(), 8);
    let leases: u64 = gw.engines[0].port_usage().iter().map(|u| u.flows).sum();
    assert_eq!(
        leases,
        8,
        "the evicted flow's port lease was returned\n{}",
        gw.dump()
    );

    // Answered flows are never evicted: once every flow has a reply, new flows are refused.
    let config = EngineConfig {
        flow_capacity: 8,
        ..base_config()
    };
    let mut gw = Gateway::with_config(1, config, two_pool_table(1));
    for i in 0..8 {
        let out = gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000 + i, MIRROR, 8081));
        let ext = source(&out);
        gw.expect_forward(Ingress::Outside, &udp_in(MIRROR, 8081, ext.0, ext.1));
    }
    gw.expect_drop(
        Ingress::Inside,
        &udp_out(POD_B, 50000, MIRROR, 8081),
        DropReason::TableFull,
    );
    assert_eq!(gw.engines[0].counters().flows_early_dropped, 0);

    // And the option can be turned off: then unanswered flows are kept too.
    let config = EngineConfig {
        flow_capacity: 8,
        early_drop_unreplied: false,
        ..base_config()
    };
    let mut gw = Gateway::with_config(1, config, two_pool_table(1));
    for i in 0..8 {
        gw.expect_forward(Ingress::Inside, &udp_out(POD_A, 40000 + i, MIRROR, 8081));
    }
    gw.expect_drop(
        Ingress::Inside,
        &udp_out(POD_B, 50000, MIRROR, 8081),
        DropReason::TableFull,
    );
}
