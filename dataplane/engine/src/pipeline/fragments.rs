//! Fragments on the packet path: the first fragment records its datagram's translation, later
//! ones apply it or wait in the stash for the first (RFC 4787 REQ-14).

use std::time::Duration;

use super::{millis, Engine, Side, Verdict};
use crate::counters::DropReason;
use crate::frag::{DatagramId, FragmentAction, StashResult};
use crate::packet::{self, Endpoint, Parsed};

impl Engine {
    pub(super) fn record_fragment(&mut self, p: &Parsed, action: FragmentAction, now: Duration) {
        let datagram = DatagramId {
            src: p.src,
            dst: p.dst,
            protocol: p.protocol,
            id: p.frag.id,
        };
        self.fragments.record(datagram, action, millis(now));
    }

    /// A fragment without transport header: apply its datagram's recorded translation, or stash it
    /// until the first fragment arrives (RFC 4787 REQ-14).
    #[expect(
        clippy::indexing_slicing,
        reason = "`parse` checked that the frame holds `frame_len()` bytes"
    )]
    pub(super) fn later_fragment(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        now: Duration,
    ) -> Verdict {
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
