//! Test network: namespaces + veth pairs created per test with unique names,
//! deleted by an RAII guard even when the test panics. All traffic stays
//! inside these namespaces.

#![allow(dead_code)] // each test binary uses a different subset

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use egw_xdp::xsk::{Side, Worker};

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// Runs a command, panicking with its output on failure.
pub fn run(args: &[&str]) -> String {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Namespaces of one test:
/// - `gw`   : `gw0` 10.77.0.1/24 (inside), `gw1` 10.78.0.1/24 (outside),
///   10.77.1.1/32 on `lo` (a kernel-side destination behind the gateway)
/// - `pod`  : `pod0` 10.77.0.2/24, route 10.77.1.0/24 via 10.77.0.1
/// - `ext`  : `ext0` 10.78.0.2/24
pub struct TestNet {
    pub gw: String,
    pub pod: String,
    pub ext: String,
}

pub const GW_INSIDE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const POD: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const BEHIND_GW: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
pub const GW_OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
pub const EXT: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);

impl TestNet {
    pub fn new() -> Self {
        let id = format!(
            "egwx-{}-{}",
            std::process::id(),
            NEXT_NET.fetch_add(1, Ordering::Relaxed)
        );
        // The guard exists before the first namespace, so a failure half-way
        // still deletes whatever was created.
        let net = Self {
            gw: format!("{id}-gw"),
            pod: format!("{id}-pod"),
            ext: format!("{id}-ext"),
        };
        for ns in [&net.gw, &net.pod, &net.ext] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let (gw, pod, ext) = (net.gw.as_str(), net.pod.as_str(), net.ext.as_str());
        run(&[
            "ip", "-n", gw, "link", "add", "gw0", "type", "veth", "peer", "name", "pod0", "netns",
            pod,
        ]);
        run(&[
            "ip", "-n", gw, "link", "add", "gw1", "type", "veth", "peer", "name", "ext0", "netns",
            ext,
        ]);
        run(&["ip", "-n", gw, "addr", "add", "10.77.0.1/24", "dev", "gw0"]);
        run(&["ip", "-n", gw, "addr", "add", "10.78.0.1/24", "dev", "gw1"]);
        run(&["ip", "-n", gw, "addr", "add", "10.77.1.1/32", "dev", "lo"]);
        run(&[
            "ip",
            "-n",
            pod,
            "addr",
            "add",
            "10.77.0.2/24",
            "dev",
            "pod0",
        ]);
        run(&[
            "ip",
            "-n",
            ext,
            "addr",
            "add",
            "10.78.0.2/24",
            "dev",
            "ext0",
        ]);
        for (ns, dev) in [(gw, "gw0"), (gw, "gw1"), (pod, "pod0"), (ext, "ext0")] {
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        run(&[
            "ip",
            "-n",
            pod,
            "route",
            "add",
            "10.77.1.0/24",
            "via",
            "10.77.0.1",
        ]);
        net
    }

    /// MAC address of `dev` in namespace `ns`.
    pub fn mac(&self, ns: &str, dev: &str) -> [u8; 6] {
        let out = run(&["ip", "-n", ns, "link", "show", "dev", dev]);
        let text = out
            .split("link/ether ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no MAC in {out}"));
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(text.split(':')) {
            *byte = u8::from_str_radix(part, 16).unwrap();
        }
        mac
    }

    /// `ip -d link show` of `dev` in the gateway namespace.
    pub fn gw_link_details(&self, dev: &str) -> String {
        run(&["ip", "-n", &self.gw, "-d", "link", "show", "dev", dev])
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for ns in [&self.gw, &self.pod, &self.ext] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`.
pub fn in_netns<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(format!("/run/netns/{ns}")).unwrap();
                // SAFETY: setns(2) on a valid namespace fd; it only changes
                // this (test-owned, short-lived) thread's network namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
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
