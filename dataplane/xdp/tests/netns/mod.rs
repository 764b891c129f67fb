//! Test network of the XDP tests: namespaces + veth pairs created per test with unique
//! names (egw-netns), deleted by RAII guards even when the test panics, plus frame builders.
//! All traffic stays inside these namespaces.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use egw_netns::link::{self, End};
use egw_netns::Netns;
use egw_xdp::xsk::{Side, Worker};

/// Runs a command, panicking with its output on failure.
pub fn run(args: &[&str]) -> String {
    egw_netns::cmd::run_args(args[0], &args[1..])
        .unwrap_or_else(|error| panic!("{error}"))
        .stdout
}

/// Namespaces of one test (deleted when dropped, also on panic):
/// - `gw`   : `gw0` 10.77.0.1/24 (inside), `gw1` 10.78.0.1/24 (outside),
///   10.77.1.1/32 on `lo` (a kernel-side destination behind the gateway)
/// - `pod`  : `pod0` 10.77.0.2/24, route 10.77.1.0/24 via 10.77.0.1
/// - `ext`  : `ext0` 10.78.0.2/24
pub struct TestNet {
    pub gw: String,
    pub pod: String,
    pub ext: String,
    _guards: [Netns; 3],
}

pub const GW_INSIDE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const POD: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const BEHIND_GW: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
pub const GW_OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
pub const EXT: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);

impl TestNet {
    pub fn new() -> Self {
        let id = egw_netns::namespace::unique_name("egwx");
        // Each guard exists as soon as its namespace does, so a failure half-way still deletes
        // whatever was created.
        let guards =
            ["gw", "pod", "ext"].map(|role| Netns::create(format!("{id}-{role}")).unwrap());
        let [gw, pod, ext] = guards.each_ref().map(|netns| netns.name().to_owned());
        let end = |namespace, name| End { namespace, name };
        link::add_veth(end(&gw, "gw0"), end(&pod, "pod0"), None).unwrap();
        link::add_veth(end(&gw, "gw1"), end(&ext, "ext0"), None).unwrap();
        for (ns, dev, cidr) in [
            (&gw, "gw0", "10.77.0.1/24"),
            (&gw, "gw1", "10.78.0.1/24"),
            (&gw, "lo", "10.77.1.1/32"),
            (&pod, "pod0", "10.77.0.2/24"),
            (&ext, "ext0", "10.78.0.2/24"),
        ] {
            link::add_address(ns, dev, cidr).unwrap();
        }
        for (ns, dev) in [(&gw, "gw0"), (&gw, "gw1"), (&pod, "pod0"), (&ext, "ext0")] {
            link::set_up(ns, dev).unwrap();
        }
        run(&[
            "ip",
            "-n",
            &pod,
            "route",
            "add",
            "10.77.1.0/24",
            "via",
            "10.77.0.1",
        ]);
        TestNet {
            gw,
            pod,
            ext,
            _guards: guards,
        }
    }

    /// MAC address of `dev` in namespace `ns`.
    pub fn mac(&self, ns: &str, dev: &str) -> [u8; 6] {
        link::mac(ns, dev).unwrap()
    }

    /// `ip -d link show` of `dev` in the gateway namespace.
    pub fn gw_link_details(&self, dev: &str) -> String {
        run(&["ip", "-n", &self.gw, "-d", "link", "show", "dev", dev])
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`.
pub fn in_netns<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> R {
    egw_netns::in_netns(ns, f).unwrap()
}

/// Sends `count` UDP datagrams `"{marker}-{i}"` from `from` to `to` inside `ns`.
pub fn send_udp(ns: &str, from: Ipv4Addr, to: (Ipv4Addr, u16), marker: &str, count: usize) {
    in_netns(ns, || {
        let socket = std::net::UdpSocket::bind((from, 0)).unwrap();
        for i in 0..count {
            socket
                .send_to(format!("{marker}-{i}").as_bytes(), to)
                .unwrap();
        }
    });
}

/// Receives up to `count` datagrams on `socket` (2 s timeout per datagram).
pub fn recv_udp(socket: &std::net::UdpSocket, count: usize) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    while got.len() < count {
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    got
}

/// Polls `side` of `worker` until `want` frames arrived or 5 s passed; returns
/// their packet bytes (frames are recycled).
pub fn collect_rx(worker: &mut Worker, side: Side, want: usize) -> Vec<Vec<u8>> {
    let start = Instant::now();
    let mut batch = Vec::with_capacity(64);
    let mut packets = Vec::new();
    while packets.len() < want && start.elapsed() < Duration::from_secs(5) {
        worker.wait(Duration::from_millis(100)).unwrap();
        worker.rx_batch(side, &mut batch, 64);
        for desc in batch.drain(..) {
            packets.push(worker.packet_mut(&desc).to_vec());
            worker.recycle(desc);
        }
        worker.flush();
    }
    packets
}

/// UDP payload of an Ethernet/IPv4/UDP frame (no VLAN).
pub fn udp_payload(frame: &[u8]) -> Option<&[u8]> {
    if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    frame.get(14 + ihl + 8..)
}

/// IPv4 header checksum over `header` (checksum field zeroed by the caller).
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes an Ethernet/IPv4/UDP frame (UDP checksum 0 = none) into `buf`;
/// returns its length.
pub fn write_udp_frame(
    buf: &mut [u8],
    macs: ([u8; 6], [u8; 6]),
    ips: (Ipv4Addr, Ipv4Addr),
    ports: (u16, u16),
    payload: &[u8],
) -> usize {
    let (src_mac, dst_mac) = macs;
    let total = 14 + 20 + 8 + payload.len();
    buf[0..6].copy_from_slice(&dst_mac);
    buf[6..12].copy_from_slice(&src_mac);
    buf[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut buf[14..34];
    ip.copy_from_slice(&[
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    ip[2..4].copy_from_slice(&((20 + 8 + payload.len()) as u16).to_be_bytes());
    ip[12..16].copy_from_slice(&ips.0.octets());
    ip[16..20].copy_from_slice(&ips.1.octets());
    let checksum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    let udp = &mut buf[34..42];
    udp[0..2].copy_from_slice(&ports.0.to_be_bytes());
    udp[2..4].copy_from_slice(&ports.1.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    buf[42..total].copy_from_slice(payload);
    total
}
