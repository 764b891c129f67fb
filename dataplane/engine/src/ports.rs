//! SNAT port spaces: which (external address, protocol, port) triples a core may hand out, and
//! leases that give a port back when the flow holding them is dropped.
//!
//! Each core owns a contiguous block of the port range of every external address
//! ([`PortPartition`]), so any core can compute which core owns a return packet from its
//! destination port alone, and allocation needs no coordination between cores.
//!
//! A port may be leased by several flows at once as long as their remote endpoints differ: the
//! flow table guarantees that no two flows share (external address, port, protocol, remote
//! endpoint). That is what lets one external address carry more than 64 k flows.
#![expect(
    clippy::indexing_slicing,
    reason = "per-protocol arrays indexed by `Protocol::index()` (0..3) and port bitmaps indexed by offsets inside this core's own port block, checked when the block was made"
)]

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::net::Ipv4Addr;
use std::rc::Rc;

use crate::packet::Protocol;

/// How the port range of every external address is split between cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortPartition {
    first: u16,
    last: u16,
    cores: u16,
    block: u32,
}

impl PortPartition {
    /// Splits `first..=last` into `cores` contiguous blocks; the last core takes the remainder.
    /// Returns `None` if a core would get no port at all.
    pub fn new(first: u16, last: u16, cores: u16) -> Option<Self> {
        if cores == 0 || last < first {
            return None;
        }
        let span = u32::from(last) - u32::from(first) + 1;
        let block = span / u32::from(cores);
        (block > 0).then_some(Self {
            first,
            last,
            cores,
            block,
        })
    }

    /// The core that allocates `port`, or `None` if the port is outside the SNAT range.
    #[inline]
    pub fn owner(&self, port: u16) -> Option<u16> {
        if port < self.first || port > self.last {
            return None;
        }
        let index = (u32::from(port) - u32::from(self.first)) / self.block;
        Some(index.min(u32::from(self.cores) - 1) as u16)
    }

    /// The ports `core` allocates from.
    pub fn range(&self, core: u16) -> std::ops::RangeInclusive<u16> {
        let start = u32::from(self.first) + u32::from(core) * self.block;
        let end = if core + 1 == self.cores {
            u32::from(self.last)
        } else {
            start + self.block - 1
        };
        (start as u16)..=(end as u16)
    }

    pub fn cores(&self) -> u16 {
        self.cores
    }
}

/// Per-protocol port bookkeeping of one external address on one core.
struct ProtocolPorts {
    first: u16,
    /// Flows leasing each port of this core's block.
    leases: Vec<u16>,
    /// Ports with no lease, least recently released first (so a port rests as long as possible
    /// before reuse, which keeps stale remote state from matching a new flow).
    free: VecDeque<u16>,
    total_leases: u64,
}

impl ProtocolPorts {
    fn new(range: std::ops::RangeInclusive<u16>, shuffle_seed: u64) -> Self {
        let first = *range.start();
        let mut ports: Vec<u16> = range.collect();
        // RFC 6056: external ports should not be predictable. A seeded Fisher-Yates shuffle.
        let mut state = shuffle_seed | 1;
        for i in (1..ports.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let j = (state % (i as u64 + 1)) as usize;
            ports.swap(i, j);
        }
        Self {
            first,
            leases: vec![0; ports.len()],
            free: ports.into(),
            total_leases: 0,
        }
    }

    fn index(&self, port: u16) -> Option<usize> {
        let i = usize::from(port.checked_sub(self.first)?);
        (i < self.leases.len()).then_some(i)
    }
}

/// One external (SNAT) address as seen by one core: its port blocks for TCP, UDP and ICMP.
pub struct ExternalAddress {
    address: Ipv4Addr,
    protocols: [RefCell<ProtocolPorts>; 3],
    draining: Cell<bool>,
}

impl fmt::Debug for ExternalAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalAddress")
            .field("address", &self.address)
            .field("draining", &self.draining.get())
            .finish_non_exhaustive()
    }
}

/// What a core can report about one external address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortUsage {
    pub protocol: Protocol,
    /// Ports with at least one lease.
    pub ports_in_use: u32,
    /// Ports this core may allocate.
    pub ports_total: u32,
    /// Flows holding a lease.
    pub leases: u64,
}

impl ExternalAddress {
    pub fn new(address: Ipv4Addr, partition: &PortPartition, core: u16, seed: u64) -> Rc<Self> {
        let range = partition.range(core);
        let mk = |salt: u64| {
            RefCell::new(ProtocolPorts::new(
                range.clone(),
                seed ^ salt ^ u64::from(u32::from(address)),
            ))
        };
        Rc::new(Self {
            address,
            protocols: [mk(0x7463_7000), mk(0x7564_7000), mk(0x6963_6d70)],
            draining: Cell::new(false),
        })
    }

    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.set(draining);
    }

    pub fn usage(&self, protocol: Protocol) -> PortUsage {
        let ports = self.protocols[protocol.index()].borrow();
        PortUsage {
            protocol,
            ports_in_use: (ports.leases.len() - ports.free.len()) as u32,
            ports_total: ports.leases.len() as u32,
            leases: ports.total_leases,
        }
    }

    /// Flows still holding a lease on this address, all protocols.
    pub fn total_leases(&self) -> u64 {
        self.protocols.iter().map(|p| p.borrow().total_leases).sum()
    }

    /// Leases a port no flow uses, if any is left.
    pub fn lease_free_port(self: &Rc<Self>, protocol: Protocol) -> Option<PortLease> {
        let mut ports = self.protocols[protocol.index()].borrow_mut();
        let port = ports.free.pop_front()?;
        let i = ports.index(port)?;
        ports.leases[i] = 1;
        ports.total_leases += 1;
        drop(ports);
        Some(PortLease {
            address: Rc::clone(self),
            protocol,
            port,
        })
    }

    /// Whether `port` is in this core's block and already leased (so sharing it keeps the free
    /// queue exact), with room for one more lease.
    pub fn shareable(&self, protocol: Protocol, port: u16) -> bool {
        let ports = self.protocols[protocol.index()].borrow();
        ports
            .index(port)
            .is_some_and(|i| ports.leases[i] > 0 && ports.leases[i] < u16::MAX)
    }

    /// Leases `port` again for another flow. The caller has checked [`shareable`](Self::shareable)
    /// and that the new flow's remote endpoint differs from every other lease holder's.
    pub fn share_port(self: &Rc<Self>, protocol: Protocol, port: u16) -> Option<PortLease> {
        let mut ports = self.protocols[protocol.index()].borrow_mut();
        let i = ports.index(port)?;
        if ports.leases[i] == 0 || ports.leases[i] == u16::MAX {
            return None;
        }
        ports.leases[i] += 1;
        ports.total_leases += 1;
        drop(ports);
        Some(PortLease {
            address: Rc::clone(self),
            protocol,
            port,
        })
    }

    /// The `n`-th port of this core's block, for randomized probing when sharing.
    pub fn nth_port(&self, protocol: Protocol, n: u64) -> u16 {
        let ports = self.protocols[protocol.index()].borrow();
        let len = ports.leases.len() as u64;
        ports.first.wrapping_add((n % len.max(1)) as u16)
    }

    fn release(&self, protocol: Protocol, port: u16) {
        let mut ports = self.protocols[protocol.index()].borrow_mut();
        let Some(i) = ports.index(port) else { return };
        debug_assert!(ports.leases[i] > 0, "released a port that was not leased");
        ports.leases[i] = ports.leases[i].saturating_sub(1);
        ports.total_leases = ports.total_leases.saturating_sub(1);
        if ports.leases[i] == 0 {
            ports.free.push_back(port);
        }
    }
}

/// The right to use one (external address, protocol, port). Dropping the lease gives the port
/// back; the flow table drops it together with the flow, so a port can never leak.
pub struct PortLease {
    address: Rc<ExternalAddress>,
    protocol: Protocol,
    port: u16,
}

impl PortLease {
    pub fn address(&self) -> Ipv4Addr {
        self.address.address
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn external(&self) -> &Rc<ExternalAddress> {
        &self.address
    }

    /// A second lease on the same port (for endpoint-independent mapping).
    pub fn share(&self) -> Option<PortLease> {
        self.address.share_port(self.protocol, self.port)
    }
}

impl fmt::Debug for PortLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PortLease({} {}:{})",
            self.protocol.name(),
            self.address.address,
            self.port
        )
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.address.release(self.protocol, self.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_owner_matches_ranges() {
        for cores in 1..=16u16 {
            let p = PortPartition::new(1024, 65535, cores).expect("valid");
            let mut next = 1024u32;
            for core in 0..cores {
                let r = p.range(core);
                assert_eq!(u32::from(*r.start()), next, "blocks are contiguous");
                next = u32::from(*r.end()) + 1;
                for port in [*r.start(), *r.end()] {
                    assert_eq!(p.owner(port), Some(core));
                }
            }
            assert_eq!(next, 65536, "blocks cover the whole range");
            assert_eq!(p.owner(1023), None);
        }
    }

    #[test]
    fn lease_returns_port_on_drop() {
        let p = PortPartition::new(5000, 5003, 1).expect("valid");
        let ext = ExternalAddress::new(Ipv4Addr::new(198, 51, 100, 1), &p, 0, 7);
        let leases: Vec<_> = (0..4)
            .map(|_| ext.lease_free_port(Protocol::Udp).expect("free"))
            .collect();
        assert!(
            ext.lease_free_port(Protocol::Udp).is_none(),
            "block exhausted"
        );
        assert!(
            ext.lease_free_port(Protocol::Tcp).is_some(),
            "protocols have separate spaces"
        );
        let port = leases[2].port();
        let shared = leases[2].share().expect("shareable");
        drop(leases);
        assert_eq!(
            ext.usage(Protocol::Udp).ports_in_use,
            1,
            "shared port still held"
        );
        drop(shared);
        assert_eq!(ext.usage(Protocol::Udp).ports_in_use, 0);
        assert_eq!(ext.total_leases(), 0);
        // Released ports go to the back of the queue; the last released is handed out last.
        let again: Vec<u16> = (0..4)
            .map(|_| ext.lease_free_port(Protocol::Udp).expect("free").port())
            .collect();
        assert_eq!(again.last(), Some(&port));
    }
}
