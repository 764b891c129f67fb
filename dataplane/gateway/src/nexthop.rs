//! Next-hop resolution for forwarded frames: the kernel's IPv4 routes and neighbours, as an
//! immutable snapshot the workers read without locks.
//!
//! [`crate::netlink`] builds a [`NextHops`] from netlink dumps and republishes a fresh one when the
//! kernel reports a change; workers load the current snapshot once per batch and call
//! [`NextHops::resolve`] per forwarded frame.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::Ipv4Net;

/// An Ethernet address.
pub type Mac = [u8; 6];

/// One kernel IPv4 route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Net,
    /// `None`: the destination is on-link.
    pub gateway: Option<Ipv4Addr>,
    pub ifindex: u32,
    /// Lower wins between routes to the same prefix.
    pub metric: u32,
}

/// Longest-prefix match over one interface's routes: one hash map per prefix length in use,
/// probed from the longest.
#[derive(Debug, Clone, Default)]
struct PrefixTable {
    /// (prefix length, network → route), longest prefix first.
    levels: Vec<(u8, HashMap<u32, Route>)>,
}

impl PrefixTable {
    fn insert(&mut self, route: Route) {
        let prefix = route.destination.prefix_len();
        let network = u32::from(route.destination.network());
        let position = match self.levels.binary_search_by(|(len, _)| prefix.cmp(len)) {
            Ok(position) => position,
            Err(position) => {
                self.levels.insert(position, (prefix, HashMap::new()));
                position
            }
        };
        let level = &mut self.levels[position].1;
        match level.get(&network) {
            Some(existing) if existing.metric <= route.metric => {}
            _ => {
                level.insert(network, route);
            }
        }
    }

    fn lookup(&self, destination: Ipv4Addr) -> Option<&Route> {
        let address = u32::from(destination);
        self.levels.iter().find_map(|(prefix, routes)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
            routes.get(&(address & mask))
        })
    }
}

/// An interface's link-layer facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    pub mac: Mac,
    pub mtu: u32,
    /// Receive queues (AF_XDP sockets bind per queue).
    pub rx_queues: u32,
}

/// What forwarding a frame out of an interface needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Rewrite the Ethernet source to `source` and the destination to `destination`.
    Resolved { source: Mac, destination: Mac },
    /// No route through this interface covers the destination.
    NoRoute,
    /// The next hop's MAC address is unknown: ask the kernel to resolve `next_hop`.
    Unresolved { ifindex: u32, next_hop: Ipv4Addr },
}

/// Distinguishes snapshots, so caches notice a new one.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

/// A consistent snapshot of routes, neighbours and links.
#[derive(Debug, Clone, Default)]
pub struct NextHops {
    /// Unique per snapshot built by [`NextHops::new`].
    version: u64,
    routes: HashMap<u32, PrefixTable>,
    neighbours: HashMap<(u32, Ipv4Addr), Mac>,
    links: HashMap<u32, Link>,
}

impl NextHops {
    /// Builds a snapshot. Later duplicates of a neighbour replace earlier ones.
    pub fn new(
        routes: impl IntoIterator<Item = Route>,
        neighbours: impl IntoIterator<Item = (u32, Ipv4Addr, Mac)>,
        links: impl IntoIterator<Item = Link>,
    ) -> Self {
        let mut snapshot = Self {
            version: NEXT_VERSION.fetch_add(1, Ordering::Relaxed),
            ..Self::default()
        };
        for route in routes {
            snapshot
                .routes
                .entry(route.ifindex)
                .or_default()
                .insert(route);
        }
        snapshot.neighbours = neighbours
            .into_iter()
            .map(|(ifindex, ip, mac)| ((ifindex, ip), mac))
            .collect();
        snapshot.links = links.into_iter().map(|link| (link.ifindex, link)).collect();
        snapshot
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn link(&self, ifindex: u32) -> Option<&Link> {
        self.links.get(&ifindex)
    }

    pub fn link_by_name(&self, name: &str) -> Option<&Link> {
        self.links.values().find(|link| link.name == name)
    }

    /// The route through `ifindex` to `destination`, by longest prefix.
    pub fn route(&self, ifindex: u32, destination: Ipv4Addr) -> Option<&Route> {
        self.routes.get(&ifindex)?.lookup(destination)
    }

    pub fn neighbour(&self, ifindex: u32, address: Ipv4Addr) -> Option<Mac> {
        self.neighbours.get(&(ifindex, address)).copied()
    }

    pub fn neighbour_count(&self) -> usize {
        self.neighbours.len()
    }

    pub fn route_count(&self) -> usize {
        self.routes
            .values()
            .map(|table| table.levels.iter().map(|l| l.1.len()).sum::<usize>())
            .sum()
    }

    /// How to send a packet for `destination` out of interface `ifindex`. Only routes through that
    /// interface are considered: the frame leaves by the AF_XDP socket bound to it.
    pub fn resolve(&self, ifindex: u32, destination: Ipv4Addr) -> Resolution {
        let Some(link) = self.links.get(&ifindex) else {
            return Resolution::NoRoute;
        };
        let Some(route) = self.route(ifindex, destination) else {
            return Resolution::NoRoute;
        };
        let next_hop = route.gateway.unwrap_or(destination);
        match self.neighbour(ifindex, next_hop) {
            Some(mac) => Resolution::Resolved {
                source: link.mac,
                destination: mac,
            },
            None => Resolution::Unresolved { ifindex, next_hop },
        }
    }
}

/// Entries of a [`ResolutionCache`] (a power of two).
const CACHE_ENTRIES: usize = 256;

/// A worker's direct-mapped cache of resolved next hops, valid for one snapshot: most frames of a
/// batch go to few destinations, and a hit costs one multiply instead of several hash lookups.
#[derive(Debug)]
pub struct ResolutionCache {
    version: u64,
    entries: Box<[Option<CachedResolution>]>,
}

/// (ifindex, destination, source MAC, destination MAC).
type CachedResolution = (u32, Ipv4Addr, Mac, Mac);

impl Default for ResolutionCache {
    fn default() -> Self {
        Self {
            version: 0,
            entries: vec![None; CACHE_ENTRIES].into_boxed_slice(),
        }
    }
}

impl ResolutionCache {
    fn slot(ifindex: u32, destination: Ipv4Addr) -> usize {
        let key = u64::from(u32::from(destination)) ^ (u64::from(ifindex) << 32);
        // Fibonacci hashing: the top bits of the product are well mixed.
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize & (CACHE_ENTRIES - 1)
    }

    /// [`NextHops::resolve`], remembering resolved answers until `hops` is replaced.
    pub fn resolve(&mut self, hops: &NextHops, ifindex: u32, destination: Ipv4Addr) -> Resolution {
        if self.version != hops.version() {
            self.entries.fill(None);
            self.version = hops.version();
        }
        let slot = Self::slot(ifindex, destination);
        if let Some((cached_ifindex, cached_destination, source, mac)) = self.entries[slot] {
            if cached_ifindex == ifindex && cached_destination == destination {
                return Resolution::Resolved {
                    source,
                    destination: mac,
                };
            }
        }
        let resolution = hops.resolve(ifindex, destination);
        if let Resolution::Resolved {
            source,
            destination: mac,
        } = resolution
        {
            self.entries[slot] = Some((ifindex, destination, source, mac));
        }
        resolution
    }
}

/// Writes the Ethernet destination and source addresses; `false` when the frame is too short.
pub fn rewrite_macs(frame: &mut [u8], source: Mac, destination: Mac) -> bool {
    let Some(header) = frame.get_mut(..12) else {
        return false;
    };
    header[..6].copy_from_slice(&destination);
    header[6..12].copy_from_slice(&source);
    true
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN: u32 = 2;
    const OUT: u32 = 3;
    const IN_MAC: Mac = [2, 0, 0, 0, 0, 2];
    const OUT_MAC: Mac = [2, 0, 0, 0, 0, 3];

    fn route(destination: &str, gateway: Option<[u8; 4]>, ifindex: u32, metric: u32) -> Route {
        Route {
            destination: destination.parse().unwrap(),
            gateway: gateway.map(Ipv4Addr::from),
            ifindex,
            metric,
        }
    }

    fn snapshot() -> NextHops {
        NextHops::new(
            [
                route("10.244.0.0/16", None, IN, 0),
                route("203.0.113.0/24", None, OUT, 0),
                route("0.0.0.0/0", Some([203, 0, 113, 254]), OUT, 100),
                route("0.0.0.0/0", Some([203, 0, 113, 253]), OUT, 50),
                route("192.0.2.0/24", Some([203, 0, 113, 7]), OUT, 0),
                route("192.0.2.128/25", Some([203, 0, 113, 8]), OUT, 0),
            ],
            [
                (IN, Ipv4Addr::new(10, 244, 1, 10), [0xaa; 6]),
                (OUT, Ipv4Addr::new(203, 0, 113, 253), [0xbb; 6]),
                (OUT, Ipv4Addr::new(203, 0, 113, 8), [0xcc; 6]),
                (OUT, Ipv4Addr::new(203, 0, 113, 10), [0xdd; 6]),
            ],
            [
                Link {
                    ifindex: IN,
                    name: "gw-in".into(),
                    mac: IN_MAC,
                    mtu: 1500,
                    rx_queues: 1,
                },
                Link {
                    ifindex: OUT,
                    name: "gw-out".into(),
                    mac: OUT_MAC,
                    mtu: 1500,
                    rx_queues: 1,
                },
            ],
        )
    }

    #[test]
    fn longest_prefix_wins_and_lowest_metric_breaks_ties() {
        let hops = snapshot();
        let lookup = |dst: [u8; 4]| hops.route(OUT, Ipv4Addr::from(dst)).map(|r| r.gateway);
        assert_eq!(
            lookup([192, 0, 2, 200]),
            Some(Some(Ipv4Addr::new(203, 0, 113, 8)))
        );
        assert_eq!(
            lookup([192, 0, 2, 1]),
            Some(Some(Ipv4Addr::new(203, 0, 113, 7)))
        );
        assert_eq!(
            lookup([8, 8, 8, 8]),
            Some(Some(Ipv4Addr::new(203, 0, 113, 253)))
        );
        assert_eq!(lookup([203, 0, 113, 10]), Some(None));
        assert_eq!(
            hops.route(IN, Ipv4Addr::new(8, 8, 8, 8)),
            None,
            "routes are per interface"
        );
        assert_eq!(hops.route_count(), 5);
    }

    #[test]
    fn resolves_on_link_and_via_gateway() {
        let hops = snapshot();
        assert_eq!(
            hops.resolve(IN, Ipv4Addr::new(10, 244, 1, 10)),
            Resolution::Resolved {
                source: IN_MAC,
                destination: [0xaa; 6]
            }
        );
        assert_eq!(
            hops.resolve(OUT, Ipv4Addr::new(1, 1, 1, 1)),
            Resolution::Resolved {
                source: OUT_MAC,
                destination: [0xbb; 6]
            }
        );
        assert_eq!(
            hops.resolve(OUT, Ipv4Addr::new(192, 0, 2, 1)),
            Resolution::Unresolved {
                ifindex: OUT,
                next_hop: Ipv4Addr::new(203, 0, 113, 7)
            }
        );
        assert_eq!(
            hops.resolve(IN, Ipv4Addr::new(10, 244, 1, 11)),
            Resolution::Unresolved {
                ifindex: IN,
                next_hop: Ipv4Addr::new(10, 244, 1, 11)
            }
        );
        assert_eq!(
            hops.resolve(IN, Ipv4Addr::new(192, 0, 2, 1)),
            Resolution::NoRoute
        );
        assert_eq!(
            hops.resolve(9, Ipv4Addr::new(10, 244, 1, 10)),
            Resolution::NoRoute
        );
    }

    #[test]
    fn links_are_found_by_name() {
        let hops = snapshot();
        assert_eq!(hops.link_by_name("gw-out").unwrap().ifindex, OUT);
        assert!(hops.link_by_name("eth0").is_none());
    }

    #[test]
    fn cache_answers_like_the_snapshot_and_forgets_replaced_snapshots() {
        let hops = snapshot();
        let mut cache = ResolutionCache::default();
        for _ in 0..2 {
            for last in 0..=255u8 {
                for ifindex in [IN, OUT] {
                    let destination = Ipv4Addr::new(203, 0, 113, last);
                    assert_eq!(
                        cache.resolve(&hops, ifindex, destination),
                        hops.resolve(ifindex, destination)
                    );
                }
            }
        }
        let pod = Ipv4Addr::new(10, 244, 1, 10);
        assert!(matches!(
            cache.resolve(&hops, IN, pod),
            Resolution::Resolved { .. }
        ));
        // The pod moved: a new snapshot without its neighbour entry must not hit the cache.
        let moved = NextHops::new(
            [route("10.244.0.0/16", None, IN, 0)],
            [],
            [hops.link(IN).unwrap().clone()],
        );
        assert_eq!(
            cache.resolve(&moved, IN, pod),
            Resolution::Unresolved {
                ifindex: IN,
                next_hop: pod
            }
        );
    }

    #[test]
    fn mac_rewrite_touches_only_the_addresses() {
        let mut frame: Vec<u8> = (0..20).collect();
        assert!(rewrite_macs(&mut frame, [1; 6], [2; 6]));
        assert_eq!(&frame[..6], &[2; 6]);
        assert_eq!(&frame[6..12], &[1; 6]);
        assert_eq!(&frame[12..], &(12..20).collect::<Vec<u8>>()[..]);
        let mut short = [0u8; 11];
        assert!(!rewrite_macs(&mut short, [1; 6], [2; 6]));
        assert_eq!(short, [0; 11]);
        assert_eq!(
            format_mac(&[0x02, 0xab, 0, 1, 2, 0xff]),
            "02:ab:00:01:02:ff"
        );
    }
}
