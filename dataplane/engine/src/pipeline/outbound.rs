//! Outbound packets on the full path: the first packet of a flow (route-table decision, endpoint
//! reuse, address and port choice, room in a full table) and the forwarding of later ones.

use std::net::Ipv4Addr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::introspection::flow_info;
use super::{secs, Engine, Filtering, FlowEvent, Side, Verdict};
use crate::conntrack::{next_tcp_state, Direction, FlowKey, FlowState, FlowTable, InsertError};
use crate::counters::DropReason;
use crate::frag::FragmentAction;
use crate::packet::{self, Endpoint, Parsed, Protocol, Transport, TCP_ACK, TCP_SYN};
use crate::ports::{ExternalAddress, PortLease};
use egw_policy::Decision;

/// Expiry work done when a new flow finds the table full, before giving up.
const EXPIRY_BUDGET_WHEN_FULL: u32 = 64;
/// Occupied slots an early-drop scan looks at when the table is full.
const EARLY_DROP_PROBES: u32 = 8;
/// Candidate ports probed when a new flow must share a port with other destinations.
const SHARE_PROBES: u32 = 32;

impl Engine {
    pub(super) fn outbound(&mut self, frame: &mut [u8], p: &Parsed, now: Duration) -> Verdict {
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
            Transport::IcmpError(q) => self.outbound_icmp_error(frame, p, &q, now),
            Transport::LaterFragment => self.drop(DropReason::BadIpv4Header),
        }
    }

    pub(super) fn outbound_flow(&mut self, frame: &mut [u8], p: &Parsed, now: Duration) -> Verdict {
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
    pub(super) fn first_outbound(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        key: &FlowKey,
        hash: u64,
        now: Duration,
    ) -> Verdict {
        let slot = match self.table.lookup(p.src, p.dst) {
            Decision::Bypass => return self.bypass(frame, p, now),
            Decision::Deny(_) => return self.drop(self.deny_reason(p.src)),
            Decision::Snat(pool) => match self.new_outbound_flow(p, key, hash, pool, secs(now)) {
                Ok(slot) => slot,
                Err(reason) => return self.drop(reason),
            },
        };
        self.forward_outbound(frame, p, slot, now)
    }

    pub(super) fn forward_outbound(
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

    /// Why the route table denies `src`: a source it knows is `denied`, any other has no policy.
    pub(super) fn deny_reason(&self, src: Ipv4Addr) -> DropReason {
        if self.table.source_has_policy(src) {
            DropReason::Denied
        } else {
            DropReason::NoPolicy
        }
    }

    pub(super) fn bypass(&mut self, frame: &mut [u8], p: &Parsed, now: Duration) -> Verdict {
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

    /// Creates the flow for the first packet of a pod endpoint → remote endpoint pair.
    pub(super) fn new_outbound_flow(
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
    pub(super) fn make_room(&mut self, now_s: u32) {
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

    pub(super) fn reuse_endpoint_mapping(
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
    pub(super) fn share_port(
        &mut self,
        ext: &Rc<ExternalAddress>,
        key: &FlowKey,
    ) -> Option<PortLease> {
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
}
