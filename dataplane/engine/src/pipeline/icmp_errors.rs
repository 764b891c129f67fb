//! ICMP errors: the ones the engine builds itself (TTL exceeded, fragmentation needed; rate
//! limited per RFC 1812) and the ones it translates in either direction (RFC 5508 REQ-3).

use std::net::Ipv4Addr;
use std::time::Duration;

use super::{millis, Engine, Side, Verdict};
use crate::conntrack::FlowKey;
use crate::counters::DropReason;
use crate::packet::{
    self, Endpoint, IcmpErrorQuote, Parsed, Protocol, Transport, ICMP_CODE_FRAG_NEEDED,
    ICMP_DEST_UNREACHABLE, ICMP_TIME_EXCEEDED,
};
use egw_policy::Decision;

pub(super) struct IcmpRateLimit {
    pub(super) tokens: u32,
    pub(super) per_second: u32,
    pub(super) last_refill_ms: u64,
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

impl Engine {
    /// TTL and MTU checks before forwarding. Returns a verdict if the packet cannot be forwarded:
    /// an ICMP error built in place (sent back out of `back`) or a drop.
    #[inline]
    pub(super) fn check_forwardable(
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
    pub(super) fn icmp_error(
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

    /// A pod sends an ICMP error about a packet it received from the internet (e.g. port
    /// unreachable): translate the outer source and the quoted destination back to the external
    /// endpoint (RFC 5508 REQ-3 in the outbound direction).
    pub(super) fn outbound_icmp_error(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        q: &IcmpErrorQuote,
        now: Duration,
    ) -> Verdict {
        // An error is about a packet its sender received: it goes back to where that packet came
        // from (outer source = quoted destination, outer destination = quoted source, as Linux
        // checks). Without this, any source could send error payloads anywhere from the external
        // address of another pod's flow.
        if p.src != q.dst || p.dst != q.src {
            return self.drop(DropReason::BadIcmpError);
        }
        // The sender's policy decides, as for any other packet it sends: errors leave through
        // the gateway only while its policy still translates this destination.
        match self.table.lookup(p.src, p.dst) {
            Decision::Snat(_) => {}
            Decision::Bypass => return self.bypass(frame, p, now),
            Decision::Deny(_) => return self.drop(self.deny_reason(p.src)),
        }
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

    /// An ICMP error from the internet about a packet we translated (RFC 5508 REQ-3): the quote is
    /// (external endpoint → remote endpoint). Translate the outer destination and the quoted
    /// source back to the pod endpoint, so PMTU discovery and traceroute work through the gateway.
    pub(super) fn inbound_icmp_error(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        q: &IcmpErrorQuote,
    ) -> Verdict {
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
}
