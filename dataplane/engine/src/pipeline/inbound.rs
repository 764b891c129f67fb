//! Inbound packets: replies to translated flows back to their pod endpoint, and the UDP filtering
//! modes that let a new remote open a flow to a mapped endpoint (RFC 4787).

use std::net::Ipv4Addr;
use std::time::Duration;

use super::{secs, Engine, Filtering, Side, Verdict};
use crate::conntrack::{next_tcp_state, Direction, FlowKey, FlowState};
use crate::counters::DropReason;
use crate::frag::FragmentAction;
use crate::packet::{self, Endpoint, Parsed, Protocol, Transport};

impl Engine {
    pub(super) fn inbound(&mut self, frame: &mut [u8], p: &Parsed, now: Duration) -> Verdict {
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

    pub(super) fn unsolicited(&self, dst: Ipv4Addr) -> DropReason {
        if self.external(dst).is_some() {
            DropReason::NoFlow
        } else {
            DropReason::NotForGateway
        }
    }

    pub(super) fn inbound_flow(&mut self, frame: &mut [u8], p: &Parsed, now: Duration) -> Verdict {
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
    pub(super) fn filtered_inbound_flow(&mut self, key: &FlowKey, now_s: u32) -> Option<u32> {
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
}
