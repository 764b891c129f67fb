//! Test harness for the NAT engine: a virtual gateway of N per-core engines with a virtual clock.
//!
//! Frames go in through [`Gateway::send`], which follows hand-offs between cores the way the I/O
//! layer does, and come out as an [`Outcome`]. On any failed expectation the harness panics with
//! the whole dataplane state (counters, flows, port usage per core) so a failure explains itself.
#![allow(dead_code)]
#![allow(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test harness (clippy.toml covers only #[test] functions): a failed expectation \
              should panic with the dataplane state"
)]

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use egw_engine::{
    CompiledRouteTable, DropReason, Engine, EngineConfig, FlowFilter, FlowInfo, Ingress, Side,
    Verdict,
};
use egw_policy::{ActionSpec, PolicySpec, PoolSpec, RouteTableSpec, RuleSpec, SourceSpec};
use egw_testkit::{Decoded, MacAddr, PacketBuilder, L4};

pub const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
pub const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 11);
pub const POD_UNKNOWN: Ipv4Addr = Ipv4Addr::new(10, 244, 9, 9);
pub const EXT_1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const EXT_2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const MIRROR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const OTHER_REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
pub const GW_INSIDE: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
pub const POD_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// What happened to one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Forwarded {
        side: Side,
        destination: Ipv4Addr,
        frame: Vec<u8>,
        core: u16,
    },
    Dropped(DropReason),
    Stashed,
}

impl Outcome {
    #[track_caller]
    pub fn frame(&self) -> &[u8] {
        match self {
            Outcome::Forwarded { frame, .. } => frame,
            other => panic!("expected a forwarded frame, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn decoded(&self) -> Decoded {
        let d = Decoded::parse(self.frame()).expect("engine output decodes");
        assert!(
            d.checksums_ok(),
            "every checksum of the output verifies by full recomputation: {d}"
        );
        d
    }
}

pub struct Gateway {
    pub engines: Vec<Engine>,
    pub now: Duration,
}

/// A route table: pod A → pool-a (EXT_1), pod B → pool-b (EXT_2), everything else denied.
pub fn two_pool_table(generation: u64) -> RouteTableSpec {
    RouteTableSpec {
        public_addresses: Default::default(),
        generation,
        pools: vec![
            PoolSpec {
                name: "pool-a".into(),
                addresses: vec![EXT_1],
                pairing: true,
            },
            PoolSpec {
                name: "pool-b".into(),
                addresses: vec![EXT_2],
                pairing: true,
            },
        ],
        policies: vec![policy("via-a", "pool-a"), policy("via-b", "pool-b")],
        sources: vec![
            SourceSpec {
                cidr: format!("{POD_A}/32").parse().expect("cidr"),
                policy: "via-a".into(),
            },
            SourceSpec {
                cidr: format!("{POD_B}/32").parse().expect("cidr"),
                policy: "via-b".into(),
            },
        ],
        default_action: ActionSpec::Deny {
            reason: "no policy for source".into(),
        },
    }
}

pub fn policy(name: &str, pool: &str) -> PolicySpec {
    PolicySpec {
        name: name.into(),
        rules: vec![RuleSpec {
            destination: "0.0.0.0/0".parse().expect("cidr"),
            action: ActionSpec::Snat { pool: pool.into() },
            description: String::new(),
        }],
        default_action: None,
    }
}

pub fn base_config() -> EngineConfig {
    EngineConfig {
        inside_address: GW_INSIDE,
        flow_capacity: 4096,
        ..EngineConfig::default()
    }
}

impl Gateway {
    pub fn new(spec: RouteTableSpec) -> Self {
        Self::with_config(1, base_config(), spec)
    }

    pub fn with_config(cores: u16, config: EngineConfig, spec: RouteTableSpec) -> Self {
        let table = Arc::new(CompiledRouteTable::compile(spec).expect("valid table"));
        let engines = (0..cores)
            .map(|core| {
                let mut e = Engine::new(EngineConfig {
                    core,
                    cores,
                    table_seed: 77 + u64::from(core),
                    ..config.clone()
                })
                .expect("valid config");
                e.set_route_table(Arc::clone(&table));
                e
            })
            .collect();
        Self {
            engines,
            now: Duration::from_secs(1000),
        }
    }

    pub fn apply(&mut self, spec: RouteTableSpec) {
        let table = Arc::new(CompiledRouteTable::compile(spec).expect("valid table"));
        for e in &mut self.engines {
            e.set_route_table(Arc::clone(&table));
        }
    }

    pub fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        for e in &mut self.engines {
            e.maintain(self.now, u32::MAX);
        }
    }

    /// Sends a frame received on `rx_core`, following hand-offs like the I/O layer does.
    pub fn send_on(&mut self, rx_core: u16, ingress: Ingress, frame: &[u8]) -> Outcome {
        let mut buf = frame.to_vec();
        buf.resize(frame.len().max(2048), 0);
        let mut core = rx_core;
        for _ in 0..=self.engines.len() {
            let verdict =
                self.engines[usize::from(core)].process(&mut buf, frame.len(), ingress, self.now);
            match verdict {
                Verdict::Forward {
                    side,
                    destination,
                    len,
                } => {
                    buf.truncate(len);
                    return Outcome::Forwarded {
                        side,
                        destination,
                        frame: buf,
                        core,
                    };
                }
                Verdict::Drop(reason) => return Outcome::Dropped(reason),
                Verdict::Stashed => return Outcome::Stashed,
                Verdict::Handoff { core: next } => {
                    assert_ne!(
                        next,
                        core,
                        "a core never hands a packet to itself\n{}",
                        self.dump()
                    );
                    core = next;
                }
            }
        }
        panic!("hand-off loop\n{}", self.dump());
    }

    pub fn send(&mut self, ingress: Ingress, frame: &[u8]) -> Outcome {
        self.send_on(0, ingress, frame)
    }

    /// Fragments released from every core's stash, following hand-offs.
    pub fn released(&mut self) -> Vec<Outcome> {
        let mut out = vec![];
        let now = self.now;
        for core in 0..self.engines.len() {
            let mut emitted: Vec<(Vec<u8>, Verdict)> = vec![];
            self.engines[core].release_fragments(now, |bytes, v| emitted.push((bytes.to_vec(), v)));
            for (bytes, verdict) in emitted {
                match verdict {
                    Verdict::Forward {
                        side, destination, ..
                    } => out.push(Outcome::Forwarded {
                        side,
                        destination,
                        frame: bytes,
                        core: core as u16,
                    }),
                    Verdict::Handoff { core: next } => {
                        let ingress = self.ingress_of(&bytes);
                        out.push(self.send_on(next, ingress, &bytes));
                    }
                    other => panic!("unexpected release verdict {other:?}"),
                }
            }
        }
        out
    }

    /// A frame addressed to an external address came from the outside.
    fn ingress_of(&self, frame: &[u8]) -> Ingress {
        let to_external = Decoded::parse(frame).is_ok_and(|d| {
            self.engines[0]
                .route_table()
                .snat_addresses()
                .any(|a| a == d.ipv4.dst)
        });
        if to_external {
            Ingress::Outside
        } else {
            Ingress::Inside
        }
    }

    pub fn flows(&self) -> Vec<FlowInfo> {
        let mut out = vec![];
        for e in &self.engines {
            e.list_flows(
                &FlowFilter::default(),
                0,
                usize::MAX,
                u32::MAX,
                self.now,
                &mut out,
            );
        }
        out
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.engines
            .iter()
            .map(|e| e.counters().drops.get(reason))
            .sum()
    }

    /// The whole dataplane state, for failure messages.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for e in &self.engines {
            let c = e.counters();
            let (used, cap) = e.occupancy();
            let _ = writeln!(
                s,
                "core {}: rx {} out {} in {} bypass {} icmp_sent {} icmp_xlated {} handoffs {} flows {used}/{cap} created {} expired {}",
                e.core(),
                c.rx_packets,
                c.outbound_packets,
                c.inbound_packets,
                c.bypassed_packets,
                c.icmp_errors_sent,
                c.icmp_errors_translated,
                c.handoffs,
                c.flows_created,
                c.flows_expired
            );
            for (reason, n) in c.drops.iter().filter(|(_, n)| *n > 0) {
                let _ = writeln!(s, "  drop {reason}: {n}");
            }
            for u in e.port_usage() {
                let _ = writeln!(
                    s,
                    "  external {} draining={} flows={} {:?}",
                    u.address, u.draining, u.flows, u.usage
                );
            }
            let mut flows = vec![];
            e.list_flows(
                &FlowFilter::default(),
                0,
                50,
                u32::MAX,
                self.now,
                &mut flows,
            );
            for f in flows {
                let _ = writeln!(
                    s,
                    "  flow {} {}:{} -> {}:{} via {}:{} {} idle {}s",
                    f.protocol.name(),
                    f.pod.0,
                    f.pod.1,
                    f.remote.0,
                    f.remote.1,
                    f.external.0,
                    f.external.1,
                    f.state.name(),
                    f.idle_secs
                );
            }
        }
        s
    }

    #[track_caller]
    pub fn expect_forward(&mut self, ingress: Ingress, frame: &[u8]) -> Decoded {
        match self.send(ingress, frame) {
            out @ Outcome::Forwarded { .. } => out.decoded(),
            other => panic!("expected forward, got {other:?}\n{}", self.dump()),
        }
    }

    #[track_caller]
    pub fn expect_drop(&mut self, ingress: Ingress, frame: &[u8], reason: DropReason) {
        let before = self.drops(reason);
        let out = self.send(ingress, frame);
        assert_eq!(out, Outcome::Dropped(reason), "\n{}", self.dump());
        assert_eq!(
            self.drops(reason),
            before + 1,
            "the drop is counted\n{}",
            self.dump()
        );
    }
}

pub fn from_pod(src: Ipv4Addr) -> PacketBuilder {
    PacketBuilder::new()
        .eth(MacAddr(POD_MAC), MacAddr(GW_MAC))
        .ipv4(src, MIRROR)
        .id(0x4242)
}

pub fn from_internet(src: Ipv4Addr, dst: Ipv4Addr) -> PacketBuilder {
    PacketBuilder::new()
        .eth(MacAddr([0x02, 0, 0, 0, 0, 0xfe]), MacAddr(GW_MAC))
        .ipv4(src, dst)
        .id(0x5151)
}

/// (source address, source port) of a decoded TCP/UDP packet, or (address, echo id).
pub fn source(d: &Decoded) -> (Ipv4Addr, u16) {
    (d.ipv4.src, d.ports().map_or(0, |p| p.0))
}

pub fn destination(d: &Decoded) -> (Ipv4Addr, u16) {
    let port = match &d.l4 {
        L4::IcmpEcho(e) => e.id,
        _ => d.ports().map_or(0, |p| p.1),
    };
    (d.ipv4.dst, port)
}
