//! Addresses the generator needs when run by hand: the interface's MAC, the default gateway and
//! its MAC (resolved by the kernel's ARP), and the source address the kernel would pick.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum NetInfoError {
    #[error("reading {path} failed: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is not a MAC address: {text:?}")]
    BadMac { what: String, text: String },
    #[error("no IPv4 default route via {interface} in /proc/net/route")]
    NoDefaultRoute { interface: String },
    #[error("the kernel did not resolve {address}'s MAC within {waited:?}; pass --dst-mac")]
    Unresolved { address: Ipv4Addr, waited: Duration },
    #[error("finding the source address towards {destination} failed: {source}")]
    SourceAddress {
        destination: Ipv4Addr,
        #[source]
        source: std::io::Error,
    },
}

/// Parses `02:00:5e:10:00:01`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn read(path: &str) -> Result<String, NetInfoError> {
    std::fs::read_to_string(path).map_err(|source| NetInfoError::Read {
        path: path.to_owned(),
        source,
    })
}

/// MAC address of `interface` in this network namespace.
pub fn interface_mac(interface: &str) -> Result<[u8; 6], NetInfoError> {
    let path = format!("/sys/class/net/{interface}/address");
    let text = read(&path)?;
    parse_mac(&text).ok_or(NetInfoError::BadMac { what: path, text })
}

/// The gateway of the IPv4 default route through `interface`, from `/proc/net/route` text.
pub fn default_gateway_in(route_table: &str, interface: &str) -> Option<Ipv4Addr> {
    route_table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (name, destination, gateway) = (fields.first()?, fields.get(1)?, fields.get(2)?);
        if *name != interface || *destination != "00000000" {
            return None;
        }
        // Little-endian hex as the kernel prints it on x86 and arm64.
        let raw = u32::from_str_radix(gateway, 16).ok()?;
        Some(Ipv4Addr::from(raw.swap_bytes()))
    })
}

pub fn default_gateway(interface: &str) -> Result<Ipv4Addr, NetInfoError> {
    default_gateway_in(&read("/proc/net/route")?, interface).ok_or_else(|| {
        NetInfoError::NoDefaultRoute {
            interface: interface.to_owned(),
        }
    })
}

/// The MAC of `address` in `/proc/net/arp` text, if complete.
pub fn neighbour_in(arp_table: &str, address: Ipv4Addr) -> Option<[u8; 6]> {
    let wanted = address.to_string();
    arp_table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = u32::from_str_radix(fields.get(2)?.trim_start_matches("0x"), 16).ok()?;
        // ATF_COM (0x2): the entry is resolved.
        (*fields.first()? == wanted && flags & 0x2 != 0)
            .then(|| parse_mac(fields.get(3)?))
            .flatten()
    })
}

/// Makes the kernel ARP for `address` (one datagram to its discard port) and waits, bounded,
/// for the answer.
pub fn resolve_neighbour(address: Ipv4Addr, timeout: Duration) -> Result<[u8; 6], NetInfoError> {
    let start = Instant::now();
    let mut poked = false;
    while start.elapsed() < timeout {
        if let Some(mac) = neighbour_in(&read("/proc/net/arp")?, address) {
            return Ok(mac);
        }
        if !poked {
            // Any error only means no ARP was triggered; the wait below then times out.
            if let Ok(socket) = UdpSocket::bind("0.0.0.0:0") {
                let _ = socket.send_to(b"arp", SocketAddrV4::new(address, 9));
            }
            poked = true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(NetInfoError::Unresolved {
        address,
        waited: timeout,
    })
}

/// The source address the kernel picks towards `destination` (a connected UDP socket sends
/// nothing).
pub fn source_address_towards(destination: Ipv4Addr) -> Result<Ipv4Addr, NetInfoError> {
    let error = |source| NetInfoError::SourceAddress {
        destination,
        source,
    };
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(error)?;
    socket
        .connect(SocketAddrV4::new(destination, 9))
        .map_err(error)?;
    match socket.local_addr().map_err(error)? {
        std::net::SocketAddr::V4(local) => Ok(*local.ip()),
        std::net::SocketAddr::V6(_) => Err(error(std::io::Error::other("IPv6 local address"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("02:00:5e:10:00:0a\n"),
            Some([2, 0, 0x5e, 0x10, 0, 0x0a])
        );
        assert_eq!(parse_mac("02:00:5e:10:00"), None);
        assert_eq!(parse_mac("02:00:5e:10:00:0a:01"), None);
        assert_eq!(parse_mac("zz:00:5e:10:00:0a"), None);
    }

    #[test]
    fn default_gateway_is_read_from_the_route_table() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                     eth0\t0000F40A\t00000000\t0001\t0\t0\t0\t0000FFFF\n\
                     eth0\t00000000\t0100F40A\t0003\t0\t0\t0\t00000000\n";
        assert_eq!(
            default_gateway_in(table, "eth0"),
            Some(Ipv4Addr::new(10, 244, 0, 1))
        );
        assert_eq!(default_gateway_in(table, "eth1"), None);
    }

    #[test]
    fn only_complete_neighbours_resolve() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device\n\
                     10.244.0.1       0x1         0x2         02:11:22:33:44:55     *        eth0\n\
                     10.244.0.2       0x1         0x0         00:00:00:00:00:00     *        eth0\n";
        assert_eq!(
            neighbour_in(table, Ipv4Addr::new(10, 244, 0, 1)),
            Some([2, 0x11, 0x22, 0x33, 0x44, 0x55])
        );
        assert_eq!(neighbour_in(table, Ipv4Addr::new(10, 244, 0, 2)), None);
        assert_eq!(neighbour_in(table, Ipv4Addr::new(10, 244, 0, 3)), None);
    }
}
