//! The receiver, run inside the internet namespace.
//!
//! UDP: AF_XDP. The egw steering program is attached to the interface in the pod-facing role
//! with the "pod CIDR" set to 0.0.0.0/0, so every IPv4 frame is redirected to our socket (ARP
//! still goes to the kernel, which keeps answering for the namespace's addresses). The kernel
//! never sees the flood, so it sends no ICMP port-unreachable back through the gateway.
//!
//! TCP: a kernel listener that accepts and closes, counting connections and their source.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use egw_xdp::xsk::{FrameDesc, FrameSize, Side, Worker, WorkerConfig, XskError};
use egw_xdp::{AttachMode, InterfaceRole, InterfaceSpec, LoaderError, SteeringProgram};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::cpu::{self, ProcessTimes};
use crate::generate::MAX_DURATION;
use crate::stats::{self, monotonic_ns, Percentiles, Progress};
use crate::wire;

const RX_BATCH: usize = 64;
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// After the stop file appears, packets still in flight get this long to arrive.
const DRAIN_AFTER_STOP: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("invalid receiver settings: {0}")]
    Config(String),
    #[error("XDP steering program on {interface}: {source}")]
    Steering {
        interface: String,
        #[source]
        source: LoaderError,
    },
    #[error("AF_XDP socket on {interface}: {source}")]
    Xsk {
        interface: String,
        #[source]
        source: XskError,
    },
    #[error("TCP listener on {address}: {source}")]
    Listen {
        address: SocketAddrV4,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// When to stop and what to expect.
#[derive(Debug, Clone)]
pub struct ReceiveSettings {
    pub interface: String,
    pub queue: u32,
    /// The source address every packet must carry (the SNAT address, or the pod when nothing
    /// translates); others are counted as mismatches.
    /// Empty: no check.
    pub expect_sources: Vec<Ipv4Addr>,
    /// Also accept TCP connections here.
    pub tcp_listen: Option<SocketAddrV4>,
    /// Receive UDP with AF_XDP (off for a TCP-only run).
    pub udp: bool,
    pub duration: Duration,
    /// Stop once this many stamped packets arrived.
    pub expect_count: Option<u64>,
    /// Stop after this long without a packet, once one arrived.
    pub idle_exit: Option<Duration>,
    /// Stop (after a short drain) once this file exists.
    pub stop_file: Option<PathBuf>,
    /// Created once the socket is ready.
    pub ready_file: Option<PathBuf>,
    pub progress: bool,
}

/// What arrived.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReceiveReport {
    pub interface: String,
    pub xdp_mode: String,
    pub zero_copy: bool,
    pub expected_sources: Vec<String>,
    /// Stamped benchmark packets.
    pub packets: u64,
    /// Stamped packets whose source was not the expected one.
    pub source_mismatches: u64,
    /// First source seen that did not match, for the error message.
    pub first_mismatch: Option<String>,
    /// IPv4 frames without a benchmark stamp.
    pub foreign: u64,
    pub bytes: u64,
    /// Highest sequence number + 1 (one generator), for a loss estimate.
    pub sequence_span: u64,
    /// From the first to the last stamped packet.
    pub seconds: f64,
    pub pps: f64,
    pub gbit_per_s: f64,
    pub latency: Percentiles,
    pub inter_arrival: Percentiles,
    pub tcp_accepted: u64,
    pub tcp_source_mismatches: u64,
    pub tcp_seconds: f64,
    pub connections_per_s: f64,
    pub process: ProcessTimes,
}

struct UdpSide {
    worker: Worker,
    // Kept for its lifetime: dropping it detaches the program.
    _program: SteeringProgram,
}

fn open_udp(
    settings: &ReceiveSettings,
    report: &mut ReceiveReport,
) -> Result<UdpSide, ReceiveError> {
    let interface = settings.interface.clone();
    let xsk_error = |source| ReceiveError::Xsk {
        interface: interface.clone(),
        source,
    };
    let steering_error = |source| ReceiveError::Steering {
        interface: interface.clone(),
        source,
    };
    let config = WorkerConfig {
        frame_size: FrameSize::Bytes2048,
        frame_count: 8192,
        ring_size: 2048,
        ..WorkerConfig::default()
    };
    let worker = Worker::one_armed(&interface, settings.queue, &config).map_err(xsk_error)?;
    let mut program = SteeringProgram::load().map_err(steering_error)?;
    let attached = program
        .attach(&InterfaceSpec::new(
            interface.clone(),
            InterfaceRole::Inside,
        ))
        .map_err(steering_error)?;
    let everything = ipnet::Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0)
        .map_err(|error| ReceiveError::Config(error.to_string()))?;
    program
        .set_pod_cidrs(&[everything])
        .map_err(steering_error)?;
    program
        .register_xsk(&interface, settings.queue, &worker.socket_fd(Side::Inside))
        .map_err(steering_error)?;
    report.xdp_mode = match attached.mode {
        AttachMode::Native => "native",
        AttachMode::Generic => "generic",
    }
    .to_owned();
    report.zero_copy = worker.socket_info(Side::Inside).zero_copy;
    Ok(UdpSide {
        worker,
        _program: program,
    })
}

fn open_tcp(address: SocketAddrV4) -> Result<std::net::TcpListener, ReceiveError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let error = |source| ReceiveError::Listen { address, source };
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(error)?;
    socket.set_reuse_address(true).map_err(error)?;
    socket
        .bind(&SocketAddr::V4(address).into())
        .map_err(error)?;
    socket.listen(4096).map_err(error)?;
    socket.set_nonblocking(true).map_err(error)?;
    Ok(socket.into())
}

/// What arrives, as it arrives: latency and inter-arrival histograms and the first and last
/// arrival of each kind, folded into the report at the end.
struct Tally {
    latency: Histogram<u64>,
    inter_arrival: Histogram<u64>,
    first_ns: u64,
    last_ns: u64,
    tcp_first: Option<Instant>,
    tcp_last: Option<Instant>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latency: stats::new_histogram(),
            inter_arrival: stats::new_histogram(),
            first_ns: 0,
            last_ns: 0,
            tcp_first: None,
            tcp_last: None,
        }
    }

    /// Takes one batch off the UDP socket; returns how many frames arrived.
    fn udp_batch(
        &mut self,
        side: &mut UdpSide,
        batch: &mut Vec<FrameDesc>,
        report: &mut ReceiveReport,
        expected: &[Ipv4Addr],
    ) -> usize {
        let received = side.worker.rx_batch(Side::Inside, batch, RX_BATCH);
        for desc in batch.drain(..) {
            let now = monotonic_ns();
            let stamped = wire::parse(side.worker.packet_mut(&desc))
                .and_then(|packet| packet.stamp.map(|stamp| (packet.src_ip, stamp)));
            if let Some((src_ip, (sequence, sent_ns))) = stamped {
                if report.packets == 0 {
                    self.first_ns = now;
                } else {
                    stats::record(&mut self.inter_arrival, now.saturating_sub(self.last_ns));
                }
                self.last_ns = now;
                report.packets += 1;
                report.bytes += desc.len() as u64;
                report.sequence_span = report.sequence_span.max(sequence + 1);
                stats::record(&mut self.latency, now.saturating_sub(sent_ns));
                if !expected.is_empty() && !expected.contains(&src_ip) {
                    report.source_mismatches += 1;
                    report
                        .first_mismatch
                        .get_or_insert_with(|| src_ip.to_string());
                }
            } else {
                report.foreign += 1;
            }
            side.worker.recycle(desc);
        }
        side.worker.flush();
        received
    }

    /// Accepts (and closes) every pending connection; returns how many.
    fn accept_tcp(
        &mut self,
        listener: &std::net::TcpListener,
        report: &mut ReceiveReport,
        expected: &[Ipv4Addr],
    ) -> usize {
        let mut accepted = 0;
        while let Ok((stream, peer)) = listener.accept() {
            let now = Instant::now();
            self.tcp_first.get_or_insert(now);
            self.tcp_last = Some(now);
            report.tcp_accepted += 1;
            accepted += 1;
            let from = match peer {
                SocketAddr::V4(peer) => Some(*peer.ip()),
                SocketAddr::V6(_) => None,
            };
            if !expected.is_empty() && !from.is_some_and(|from| expected.contains(&from)) {
                report.tcp_source_mismatches += 1;
                report
                    .first_mismatch
                    .get_or_insert_with(|| peer.ip().to_string());
            }
            drop(stream);
        }
        accepted
    }

    /// Rates, percentiles and durations into `report`.
    fn finish(self, report: &mut ReceiveReport) {
        report.seconds = self.last_ns.saturating_sub(self.first_ns) as f64 / 1e9;
        if report.seconds > 0.0 {
            report.pps = report.packets as f64 / report.seconds;
            report.gbit_per_s = report.bytes as f64 * 8.0 / report.seconds / 1e9;
        }
        report.latency = Percentiles::of(&self.latency);
        report.inter_arrival = Percentiles::of(&self.inter_arrival);
        if let (Some(first), Some(last)) = (self.tcp_first, self.tcp_last) {
            report.tcp_seconds = last.duration_since(first).as_secs_f64();
            if report.tcp_seconds > 0.0 {
                report.connections_per_s = report.tcp_accepted as f64 / report.tcp_seconds;
            }
        }
    }
}

fn validate(settings: &ReceiveSettings) -> Result<(), ReceiveError> {
    if settings.duration.is_zero() || settings.duration > MAX_DURATION {
        return Err(ReceiveError::Config(format!(
            "duration must be in (0, {}s]",
            MAX_DURATION.as_secs()
        )));
    }
    if !settings.udp && settings.tcp_listen.is_none() {
        return Err(ReceiveError::Config(
            "nothing to receive: enable UDP or --tcp-listen".to_owned(),
        ));
    }
    Ok(())
}

/// Whether to stop: the duration is up, the expected count arrived, the sender went idle, or
/// the stop file was seen and arrivals have drained.
fn finished(
    settings: &ReceiveSettings,
    report: &ReceiveReport,
    start: Instant,
    last_activity: Instant,
    stop_seen: Option<Instant>,
) -> bool {
    let arrived = report.packets + report.tcp_accepted;
    start.elapsed() >= settings.duration
        || settings.expect_count.is_some_and(|count| arrived >= count)
        || settings
            .idle_exit
            .is_some_and(|idle| arrived > 0 && last_activity.elapsed() >= idle)
        || stop_seen.is_some_and(|seen| {
            seen.elapsed() >= DRAIN_AFTER_STOP && last_activity.elapsed() >= POLL_INTERVAL
        })
}

/// Receives until a stop condition; see [`ReceiveSettings`].
pub fn run(settings: &ReceiveSettings) -> Result<ReceiveReport, ReceiveError> {
    validate(settings)?;
    let mut report = ReceiveReport {
        interface: settings.interface.clone(),
        expected_sources: settings
            .expect_sources
            .iter()
            .map(ToString::to_string)
            .collect(),
        ..ReceiveReport::default()
    };
    let mut udp = if settings.udp {
        Some(open_udp(settings, &mut report)?)
    } else {
        None
    };
    let listener = settings.tcp_listen.map(open_tcp).transpose()?;
    if let Some(path) = &settings.ready_file {
        fs::write(path, b"ready\n").map_err(|source| ReceiveError::Write {
            path: path.clone(),
            source,
        })?;
    }

    let mut tally = Tally::new();
    let mut batch: Vec<FrameDesc> = Vec::with_capacity(RX_BATCH);
    let mut progress = Progress::new(settings.progress);
    let mut last_activity = Instant::now();
    let mut stop_seen: Option<Instant> = None;
    let start = Instant::now();
    let expected = settings.expect_sources.as_slice();
    loop {
        let mut received = 0;
        if let Some(side) = udp.as_mut() {
            received = tally.udp_batch(side, &mut batch, &mut report, expected);
        }
        if let Some(listener) = &listener {
            received += tally.accept_tcp(listener, &mut report, expected);
        }
        if received > 0 {
            last_activity = Instant::now();
        }
        progress.tick("receive", report.packets + report.tcp_accepted, || {
            format!(
                "mismatched={} foreign={}",
                report.source_mismatches + report.tcp_source_mismatches,
                report.foreign
            )
        });
        if finished(settings, &report, start, last_activity, stop_seen) {
            break;
        }
        if stop_seen.is_none()
            && settings
                .stop_file
                .as_ref()
                .is_some_and(|path| path.exists())
        {
            stop_seen = Some(Instant::now());
        }
        if received == 0 {
            match udp.as_mut() {
                Some(side) if listener.is_none() => {
                    side.worker
                        .wait(POLL_INTERVAL)
                        .map_err(|source| ReceiveError::Xsk {
                            interface: settings.interface.clone(),
                            source,
                        })?;
                }
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }
    progress.finish();
    tally.finish(&mut report);
    report.process = cpu::process_times("self").unwrap_or_default();
    Ok(report)
}
