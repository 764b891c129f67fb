//! The entry points of the per-packet path: [`Engine::process`] tries the fast path, else parses
//! fully and classifies the packet as outbound or inbound; [`Engine::prefetch`] overlaps a batch's
//! cache misses; [`Engine::release_fragments`] re-dispatches fragments that waited for their first.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::{secs, Engine, Ingress, Verdict};
use crate::conntrack::{Direction, FlowKey, HomeBucket};
use crate::packet::{self, Protocol};

/// Expiry work done per packet when expiry is due: keeps expiry O(1) amortized per packet.
const EXPIRY_BUDGET_PER_PACKET: u32 = 4;
/// Frames [`Engine::prefetch`] looks at per call (a batch).
pub const PREFETCH_BATCH: usize = 64;

impl Engine {
    /// Overlaps the cache misses of a batch: issues, for every frame, the load of its flow-index
    /// bucket, then the load of the flow it points at, before any frame is processed. Call with a
    /// batch's frames (read-only) right before calling [`process`](Self::process) on each; it
    /// changes no state. At millions of flows this turns ~2 serial DRAM misses per packet into
    /// overlapped ones; frames it cannot classify cheaply are simply skipped.
    #[expect(
        clippy::indexing_slicing,
        reason = "`n` is at most `frames.len()` and `PREFETCH_BATCH`, the length of `homes`"
    )]
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
    pub(super) fn peek_flow_hash(
        &self,
        frame: &[u8],
        ingress: Ingress,
    ) -> Option<(Direction, u64)> {
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

    /// Processes one frame in place. `frame` is the whole buffer (so an ICMP error can be built in
    /// it), `len` the bytes received, `now` a monotonic clock reading.
    #[expect(
        clippy::indexing_slicing,
        reason = "`len` is clamped to `frame.len()` first"
    )]
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

    #[expect(
        clippy::indexing_slicing,
        reason = "callers pass `len <= frame.len()`: `process` clamps it, the stash records it"
    )]
    pub(super) fn classify(
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
    #[expect(
        clippy::indexing_slicing,
        reason = "the stash hands back `len <= bytes.len()`, and a verdict's `len` never exceeds the frame"
    )]
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
}
