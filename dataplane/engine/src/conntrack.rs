//! Per-core connection tracking: a bounded flow table with O(1) lookups in both directions and
//! O(1) amortized expiry.
//!
//! Layout (chosen for memory per session and cache misses per packet):
//! - a slab of [`Flow`]s, fixed capacity, slots recycled through a free list;
//! - open-addressing indices of 8-byte buckets `(hash tag, slot)` with linear probing and
//!   backward-shift deletion (no tombstones): `outbound` (pod-side 5-tuple), `inbound`
//!   (external-side 5-tuple), `endpoint` (pod ip:port → its flows, for endpoint-independent
//!   mapping) and `mapping` (external ip:port → the endpoint that owns it, for
//!   endpoint-independent / address-dependent filtering);
//! - a single-level timer wheel of one-second slots. A packet only refreshes `last_seen`; the
//!   wheel re-examines a flow when its deadline comes and either expires it or re-files it. Flows
//!   whose timeout shrinks (FIN, RST) are moved at once.
//!
//! Established flows are never evicted to make room: a full table drops new flows (counted).
#![expect(
    clippy::indexing_slicing,
    reason = "slots, buckets and wheel entries are indexed by numbers the table itself issued (slot ids below capacity) or masked to a power-of-two length; converting these hot-path lookups to `.get()` needs the pipeline benchmark to show no cost"
)]

use std::net::Ipv4Addr;

use crate::packet::{Protocol, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::ports::PortLease;

const NONE: u32 = u32::MAX;

/// Idle timeouts, in seconds. The defaults are the RFC minimums or recommendations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// RFC 5382 REQ-5: established TCP idle timeout, at least 2 h 4 min.
    pub tcp_established: u32,
    /// RFC 5382 REQ-5: partially open or closing TCP, at least 4 min.
    pub tcp_transitory: u32,
    /// RFC 4787 REQ-5: UDP mapping timeout, at least 2 min, 5 min recommended.
    pub udp: u32,
    /// RFC 5508 REQ-1: ICMP query timeout, at least 60 s.
    pub icmp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_established: 7440,
            tcp_transitory: 240,
            udp: 300,
            icmp: 60,
        }
    }
}

impl Timeouts {
    /// Checks the RFC lower bounds and that every timeout fits the timer wheel.
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            (
                "tcp_established",
                self.tcp_established,
                7440,
                "RFC 5382 REQ-5",
            ),
            ("tcp_transitory", self.tcp_transitory, 240, "RFC 5382 REQ-5"),
            ("udp", self.udp, 120, "RFC 4787 REQ-5"),
            ("icmp", self.icmp, 60, "RFC 5508 REQ-1"),
        ];
        for (name, value, minimum, rfc) in checks {
            if value < minimum {
                return Err(format!(
                    "{name} timeout {value}s is below the {minimum}s minimum of {rfc}"
                ));
            }
            if value >= WHEEL_SLOTS as u32 / 2 {
                return Err(format!(
                    "{name} timeout {value}s exceeds the maximum of {}s",
                    WHEEL_SLOTS / 2 - 1
                ));
            }
        }
        Ok(())
    }
}

/// Connection state. TCP follows the RFC 5382 life cycle; UDP and ICMP only note whether the
/// remote side has answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FlowState {
    /// UDP/ICMP: only outbound packets seen so far.
    Unreplied,
    /// UDP/ICMP: the remote side answered.
    Replied,
    /// TCP: outbound SYN seen.
    SynSent,
    /// TCP: inbound SYN+ACK seen.
    SynReceived,
    Established,
    /// TCP: FIN seen from the pod.
    FinOutbound,
    /// TCP: FIN seen from the remote.
    FinInbound,
    /// TCP: FIN seen from both sides (TIME-WAIT on the endpoints).
    Closing,
    /// TCP: RST seen. RFC 7857 section 2.2: keep the session for the transitory timeout.
    Reset,
}

impl FlowState {
    pub const ALL: [FlowState; 9] = [
        FlowState::Unreplied,
        FlowState::Replied,
        FlowState::SynSent,
        FlowState::SynReceived,
        FlowState::Established,
        FlowState::FinOutbound,
        FlowState::FinInbound,
        FlowState::Closing,
        FlowState::Reset,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Unreplied => "unreplied",
            Self::Replied => "replied",
            Self::SynSent => "syn_sent",
            Self::SynReceived => "syn_received",
            Self::Established => "established",
            Self::FinOutbound => "fin_outbound",
            Self::FinInbound => "fin_inbound",
            Self::Closing => "closing",
            Self::Reset => "reset",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    fn timeout(self, protocol: Protocol, t: &Timeouts) -> u32 {
        match (protocol, self) {
            (Protocol::Tcp, FlowState::Established) => t.tcp_established,
            (Protocol::Tcp, _) => t.tcp_transitory,
            (Protocol::Udp, _) => t.udp,
            (Protocol::Icmp, _) => t.icmp,
        }
    }
}

/// Direction of a packet relative to the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

/// Next TCP state after a segment with `flags` in `direction` (RFC 5382 section 5 life cycle,
/// RFC 7857 section 2.2 for RST).
pub fn next_tcp_state(state: FlowState, direction: Direction, flags: u8) -> FlowState {
    use Direction::*;
    use FlowState::*;
    if flags & TCP_RST != 0 {
        return Reset;
    }
    let syn = flags & TCP_SYN != 0;
    let ack = flags & TCP_ACK != 0;
    let fin = flags & TCP_FIN != 0;
    match (state, direction) {
        // A fresh SYN from the pod on a closed/reset flow reuses the mapping for a new connection.
        (Reset | Closing, Outbound) if syn && !ack => SynSent,
        (SynSent, Inbound) if syn && ack => SynReceived,
        // Simultaneous open.
        (SynSent, Inbound) if syn => SynReceived,
        (SynReceived, Outbound) if ack && !syn => {
            if fin {
                FinOutbound
            } else {
                Established
            }
        }
        (Established, Outbound) if fin => FinOutbound,
        (Established, Inbound) if fin => FinInbound,
        (FinOutbound, Inbound) if fin => Closing,
        (FinInbound, Outbound) if fin => Closing,
        (s, _) => s,
    }
}

/// One tracked flow: a pod endpoint talking to a remote endpoint through an external endpoint.
///
/// 80 bytes, so every flow spans exactly two cache lines wherever it lies. The layout is fixed
/// (`repr(C)`) with the fields a packet reads and writes first and the list links last:
/// [`FlowTable::touch_flow`] loads the first and the last field to bring in both lines.
#[derive(Debug)]
#[repr(C)]
pub struct Flow {
    pub pod_ip: Ipv4Addr,
    pub remote_ip: Ipv4Addr,
    pub pod_port: u16,
    pub remote_port: u16,
    pub protocol: Protocol,
    pub state: FlowState,
    /// Wheel bucket the flow is filed in (deadline modulo the wheel span).
    wheel_bucket: u16,
    /// Seconds on the engine clock.
    pub created: u32,
    pub last_seen: u32,
    pub packets_out: u32,
    pub packets_in: u32,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// The external address and port; returned when the flow is dropped.
    pub lease: PortLease,
    wheel_prev: u32,
    wheel_next: u32,
    endpoint_prev: u32,
    endpoint_next: u32,
}

impl Flow {
    pub fn external_ip(&self) -> Ipv4Addr {
        self.lease.address()
    }

    pub fn external_port(&self) -> u16 {
        self.lease.port()
    }

    fn outbound_key(&self) -> FlowKey {
        FlowKey::new(
            self.protocol,
            self.pod_ip,
            self.pod_port,
            self.remote_ip,
            self.remote_port,
        )
    }

    fn inbound_key(&self) -> FlowKey {
        FlowKey::new(
            self.protocol,
            self.external_ip(),
            self.external_port(),
            self.remote_ip,
            self.remote_port,
        )
    }
}

/// A 5-tuple as seen from one side: `local` is the pod endpoint (outbound key) or the external
/// endpoint (inbound key); `remote` is the internet endpoint. ICMP echo uses the id as the local
/// port and 0 as the remote port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub protocol: Protocol,
    pub local_ip: Ipv4Addr,
    pub local_port: u16,
    pub remote_ip: Ipv4Addr,
    pub remote_port: u16,
}

impl FlowKey {
    pub fn new(
        protocol: Protocol,
        local_ip: Ipv4Addr,
        local_port: u16,
        remote_ip: Ipv4Addr,
        remote_port: u16,
    ) -> Self {
        Self {
            protocol,
            local_ip,
            local_port,
            remote_ip,
            remote_port,
        }
    }
}

/// Seeded hashing of keys. A folded 64×64→128 multiply (the wyhash/foldhash mixing step): fast,
/// well mixed, and the per-process seed keeps remote hosts from aiming collisions at one bucket.
#[derive(Clone, Copy, Debug)]
pub struct KeyHasher {
    seed: [u64; 2],
}

#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

impl KeyHasher {
    pub fn new(seed: u64) -> Self {
        Self {
            seed: [
                seed ^ 0x243f_6a88_85a3_08d3,
                seed.rotate_left(32) ^ 0x1319_8a2e_0370_7344,
            ],
        }
    }

    #[inline]
    fn mix(&self, a: u64, b: u64) -> u64 {
        fold_mul(a ^ self.seed[0], b ^ self.seed[1])
    }

    #[inline]
    pub fn flow(&self, k: &FlowKey) -> u64 {
        let a = (u64::from(u32::from(k.local_ip)) << 32) | u64::from(u32::from(k.remote_ip));
        let b = (u64::from(k.protocol.number()) << 32)
            | (u64::from(k.local_port) << 16)
            | u64::from(k.remote_port);
        self.mix(a, b)
    }

    #[inline]
    fn endpoint(&self, protocol: Protocol, ip: Ipv4Addr, port: u16) -> u64 {
        self.mix(
            u64::from(u32::from(ip)),
            (u64::from(protocol.number()) << 16) | u64::from(port) | 1 << 40,
        )
    }
}

/// A bucket packed in a `u64`: the high half is the tag (0 = empty; otherwise the high 32 bits of
/// the key hash, 0 mapped to 1), the low half the slab slot. All-zero means empty, so a fresh
/// index is a zeroed allocation the kernel maps lazily (and can back with huge pages).
#[derive(Clone, Copy)]
struct Bucket(u64);

impl Bucket {
    #[inline]
    fn new(tag: u32, slot: u32) -> Self {
        Self((u64::from(tag) << 32) | u64::from(slot))
    }
    #[inline]
    fn tag(self) -> u32 {
        (self.0 >> 32) as u32
    }
    #[inline]
    fn slot(self) -> u32 {
        self.0 as u32
    }
}

/// Where a lookup starts: an index and a bucket position in it (see
/// [`FlowTable::home_bucket`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HomeBucket {
    direction: Direction,
    index: usize,
}

impl HomeBucket {
    /// A position no index has: touching it loads nothing.
    pub const NONE: HomeBucket = HomeBucket {
        direction: Direction::Outbound,
        index: usize::MAX,
    };
}

/// An open-addressing index from a key hash to a slab slot. Keys live in the slab; the index
/// stores only the hash tag, so equality is decided by the caller's `matches(slot)`.
///
/// Sized to exactly `capacity / 0.75` buckets (no power-of-two rounding, which could double the
/// memory): the home bucket is found by "fast range" reduction, `(tag * buckets) >> 32`.
struct Index {
    buckets: Vec<u64>,
}

impl Index {
    fn with_capacity(entries: usize) -> Self {
        let buckets = (entries.max(6) * 4).div_ceil(3);
        Self {
            buckets: vec![0u64; buckets],
        }
    }

    #[inline]
    fn tag(hash: u64) -> u32 {
        match (hash >> 32) as u32 {
            0 => 1,
            t => t,
        }
    }

    #[inline]
    fn home(&self, tag: u32) -> usize {
        ((u64::from(tag) * self.buckets.len() as u64) >> 32) as usize
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.buckets.len() {
            0
        } else {
            i + 1
        }
    }

    #[inline]
    fn find(&self, hash: u64, mut matches: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = Self::tag(hash);
        let mut i = self.home(tag);
        loop {
            let b = Bucket(self.buckets[i]);
            if b.tag() == 0 {
                return None;
            }
            if b.tag() == tag && matches(b.slot()) {
                return Some(b.slot());
            }
            i = self.next(i);
        }
    }

    fn insert(&mut self, hash: u64, slot: u32) {
        let tag = Self::tag(hash);
        let mut i = self.home(tag);
        while Bucket(self.buckets[i]).tag() != 0 {
            i = self.next(i);
        }
        self.buckets[i] = Bucket::new(tag, slot).0;
    }

    fn position(&self, hash: u64, slot: u32) -> Option<usize> {
        let tag = Self::tag(hash);
        let mut i = self.home(tag);
        loop {
            let b = Bucket(self.buckets[i]);
            if b.tag() == 0 {
                return None;
            }
            if b.tag() == tag && b.slot() == slot {
                return Some(i);
            }
            i = self.next(i);
        }
    }

    /// Points the entry for (`hash`, `old`) at `new`.
    fn repoint(&mut self, hash: u64, old: u32, new: u32) {
        if let Some(i) = self.position(hash, old) {
            self.buckets[i] = Bucket::new(Bucket(self.buckets[i]).tag(), new).0;
        }
    }

    fn remove(&mut self, hash: u64, slot: u32) {
        let Some(mut hole) = self.position(hash, slot) else {
            return;
        };
        let n = self.buckets.len();
        // Backward-shift deletion: pull later entries of the same probe run into the hole.
        let mut i = self.next(hole);
        loop {
            let b = self.buckets[i];
            if Bucket(b).tag() == 0 {
                break;
            }
            let home = self.home(Bucket(b).tag());
            // Move `b` into the hole unless its home lies cyclically within (hole, i].
            let distance_to_i = (i + n - home) % n;
            let distance_to_hole = (i + n - hole) % n;
            if distance_to_i >= distance_to_hole {
                self.buckets[hole] = b;
                hole = i;
            }
            i = self.next(i);
        }
        self.buckets[hole] = 0;
    }

    /// The home bucket of `hash`: where a lookup starts.
    #[inline]
    fn home_of(&self, hash: u64) -> usize {
        self.home(Self::tag(hash))
    }

    /// The bucket at `i` (0, empty, if out of range).
    #[inline]
    fn bucket_at(&self, i: usize) -> u64 {
        self.buckets.get(i).copied().unwrap_or(0)
    }

    fn region(&self) -> (usize, usize) {
        (
            self.buckets.as_ptr() as usize,
            self.buckets.len() * std::mem::size_of::<u64>(),
        )
    }

    fn bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<u64>()
    }
}

/// Wheel span in one-second slots: more than twice the longest timeout, so a flow is never filed
/// a whole turn ahead even when expiry runs behind.
pub const WHEEL_SLOTS: usize = 16384;

/// Why a new flow could not be inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    TableFull,
}

/// One core's flow table.
pub struct FlowTable {
    slab: Vec<Option<Flow>>,
    free_slots: Vec<u32>,
    capacity: u32,
    len: u32,
    hasher: KeyHasher,
    outbound: Index,
    inbound: Index,
    endpoint: Index,
    /// Only kept when pod endpoints own external endpoints exclusively (UDP filtering other than
    /// address-and-port-dependent); saves an index otherwise.
    mapping: Option<Index>,
    wheel: Vec<u32>,
    /// Next wheel second to examine.
    wheel_cursor: u32,
    /// Where the next early-drop scan starts (see [`FlowTable::evict_unreplied`]).
    evict_cursor: u32,
    timeouts: Timeouts,
}

impl FlowTable {
    pub fn new(capacity: u32, timeouts: Timeouts, seed: u64, track_mappings: bool) -> Self {
        let cap = capacity as usize;
        Self {
            slab: Vec::with_capacity(cap),
            free_slots: Vec::new(),
            capacity,
            len: 0,
            hasher: KeyHasher::new(seed),
            outbound: Index::with_capacity(cap),
            inbound: Index::with_capacity(cap),
            endpoint: Index::with_capacity(cap),
            mapping: track_mappings.then(|| Index::with_capacity(cap)),
            wheel: vec![NONE; WHEEL_SLOTS],
            wheel_cursor: 0,
            evict_cursor: 0,
            timeouts,
        }
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    // Tests only: nothing outside the crate can reach the table now that conntrack is private.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Bytes this table holds at full capacity: slab + indices + wheel. Port spaces are per
    /// address, not per flow, and are not counted here.
    pub fn memory_bytes(&self) -> usize {
        self.capacity as usize * std::mem::size_of::<Option<Flow>>()
            + self.capacity as usize * std::mem::size_of::<u32>()
            + self.outbound.bytes()
            + self.inbound.bytes()
            + self.endpoint.bytes()
            + self.mapping.as_ref().map_or(0, Index::bytes)
            + self.wheel.len() * std::mem::size_of::<u32>()
    }

    #[inline]
    pub fn get(&self, slot: u32) -> Option<&Flow> {
        self.slab.get(slot as usize).and_then(Option::as_ref)
    }

    #[inline]
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut Flow> {
        self.slab.get_mut(slot as usize).and_then(Option::as_mut)
    }

    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.flow(key)
    }

    /// Where a lookup of `hash` in `direction`'s index starts, for [`touch_bucket`] and
    /// [`touch_flow`]. Computing it touches no table memory.
    ///
    /// [`touch_bucket`]: Self::touch_bucket
    /// [`touch_flow`]: Self::touch_flow
    #[inline]
    pub fn home_bucket(&self, direction: Direction, hash: u64) -> HomeBucket {
        let index = match direction {
            Direction::Outbound => self.outbound.home_of(hash),
            Direction::Inbound => self.inbound.home_of(hash),
        };
        HomeBucket { direction, index }
    }

    #[inline]
    fn bucket(&self, home: HomeBucket) -> Bucket {
        Bucket(match home.direction {
            Direction::Outbound => self.outbound.bucket_at(home.index),
            Direction::Inbound => self.inbound.bucket_at(home.index),
        })
    }

    /// Loads a lookup's home bucket (first prefetch pass of a batch). Returns a value derived
    /// from the load, so that it is not optimised away.
    #[inline]
    pub fn touch_bucket(&self, home: HomeBucket) -> u64 {
        self.bucket(home).0
    }

    /// Loads the flow the home bucket points at (second prefetch pass: the bucket is in cache by
    /// now): its first and last fields, so both of its cache lines. Returns a value derived from
    /// the loads.
    #[inline]
    pub fn touch_flow(&self, home: HomeBucket) -> u64 {
        let bucket = self.bucket(home);
        if bucket.tag() == 0 {
            return 0;
        }
        self.slab.get(bucket.slot() as usize).map_or(0, |f| {
            f.as_ref().map_or(0, |f| {
                u64::from(u32::from(f.pod_ip)) ^ u64::from(f.endpoint_next)
            })
        })
    }

    /// Address ranges (start, length) of the large tables, so an I/O layer can ask the kernel to
    /// back them with huge pages before they fill up (fewer TLB misses at millions of flows).
    /// The slab range covers its reserved capacity.
    pub fn memory_regions(&self) -> Vec<(usize, usize)> {
        let mut regions = vec![
            (
                self.slab.as_ptr() as usize,
                self.slab.capacity() * std::mem::size_of::<Option<Flow>>(),
            ),
            self.outbound.region(),
            self.inbound.region(),
            self.endpoint.region(),
        ];
        regions.extend(self.mapping.as_ref().map(Index::region));
        regions
    }

    /// Finds a flow by its pod-side 5-tuple.
    #[inline]
    pub fn find_outbound(&self, key: &FlowKey, hash: u64) -> Option<u32> {
        let slab = &self.slab;
        self.outbound.find(hash, |slot| {
            slab[slot as usize].as_ref().is_some_and(|f| {
                f.pod_ip == key.local_ip
                    && f.remote_ip == key.remote_ip
                    && f.pod_port == key.local_port
                    && f.remote_port == key.remote_port
                    && f.protocol == key.protocol
            })
        })
    }

    /// Finds a flow by its external-side 5-tuple.
    #[inline]
    pub fn find_inbound(&self, key: &FlowKey, hash: u64) -> Option<u32> {
        let slab = &self.slab;
        self.inbound.find(hash, |slot| {
            slab[slot as usize].as_ref().is_some_and(|f| {
                f.external_port() == key.local_port
                    && f.remote_ip == key.remote_ip
                    && f.remote_port == key.remote_port
                    && f.protocol == key.protocol
                    && f.lease.address() == key.local_ip
            })
        })
    }

    /// Some flow of the pod endpoint `ip:port` (the head of its chain), for endpoint-independent
    /// mapping: a new flow from the same endpoint reuses that flow's external endpoint.
    pub fn find_endpoint(&self, protocol: Protocol, ip: Ipv4Addr, port: u16) -> Option<u32> {
        let hash = self.hasher.endpoint(protocol, ip, port);
        let slab = &self.slab;
        self.endpoint.find(hash, |slot| {
            slab[slot as usize]
                .as_ref()
                .is_some_and(|f| f.protocol == protocol && f.pod_ip == ip && f.pod_port == port)
        })
    }

    /// The pod endpoint that owns external `ip:port` exclusively (filtering modes other than
    /// address-and-port-dependent never share a port between pod endpoints).
    pub fn find_mapping(&self, protocol: Protocol, ip: Ipv4Addr, port: u16) -> Option<u32> {
        let hash = self.hasher.endpoint(protocol, ip, port);
        let slab = &self.slab;
        self.mapping.as_ref()?.find(hash, |slot| {
            slab[slot as usize].as_ref().is_some_and(|f| {
                f.protocol == protocol && f.external_port() == port && f.external_ip() == ip
            })
        })
    }

    /// Flows of the same pod endpoint, starting at `slot` (the chain is in no particular order).
    pub fn endpoint_flows(&self, slot: u32) -> EndpointFlows<'_> {
        EndpointFlows {
            table: self,
            next: slot,
        }
    }

    /// Inserts a new flow. `exclusive_mapping` records the external endpoint as owned by this
    /// pod endpoint (used by endpoint-independent and address-dependent filtering).
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        protocol: Protocol,
        pod: (Ipv4Addr, u16),
        remote: (Ipv4Addr, u16),
        lease: PortLease,
        state: FlowState,
        now: u32,
        exclusive_mapping: bool,
    ) -> Result<u32, InsertError> {
        if self.len >= self.capacity {
            return Err(InsertError::TableFull);
        }
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.slab.push(None);
                (self.slab.len() - 1) as u32
            }
        };
        let flow = Flow {
            pod_ip: pod.0,
            pod_port: pod.1,
            remote_ip: remote.0,
            remote_port: remote.1,
            protocol,
            state,
            created: now,
            last_seen: now,
            packets_out: 0,
            packets_in: 0,
            bytes_out: 0,
            bytes_in: 0,
            wheel_bucket: 0,
            wheel_prev: NONE,
            wheel_next: NONE,
            endpoint_prev: NONE,
            endpoint_next: NONE,
            lease,
        };
        let (out_hash, in_hash) = (
            self.hasher.flow(&flow.outbound_key()),
            self.hasher.flow(&flow.inbound_key()),
        );
        let ext_ip = flow.external_ip();
        self.slab[slot as usize] = Some(flow);
        self.outbound.insert(out_hash, slot);
        self.inbound.insert(in_hash, slot);

        // Link into the pod endpoint's chain, right after its head (the head stays stable).
        match self.find_endpoint(protocol, pod.0, pod.1) {
            Some(head) => {
                let after = self.slab[head as usize]
                    .as_ref()
                    .map_or(NONE, |f| f.endpoint_next);
                self.set_endpoint_links(slot, head, after);
                if let Some(h) = self.get_mut(head) {
                    h.endpoint_next = slot;
                }
                if let Some(a) = self.get_mut(after) {
                    a.endpoint_prev = slot;
                }
            }
            None => {
                self.endpoint
                    .insert(self.hasher.endpoint(protocol, pod.0, pod.1), slot);
            }
        }
        let external_port = self.slab[slot as usize]
            .as_ref()
            .map_or(0, |f| f.external_port());
        if exclusive_mapping
            && self.mapping.is_some()
            && self.find_mapping(protocol, ext_ip, external_port).is_none()
        {
            let hash = self.hasher.endpoint(protocol, ext_ip, external_port);
            if let Some(mapping) = self.mapping.as_mut() {
                mapping.insert(hash, slot);
            }
        }
        let deadline = now.wrapping_add(state.timeout(protocol, &self.timeouts));
        self.wheel_link(slot, deadline);
        self.len += 1;
        Ok(slot)
    }

    fn set_endpoint_links(&mut self, slot: u32, prev: u32, next: u32) {
        if let Some(f) = self.get_mut(slot) {
            f.endpoint_prev = prev;
            f.endpoint_next = next;
        }
    }

    /// Applies a TCP state change; moves the flow in the wheel when its timeout shrinks.
    pub fn set_state(&mut self, slot: u32, state: FlowState) {
        let timeouts = self.timeouts;
        let Some(flow) = self.get_mut(slot) else {
            return;
        };
        if flow.state == state {
            return;
        }
        let old_timeout = flow.state.timeout(flow.protocol, &timeouts);
        let new_timeout = state.timeout(flow.protocol, &timeouts);
        flow.state = state;
        if new_timeout < old_timeout {
            let deadline = flow.last_seen.wrapping_add(new_timeout);
            self.wheel_unlink(slot);
            self.wheel_link(slot, deadline);
        }
    }

    /// Frees a slot when the table is full by removing a flow that never got an answer — UDP or
    /// ICMP still `Unreplied`, TCP still `SynSent` — as Linux conntrack's early drop does. Looks at
    /// no more than `probes` occupied slots from a rotating cursor (O(1) per call); a flow that has
    /// seen a reply (established or replied) is never evicted for a new one.
    pub fn evict_unreplied(&mut self, probes: u32) -> Option<Flow> {
        let slots = self.slab.len() as u32;
        if slots == 0 {
            return None;
        }
        for _ in 0..probes.min(slots) {
            let slot = self.evict_cursor % slots;
            self.evict_cursor = slot.wrapping_add(1);
            let unreplied = self
                .get(slot)
                .is_some_and(|f| matches!(f.state, FlowState::Unreplied | FlowState::SynSent));
            if unreplied {
                return self.remove(slot);
            }
        }
        None
    }

    /// Removes a flow; its port lease is returned by `Drop`.
    pub fn remove(&mut self, slot: u32) -> Option<Flow> {
        let flow = self.slab.get_mut(slot as usize)?.take()?;
        // Put it back briefly so the index helpers that read the slab still see consistent data.
        let out_hash = self.hasher.flow(&flow.outbound_key());
        let in_hash = self.hasher.flow(&flow.inbound_key());
        self.outbound.remove(out_hash, slot);
        self.inbound.remove(in_hash, slot);

        // Unlink from the wheel (links live in the flow we just took out).
        self.wheel_unlink_links(flow.wheel_bucket, flow.wheel_prev, flow.wheel_next);

        // Unlink from the endpoint chain; if it was the head, promote its successor.
        let ep_hash = self
            .hasher
            .endpoint(flow.protocol, flow.pod_ip, flow.pod_port);
        let map_hash =
            self.hasher
                .endpoint(flow.protocol, flow.external_ip(), flow.external_port());
        let (prev, next) = (flow.endpoint_prev, flow.endpoint_next);
        if let Some(p) = self.get_mut(prev) {
            p.endpoint_next = next;
        }
        if let Some(n) = self.get_mut(next) {
            n.endpoint_prev = prev;
        }
        if prev == NONE {
            if next == NONE {
                self.endpoint.remove(ep_hash, slot);
            } else {
                self.endpoint.repoint(ep_hash, slot, next);
            }
        }
        // The mapping entry (if any) points at some flow of this endpoint with the same external
        // port: move it to another such flow, or drop it with the last one.
        if self
            .mapping
            .as_ref()
            .is_some_and(|m| m.position(map_hash, slot).is_some())
        {
            let heir = self
                .endpoint_flows(if prev == NONE { next } else { prev })
                .chain(self.endpoint_flows_backwards(prev))
                .find(|&s| {
                    self.get(s).is_some_and(|f| {
                        f.external_port() == flow.external_port()
                            && f.external_ip() == flow.external_ip()
                    })
                });
            if let Some(mapping) = self.mapping.as_mut() {
                match heir {
                    Some(h) => mapping.repoint(map_hash, slot, h),
                    None => mapping.remove(map_hash, slot),
                }
            }
        }
        self.free_slots.push(slot);
        self.len -= 1;
        Some(flow)
    }

    fn endpoint_flows_backwards(&self, slot: u32) -> impl Iterator<Item = u32> + '_ {
        let mut cur = slot;
        std::iter::from_fn(move || {
            let f = self.get(cur)?;
            let here = cur;
            cur = f.endpoint_prev;
            Some(here)
        })
    }

    fn wheel_link(&mut self, slot: u32, deadline: u32) {
        let bucket = deadline as usize % WHEEL_SLOTS;
        let head = self.wheel[bucket];
        if let Some(f) = self.get_mut(slot) {
            f.wheel_bucket = bucket as u16;
            f.wheel_prev = NONE;
            f.wheel_next = head;
        }
        if let Some(h) = self.get_mut(head) {
            h.wheel_prev = slot;
        }
        self.wheel[bucket] = slot;
    }

    fn wheel_unlink(&mut self, slot: u32) {
        let Some(f) = self.get(slot) else { return };
        let (bucket, prev, next) = (f.wheel_bucket, f.wheel_prev, f.wheel_next);
        self.wheel_unlink_links(bucket, prev, next);
    }

    fn wheel_unlink_links(&mut self, bucket: u16, prev: u32, next: u32) {
        match self.get_mut(prev) {
            Some(p) => p.wheel_next = next,
            None => self.wheel[usize::from(bucket)] = next,
        }
        if let Some(n) = self.get_mut(next) {
            n.wheel_prev = prev;
        }
    }

    /// Sets the wheel's starting second (the engine clock at start).
    #[cfg(test)]
    pub fn start_clock(&mut self, now: u32) {
        if self.len == 0 {
            self.wheel_cursor = now;
        }
    }

    /// Whether expiry has work due at `now`.
    #[inline]
    pub fn expiry_due(&self, now: u32) -> bool {
        self.wheel_cursor <= now
    }

    /// Examines up to `budget` flows whose deadline has come, removing the idle ones and
    /// re-filing the rest; calls `on_expired` with each removed flow.
    pub fn expire(&mut self, now: u32, mut budget: u32, mut on_expired: impl FnMut(Flow)) -> u32 {
        let mut expired = 0;
        while self.wheel_cursor <= now && budget > 0 {
            let bucket = self.wheel_cursor as usize % WHEEL_SLOTS;
            let mut slot = self.wheel[bucket];
            if slot == NONE {
                self.wheel_cursor = self.wheel_cursor.wrapping_add(1);
                continue;
            }
            // Work through the bucket from its head; re-filed flows go to other buckets (or to
            // the head of this one a whole turn later, after `slot` has moved past them).
            while slot != NONE && budget > 0 {
                budget -= 1;
                let Some(flow) = self.get(slot) else { break };
                let next = flow.wheel_next;
                let deadline = flow
                    .last_seen
                    .wrapping_add(flow.state.timeout(flow.protocol, &self.timeouts));
                if deadline <= now {
                    if let Some(flow) = self.remove(slot) {
                        expired += 1;
                        on_expired(flow);
                    }
                } else if deadline as usize % WHEEL_SLOTS != bucket {
                    self.wheel_unlink(slot);
                    self.wheel_link(slot, deadline);
                } else {
                    // Filed in this bucket for a later turn of the wheel: leave it.
                }
                slot = next;
            }
            if slot == NONE && !self.bucket_has_due(bucket, now) {
                self.wheel_cursor = self.wheel_cursor.wrapping_add(1);
            }
        }
        expired
    }

    /// Whether a bucket still holds flows due at `now` (only possible when the budget ran out).
    fn bucket_has_due(&self, bucket: usize, now: u32) -> bool {
        let mut slot = self.wheel[bucket];
        while let Some(f) = self.get(slot) {
            if f.last_seen
                .wrapping_add(f.state.timeout(f.protocol, &self.timeouts))
                <= now
            {
                return true;
            }
            slot = f.wheel_next;
        }
        false
    }

    /// Iterates over occupied slots starting at `from` (for paging through flows).
    pub fn iter_from(&self, from: u32) -> impl Iterator<Item = (u32, &Flow)> + '_ {
        self.slab
            .iter()
            .enumerate()
            .skip(from as usize)
            .filter_map(|(i, f)| f.as_ref().map(|f| (i as u32, f)))
    }
}

/// Walks one pod endpoint's chain forwards.
pub struct EndpointFlows<'a> {
    table: &'a FlowTable,
    next: u32,
}

impl Iterator for EndpointFlows<'_> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        let flow = self.table.get(self.next)?;
        let here = self.next;
        self.next = flow.endpoint_next;
        Some(here)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{ExternalAddress, PortPartition};
    use std::rc::Rc;

    /// A slab entry stays 80 bytes: two cache lines that `touch_flow` loads by the first and last
    /// field, and the memory per session the README states.
    #[test]
    fn slab_entry_is_80_bytes_with_links_last() {
        assert_eq!(std::mem::size_of::<Option<Flow>>(), 80);
        assert_eq!(std::mem::offset_of!(Flow, pod_ip), 0);
        assert_eq!(std::mem::offset_of!(Flow, endpoint_next), 76);
    }

    fn ext() -> Rc<ExternalAddress> {
        let p = PortPartition::new(1024, 65535, 1).expect("valid");
        ExternalAddress::new(Ipv4Addr::new(198, 51, 100, 1), &p, 0, 1)
    }

    fn pod(i: u32) -> (Ipv4Addr, u16) {
        (Ipv4Addr::from(0x0af4_0000 + i), 40000)
    }

    #[test]
    fn index_backward_shift_keeps_every_survivor_reachable() {
        let mut index = Index::with_capacity(12);
        // Tags crafted to collide on a few home buckets near the end, so probe runs wrap around.
        let hashes: Vec<u64> = (0..12u64)
            .map(|i| (u64::MAX - (i % 3) * (1 << 28)) & !0xffff_ffff)
            .collect();
        for (slot, &h) in hashes.iter().enumerate() {
            index.insert(h, slot as u32);
        }
        for remove in [0usize, 4, 7, 1] {
            index.remove(hashes[remove], remove as u32);
            for (slot, &h) in hashes.iter().enumerate() {
                let removed = [0usize, 4, 7, 1]
                    .iter()
                    .take_while(|&&r| r != remove)
                    .any(|&r| r == slot)
                    || slot == remove;
                assert_eq!(
                    index.find(h, |s| s == slot as u32).is_some(),
                    !removed,
                    "slot {slot} after removing {remove}"
                );
            }
        }
    }

    #[test]
    fn full_table_refuses_new_flows_and_keeps_established_ones() {
        let a = ext();
        let mut t = FlowTable::new(4, Timeouts::default(), 9, false);
        let mut slots = vec![];
        for i in 0..4 {
            let lease = a.lease_free_port(Protocol::Udp).expect("port");
            slots.push(
                t.insert(
                    Protocol::Udp,
                    pod(i),
                    (Ipv4Addr::new(203, 0, 113, 10), 53),
                    lease,
                    FlowState::Unreplied,
                    0,
                    false,
                )
                .expect("room"),
            );
        }
        let lease = a.lease_free_port(Protocol::Udp).expect("port");
        assert_eq!(
            t.insert(
                Protocol::Udp,
                pod(9),
                (Ipv4Addr::new(203, 0, 113, 10), 53),
                lease,
                FlowState::Unreplied,
                0,
                false
            ),
            Err(InsertError::TableFull)
        );
        assert_eq!(
            a.usage(Protocol::Udp).leases,
            4,
            "the refused flow's lease was returned"
        );
        for s in slots {
            assert!(t.get(s).is_some());
        }
    }

    #[test]
    fn wheel_expires_idle_and_refiles_active_flows() {
        let a = ext();
        let mut t = FlowTable::new(16, Timeouts::default(), 3, false);
        t.start_clock(0);
        let remote = (Ipv4Addr::new(203, 0, 113, 10), 53);
        let idle = t
            .insert(
                Protocol::Udp,
                pod(1),
                remote,
                a.lease_free_port(Protocol::Udp).expect("p"),
                FlowState::Unreplied,
                0,
                false,
            )
            .expect("room");
        let busy = t
            .insert(
                Protocol::Udp,
                pod(2),
                remote,
                a.lease_free_port(Protocol::Udp).expect("p"),
                FlowState::Unreplied,
                0,
                false,
            )
            .expect("room");
        if let Some(f) = t.get_mut(busy) {
            f.last_seen = 200;
        }
        assert_eq!(
            t.expire(299, u32::MAX, |_| {}),
            0,
            "nothing is due before 300 s"
        );
        let mut gone = vec![];
        t.expire(300, u32::MAX, |f| gone.push(f.pod_ip));
        assert_eq!(gone, vec![pod(1).0]);
        assert!(t.get(idle).is_none() && t.get(busy).is_some());
        assert_eq!(t.expire(499, u32::MAX, |_| {}), 0);
        assert_eq!(
            t.expire(500, u32::MAX, |_| {}),
            1,
            "re-filed at last_seen + timeout"
        );
        assert!(t.is_empty());
        assert_eq!(a.total_leases(), 0);
    }

    #[test]
    fn tcp_life_cycle() {
        use Direction::*;
        let mut s = FlowState::SynSent;
        s = next_tcp_state(s, Inbound, TCP_SYN | TCP_ACK);
        assert_eq!(s, FlowState::SynReceived);
        s = next_tcp_state(s, Outbound, TCP_ACK);
        assert_eq!(s, FlowState::Established);
        s = next_tcp_state(s, Inbound, TCP_FIN | TCP_ACK);
        assert_eq!(s, FlowState::FinInbound);
        s = next_tcp_state(s, Outbound, TCP_FIN | TCP_ACK);
        assert_eq!(s, FlowState::Closing);
        assert_eq!(
            next_tcp_state(FlowState::Established, Outbound, TCP_RST),
            FlowState::Reset
        );
        assert_eq!(
            next_tcp_state(FlowState::Reset, Outbound, TCP_SYN),
            FlowState::SynSent
        );
    }
}
