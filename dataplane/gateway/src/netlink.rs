//! The kernel side of next-hop resolution: netlink dumps of links, addresses, IPv4 routes and
//! neighbours, a monitor thread that republishes the [`NextHops`] snapshot when the kernel reports
//! a change, and neighbour resolution requests (`RTM_NEWNEIGH` with `NTF_USE`, which makes the
//! kernel probe an address as if it had a packet for it).
//!
//! Sockets are opened in the calling thread's network namespace.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use tracing::{debug, info, warn};

use crate::nexthop::{Link, Mac, NextHops, Route};

/// How long a neighbour resolution request suppresses repeats for the same address.
const RESOLUTION_REPEAT: Duration = Duration::from_secs(1);
/// How often the monitor looks for kernel notifications and resolution requests.
const MONITOR_TICK: Duration = Duration::from_millis(10);
/// How often STALE neighbours of the gateway's interfaces are re-probed. The kernel never sees
/// the frames AF_XDP forwards, so without this it would never re-confirm a neighbour the workers
/// keep using, and a changed MAC address would go unnoticed.
const STALE_REFRESH: Duration = Duration::from_secs(30);
/// Most STALE neighbours re-probed per round.
const STALE_REFRESH_LIMIT: usize = 4096;
/// Pending resolution requests the workers may queue.
pub const RESOLUTION_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket")]
    Open(#[source] io::Error),
    #[error("netlink {what}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netlink {what}: undecodable reply: {message}")]
    Decode { what: &'static str, message: String },
}

/// A blocking netlink route socket for requests and dumps.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

fn io_error(what: &'static str) -> impl FnOnce(io::Error) -> NetlinkError {
    move |source| NetlinkError::Io { what, source }
}

impl Netlink {
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Open)?;
        socket.bind_auto().map_err(NetlinkError::Open)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Open)?;
        Ok(Self {
            socket,
            sequence: 1,
            buffer: vec![0; 1 << 16],
        })
    }

    /// Sends `message` and collects the replies until the dump ends or the request is acked.
    fn request(
        &mut self,
        what: &'static str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0).map_err(io_error(what))?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        loop {
            let size = self
                .socket
                .recv(&mut &mut self.buffer[..], 0)
                .map_err(io_error(what))?;
            let mut offset = 0;
            while offset < size {
                let reply =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buffer[offset..size])
                        .map_err(|error| NetlinkError::Decode {
                            what,
                            message: error.to_string(),
                        })?;
                let length = reply.header.length as usize;
                let ours = reply.header.sequence_number == sequence;
                if ours {
                    match reply.payload {
                        NetlinkPayload::Done(_) => return Ok(replies),
                        NetlinkPayload::Error(error) => {
                            return match error.code {
                                None => Ok(replies),
                                Some(_) => Err(NetlinkError::Io {
                                    what,
                                    source: error.to_io(),
                                }),
                            }
                        }
                        NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                        _ => {}
                    }
                }
                if length == 0 {
                    break;
                }
                offset += length;
            }
            if !dump && flags & NLM_F_ACK == 0 {
                return Ok(replies);
            }
        }
    }

    fn dump(
        &mut self,
        what: &'static str,
        message: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.request(what, message, NLM_F_REQUEST | NLM_F_DUMP)
    }

    /// Every interface's index, name, MAC address (zero when it has none) and MTU.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let replies = self.dump(
            "link dump",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link_from(&link)),
                _ => None,
            })
            .collect())
    }

    /// Every IPv4 address configured on an interface, as (ifindex, address).
    pub fn addresses(&mut self) -> Result<Vec<(u32, Ipv4Addr)>, NetlinkError> {
        let mut request = AddressMessage::default();
        request.header.family = AddressFamily::Inet;
        let replies = self.dump("address dump", RouteNetlinkMessage::GetAddress(request))?;
        let mut addresses = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(message) = reply else {
                continue;
            };
            let local = message
                .attributes
                .iter()
                .find_map(|attribute| match attribute {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                });
            let address = local.or_else(|| {
                message
                    .attributes
                    .iter()
                    .find_map(|attribute| match attribute {
                        AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                        _ => None,
                    })
            });
            if let Some(address) = address {
                addresses.push((message.header.index, address));
            }
        }
        Ok(addresses)
    }

    /// The unicast IPv4 routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<Route>, NetlinkError> {
        let mut request = RouteMessage::default();
        request.header.address_family = AddressFamily::Inet;
        let replies = self.dump("route dump", RouteNetlinkMessage::GetRoute(request))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewRoute(route) => Some(routes_from(&route)),
                _ => None,
            })
            .flatten()
            .collect())
    }

    /// IPv4 neighbours with a usable link-layer address, as (ifindex, address, MAC).
    pub fn neighbours(&mut self) -> Result<Vec<(u32, Ipv4Addr, Mac)>, NetlinkError> {
        let mut request = NeighbourMessage::default();
        request.header.family = AddressFamily::Inet;
        let replies = self.dump("neighbour dump", RouteNetlinkMessage::GetNeighbour(request))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewNeighbour(neighbour) => neighbour_from(&neighbour),
                _ => None,
            })
            .collect())
    }

    /// IPv4 neighbours of `interfaces` in the STALE state, as (ifindex, address).
    pub fn stale_neighbours(
        &mut self,
        interfaces: &[u32],
    ) -> Result<Vec<(u32, Ipv4Addr)>, NetlinkError> {
        let mut request = NeighbourMessage::default();
        request.header.family = AddressFamily::Inet;
        let replies = self.dump("neighbour dump", RouteNetlinkMessage::GetNeighbour(request))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewNeighbour(neighbour)
                    if neighbour.header.state == NeighbourState::Stale
                        && interfaces.contains(&neighbour.header.ifindex) =>
                {
                    neighbour_from(&neighbour).map(|(ifindex, address, _)| (ifindex, address))
                }
                _ => None,
            })
            .collect())
    }

    /// A fresh snapshot of routes, neighbours and links.
    pub fn snapshot(&mut self) -> Result<NextHops, NetlinkError> {
        let links = self.links()?;
        let routes = self.routes()?;
        let neighbours = self.neighbours()?;
        Ok(NextHops::new(routes, neighbours, links))
    }

    /// Asks the kernel to resolve `address` on `ifindex` (creating the neighbour entry if needed),
    /// as if it had a packet to send there. The answer arrives as a neighbour notification.
    pub fn request_resolution(
        &mut self,
        ifindex: u32,
        address: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.ifindex = ifindex;
        message.header.state = NeighbourState::None;
        message.header.flags = NeighbourFlags::Use;
        message
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                address,
            )));
        self.request(
            "neighbour resolution",
            RouteNetlinkMessage::NewNeighbour(message),
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
        )
        .map(drop)
    }
}

fn link_from(message: &LinkMessage) -> Link {
    let mut link = Link {
        ifindex: message.header.index,
        name: String::new(),
        mac: [0; 6],
        mtu: 1500,
        rx_queues: 1,
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Address(bytes) => {
                if let Ok(mac) = <Mac>::try_from(bytes.as_slice()) {
                    link.mac = mac;
                }
            }
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::NumRxQueues(queues) => link.rx_queues = *queues,
            _ => {}
        }
    }
    link
}

fn route_table_id(message: &RouteMessage) -> u32 {
    message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(message.header.table))
}

fn inet(address: &RouteAddress) -> Option<Ipv4Addr> {
    match address {
        RouteAddress::Inet(ip) => Some(*ip),
        _ => None,
    }
}

/// The routes one route message describes (one per next hop of a multipath route).
fn routes_from(message: &RouteMessage) -> Vec<Route> {
    if message.header.address_family != AddressFamily::Inet
        || message.header.kind != RouteType::Unicast
        || route_table_id(message) != u32::from(RouteHeader::RT_TABLE_MAIN)
    {
        return Vec::new();
    }
    let mut destination = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    let mut metric = 0;
    let mut hops = Vec::new();
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(address) => {
                destination = inet(address).unwrap_or(destination)
            }
            RouteAttribute::Gateway(address) => gateway = inet(address),
            RouteAttribute::Oif(index) => oif = Some(*index),
            RouteAttribute::Priority(priority) => metric = *priority,
            RouteAttribute::MultiPath(next_hops) => {
                for hop in next_hops {
                    let hop_gateway = hop.attributes.iter().find_map(|attribute| match attribute {
                        RouteAttribute::Gateway(address) => inet(address),
                        _ => None,
                    });
                    hops.push((hop.interface_index, hop_gateway));
                }
            }
            _ => {}
        }
    }
    let Ok(destination) =
        ipnet::Ipv4Net::new(destination, message.header.destination_prefix_length)
    else {
        return Vec::new();
    };
    if let Some(oif) = oif {
        hops.insert(0, (oif, gateway));
    }
    hops.into_iter()
        .map(|(ifindex, gateway)| Route {
            destination,
            gateway,
            ifindex,
            metric,
        })
        .collect()
}

fn neighbour_from(message: &NeighbourMessage) -> Option<(u32, Ipv4Addr, Mac)> {
    if message.header.family != AddressFamily::Inet {
        return None;
    }
    let usable = matches!(
        message.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    );
    if !usable {
        return None;
    }
    let mut address = None;
    let mut mac = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => address = Some(*ip),
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                mac = <Mac>::try_from(bytes.as_slice()).ok()
            }
            _ => {}
        }
    }
    Some((message.header.ifindex, address?, mac?))
}

/// Counters of the monitor, for the status.
#[derive(Debug, Default)]
pub struct MonitorCounters {
    /// Snapshots published after the initial one.
    pub refreshes: AtomicU64,
    /// Resolution requests sent to the kernel.
    pub resolutions_requested: AtomicU64,
    /// Resolution requests the kernel refused.
    pub resolutions_failed: AtomicU64,
}

/// Keeps a [`NextHops`] snapshot current. Dropping it stops the thread.
pub struct NextHopMonitor {
    snapshot: Arc<ArcSwap<NextHops>>,
    resolve: Sender<(u32, Ipv4Addr)>,
    counters: Arc<MonitorCounters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;

impl NextHopMonitor {
    /// Dumps the kernel state and starts the monitor thread, with sockets of the calling thread's
    /// network namespace.
    /// `interfaces` are the gateway's interface indexes, whose STALE neighbours are re-probed.
    /// `on_addresses` hears about address changes (e.g. to keep XDP's local-address map current).
    pub fn start(
        interfaces: Vec<u32>,
        on_addresses: Option<AddressListener>,
    ) -> Result<Self, NetlinkError> {
        let mut requests = Netlink::open()?;
        let events = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Open)?;
        let mut events = events;
        events.bind_auto().map_err(NetlinkError::Open)?;
        for group in [
            RTNLGRP_LINK,
            RTNLGRP_NEIGH,
            RTNLGRP_IPV4_IFADDR,
            RTNLGRP_IPV4_ROUTE,
        ] {
            events
                .add_membership(group)
                .map_err(io_error("subscribing to notifications"))?;
        }
        events
            .set_non_blocking(true)
            .map_err(io_error("subscribing to notifications"))?;
        // Subscribe before the dump so no change falls between the two.
        let initial = requests.snapshot()?;
        info!(
            routes = initial.route_count(),
            neighbours = initial.neighbour_count(),
            "next-hop snapshot loaded"
        );
        let snapshot = Arc::new(ArcSwap::from_pointee(initial));
        let (resolve, resolve_requests) = crossbeam::channel::bounded(RESOLUTION_QUEUE);
        let counters = Arc::new(MonitorCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("egw-nexthops".into())
            .spawn({
                let state = Monitor {
                    requests,
                    events,
                    resolve_requests,
                    snapshot: Arc::clone(&snapshot),
                    counters: Arc::clone(&counters),
                    stop: Arc::clone(&stop),
                    interfaces,
                    on_addresses,
                };
                move || monitor(state)
            })
            .map_err(io_error("starting the monitor thread"))?;
        Ok(Self {
            snapshot,
            resolve,
            counters,
            stop,
            thread: Some(thread),
        })
    }

    /// The published snapshot, for workers to `load` once per batch.
    pub fn snapshot(&self) -> Arc<ArcSwap<NextHops>> {
        Arc::clone(&self.snapshot)
    }

    /// Where workers queue (ifindex, next hop) addresses to resolve (`try_send`; full → skip).
    pub fn resolver(&self) -> Sender<(u32, Ipv4Addr)> {
        self.resolve.clone()
    }

    pub fn counters(&self) -> Arc<MonitorCounters> {
        Arc::clone(&self.counters)
    }
}

impl Drop for NextHopMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                warn!("next-hop monitor thread panicked");
            }
        }
    }
}

/// Called with every IPv4 address of the namespace whenever the set changes.
pub type AddressListener = Box<dyn FnMut(&[Ipv4Addr]) + Send>;

/// What the monitor thread owns.
struct Monitor {
    requests: Netlink,
    events: Socket,
    resolve_requests: Receiver<(u32, Ipv4Addr)>,
    snapshot: Arc<ArcSwap<NextHops>>,
    counters: Arc<MonitorCounters>,
    stop: Arc<AtomicBool>,
    interfaces: Vec<u32>,
    on_addresses: Option<AddressListener>,
}

/// Which kinds of kernel state a batch of notifications touched: (next hops, addresses).
fn classify_notifications(bytes: &[u8]) -> (bool, bool) {
    let (mut hops, mut addresses) = (false, false);
    let mut offset = 0;
    while offset < bytes.len() {
        let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[offset..])
        else {
            return (true, true);
        };
        match message.payload {
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_),
            ) => addresses = true,
            _ => hops = true,
        }
        let length = message.header.length as usize;
        if length == 0 {
            break;
        }
        offset += length;
    }
    (hops, addresses)
}

fn monitor(state: Monitor) {
    let Monitor {
        mut requests,
        events,
        resolve_requests,
        snapshot,
        counters,
        stop,
        interfaces,
        mut on_addresses,
    } = state;
    let mut last_stale_refresh = Instant::now();
    let mut buffer = vec![0u8; 1 << 16];
    let mut recently_requested: HashMap<(u32, Ipv4Addr), Instant> = HashMap::new();
    let mut failures_logged = 0u32;
    while !stop.load(Ordering::Relaxed) {
        match resolve_requests.recv_timeout(MONITOR_TICK) {
            Ok(first) => {
                let now = Instant::now();
                if recently_requested.len() > 4096 {
                    recently_requested.retain(|_, at| now.duration_since(*at) < RESOLUTION_REPEAT);
                }
                for (ifindex, address) in std::iter::once(first).chain(resolve_requests.try_iter())
                {
                    let fresh = recently_requested
                        .get(&(ifindex, address))
                        .is_none_or(|at| now.duration_since(*at) >= RESOLUTION_REPEAT);
                    if !fresh {
                        continue;
                    }
                    recently_requested.insert((ifindex, address), now);
                    counters
                        .resolutions_requested
                        .fetch_add(1, Ordering::Relaxed);
                    match requests.request_resolution(ifindex, address) {
                        Ok(()) => debug!(ifindex, %address, "neighbour resolution requested"),
                        Err(error) => {
                            counters.resolutions_failed.fetch_add(1, Ordering::Relaxed);
                            if failures_logged < 10 {
                                failures_logged += 1;
                                warn!(ifindex, %address, %error, "neighbour resolution request failed");
                            }
                        }
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // Workers are gone; keep serving notifications until told to stop.
                std::thread::sleep(MONITOR_TICK);
            }
        }
        if last_stale_refresh.elapsed() >= STALE_REFRESH {
            last_stale_refresh = Instant::now();
            match requests.stale_neighbours(&interfaces) {
                Ok(stale) => {
                    for (ifindex, address) in stale.into_iter().take(STALE_REFRESH_LIMIT) {
                        counters
                            .resolutions_requested
                            .fetch_add(1, Ordering::Relaxed);
                        if requests.request_resolution(ifindex, address).is_err() {
                            counters.resolutions_failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(error) => debug!(%error, "listing stale neighbours failed"),
            }
        }
        let (mut changed, mut addresses_changed) = (false, false);
        loop {
            match events.recv(&mut &mut buffer[..], 0) {
                Ok(0) => break,
                Ok(size) => {
                    let (hops, addresses) = classify_notifications(&buffer[..size]);
                    changed |= hops;
                    addresses_changed |= addresses;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    // ENOBUFS: notifications were lost; a full dump catches up.
                    debug!(%error, "netlink notification socket overrun");
                    changed = true;
                    addresses_changed = true;
                    break;
                }
            }
        }
        if let (true, Some(listener)) = (addresses_changed, on_addresses.as_mut()) {
            match requests.addresses() {
                Ok(addresses) => {
                    let addresses: Vec<Ipv4Addr> =
                        addresses.into_iter().map(|(_, address)| address).collect();
                    listener(&addresses);
                }
                Err(error) => warn!(%error, "re-reading the interface addresses failed"),
            }
        }
        if changed {
            match requests.snapshot() {
                Ok(fresh) => {
                    snapshot.store(Arc::new(fresh));
                    counters.refreshes.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    warn!(%error, "refreshing the next-hop snapshot failed; keeping the previous one")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::route::RouteNextHop;

    fn bytes(message: RouteNetlinkMessage) -> Vec<u8> {
        let mut packet =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        bytes
    }

    fn route_message(table: u8, kind: RouteType, attributes: Vec<RouteAttribute>) -> RouteMessage {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.destination_prefix_length = 24;
        message.header.table = table;
        message.header.kind = kind;
        message.attributes = attributes;
        message
    }

    #[test]
    fn main_table_unicast_routes_are_read_with_their_next_hops() {
        let destination =
            RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(192, 0, 2, 0)));
        let message = route_message(
            RouteHeader::RT_TABLE_MAIN,
            RouteType::Unicast,
            vec![
                destination.clone(),
                RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(203, 0, 113, 254))),
                RouteAttribute::Oif(3),
                RouteAttribute::Priority(20),
            ],
        );
        assert_eq!(
            routes_from(&message),
            vec![Route {
                destination: "192.0.2.0/24".parse().unwrap(),
                gateway: Some(Ipv4Addr::new(203, 0, 113, 254)),
                ifindex: 3,
                metric: 20,
            }]
        );
        let local = route_message(
            255,
            RouteType::Local,
            vec![destination.clone(), RouteAttribute::Oif(3)],
        );
        assert!(routes_from(&local).is_empty());
        let other_table = route_message(
            100,
            RouteType::Unicast,
            vec![destination.clone(), RouteAttribute::Oif(3)],
        );
        assert!(routes_from(&other_table).is_empty());

        let mut hop = RouteNextHop::default();
        hop.interface_index = 4;
        hop.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(
            10, 0, 0, 1,
        )))];
        let multipath = route_message(
            RouteHeader::RT_TABLE_MAIN,
            RouteType::Unicast,
            vec![destination, RouteAttribute::MultiPath(vec![hop])],
        );
        let routes = routes_from(&multipath);
        assert_eq!(routes.len(), 1);
        assert_eq!(
            (routes[0].ifindex, routes[0].gateway),
            (4, Some(Ipv4Addr::new(10, 0, 0, 1)))
        );
    }

    #[test]
    fn only_usable_neighbours_are_kept() {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.ifindex = 2;
        message.header.state = NeighbourState::Reachable;
        message.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet(Ipv4Addr::new(10, 244, 1, 10))),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 9]),
        ];
        assert_eq!(
            neighbour_from(&message),
            Some((2, Ipv4Addr::new(10, 244, 1, 10), [2, 0, 0, 0, 0, 9]))
        );
        message.header.state = NeighbourState::Incomplete;
        assert_eq!(neighbour_from(&message), None);
        message.header.state = NeighbourState::Failed;
        assert_eq!(neighbour_from(&message), None);
        message.header.state = NeighbourState::Stale;
        message.attributes.pop();
        assert_eq!(neighbour_from(&message), None, "no link-layer address");
    }

    #[test]
    fn notifications_are_classified() {
        let mut address = AddressMessage::default();
        address.header.family = AddressFamily::Inet;
        let address = bytes(RouteNetlinkMessage::NewAddress(address));
        let mut neighbour = NeighbourMessage::default();
        neighbour.header.family = AddressFamily::Inet;
        let neighbour = bytes(RouteNetlinkMessage::NewNeighbour(neighbour));
        assert_eq!(classify_notifications(&address), (false, true));
        assert_eq!(classify_notifications(&neighbour), (true, false));
        let both: Vec<u8> = address.iter().chain(&neighbour).copied().collect();
        assert_eq!(classify_notifications(&both), (true, true));
        assert_eq!(
            classify_notifications(&[1, 2, 3]),
            (true, true),
            "undecodable: refresh all"
        );
    }
}
