//! The load generator, run inside a pod namespace.
//!
//! UDP: pre-built frames sent with AF_XDP from one socket on the pod's interface (no XDP program
//! is needed to transmit). Packet `i` belongs to flow `i mod flows`, so consecutive packets hit
//! different flows, the worst case for a flow table. Each flow is a (source port, destination
//! port) pair of the pod's address towards one destination address.
//!
//! TCP: connections per second with kernel sockets: connect, then close with an RST (linger 0,
//! so the generator's ports never sit in TIME_WAIT), from many threads in parallel.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use egw_xdp::xsk::{FrameDesc, FrameSize, Side, TxStatus, Worker, WorkerConfig, XskError};
use serde::{Deserialize, Serialize};

use crate::cpu::{self, ProcessTimes};
use crate::netinfo::{self, NetInfoError};
use crate::stats::{self, monotonic_ns, Percentiles, Progress};
use crate::wire::{FrameSpec, Stamp, Template, WireError};

/// No run may last longer than this, whatever the flags say.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// Most source ports one destination port gets: the non-privileged range minus a margin.
pub const MAX_SOURCE_PORTS: u32 = 60_000;
pub const DEFAULT_SOURCE_PORT_BASE: u16 = 1024;
pub const DEFAULT_DESTINATION_PORT_BASE: u16 = 9000;
const TX_BATCH: usize = 64;
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
const MAX_PARALLEL_CONNECTS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("invalid generator settings: {0}")]
    Config(String),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    NetInfo(#[from] NetInfoError),
    #[error("AF_XDP socket on {interface}: {source}")]
    Xsk {
        interface: String,
        #[source]
        source: XskError,
    },
    #[error("AF_XDP frame too small for a {len}-byte packet: {detail}")]
    Frame { len: usize, detail: String },
}

/// How flows map to ports: `flows` pairs out of `source_ports` × `destination_ports`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowPlan {
    pub flows: u32,
    pub source_port_base: u16,
    pub source_ports: u32,
    pub destination_port_base: u16,
    pub destination_ports: u32,
}

impl FlowPlan {
    /// As few destination ports as possible, each with at most [`MAX_SOURCE_PORTS`] sources.
    pub fn new(
        flows: u32,
        source_port_base: u16,
        destination_port_base: u16,
    ) -> Result<Self, GenerateError> {
        if flows == 0 {
            return Err(GenerateError::Config("flows must be at least 1".to_owned()));
        }
        let source_room =
            (u32::from(u16::MAX) - u32::from(source_port_base) + 1).min(MAX_SOURCE_PORTS);
        let destination_ports = flows.div_ceil(source_room);
        let source_ports = flows.div_ceil(destination_ports);
        if u32::from(destination_port_base) + destination_ports - 1 > u32::from(u16::MAX) {
            return Err(GenerateError::Config(format!(
                "{flows} flows need {destination_ports} destination ports from {destination_port_base}, past 65535"
            )));
        }
        Ok(FlowPlan {
            flows,
            source_port_base,
            source_ports,
            destination_port_base,
            destination_ports,
        })
    }

    /// (source port, destination port) of flow `index` (taken modulo `flows`).
    pub fn ports(&self, index: u64) -> (u16, u16) {
        let flow = (index % u64::from(self.flows)) as u32;
        let source = flow % self.source_ports;
        let destination = flow / self.source_ports;
        // Both in range: `new` checked the bases plus counts fit in u16.
        (
            (u32::from(self.source_port_base) + source) as u16,
            (u32::from(self.destination_port_base) + destination) as u16,
        )
    }
}

/// Settings of a UDP run.
#[derive(Debug, Clone)]
pub struct UdpSettings {
    pub interface: String,
    pub queue: u32,
    pub destination: Ipv4Addr,
    /// `None`: the kernel's choice towards `destination`.
    pub source: Option<Ipv4Addr>,
    /// `None`: the default gateway's MAC, resolved through ARP.
    pub destination_mac: Option<[u8; 6]>,
    pub plan: FlowPlan,
    pub frame_len: usize,
    /// Packets per second; `None` sends as fast as possible.
    pub rate: Option<u64>,
    pub duration: Duration,
    pub count: u64,
    pub progress: bool,
}

/// Settings of a TCP connections-per-second run.
#[derive(Debug, Clone)]
pub struct TcpSettings {
    pub target: SocketAddrV4,
    pub parallel: usize,
    pub connect_timeout: Duration,
    pub duration: Duration,
    pub count: u64,
    pub progress: bool,
}

/// What a UDP run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UdpReport {
    pub interface: String,
    pub source: String,
    pub destination: String,
    pub plan: Option<FlowPlan>,
    pub frame_len: usize,
    pub target_pps: Option<u64>,
    /// Frames handed to the TX ring.
    pub sent: u64,
    /// Frames the kernel reported transmitted (COMPLETION ring).
    pub completed: u64,
    /// Frames dropped before the wire (TX ring full, no frame).
    pub tx_dropped: u64,
    pub seconds: f64,
    pub pps: f64,
    pub gbit_per_s: f64,
    pub zero_copy: bool,
    /// This process's own CPU time over its life.
    pub process: ProcessTimes,
}

/// What a TCP run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpReport {
    pub target: String,
    pub parallel: usize,
    pub connected: u64,
    pub failed: u64,
    pub seconds: f64,
    pub connections_per_s: f64,
    pub connect_latency: Percentiles,
    pub process: ProcessTimes,
}

fn check_bounds(duration: Duration, count: u64) -> Result<(), GenerateError> {
    if duration.is_zero() || duration > MAX_DURATION {
        return Err(GenerateError::Config(format!(
            "duration must be in (0, {}s], got {duration:?}",
            MAX_DURATION.as_secs()
        )));
    }
    if count == 0 {
        return Err(GenerateError::Config("count must be at least 1".to_owned()));
    }
    Ok(())
}

/// The source address (given, or the one routing picks) and the frame template: MACs from the
/// interface and the next hop (given, or resolved from the default gateway).
fn udp_template(settings: &UdpSettings) -> Result<(Ipv4Addr, Template), GenerateError> {
    let source = match settings.source {
        Some(source) => source,
        None => netinfo::source_address_towards(settings.destination)?,
    };
    let destination_mac = match settings.destination_mac {
        Some(mac) => mac,
        None => {
            let gateway = netinfo::default_gateway(&settings.interface)?;
            netinfo::resolve_neighbour(gateway, Duration::from_secs(3))?
        }
    };
    let template = Template::new(&FrameSpec {
        src_mac: netinfo::interface_mac(&settings.interface)?,
        dst_mac: destination_mac,
        src_ip: source,
        dst_ip: settings.destination,
        frame_len: settings.frame_len,
    })?;
    Ok((source, template))
}

/// Writes the template, stamped, into `desc`'s frame at its packet offset.
fn fill_frame(
    worker: &mut Worker,
    desc: &mut FrameDesc,
    template: &Template,
    stamp: &Stamp,
) -> Result<(), GenerateError> {
    let offset = desc.offset();
    let frame = worker.frame_mut(desc);
    let Some(room) = frame.get_mut(offset..) else {
        return Err(GenerateError::Frame {
            len: template.len(),
            detail: format!("offset {offset} beyond the frame"),
        });
    };
    if room.len() < template.len() {
        return Err(GenerateError::Frame {
            len: template.len(),
            detail: format!("{} bytes of room", room.len()),
        });
    }
    let len = template.write(room, stamp);
    desc.set_packet(offset, len)
        .map_err(|error| GenerateError::Frame {
            len,
            detail: error.to_string(),
        })
}

/// Sends UDP until `count` packets or `duration`, whichever comes first.
pub fn run_udp(settings: &UdpSettings) -> Result<UdpReport, GenerateError> {
    check_bounds(settings.duration, settings.count)?;
    if settings.rate == Some(0) {
        return Err(GenerateError::Config(
            "rate must be positive (omit it for maximum)".to_owned(),
        ));
    }
    let (source, template) = udp_template(settings)?;
    let config = WorkerConfig {
        frame_size: FrameSize::Bytes2048,
        frame_count: 4096,
        ring_size: 1024,
        ..WorkerConfig::default()
    };
    let mut worker =
        Worker::one_armed(&settings.interface, settings.queue, &config).map_err(|source| {
            GenerateError::Xsk {
                interface: settings.interface.clone(),
                source,
            }
        })?;
    let zero_copy = worker.socket_info(Side::Inside).zero_copy;
    let plan = settings.plan;
    let mut progress = Progress::new(settings.progress);
    let mut sent: u64 = 0;
    let mut dropped: u64 = 0;
    let start = Instant::now();
    'send: while sent < settings.count {
        let elapsed = start.elapsed();
        if elapsed >= settings.duration {
            break;
        }
        let mut budget = (settings.count - sent).min(TX_BATCH as u64);
        if let Some(rate) = settings.rate {
            let allowed = (elapsed.as_secs_f64() * rate as f64) as u64 + 1;
            budget = budget.min(allowed.saturating_sub(sent + dropped));
            if budget == 0 {
                worker.flush();
                thread::sleep(Duration::from_micros(50));
                continue;
            }
        }
        for _ in 0..budget {
            let Some(mut desc) = worker.alloc_frame(Side::Inside) else {
                // Every frame is in flight: reclaim completions and try again.
                worker.flush();
                continue 'send;
            };
            let (src_port, dst_port) = plan.ports(sent + dropped);
            let stamp = Stamp {
                src_port,
                dst_port,
                sequence: sent + dropped,
                sent_ns: monotonic_ns(),
            };
            fill_frame(&mut worker, &mut desc, &template, &stamp)?;
            match worker.transmit(Side::Inside, desc) {
                TxStatus::Queued => sent += 1,
                _ => dropped += 1,
            }
        }
        worker.flush();
        progress.tick("generate", sent, || format!("dropped={dropped}"));
    }
    let seconds = start.elapsed().as_secs_f64();
    let drain_start = Instant::now();
    while worker.counters().tx_completed < worker.counters().tx
        && drain_start.elapsed() < DRAIN_TIMEOUT
    {
        worker.flush();
        thread::sleep(Duration::from_micros(200));
    }
    progress.finish();
    let counters = worker.counters();
    let seconds_nonzero = seconds.max(f64::EPSILON);
    Ok(UdpReport {
        interface: settings.interface.clone(),
        source: source.to_string(),
        destination: settings.destination.to_string(),
        plan: Some(plan),
        frame_len: template.len(),
        target_pps: settings.rate,
        sent,
        completed: counters.tx_completed,
        tx_dropped: dropped,
        seconds,
        pps: sent as f64 / seconds_nonzero,
        gbit_per_s: (sent * template.len() as u64 * 8) as f64 / seconds_nonzero / 1e9,
        zero_copy,
        process: cpu::process_times("self").unwrap_or_default(),
    })
}

/// Opens and resets connections until `count` or `duration`.
pub fn run_tcp(settings: &TcpSettings) -> Result<TcpReport, GenerateError> {
    check_bounds(settings.duration, settings.count)?;
    if !(1..=MAX_PARALLEL_CONNECTS).contains(&settings.parallel) {
        return Err(GenerateError::Config(format!(
            "parallel must be in 1..={MAX_PARALLEL_CONNECTS}"
        )));
    }
    let started = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let latency = Arc::new(Mutex::new(stats::new_histogram()));
    let deadline = Instant::now() + settings.duration;
    let start = Instant::now();
    let threads: Vec<_> = (0..settings.parallel)
        .map(|_| {
            let (started, connected, failed, stop, latency) = (
                started.clone(),
                connected.clone(),
                failed.clone(),
                stop.clone(),
                latency.clone(),
            );
            let settings = settings.clone();
            thread::spawn(move || {
                let mut local = stats::new_histogram();
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if started.fetch_add(1, Ordering::Relaxed) >= settings.count {
                        break;
                    }
                    let begin = Instant::now();
                    match connect_and_reset(settings.target, settings.connect_timeout) {
                        Ok(()) => {
                            stats::record(&mut local, begin.elapsed().as_nanos() as u64);
                            connected.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if let Ok(mut merged) = latency.lock() {
                    // Same bounds on both sides, so adding cannot fail.
                    let _ = merged.add(&local);
                }
            })
        })
        .collect();
    let mut progress = Progress::new(settings.progress);
    while threads.iter().any(|thread| !thread.is_finished()) {
        if Instant::now() > deadline + settings.connect_timeout * 2 {
            stop.store(true, Ordering::Relaxed);
        }
        progress.tick("connect", connected.load(Ordering::Relaxed), || {
            format!("failed={}", failed.load(Ordering::Relaxed))
        });
        thread::sleep(Duration::from_millis(20));
    }
    for thread in threads {
        let _ = thread.join();
    }
    progress.finish();
    let seconds = start.elapsed().as_secs_f64();
    let connected = connected.load(Ordering::Relaxed);
    let connect_latency = latency
        .lock()
        .map(|histogram| Percentiles::of(&histogram))
        .unwrap_or_default();
    Ok(TcpReport {
        target: settings.target.to_string(),
        parallel: settings.parallel,
        connected,
        failed: failed.load(Ordering::Relaxed),
        seconds,
        connections_per_s: connected as f64 / seconds.max(f64::EPSILON),
        connect_latency,
        process: cpu::process_times("self").unwrap_or_default(),
    })
}

fn connect_and_reset(target: SocketAddrV4, timeout: Duration) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.connect_timeout(&SocketAddr::V4(target).into(), timeout)?;
    // RST on close: no TIME_WAIT, so the ephemeral ports recycle at once.
    socket.set_linger(Some(Duration::ZERO))?;
    drop(socket);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn plans_cover_exactly_the_requested_flows() {
        for flows in [1u32, 1000, 60_000, 60_001, 100_000, 1_000_000] {
            let plan = FlowPlan::new(
                flows,
                DEFAULT_SOURCE_PORT_BASE,
                DEFAULT_DESTINATION_PORT_BASE,
            )
            .unwrap();
            assert!(plan.source_ports <= MAX_SOURCE_PORTS);
            assert!(
                u64::from(plan.source_ports) * u64::from(plan.destination_ports)
                    >= u64::from(flows)
            );
            if flows <= 100_000 {
                let distinct: HashSet<_> = (0..u64::from(flows))
                    .map(|index| plan.ports(index))
                    .collect();
                assert_eq!(distinct.len(), flows as usize, "{flows}");
            }
            assert_eq!(plan.ports(0), plan.ports(u64::from(flows)));
        }
    }

    #[test]
    fn port_ranges_that_overflow_are_rejected() {
        assert!(FlowPlan::new(0, 1024, 9000).is_err());
        assert!(FlowPlan::new(1_000_000, 1024, 65530).is_err());
        let plan = FlowPlan::new(10, 65530, 9000).unwrap();
        assert_eq!(plan.source_ports, 5);
        assert_eq!(plan.ports(4), (65534, 9000));
        assert_eq!(plan.ports(5), (65530, 9001));
    }

    #[test]
    fn unbounded_runs_are_refused() {
        assert!(check_bounds(Duration::ZERO, 1).is_err());
        assert!(check_bounds(MAX_DURATION + Duration::from_secs(1), 1).is_err());
        assert!(check_bounds(Duration::from_secs(1), 0).is_err());
        assert!(check_bounds(Duration::from_secs(1), 1).is_ok());
    }

    #[test]
    fn tcp_connects_to_a_loopback_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(target) = listener.local_addr().unwrap() else {
            unreachable!()
        };
        let acceptor = thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut accepted = 0;
            while accepted < 20 && Instant::now() < deadline {
                match listener.accept() {
                    Ok(_) => accepted += 1,
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
            accepted
        });
        let report = run_tcp(&TcpSettings {
            target,
            parallel: 4,
            connect_timeout: Duration::from_secs(2),
            duration: Duration::from_secs(10),
            count: 20,
            progress: false,
        })
        .unwrap();
        assert_eq!(report.connected, 20);
        assert_eq!(report.failed, 0);
        assert_eq!(report.connect_latency.samples, 20);
        assert_eq!(acceptor.join().unwrap(), 20);
    }
}
