//! Unit tests of the pipeline that need its insides: the fast path against the full path, with
//! the fast path switched off on one engine.

use super::*;
use crate::packet;
use egw_policy::{ActionSpec, PolicySpec, PoolSpec, RouteTableSpec, RuleSpec, SourceSpec};
use egw_testkit::{Decoded, PacketBuilder, TcpFlags, L4};
use proptest::prelude::*;

const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const NOW: Duration = Duration::from_secs(100);

fn table() -> Arc<CompiledRouteTable> {
    let spec = RouteTableSpec {
        public_addresses: Default::default(),
        generation: 1,
        pools: vec![PoolSpec {
            name: "egress".into(),
            addresses: vec![EXTERNAL],
            pairing: false,
        }],
        policies: vec![PolicySpec {
            name: "all".into(),
            rules: vec![RuleSpec {
                destination: "0.0.0.0/0".parse().expect("cidr"),
                action: ActionSpec::Snat {
                    pool: "egress".into(),
                },
                description: String::new(),
            }],
            default_action: None,
        }],
        sources: vec![SourceSpec {
            cidr: "10.244.0.0/16".parse().expect("cidr"),
            policy: "all".into(),
        }],
        default_action: ActionSpec::Deny {
            reason: "no policy".into(),
        },
    };
    Arc::new(CompiledRouteTable::compile(spec).expect("table compiles"))
}

fn engine(fast_path: bool, mtu: u16) -> Engine {
    engine_of(fast_path, mtu, 0, 1)
}

fn engine_of(fast_path: bool, mtu: u16, core: u16, cores: u16) -> Engine {
    let mut e = Engine::new(EngineConfig {
        core,
        cores,
        inside_address: Ipv4Addr::new(10, 244, 0, 1),
        inside_mtu: mtu,
        outside_mtu: mtu,
        ..EngineConfig::default()
    })
    .expect("config");
    e.fast_path = fast_path;
    e.set_route_table(table());
    e
}

/// One flow of the comparison: protocol, pod port, remote endpoint.
#[derive(Clone, Debug)]
struct FlowSpec {
    tcp: bool,
    pod_port: u16,
    remote: Ipv4Addr,
    remote_port: u16,
}

/// One packet of the comparison, in either direction, with the header variations that send
/// a packet down one path or the other.
#[derive(Clone, Debug)]
struct Step {
    flow: usize,
    inbound: bool,
    ttl: u8,
    flags: u8,
    payload: usize,
    vlan: Option<u16>,
    dont_fragment: bool,
    more_fragments: bool,
    options: bool,
    zero_udp_checksum: bool,
    bad_ip_checksum: bool,
    /// Inbound only: aim at a port the flow does not own.
    wrong_port: bool,
    one_armed: bool,
}

fn flow_spec() -> impl Strategy<Value = FlowSpec> {
    (any::<bool>(), 1024u16.., 1u32..200, 1u16..).prop_map(|(tcp, pod_port, r, remote_port)| {
        FlowSpec {
            tcp,
            pod_port,
            remote: Ipv4Addr::new(203, 0, 113, r as u8),
            remote_port,
        }
    })
}

fn step() -> impl Strategy<Value = Step> {
    (
        (
            0usize..8,
            any::<bool>(),
            prop_oneof![Just(64u8), Just(2), Just(1), Just(0)],
        ),
        (any::<u8>(), 0usize..300, proptest::option::of(1u16..4095)),
        (
            any::<bool>(),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.1),
        ),
        (
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.2),
        ),
    )
        .prop_map(
            |(
                (flow, inbound, ttl),
                (flags, payload, vlan),
                (dont_fragment, more_fragments, options),
                (zero_udp_checksum, bad_ip_checksum, wrong_port, one_armed),
            )| Step {
                flow,
                inbound,
                ttl,
                flags,
                payload,
                vlan,
                dont_fragment,
                more_fragments,
                options,
                zero_udp_checksum,
                bad_ip_checksum,
                wrong_port,
                one_armed,
            },
        )
}

fn frame(f: &FlowSpec, s: &Step, external: Option<(Ipv4Addr, u16)>) -> Vec<u8> {
    let (src, sport, dst, dport) = match (s.inbound, external) {
        (true, Some((ip, port))) => {
            let port = if s.wrong_port { port ^ 1 } else { port };
            (f.remote, f.remote_port, ip, port)
        }
        (true, None) => (f.remote, f.remote_port, EXTERNAL, 2000),
        (false, _) => (POD, f.pod_port, f.remote, f.remote_port),
    };
    let mut b = PacketBuilder::new()
        .ipv4(src, dst)
        .ttl(s.ttl)
        .dont_fragment(s.dont_fragment);
    if let Some(vid) = s.vlan {
        b = b.vlan(vid);
    }
    if s.options {
        b = b.options(&[1, 1, 1, 1]);
    }
    if s.more_fragments {
        b = b.fragment(0, true);
    }
    b = if f.tcp {
        b.tcp(sport, dport).flags(TcpFlags(s.flags))
    } else if s.zero_udp_checksum {
        b.udp(sport, dport).udp_zero_checksum()
    } else {
        b.udp(sport, dport)
    };
    b = b.payload(&vec![0x5a; s.payload]);
    if s.bad_ip_checksum {
        b = b.bad_ip_checksum();
    }
    b.build()
}

fn flows(e: &Engine) -> Vec<FlowInfo> {
    let mut out = vec![];
    e.list_flows(
        &FlowFilter::default(),
        0,
        usize::MAX,
        u32::MAX,
        NOW,
        &mut out,
    );
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The established-flow fast path and the full path give the same verdict, the same
    /// output bytes, the same counters and the same flow table for any sequence of packets
    /// of a few flows in both directions, including every variation that must leave the
    /// fast path (options, fragments, TTL expiry, MTU, bad checksums, unknown ports, flows
    /// and ports another core owns).
    #[test]
    fn fast_path_matches_full_path(
        specs in proptest::collection::vec(flow_spec(), 1..8),
        steps in proptest::collection::vec(step(), 1..40),
        mtu in prop_oneof![Just(1500u16), Just(200)],
        (core, cores) in (1u16..4).prop_flat_map(|cores| (0..cores, Just(cores))),
    ) {
        let mut fast = engine_of(true, mtu, core, cores);
        let mut full = engine_of(false, mtu, core, cores);
        let mut external: Vec<Option<(Ipv4Addr, u16)>> = vec![None; specs.len()];
        for s in &steps {
            let i = s.flow % specs.len();
            let f = &specs[i];
            let original = frame(f, s, external[i]);
            let ingress = match (s.one_armed, s.inbound) {
                (true, _) => Ingress::OneArmed,
                (false, true) => Ingress::Outside,
                (false, false) => Ingress::Inside,
            };
            let mut a = original.clone();
            a.resize(original.len() + 600, 0);
            let mut b = a.clone();
            let va = fast.process(&mut a, original.len(), ingress, NOW);
            let vb = full.process(&mut b, original.len(), ingress, NOW);
            prop_assert_eq!(va, vb);
            prop_assert_eq!(&a, &b);
            if let (Verdict::Forward { len, side: Side::Outside, .. }, false) = (va, s.inbound) {
                if let Ok(d) = Decoded::parse(&a[..len]) {
                    match d.l4 {
                        L4::Tcp(t) => external[i] = Some((d.ipv4.src, t.src_port)),
                        L4::Udp(u) => external[i] = Some((d.ipv4.src, u.src_port)),
                        _ => {}
                    }
                }
            }
            prop_assert_eq!(fast.counters(), full.counters());
        }
        prop_assert_eq!(flows(&fast), flows(&full));
    }
}

fn established(e: &mut Engine, frame: &mut [u8], inbound: bool) -> Option<Verdict> {
    let p = packet::parse_plain(frame).expect("a plain packet");
    if inbound {
        e.established_inbound(frame, &p, NOW.as_secs() as u32)
    } else {
        e.established_outbound(frame, &p, NOW)
    }
}

/// The fast path takes an established flow's packets in both directions and creates a new
/// outbound flow on the way, and declines an inbound packet without a flow without touching
/// the frame or the engine.
#[test]
fn fast_path_takes_established_packets_and_declines_unknown_ones() {
    let mut e = engine(true, 1500);
    let remote = Ipv4Addr::new(203, 0, 113, 7);
    let unsolicited = PacketBuilder::new()
        .ipv4(remote, EXTERNAL)
        .udp(53, 2000)
        .build();
    let mut u = unsolicited.clone();
    assert_eq!(established(&mut e, &mut u, true), None);
    assert_eq!(u, unsolicited, "a declined frame is left as it was");
    assert_eq!(e.counters(), &Counters::default());

    let first = PacketBuilder::new()
        .ipv4(POD, remote)
        .udp(40000, 53)
        .build();
    let mut f = first.clone();
    let len = f.len();
    let Some(Verdict::Forward { .. }) = established(&mut e, &mut f, false) else {
        panic!("the first packet creates the flow");
    };
    assert_eq!(e.counters().flows_created, 1);
    let d = Decoded::parse(&f).expect("decodes");
    assert!(d.checksums_ok(), "{d}");
    let L4::Udp(u) = d.l4 else { panic!("udp") };
    let (ext_ip, ext_port) = (d.ipv4.src, u.src_port);

    let mut again = first.clone();
    let out = established(&mut e, &mut again, false);
    assert!(
        matches!(
            out,
            Some(Verdict::Forward {
                side: Side::Outside,
                ..
            })
        ),
        "{out:?}"
    );
    let mut reply = PacketBuilder::new()
        .ipv4(remote, ext_ip)
        .udp(53, ext_port)
        .build();
    let out = established(&mut e, &mut reply, true);
    assert_eq!(
        out,
        Some(Verdict::Forward {
            side: Side::Inside,
            destination: POD,
            len
        })
    );
    let d = Decoded::parse(&reply).expect("decodes");
    assert!(d.checksums_ok(), "{d}");
    assert_eq!(d.ipv4.dst, POD);
}
