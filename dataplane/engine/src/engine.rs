//! The per-core packet pipeline: parse → steer → look up / create a flow → translate → verdict.
//!
//! One [`Engine`] per core. It owns its flow table, its block of every external address's ports
//! and its counters, so the per-packet path takes no lock and touches no atomic. The route table
//! is an `Arc` swapped between batches by the caller: flows keep the mapping they were created
//! with, new flows see the new table.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use thiserror::Error;

use crate::conntrack::{
    next_tcp_state, Direction, Flow, FlowKey, FlowState, FlowTable, HomeBucket, InsertError,
    KeyHasher, Timeouts,
};
use crate::counters::{Counters, DropReason};
use crate::frag::{DatagramId, FragmentAction, FragmentConfig, Fragments, StashResult};
use crate::packet::{
    self, Endpoint, IcmpErrorQuote, Parsed, Protocol, Transport, ICMP_CODE_FRAG_NEEDED,
    ICMP_DEST_UNREACHABLE, ICMP_TIME_EXCEEDED, TCP_ACK, TCP_SYN,
};
use crate::ports::{ExternalAddress, PortLease, PortPartition, PortUsage};
use egw_policy::{Decision, RouteTable};

/// Which gateway interface a packet arrived on or leaves by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Pod-facing.
    Inside,
    /// Internet-facing.
    Outside,
}

/// Where a packet came from, as far as the I/O layer can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingress {
    Inside,
    Outside,
    /// One interface carries both directions (an AWS ENI): the engine classifies by address.
    OneArmed,
}

/// Filtering of unsolicited inbound UDP (RFC 4787 section 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Filtering {
    /// REQ-8 option: any remote may send to a mapped external endpoint.
    EndpointIndependent,
    /// Only remotes the pod endpoint has sent to (any port).
    AddressDependent,
    /// Only the exact remote endpoints the pod has sent to. Allows per-destination port reuse.
    #[default]
    AddressAndPortDependent,
}

/// What the caller must do with a frame after [`Engine::process`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the first `len` bytes out of `side` towards `destination` (the IPv4 destination
    /// after translation; the I/O layer resolves the next hop and rewrites the MAC addresses).
    /// Also used for ICMP errors the engine built in place of the original packet.
    Forward {
        side: Side,
        destination: Ipv4Addr,
        len: usize,
    },
    /// Drop the frame; the reason has been counted.
    Drop(DropReason),
    /// Another core owns this packet's flow: pass the frame, unchanged, to that core's engine.
    Handoff { core: u16 },
    /// The engine copied the frame (an out-of-order fragment); recycle the buffer.
    Stashed,
}

/// Per-core engine configuration. All cores of a gateway share everything but `core` and
/// `table_seed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    pub core: u16,
    pub cores: u16,
    /// Flows this core tracks at most.
    pub flow_capacity: u32,
    pub timeouts: Timeouts,
    pub udp_filtering: Filtering,
    /// SNAT port range, split between cores.
    pub port_range: (u16, u16),
    /// Source of ICMP errors the gateway sends to pods (its inside address).
    pub inside_address: Ipv4Addr,
    pub inside_mtu: u16,
    pub outside_mtu: u16,
    pub fragments: FragmentConfig,
    /// Shared by all cores: decides which core owns a pod endpoint.
    pub steering_seed: u64,
    /// Per core: seeds the flow-table hash (hash-flooding resistance) and port shuffling.
    pub table_seed: u64,
    /// ICMP errors this core may generate per second (RFC 1812 4.3.2.8 rate limiting).
    pub icmp_errors_per_second: u32,
    /// When the table is full, evict a flow that never got an answer to admit a new one (as
    /// conntrack's early drop); established and replied flows are never evicted either way.
    pub early_drop_unreplied: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            core: 0,
            cores: 1,
            flow_capacity: 1 << 16,
            timeouts: Timeouts::default(),
            udp_filtering: Filtering::default(),
            port_range: (1024, 65535),
            inside_address: Ipv4Addr::UNSPECIFIED,
            inside_mtu: 1500,
            outside_mtu: 1500,
            fragments: FragmentConfig::default(),
            steering_seed: 0x6567_775f_7374_6572,
            table_seed: 0x6567_775f_7461_626c,
            icmp_errors_per_second: 1000,
            early_drop_unreplied: true,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("core {core} is out of range for {cores} cores")]
    CoreOutOfRange { core: u16, cores: u16 },
    #[error("port range {first}-{last} cannot be split between {cores} cores")]
    PortRange { first: u16, last: u16, cores: u16 },
    #[error("flow capacity must be between 1 and {max}, got {got}")]
    FlowCapacity { got: u32, max: u32 },
    #[error("invalid timeouts: {0}")]
    Timeouts(String),
    #[error("MTU {0} is below the IPv4 minimum of 68")]
    Mtu(u16),
}

/// Flows per core at most (slot numbers are u32 and the indices double their size).
pub const MAX_FLOWS_PER_CORE: u32 = 1 << 28;

/// Expiry work done per packet when expiry is due: keeps expiry O(1) amortized per packet.
const EXPIRY_BUDGET_PER_PACKET: u32 = 4;
/// Expiry work done when a new flow finds the table full, before giving up.
const EXPIRY_BUDGET_WHEN_FULL: u32 = 64;
/// Occupied slots an early-drop scan looks at when the table is full.
const EARLY_DROP_PROBES: u32 = 8;
/// Candidate ports probed when a new flow must share a port with other destinations.
const SHARE_PROBES: u32 = 32;
/// Frames [`Engine::prefetch`] looks at per call (a batch).
pub const PREFETCH_BATCH: usize = 64;

/// A filter over flows for listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    pub pod_ip: Option<Ipv4Addr>,
    pub external_ip: Option<Ipv4Addr>,
    pub external_port: Option<u16>,
    pub destination: Option<Ipv4Net>,
    pub protocol: Option<Protocol>,
    pub state: Option<FlowState>,
}

impl FlowFilter {
    fn matches(&self, f: &Flow) -> bool {
        self.pod_ip.is_none_or(|ip| ip == f.pod_ip)
            && self.external_ip.is_none_or(|ip| ip == f.external_ip())
            && self.external_port.is_none_or(|p| p == f.external_port())
            && self
                .destination
                .is_none_or(|net| net.contains(&f.remote_ip))
            && self.protocol.is_none_or(|p| p == f.protocol)
            && self.state.is_none_or(|s| s == f.state)
    }
}

/// A copy of one flow's state, for listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowInfo {
    pub core: u16,
    pub protocol: Protocol,
    pub pod: (Ipv4Addr, u16),
    pub external: (Ipv4Addr, u16),
    pub remote: (Ipv4Addr, u16),
    pub state: FlowState,
    pub age_secs: u32,
    pub idle_secs: u32,
    pub packets_out: u64,
    pub packets_in: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

/// One external address's port usage on this core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalUsage {
    pub address: Ipv4Addr,
    pub draining: bool,
    pub usage: [PortUsage; 3],
    pub flows: u64,
}

/// A flow created or removed, for NAT event logs (RFC 8158-style). Recorded only when enabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowEvent {
    Created(FlowInfo),
    Removed {
        flow: FlowInfo,
        reason: &'static str,
    },
}

struct IcmpRateLimit {
    tokens: u32,
    per_second: u32,
    last_refill_ms: u64,
}

impl IcmpRateLimit {
    fn allow(&mut self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_refill_ms);
        if elapsed > 0 {
            let refill = (elapsed.saturating_mul(u64::from(self.per_second)) / 1000) as u32;
            if refill > 0 {
                self.tokens = self
                    .tokens
                    .saturating_add(refill)
                    .min(self.per_second.max(1));
                self.last_refill_ms = now_ms;
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// One core's NAT engine.
pub struct Engine {
    config: EngineConfig,
    partition: PortPartition,
    steering: KeyHasher,
    table: Arc<RouteTable>,
    /// External addresses this core knows: those of the current table plus any still leased.
    externals: Vec<Rc<ExternalAddress>>,
    draining: HashSet<Ipv4Addr>,
    flows: FlowTable,
    fragments: Fragments,
    counters: Counters,
    icmp_limit: IcmpRateLimit,
    probe_state: u64,
    events: Option<Vec<FlowEvent>>,
    event_capacity: usize,
    events_dropped: u64,
    /// Whether [`process`](Self::process) tries the established-flow fast path first. Always
    /// on outside tests, which turn it off to compare it with the full path.
    fast_path: bool,
    /// The external ports this core allocates (its block of the SNAT range).
    own_ports: std::ops::RangeInclusive<u16>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Result<Self, ConfigError> {
        if config.core >= config.cores {
            return Err(ConfigError::CoreOutOfRange {
                core: config.core,
                cores: config.cores,
            });
        }
        let (first, last) = config.port_range;
        let partition =
            PortPartition::new(first, last, config.cores).ok_or(ConfigError::PortRange {
                first,
                last,
                cores: config.cores,
            })?;
        if config.flow_capacity == 0 || config.flow_capacity > MAX_FLOWS_PER_CORE {
            return Err(ConfigError::FlowCapacity {
                got: config.flow_capacity,
                max: MAX_FLOWS_PER_CORE,
            });
        }
        config.timeouts.validate().map_err(ConfigError::Timeouts)?;
        for mtu in [config.inside_mtu, config.outside_mtu] {
            if mtu < 68 {
                return Err(ConfigError::Mtu(mtu));
            }
        }
        let own_ports = partition.range(config.core);
        Ok(Self {
            partition,
            steering: KeyHasher::new(config.steering_seed),
            table: Arc::new(RouteTable::empty_deny_all()),
            externals: Vec::new(),
            draining: HashSet::new(),
            flows: FlowTable::new(
                config.flow_capacity,
                config.timeouts,
                config.table_seed,
                config.udp_filtering != Filtering::AddressAndPortDependent,
            ),
            fragments: Fragments::new(config.fragments),
            counters: Counters::default(),
            icmp_limit: IcmpRateLimit {
                tokens: config.icmp_errors_per_second,
                per_second: config.icmp_errors_per_second,
                last_refill_ms: 0,
            },
            probe_state: config.table_seed | 1,
            events: None,
            event_capacity: 0,
            events_dropped: 0,
            fast_path: true,
            own_ports,
            config,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn core(&self) -> u16 {
        self.config.core
    }

    /// Installs a new route table. Existing flows keep their mapping; new flows use `table`.
    pub fn set_route_table(&mut self, table: Arc<RouteTable>) {
        // Keep addresses still leased by live flows; add the new table's addresses.
        self.externals.retain(|e| {
            Rc::strong_count(e) > 1 || table.snat_addresses().any(|a| a == e.address())
        });
        for address in table.snat_addresses() {
            if !self.externals.iter().any(|e| e.address() == address) {
                let ext = ExternalAddress::new(
                    address,
                    &self.partition,
                    self.config.core,
                    self.config.table_seed,
                );
                ext.set_draining(self.draining.contains(&address));
                self.externals.push(ext);
            }
        }
        self.externals.sort_by_key(|e| e.address());
        self.table = table;
    }

    pub fn route_table(&self) -> &Arc<RouteTable> {
        &self.table
    }

    /// Stops (or resumes) new flows on an external address; existing flows finish normally.
    pub fn set_draining(&mut self, address: Ipv4Addr, draining: bool) {
        if draining {
            self.draining.insert(address);
        } else {
            self.draining.remove(&address);
        }
        if let Some(ext) = self.external(address) {
            ext.set_draining(draining);
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// (flows tracked, capacity).
    pub fn occupancy(&self) -> (u32, u32) {
        (self.flows.len(), self.flows.capacity())
    }

    /// Bytes the flow table holds at full capacity.
    pub fn flow_table_bytes(&self) -> usize {
        self.flows.memory_bytes()
    }

    pub fn port_usage(&self) -> Vec<ExternalUsage> {
        self.externals
            .iter()
            .map(|e| ExternalUsage {
                address: e.address(),
                draining: e.draining(),
                usage: Protocol::ALL.map(|p| e.usage(p)),
                flows: e.total_leases(),
            })
            .collect()
    }

    /// Starts recording flow create/remove events, keeping at most `capacity` until taken.
    /// When full, events (never packets) are dropped and counted.
    pub fn enable_flow_events(&mut self, capacity: usize) {
        self.events = Some(Vec::with_capacity(capacity));
        self.event_capacity = capacity;
    }

    /// Moves recorded events into `out`.
    pub fn take_flow_events(&mut self, out: &mut Vec<FlowEvent>) {
        if let Some(events) = self.events.as_mut() {
            out.append(events);
        }
    }

    pub fn flow_events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Copies up to `limit` flows matching `filter` into `out`, scanning from slot `cursor` and at
    /// most `scan_budget` slots. Returns the cursor to continue from, or `None` at the end.
    pub fn list_flows(
        &self,
        filter: &FlowFilter,
        cursor: u32,
        limit: usize,
        scan_budget: u32,
        now: Duration,
        out: &mut Vec<FlowInfo>,
    ) -> Option<u32> {
        let now_s = secs(now);
        let mut last = None;
        let mut scanned = 0u32;
        for (slot, flow) in self.flows.iter_from(cursor) {
            scanned += 1;
            last = Some(slot);
            if filter.matches(flow) {
                out.push(flow_info(self.config.core, flow, now_s));
                if out.len() >= limit {
                    break;
                }
            }
            if scanned >= scan_budget {
                break;
            }
        }
        let next = last? + 1;
        (self.flows.iter_from(next).next().is_some()).then_some(next)
    }

    /// Housekeeping between batches or when idle: expires flows and stale fragments.
    pub fn maintain(&mut self, now: Duration, budget: u32) {
        self.expire(secs(now), budget);
        let stale = self.fragments.expire_stash(millis(now));
        for _ in 0..stale {
            self.counters.drops.record(DropReason::FragmentTimeout);
        }
    }

    fn expire(&mut self, now_s: u32, budget: u32) {
        let mut expired = 0u64;
        let core = self.config.core;
        let events = &mut self.events;
        let (cap, dropped) = (self.event_capacity, &mut self.events_dropped);
        self.flows.expire(now_s, budget, |flow| {
            expired += 1;
            if let Some(events) = events.as_mut() {
                if events.len() < cap {
                    events.push(FlowEvent::Removed {
                        flow: flow_info(core, &flow, now_s),
                        reason: "idle_timeout",
                    });
                } else {
                    *dropped += 1;
                }
            }
        });
        self.counters.flows_expired += expired;
    }

    fn record_created(&mut self, slot: u32, now_s: u32) {
        let Some(events) = self.events.as_ref() else {
            return;
        };
        if events.len() >= self.event_capacity {
            self.events_dropped += 1;
            return;
        }
        let info = self
            .flows
            .get(slot)
            .map(|f| flow_info(self.config.core, f, now_s));
        if let (Some(info), Some(events)) = (info, self.events.as_mut()) {
            events.push(FlowEvent::Created(info));
        }
    }

    fn external(&self, address: Ipv4Addr) -> Option<&Rc<ExternalAddress>> {
        self.externals
            .binary_search_by_key(&address, |e| e.address())
            .ok()
            .map(|i| &self.externals[i])
    }

    /// The core that owns a pod endpoint (every flow of one pod endpoint lives on one core, which
    /// is what makes its mapping endpoint-independent).
    #[inline]
    pub fn outbound_owner(&self, protocol: Protocol, pod_ip: Ipv4Addr, pod_port: u16) -> u16 {
        if self.config.cores == 1 {
            return 0;
        }
        let key = FlowKey::new(protocol, pod_ip, pod_port, Ipv4Addr::UNSPECIFIED, 0);
        (self.steering.flow(&key) % u64::from(self.config.cores)) as u16
    }

    /// The core that allocated an external port (`None`: outside the SNAT port range).
    #[inline]
    pub fn inbound_owner(&self, external_port: u16) -> Option<u16> {
        self.partition.owner(external_port)
    }

    #[inline]
    fn drop(&mut self, reason: DropReason) -> Verdict {
        self.counters.drops.record(reason);
        Verdict::Drop(reason)
    }

    /// Overlaps the cache misses of a batch: issues, for every frame, the load of its flow-index
    /// bucket, then the load of the flow it points at, before any frame is processed. Call with a
    /// batch's frames (read-only) right before calling [`process`](Self::process) on each; it
    /// changes no state. At millions of flows this turns ~2 serial DRAM misses per packet into
    /// overlapped ones; frames it cannot classify cheaply are simply skipped.
    pub fn prefetch(&self, frames: &[&[u8]], ingress: Ingress) {
        let n = frames.len().min(PREFETCH_BATCH);
        // Every lookup's starting point first, touching no table memory; then the loads, each
        // pass a tight loop. A load that misses holds its place in the core's reorder buffer until
        // its data arrives: with little work between loads, dozens of misses are in flight at
        // once instead of a handful.
        let mut homes = [HomeBucket::NONE; PREFETCH_BATCH];
        for (home, frame) in homes.iter_mut().zip(&frames[..n]) {
            if let Some((direction, hash)) = self.peek_flow_hash(frame, ingress) {
                *home = self.flows.home_bucket(direction, hash);
            }
        }
        let mut sink = 0u64;
        for &home in &homes[..n] {
            sink ^= self.flows.touch_bucket(home);
        }
        for &home in &homes[..n] {
            sink ^= self.flows.touch_flow(home);
        }
        std::hint::black_box(sink);
    }

    /// The flow-index hash `process` will look up for `frame`, from a light parse (no checksum
    /// verification, no IPv4 options, no fragments, no ICMP errors): only a hint for
    /// [`prefetch`](Self::prefetch).
    #[inline]
    fn peek_flow_hash(&self, frame: &[u8], ingress: Ingress) -> Option<(Direction, u64)> {
        let l3 = match frame.get(12..14)? {
            [0x08, 0x00] => packet::ETH_HEADER_LEN,
            [0x81, 0x00] if frame.get(16..18)? == [0x08, 0x00] => {
                packet::ETH_HEADER_LEN + packet::VLAN_TAG_LEN
            }
            _ => return None,
        };
        // The IPv4 header and the first 8 bytes of the transport header (ports or echo id).
        let head: &[u8; 28] = frame.get(l3..l3 + 28)?.try_into().ok()?;
        if head[0] != 0x45 {
            return None;
        }
        let src = Ipv4Addr::new(head[12], head[13], head[14], head[15]);
        let dst = Ipv4Addr::new(head[16], head[17], head[18], head[19]);
        let protocol = Protocol::from_number(head[9])?;
        let (sport, dport) = match protocol {
            Protocol::Tcp | Protocol::Udp => (
                u16::from_be_bytes([head[20], head[21]]),
                u16::from_be_bytes([head[22], head[23]]),
            ),
            Protocol::Icmp => (u16::from_be_bytes([head[24], head[25]]), 0),
        };
        let inbound = match ingress {
            Ingress::Inside => false,
            Ingress::Outside => true,
            Ingress::OneArmed => self.external(dst).is_some(),
        };
        let (direction, key) = if inbound {
            let (ext_port, remote_port) = if protocol == Protocol::Icmp {
                (sport, 0)
            } else {
                (dport, sport)
            };
            (
                Direction::Inbound,
                FlowKey::new(protocol, dst, ext_port, src, remote_port),
            )
        } else {
            (
                Direction::Outbound,
                FlowKey::new(protocol, src, sport, dst, dport),
            )
        };
        Some((direction, self.flows.hash(&key)))
    }

    /// Address ranges of the engine's large tables (see `FlowTable::memory_regions`).
    pub fn memory_regions(&self) -> Vec<(usize, usize)> {
        self.flows.memory_regions()
    }

    /// Processes one frame in place. `frame` is the whole buffer (so an ICMP error can be built in
    /// it), `len` the bytes received, `now` a monotonic clock reading.
    pub fn process(
        &mut self,
        frame: &mut [u8],
        len: usize,
        ingress: Ingress,
        now: Duration,
    ) -> Verdict {
        let now_s = secs(now);
        let len = len.min(frame.len());
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += len as u64;
        if self.flows.expiry_due(now_s) {
            self.expire(now_s, EXPIRY_BUDGET_PER_PACKET);
        }
        if self.fast_path {
            if let Some(p) = packet::parse_plain(&frame[..len]) {
                return self.translate_plain(frame, &p, ingress, now);
            }
        }
        self.classify(frame, len, ingress, now)
    }

    /// A plain TCP/UDP packet (see [`packet::Plain`]) takes the established-flow fast path; one
    /// the fast path declines goes on to the full path without being parsed again.
    #[inline]
    fn translate_plain(
        &mut self,
        frame: &mut [u8],
        p: &packet::Plain,
        ingress: Ingress,
        now: Duration,
    ) -> Verdict {
        let inbound = match ingress {
            Ingress::Inside => false,
            Ingress::Outside => true,
            Ingress::OneArmed => self.external(p.dst).is_some(),
        };
        if inbound {
            if let Some(verdict) = self.established_inbound(frame, p, secs(now)) {
                return verdict;
            }
        } else if let Some(verdict) = self.established_outbound(frame, p, now) {
            return verdict;
        }
        self.declined_plain(frame, p, inbound, now)
    }

    /// The full path for a plain packet the fast path declined. Out of line, so that the fast
    /// path's own code stays small.
    #[cold]
    #[inline(never)]
    fn declined_plain(
        &mut self,
        frame: &mut [u8],
        p: &packet::Plain,
        inbound: bool,
        now: Duration,
    ) -> Verdict {
        let parsed = p.to_parsed();
        if inbound {
            self.inbound(frame, &parsed, now)
        } else {
            self.outbound(frame, &parsed, now)
        }
    }

    /// [`first_outbound`](Self::first_outbound) for a plain packet, out of line for the same
    /// reason. Hashing the key again here costs less than keeping it alive through the fast path.
    #[inline(never)]
    fn first_outbound_plain(
        &mut self,
        frame: &mut [u8],
        p: &packet::Plain,
        now: Duration,
    ) -> Verdict {
        let key = FlowKey::new(p.protocol, p.src, p.src_port, p.dst, p.dst_port);
        let hash = self.flows.hash(&key);
        self.first_outbound(frame, &p.to_parsed(), &key, hash, now)
    }

    /// The fast path for what nearly all traffic is: a plain packet of a flow this core already
    /// tracks, forwardable as it is (TTL > 1, within the MTU). Anything else returns `None`
    /// having changed nothing, for the full path. Every check here is one the full path makes
    /// too, in the same order where order matters, so both give the same verdict, bytes, flow
    /// state and counters (`tests::fast_path_matches_full_path`).
    ///
    /// An outbound packet that passes every check before the flow lookup and finds no flow is
    /// the first of a new flow: it goes straight to the full path's flow creation, without a
    /// second parse and lookup.
    #[inline]
    fn established_outbound(
        &mut self,
        frame: &mut [u8],
        p: &packet::Plain,
        now: Duration,
    ) -> Option<Verdict> {
        if p.ttl <= 1 || p.total_len > usize::from(self.config.outside_mtu) {
            return None;
        }
        if self.outbound_owner(p.protocol, p.src, p.src_port) != self.config.core {
            return None;
        }
        let key = FlowKey::new(p.protocol, p.src, p.src_port, p.dst, p.dst_port);
        let Some(slot) = self.flows.find_outbound(&key, self.flows.hash(&key)) else {
            return Some(self.first_outbound_plain(frame, p, now));
        };
        let now_s = secs(now);
        let flow = self.flows.get_mut(slot)?;
        let (ext_ip, ext_port, state) = (flow.external_ip(), flow.external_port(), flow.state);
        packet::rewrite_plain(frame, p, Endpoint::Source, ext_ip, ext_port)?;
        flow.last_seen = now_s;
        flow.packets_out = flow.packets_out.wrapping_add(1);
        flow.bytes_out += p.total_len as u64;
        if p.protocol == Protocol::Tcp {
            let next = next_tcp_state(state, Direction::Outbound, p.tcp_flags);
            if next != state {
                self.flows.set_state(slot, next);
            }
        }
        self.counters.outbound_packets += 1;
        self.counters.outbound_bytes += p.total_len as u64;
        Some(Verdict::Forward {
            side: Side::Outside,
            destination: p.dst,
            len: p.l3 + p.total_len,
        })
    }

    #[inline]
    fn established_inbound(
        &mut self,
        frame: &mut [u8],
        p: &packet::Plain,
        now_s: u32,
    ) -> Option<Verdict> {
        // `inbound_owner(port) == Some(core)`, without its division.
        if !self.own_ports.contains(&p.dst_port) {
            return None;
        }
        let key = FlowKey::new(p.protocol, p.dst, p.dst_port, p.src, p.src_port);
        let slot = self.flows.find_inbound(&key, self.flows.hash(&key))?;
        // The full path checks these after the lookup, which may create a flow (filtering):
        // only a flow that already exists gets here.
        if p.ttl <= 1 || p.total_len > usize::from(self.config.inside_mtu) {
            return None;
        }
        let flow = self.flows.get_mut(slot)?;
        let (pod_ip, pod_port, state) = (flow.pod_ip, flow.pod_port, flow.state);
        packet::rewrite_plain(frame, p, Endpoint::Destination, pod_ip, pod_port)?;
        flow.last_seen = now_s;
        flow.packets_in = flow.packets_in.wrapping_add(1);
        flow.bytes_in += p.total_len as u64;
        let next = match p.protocol {
            Protocol::Tcp => next_tcp_state(state, Direction::Inbound, p.tcp_flags),
            _ => FlowState::Replied,
        };
        if next != state {
            self.flows.set_state(slot, next);
        }
        self.counters.inbound_packets += 1;
        self.counters.inbound_bytes += p.total_len as u64;
        Some(Verdict::Forward {
            side: Side::Inside,
            destination: pod_ip,
            len: p.l3 + p.total_len,
        })
    }

    fn classify(
        &mut self,
        frame: &mut [u8],
        len: usize,
        ingress: Ingress,
        now: Duration,
    ) -> Verdict {
        let parsed = match packet::parse(&frame[..len]) {
            Ok(p) => p,
            Err(reason) => return self.drop(reason),
        };
        let inbound = match ingress {
            Ingress::Inside => false,
            Ingress::Outside => true,
            Ingress::OneArmed => self.external(parsed.dst).is_some(),
        };
        if inbound {
            self.inbound(frame, &parsed, now)
        } else {
            self.outbound(frame, &parsed, now)
        }
    }

    /// Emits stashed fragments whose first fragment has now been seen. Call after a batch; `emit`
    /// receives the frame bytes and the verdict for each (copy them into a TX frame).
    pub fn release_fragments(&mut self, now: Duration, mut emit: impl FnMut(&[u8], Verdict)) {
        while let Some((index, mut bytes, len)) = self.fragments.take_ready() {
            let ingress = match packet::parse(&bytes[..len]) {
                Ok(p) if self.external(p.dst).is_some() => Ingress::Outside,
                _ => Ingress::Inside,
            };
            let verdict = self.classify(&mut bytes, len, ingress, now);
            match verdict {
                Verdict::Forward { len, .. } => emit(&bytes[..len], verdict),
                Verdict::Handoff { .. } => emit(&bytes[..len], verdict),
                Verdict::Drop(_) | Verdict::Stashed => {}
            }
            self.fragments.restore(index, bytes);
        }
    }

    fn outbound(&mut self, frame: &mut [u8], p: &Parsed, now: Duration) -> Verdict {
        if let Transport::LaterFragment = p.transport {
            return self.later_fragment(frame, p, now);
        }
        if let Some(v) = self.check_forwardable(
            frame,
            p,
            self.config.outside_mtu,
            self.config.inside_address,
            Side::Inside,
            now,
        ) {
            return v;
        }
        match p.transport {
            Transport::Tcp { .. }
            | Transport::Udp { .. }
            | Transport::IcmpEcho { request: true, .. } => self.outbound_flow(frame, p, now),
            Transport::IcmpEcho { request: false, .. } => self.drop(DropReason::NoFlow),
            Transport::IcmpError(q) => self.outbound_icmp_error(frame, p, &q),
            Transport::LaterFragment => self.drop(DropReason::BadIpv4Header),
        }
    }

    /// TTL and MTU checks before forwarding. Returns a verdict if the packet cannot be forwarded:
    /// an ICMP error built in place (sent back out of `back`) or a drop.
    #[inline]
    fn check_forwardable(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        egress_mtu: u16,
        error_source: Ipv4Addr,
        back: Side,
        now: Duration,
    ) -> Option<Verdict> {
        if p.ttl <= 1 {
            return Some(self.icmp_error(
                frame,
                p,
                ICMP_TIME_EXCEEDED,
                0,
                0,
                error_source,
                back,
                DropReason::TtlExceeded,
                now,
            ));
        }
        if p.total_len > usize::from(egress_mtu) {
            if p.frag.dont_fragment {
                return Some(self.icmp_error(
                    frame,
                    p,
                    ICMP_DEST_UNREACHABLE,
                    ICMP_CODE_FRAG_NEEDED,
                    egress_mtu,
                    error_source,
                    back,
                    DropReason::FragmentationNeeded,
                    now,
                ));
            }
            return Some(self.drop(DropReason::TooBigToForward));
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn icmp_error(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        icmp_type: u8,
        code: u8,
        mtu: u16,
        from: Ipv4Addr,
        back: Side,
        reason: DropReason,
        now: Duration,
    ) -> Verdict {
        self.counters.drops.record(reason);
        // RFC 1812 4.3.2.7: never an ICMP error about an ICMP error or a later fragment.
        if matches!(
            p.transport,
            Transport::IcmpError(_) | Transport::LaterFragment
        ) || from.is_unspecified()
        {
            return Verdict::Drop(reason);
        }
        if !self.icmp_limit.allow(millis(now)) {
            self.counters.icmp_errors_rate_limited += 1;
            return Verdict::Drop(reason);
        }
        match packet::build_icmp_error_in_place(frame, p, icmp_type, code, mtu, from) {
            Some(len) => {
                self.counters.icmp_errors_sent += 1;
                Verdict::Forward {
                    side: back,
                    destination: p.src,
                    len,
                }
            }
            None => Verdict::Drop(reason),
        }
    }

    fn outbound_flow(&mut self, frame: &mut [u8], p: &Parsed, now: Duration) -> Verdict {
        let Some(protocol) = Protocol::from_number(p.protocol) else {
            return self.drop(DropReason::UnsupportedProtocol);
        };
        let Some((src_port, dst_port)) = p.ports() else {
            return self.drop(DropReason::BadTransportHeader);
        };
        let owner = self.outbound_owner(protocol, p.src, src_port);
        if owner != self.config.core {
            return self.hand_off(p, owner, now);
        }
        let key = FlowKey::new(protocol, p.src, src_port, p.dst, dst_port);
        let hash = self.flows.hash(&key);
        match self.flows.find_outbound(&key, hash) {
            Some(slot) => self.forward_outbound(frame, p, slot, now),
            None => self.first_outbound(frame, p, &key, hash, now),
        }
    }

    /// The first packet of a pod endpoint → remote endpoint pair (no flow yet): bypass, deny or
    /// create the flow, per the route table.
    fn first_outbound(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        key: &FlowKey,
        hash: u64,
        now: Duration,
    ) -> Verdict {
        let slot = match self.table.lookup(p.src, p.dst) {
            Decision::Bypass => return self.bypass(frame, p, now),
            Decision::Deny(_) => {
                let reason = if self.table.source_has_policy(p.src) {
                    DropReason::Denied
                } else {
                    DropReason::NoPolicy
                };
                return self.drop(reason);
            }
            Decision::Snat(pool) => match self.new_outbound_flow(p, key, hash, pool, secs(now)) {
                Ok(slot) => slot,
                Err(reason) => return self.drop(reason),
            },
        };
        self.forward_outbound(frame, p, slot, now)
    }

    fn forward_outbound(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        slot: u32,
        now: Duration,
    ) -> Verdict {
        let now_s = secs(now);
        let Some(flow) = self.flows.get_mut(slot) else {
            return self.drop(DropReason::NoFlow);
        };
        flow.last_seen = now_s;
        flow.packets_out = flow.packets_out.wrapping_add(1);
        flow.bytes_out += p.total_len as u64;
        let (ext_ip, ext_port, state) = (flow.external_ip(), flow.external_port(), flow.state);
        if let Transport::Tcp { flags, .. } = p.transport {
            let next = next_tcp_state(state, Direction::Outbound, flags);
            self.flows.set_state(slot, next);
        }
        packet::rewrite_endpoint_and_decrement_ttl(
            frame,
            p,
            Endpoint::Source,
            ext_ip,
            Some(ext_port),
        );
        if p.frag.more_fragments {
            self.record_fragment(p, FragmentAction::TranslateSource(ext_ip), now);
        }
        self.counters.outbound_packets += 1;
        self.counters.outbound_bytes += p.total_len as u64;
        Verdict::Forward {
            side: Side::Outside,
            destination: p.dst,
            len: p.frame_len(),
        }
    }

    fn bypass(&mut self, frame: &mut [u8], p: &Parsed, now: Duration) -> Verdict {
        packet::decrement_ttl(frame, p);
        if p.frag.more_fragments {
            self.record_fragment(p, FragmentAction::Forward, now);
        }
        self.counters.bypassed_packets += 1;
        Verdict::Forward {
            side: Side::Outside,
            destination: p.dst,
            len: p.frame_len(),
        }
    }

    fn hand_off(&mut self, p: &Parsed, owner: u16, now: Duration) -> Verdict {
        if p.frag.more_fragments {
            // This core will receive the datagram's later fragments (RSS hashes fragments on
            // addresses only): remember where to send them.
            self.record_fragment(p, FragmentAction::HandOff(owner), now);
        }
        self.counters.handoffs += 1;
        Verdict::Handoff { core: owner }
    }

    fn record_fragment(&mut self, p: &Parsed, action: FragmentAction, now: Duration) {
        let datagram = DatagramId {
            src: p.src,
            dst: p.dst,
            protocol: p.protocol,
            id: p.frag.id,
        };
        self.fragments.record(datagram, action, millis(now));
    }

    /// Creates the flow for the first packet of a pod endpoint → remote endpoint pair.
    fn new_outbound_flow(
        &mut self,
        p: &Parsed,
        key: &FlowKey,
        hash: u64,
        pool_id: egw_policy::PoolId,
        now_s: u32,
    ) -> Result<u32, DropReason> {
        let protocol = key.protocol;
        let initial_state = match p.transport {
            Transport::Tcp { flags, .. } if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 => {
                FlowState::SynSent
            }
            Transport::Tcp { .. } => return Err(DropReason::TcpNotSyn),
            _ => FlowState::Unreplied,
        };
        let table = Arc::clone(&self.table);
        let Some(pool) = table.get_pool(pool_id) else {
            return Err(DropReason::NoExternalAddress);
        };
        let exclusive = protocol == Protocol::Udp
            && self.config.udp_filtering != Filtering::AddressAndPortDependent;

        // RFC 4787 REQ-1 / RFC 5382 REQ-1: reuse the pod endpoint's existing external endpoint
        // when it belongs to the pool the table now selects and is free towards this remote.
        let mut lease = self.reuse_endpoint_mapping(key, pool.addresses());
        if lease.is_none() {
            let draining = &self.draining;
            let address = pool
                .select(key.local_ip, hash, |a| !draining.contains(&a))
                .ok_or(DropReason::NoExternalAddress)?;
            let ext = Rc::clone(
                self.external(address)
                    .ok_or(DropReason::NoExternalAddress)?,
            );
            lease = ext.lease_free_port(protocol);
            if lease.is_none() && !exclusive {
                lease = self.share_port(&ext, key);
            }
        }
        let lease = lease.ok_or(DropReason::PortsExhausted)?;

        let insert = |flows: &mut FlowTable, lease: PortLease| {
            flows.insert(
                protocol,
                (key.local_ip, key.local_port),
                (key.remote_ip, key.remote_port),
                lease,
                initial_state,
                now_s,
                exclusive,
            )
        };
        self.make_room(now_s);
        let slot = insert(&mut self.flows, lease)
            .map_err(|InsertError::TableFull| DropReason::TableFull)?;
        self.counters.flows_created += 1;
        self.record_created(slot, now_s);
        Ok(slot)
    }

    /// Before inserting into a full table: expire what is due, then (if enabled) early-drop one
    /// flow that never got an answer. Established and replied flows are never evicted.
    fn make_room(&mut self, now_s: u32) {
        if self.flows.len() < self.flows.capacity() {
            return;
        }
        self.expire(now_s, EXPIRY_BUDGET_WHEN_FULL);
        if self.flows.len() < self.flows.capacity() || !self.config.early_drop_unreplied {
            return;
        }
        if let Some(flow) = self.flows.evict_unreplied(EARLY_DROP_PROBES) {
            self.counters.flows_early_dropped += 1;
            if let Some(events) = self.events.as_mut() {
                if events.len() < self.event_capacity {
                    events.push(FlowEvent::Removed {
                        flow: flow_info(self.config.core, &flow, now_s),
                        reason: "early_drop",
                    });
                } else {
                    self.events_dropped += 1;
                }
            }
        }
    }

    fn reuse_endpoint_mapping(
        &self,
        key: &FlowKey,
        pool_addresses: &[Ipv4Addr],
    ) -> Option<PortLease> {
        let head = self
            .flows
            .find_endpoint(key.protocol, key.local_ip, key.local_port)?;
        let flow = self.flows.get(head)?;
        let ext_ip = flow.external_ip();
        if flow.lease.external().draining() || !pool_addresses.contains(&ext_ip) {
            return None;
        }
        let inbound = FlowKey::new(
            key.protocol,
            ext_ip,
            flow.external_port(),
            key.remote_ip,
            key.remote_port,
        );
        if self
            .flows
            .find_inbound(&inbound, self.flows.hash(&inbound))
            .is_some()
        {
            return None;
        }
        flow.lease.share()
    }

    /// Every port of this core's block is leased: find one whose holders all talk to other remote
    /// endpoints, so (external address, port, protocol, remote) stays unique.
    fn share_port(&mut self, ext: &Rc<ExternalAddress>, key: &FlowKey) -> Option<PortLease> {
        for _ in 0..SHARE_PROBES {
            self.probe_state ^= self.probe_state << 13;
            self.probe_state ^= self.probe_state >> 7;
            self.probe_state ^= self.probe_state << 17;
            let port = ext.nth_port(key.protocol, self.probe_state);
            if !ext.shareable(key.protocol, port) {
                continue;
            }
            let inbound = FlowKey::new(
                key.protocol,
                ext.address(),
                port,
                key.remote_ip,
                key.remote_port,
            );
            if self
                .flows
                .find_inbound(&inbound, self.flows.hash(&inbound))
                .is_none()
            {
                return ext.share_port(key.protocol, port);
            }
        }
        None
    }

    /// A pod sends an ICMP error about a packet it received from the internet (e.g. port
    /// unreachable): translate the outer source and the quoted destination back to the external
    /// endpoint (RFC 5508 REQ-3 in the outbound direction).
    fn outbound_icmp_error(&mut self, frame: &mut [u8], p: &Parsed, q: &IcmpErrorQuote) -> Verdict {
        let owner = self.outbound_owner(q.protocol, q.dst, q.dst_port);
        if owner != self.config.core {
            self.counters.handoffs += 1;
            return Verdict::Handoff { core: owner };
        }
        let (pod_port, remote_port) = match q.protocol {
            Protocol::Icmp => (q.src_port, 0),
            _ => (q.dst_port, q.src_port),
        };
        let key = FlowKey::new(q.protocol, q.dst, pod_port, q.src, remote_port);
        let Some(flow) = self
            .flows
            .find_outbound(&key, self.flows.hash(&key))
            .and_then(|s| self.flows.get(s))
        else {
            return self.drop(DropReason::NoFlow);
        };
        let (ext_ip, ext_port) = (flow.external_ip(), flow.external_port());
        packet::rewrite_quoted_endpoint(frame, p, q, Endpoint::Destination, ext_ip, ext_port);
        packet::rewrite_endpoint_and_decrement_ttl(frame, p, Endpoint::Source, ext_ip, None);
        self.counters.icmp_errors_translated += 1;
        Verdict::Forward {
            side: Side::Outside,
            destination: p.dst,
            len: p.frame_len(),
        }
    }

    fn inbound(&mut self, frame: &mut [u8], p: &Parsed, now: Duration) -> Verdict {
        match p.transport {
            Transport::LaterFragment => self.later_fragment(frame, p, now),
            Transport::Tcp { .. }
            | Transport::Udp { .. }
            | Transport::IcmpEcho { request: false, .. } => self.inbound_flow(frame, p, now),
            // An echo request to an external address is unsolicited.
            Transport::IcmpEcho { request: true, .. } => self.drop(self.unsolicited(p.dst)),
            Transport::IcmpError(q) => self.inbound_icmp_error(frame, p, &q),
        }
    }

    fn unsolicited(&self, dst: Ipv4Addr) -> DropReason {
        if self.external(dst).is_some() {
            DropReason::NoFlow
        } else {
            DropReason::NotForGateway
        }
    }

    fn inbound_flow(&mut self, frame: &mut [u8], p: &Parsed, now: Duration) -> Verdict {
        let now_s = secs(now);
        let Some(protocol) = Protocol::from_number(p.protocol) else {
            return self.drop(DropReason::UnsupportedProtocol);
        };
        let Some((src_port, dst_port)) = p.ports() else {
            return self.drop(DropReason::BadTransportHeader);
        };
        // For an echo reply, the id is the external "port" and the remote has none.
        let (ext_port, remote_port) = match protocol {
            Protocol::Icmp => (src_port, 0),
            _ => (dst_port, src_port),
        };
        let Some(owner) = self.inbound_owner(ext_port) else {
            return self.drop(self.unsolicited(p.dst));
        };
        if owner != self.config.core {
            return self.hand_off(p, owner, now);
        }
        let key = FlowKey::new(protocol, p.dst, ext_port, p.src, remote_port);
        let slot = match self.flows.find_inbound(&key, self.flows.hash(&key)) {
            Some(slot) => slot,
            None => match self.filtered_inbound_flow(&key, now_s) {
                Some(slot) => slot,
                None => return self.drop(self.unsolicited(p.dst)),
            },
        };
        if let Some(v) =
            self.check_forwardable(frame, p, self.config.inside_mtu, p.dst, Side::Outside, now)
        {
            return v;
        }
        let Some(flow) = self.flows.get_mut(slot) else {
            return self.drop(DropReason::NoFlow);
        };
        flow.last_seen = now_s;
        flow.packets_in = flow.packets_in.wrapping_add(1);
        flow.bytes_in += p.total_len as u64;
        let (pod_ip, pod_port, state) = (flow.pod_ip, flow.pod_port, flow.state);
        let next = match p.transport {
            Transport::Tcp { flags, .. } => next_tcp_state(state, Direction::Inbound, flags),
            _ => FlowState::Replied,
        };
        self.flows.set_state(slot, next);
        packet::rewrite_endpoint_and_decrement_ttl(
            frame,
            p,
            Endpoint::Destination,
            pod_ip,
            Some(pod_port),
        );
        if p.frag.more_fragments {
            self.record_fragment(p, FragmentAction::TranslateDestination(pod_ip), now);
        }
        self.counters.inbound_packets += 1;
        self.counters.inbound_bytes += p.total_len as u64;
        Verdict::Forward {
            side: Side::Inside,
            destination: pod_ip,
            len: p.frame_len(),
        }
    }

    /// RFC 4787 REQ-8 (endpoint-independent) and address-dependent filtering: a UDP packet from a
    /// new remote to a mapped external endpoint opens a flow to the pod endpoint that owns it.
    fn filtered_inbound_flow(&mut self, key: &FlowKey, now_s: u32) -> Option<u32> {
        if key.protocol != Protocol::Udp
            || self.config.udp_filtering == Filtering::AddressAndPortDependent
        {
            return None;
        }
        let owner_slot = self
            .flows
            .find_mapping(Protocol::Udp, key.local_ip, key.local_port)?;
        if self.config.udp_filtering == Filtering::AddressDependent {
            let known_remote = self
                .flows
                .endpoint_flows(owner_slot)
                .chain(std::iter::once(owner_slot))
                .any(|s| {
                    self.flows
                        .get(s)
                        .is_some_and(|f| f.remote_ip == key.remote_ip)
                });
            if !known_remote {
                return None;
            }
        }
        let owner = self.flows.get(owner_slot)?;
        let (pod_ip, pod_port) = (owner.pod_ip, owner.pod_port);
        let lease = owner.lease.share()?;
        self.make_room(now_s);
        let slot = self
            .flows
            .insert(
                Protocol::Udp,
                (pod_ip, pod_port),
                (key.remote_ip, key.remote_port),
                lease,
                FlowState::Replied,
                now_s,
                true,
            )
            .ok()?;
        self.counters.flows_created += 1;
        self.record_created(slot, now_s);
        Some(slot)
    }

    /// An ICMP error from the internet about a packet we translated (RFC 5508 REQ-3): the quote is
    /// (external endpoint → remote endpoint). Translate the outer destination and the quoted
    /// source back to the pod endpoint, so PMTU discovery and traceroute work through the gateway.
    fn inbound_icmp_error(&mut self, frame: &mut [u8], p: &Parsed, q: &IcmpErrorQuote) -> Verdict {
        let Some(owner) = self.inbound_owner(q.src_port) else {
            return self.drop(self.unsolicited(p.dst));
        };
        if owner != self.config.core {
            self.counters.handoffs += 1;
            return Verdict::Handoff { core: owner };
        }
        let remote_port = if q.protocol == Protocol::Icmp {
            0
        } else {
            q.dst_port
        };
        let key = FlowKey::new(q.protocol, q.src, q.src_port, q.dst, remote_port);
        let Some(flow) = self
            .flows
            .find_inbound(&key, self.flows.hash(&key))
            .and_then(|s| self.flows.get(s))
        else {
            return self.drop(self.unsolicited(p.dst));
        };
        let (pod_ip, pod_port) = (flow.pod_ip, flow.pod_port);
        if p.ttl <= 1 {
            return self.drop(DropReason::TtlExceeded);
        }
        packet::rewrite_quoted_endpoint(frame, p, q, Endpoint::Source, pod_ip, pod_port);
        packet::rewrite_endpoint_and_decrement_ttl(frame, p, Endpoint::Destination, pod_ip, None);
        self.counters.icmp_errors_translated += 1;
        Verdict::Forward {
            side: Side::Inside,
            destination: pod_ip,
            len: p.frame_len(),
        }
    }

    /// A fragment without transport header: apply its datagram's recorded translation, or stash it
    /// until the first fragment arrives (RFC 4787 REQ-14).
    fn later_fragment(&mut self, frame: &mut [u8], p: &Parsed, now: Duration) -> Verdict {
        let datagram = DatagramId {
            src: p.src,
            dst: p.dst,
            protocol: p.protocol,
            id: p.frag.id,
        };
        let Some(action) = self.fragments.lookup(&datagram, millis(now)) else {
            return match self
                .fragments
                .stash(datagram, &frame[..p.frame_len()], millis(now))
            {
                StashResult::Stashed => {
                    self.counters.fragments_stashed += 1;
                    Verdict::Stashed
                }
                StashResult::Full | StashResult::TooLarge => {
                    self.drop(DropReason::FragmentTableFull)
                }
            };
        };
        if p.ttl <= 1 {
            return self.drop(DropReason::TtlExceeded);
        }
        let (side, destination) = match action {
            FragmentAction::HandOff(core) => {
                self.counters.handoffs += 1;
                return Verdict::Handoff { core };
            }
            FragmentAction::TranslateSource(ext_ip) => {
                packet::rewrite_endpoint(frame, p, Endpoint::Source, ext_ip, None);
                self.counters.outbound_packets += 1;
                self.counters.outbound_bytes += p.total_len as u64;
                (Side::Outside, p.dst)
            }
            FragmentAction::TranslateDestination(pod_ip) => {
                packet::rewrite_endpoint(frame, p, Endpoint::Destination, pod_ip, None);
                self.counters.inbound_packets += 1;
                self.counters.inbound_bytes += p.total_len as u64;
                (Side::Inside, pod_ip)
            }
            FragmentAction::Forward => {
                self.counters.bypassed_packets += 1;
                (Side::Outside, p.dst)
            }
        };
        let egress_mtu = if side == Side::Outside {
            self.config.outside_mtu
        } else {
            self.config.inside_mtu
        };
        if p.total_len > usize::from(egress_mtu) {
            return self.drop(DropReason::TooBigToForward);
        }
        packet::decrement_ttl(frame, p);
        Verdict::Forward {
            side,
            destination,
            len: p.frame_len(),
        }
    }
}

fn flow_info(core: u16, f: &Flow, now_s: u32) -> FlowInfo {
    FlowInfo {
        core,
        protocol: f.protocol,
        pod: (f.pod_ip, f.pod_port),
        external: (f.external_ip(), f.external_port()),
        remote: (f.remote_ip, f.remote_port),
        state: f.state,
        age_secs: now_s.saturating_sub(f.created),
        idle_secs: now_s.saturating_sub(f.last_seen),
        packets_out: u64::from(f.packets_out),
        packets_in: u64::from(f.packets_in),
        bytes_out: f.bytes_out,
        bytes_in: f.bytes_in,
    }
}

#[inline]
fn secs(now: Duration) -> u32 {
    now.as_secs() as u32
}

#[inline]
fn millis(now: Duration) -> u64 {
    now.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use egw_policy::{ActionSpec, PolicySpec, PoolSpec, RouteTableSpec, RuleSpec, SourceSpec};
    use egw_testkit::{Decoded, PacketBuilder, TcpFlags, L4};
    use proptest::prelude::*;

    const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
    const EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const NOW: Duration = Duration::from_secs(100);

    fn table() -> Arc<RouteTable> {
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
        Arc::new(RouteTable::compile(spec).expect("table compiles"))
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
}
