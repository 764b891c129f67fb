//! What the I/O layer tells the engine about a frame ([`Ingress`]) and what the engine tells it
//! back ([`Verdict`], with the [`Side`] to send on).

use std::net::Ipv4Addr;

use crate::counters::DropReason;

#[cfg(doc)]
use super::Engine;

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
