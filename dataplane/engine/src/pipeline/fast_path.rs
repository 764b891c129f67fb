//! The established-flow fast path: a plain TCP/UDP packet of a flow this core already tracks is
//! translated straight from a light parse; anything else goes on to the full path unchanged.

use std::time::Duration;

use super::{secs, Engine, Ingress, Side, Verdict};
use crate::conntrack::{next_tcp_state, Direction, FlowKey, FlowState};
use crate::packet::{self, Endpoint, Protocol};

impl Engine {
    /// A plain TCP/UDP packet (see [`packet::Plain`]) takes the established-flow fast path; one
    /// the fast path declines goes on to the full path without being parsed again.
    #[inline]
    pub(super) fn translate_plain(
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
    pub(super) fn declined_plain(
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
    pub(super) fn first_outbound_plain(
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
    pub(super) fn established_outbound(
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
    pub(super) fn established_inbound(
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
}
