//! What a worker touches per packet besides its engine: its AF_XDP sockets, the hand-off rings,
//! the next-hop cache and its own counters. Sending a translated frame (next-hop MACs, TX ring)
//! lives here.

use std::net::Ipv4Addr;

use crossbeam::channel::Sender;
use egw_engine::{Ingress, Side};
use egw_xdp::xsk::{self, FrameDesc, TxStatus, Worker};

use super::handoff::Handoffs;
use super::snapshot::GatewayCounters;
use crate::nexthop::{rewrite_macs, NextHops, Resolution, ResolutionCache};

/// Everything a worker touches per packet except the engine (so the engine can lend frames to
/// closures that use it).
pub(super) struct Io {
    pub(super) core: u16,
    pub(super) xsk: Worker,
    /// Interface index per engine side: [inside, outside].
    pub(super) ifindex: [u32; 2],
    pub(super) handoffs: Handoffs,
    pub(super) resolver: Sender<(u32, Ipv4Addr)>,
    pub(super) cache: ResolutionCache,
    pub(super) counters: GatewayCounters,
}

pub(super) fn xsk_side(side: Side) -> xsk::Side {
    match side {
        Side::Inside => xsk::Side::Inside,
        Side::Outside => xsk::Side::Outside,
    }
}

impl Io {
    /// Sends a processed frame out of `side`: next-hop MACs, window, TX.
    pub(super) fn forward(
        &mut self,
        hops: &NextHops,
        mut desc: FrameDesc,
        side: Side,
        destination: Ipv4Addr,
        len: usize,
    ) {
        let ifindex = self.ifindex[match side {
            Side::Inside => 0,
            Side::Outside => 1,
        }];
        match self.cache.resolve(hops, ifindex, destination) {
            Resolution::Resolved {
                source,
                destination: mac,
            } => {
                let offset = desc.offset();
                if desc.set_packet(offset, len).is_err() {
                    self.counters.frame_too_large += 1;
                    self.xsk.recycle(desc);
                    return;
                }
                rewrite_macs(self.xsk.packet_mut(&desc), source, mac);
                match self.xsk.transmit(xsk_side(side), desc) {
                    TxStatus::Queued => {
                        self.counters.tx_packets += 1;
                        self.counters.tx_bytes += len as u64;
                    }
                    TxStatus::DroppedRingFull => self.counters.tx_ring_full += 1,
                    TxStatus::DroppedNoFrame => self.counters.no_frame += 1,
                    TxStatus::DroppedEmpty => self.counters.frame_too_large += 1,
                }
            }
            Resolution::NoRoute => {
                self.counters.no_route += 1;
                self.xsk.recycle(desc);
            }
            Resolution::Unresolved { ifindex, next_hop } => {
                self.counters.neighbour_unresolved += 1;
                // A full queue means resolutions are already pending; the kernel catches up.
                let _ = self.resolver.try_send((ifindex, next_hop));
                self.xsk.recycle(desc);
            }
        }
    }

    /// A frame the engine produced outside a UMEM frame (a released fragment): copy it into one.
    pub(super) fn forward_bytes(
        &mut self,
        hops: &NextHops,
        bytes: &[u8],
        side: Side,
        destination: Ipv4Addr,
    ) {
        let Some(mut desc) = self.xsk.alloc_frame(xsk_side(side)) else {
            self.counters.no_frame += 1;
            return;
        };
        let offset = desc.offset();
        if desc.set_packet(offset, bytes.len()).is_err() {
            self.counters.frame_too_large += 1;
            self.xsk.recycle(desc);
            return;
        }
        self.xsk.packet_mut(&desc).copy_from_slice(bytes);
        self.forward(hops, desc, side, destination, bytes.len());
    }

    pub(super) fn hand_off(&mut self, to: u16, bytes: &[u8], ingress: Ingress) {
        if !self.handoffs.send(to, bytes, ingress) {
            self.counters.handoff_ring_full += 1;
        }
    }
}
