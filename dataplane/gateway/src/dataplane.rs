//! The dataplane: the XDP steering program plus one pinned worker thread per AF_XDP queue, each
//! owning an [`Engine`] and an [`egw_xdp::xsk::Worker`].
//!
//! Nothing on the packet path takes a lock. Between batches a worker does one atomic load to notice
//! a new route table, one to load the next-hop snapshot, drains its command channel and hand-off
//! rings, and every [`PUBLISH_INTERVAL`] publishes a counter snapshot through an [`ArcSwap`].

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam::channel::{Receiver, Sender, TrySendError};
use crossbeam::queue::ArrayQueue;
use egw_engine::{
    Counters, Engine, EngineConfig, ExternalUsage, FlowFilter, FlowInfo, Ingress, RouteTable, Side,
    Verdict,
};
use egw_natlog::{NatLogSender, NatLogStats, NatLogWriter};
use egw_proto::v1;
use egw_xdp::xsk::{self, FrameDesc, SocketInfo, TxStatus, Worker, WorkerConfig, WorkerCounters};
use egw_xdp::{AttachMode, AttachedInterface, InterfaceRole, InterfaceSpec, SteeringProgram};
use tracing::{error, info, warn};

use crate::config::GatewayConfig;
use crate::netlink::{AddressListener, MonitorCounters, Netlink, NetlinkError, NextHopMonitor};
use crate::nexthop::{format_mac, rewrite_macs, NextHops, Resolution, ResolutionCache};

/// Frames taken from one socket per batch.
pub const BATCH: usize = 64;
/// How often a worker publishes its counters.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);
/// How long an idle worker sleeps in `poll` before doing housekeeping.
const IDLE_WAIT: Duration = Duration::from_millis(2);
/// Flow-table slots expired per idle round.
const MAINTAIN_BUDGET: u32 = 1024;
/// Frames one hand-off ring (one per ordered pair of cores) holds.
const HANDOFF_RING: usize = 1024;
/// Commands queued per worker.
const COMMAND_QUEUE: usize = 64;
/// Slots a flow listing scans per worker request, bounding the time a worker spends on it.
pub const LIST_SCAN_BUDGET: u32 = 1 << 16;
/// Flow events an engine buffers between two batches when the NAT log is on; more are dropped
/// and counted (`egw_natlog_events_dropped_total`).
const FLOW_EVENT_BUFFER: usize = 8192;
/// The reason logged for flows still open when the gateway stops.
pub const SHUTDOWN_REASON: &str = "shutdown";

/// Drops the gateway (not the engine) counts, by stable name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayCounters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// The next hop's MAC address was unknown; the kernel was asked to resolve it.
    pub neighbour_unresolved: u64,
    /// No kernel route through the egress interface covers the destination.
    pub no_route: u64,
    /// The hand-off ring to the owning core was full.
    pub handoff_ring_full: u64,
    /// No UMEM frame was free for a handed-off or released frame.
    pub no_frame: u64,
    /// The TX ring was full.
    pub tx_ring_full: u64,
    /// The translated packet did not fit its frame (never expected).
    pub frame_too_large: u64,
    pub handoffs_received: u64,
}

impl GatewayCounters {
    /// (name, count) of every gateway-level drop reason.
    pub fn drops(&self) -> [(&'static str, u64); 6] {
        [
            ("neighbour_unresolved", self.neighbour_unresolved),
            ("no_route", self.no_route),
            ("handoff_ring_full", self.handoff_ring_full),
            ("no_frame", self.no_frame),
            ("tx_ring_full", self.tx_ring_full),
            ("frame_too_large", self.frame_too_large),
        ]
    }
}

/// One core's published state.
#[derive(Debug, Clone, Default)]
pub struct CoreSnapshot {
    pub core: u16,
    pub engine: Counters,
    pub gateway: GatewayCounters,
    pub xsk: WorkerCounters,
    /// (flows tracked, capacity).
    pub occupancy: (u32, u32),
    pub port_usage: Vec<ExternalUsage>,
    pub table_generation: u64,
}

impl CoreSnapshot {
    /// The wire form of the counters.
    pub fn to_wire(&self) -> v1::CoreCounters {
        let mut drops: std::collections::HashMap<String, u64> = self
            .engine
            .drops
            .iter()
            .map(|(reason, count)| (reason.name().to_owned(), count))
            .collect();
        for (name, count) in self.gateway.drops() {
            drops.insert(name.to_owned(), count);
        }
        v1::CoreCounters {
            core: u32::from(self.core),
            rx_packets: self.engine.rx_packets,
            rx_bytes: self.engine.rx_bytes,
            tx_packets: self.gateway.tx_packets,
            tx_bytes: self.gateway.tx_bytes,
            drops,
            flows_created: self.engine.flows_created,
            flows_expired: self.engine.flows_expired,
            handoffs: self.engine.handoffs,
        }
    }
}

/// A request a worker serves between batches.
enum Command {
    Drain {
        address: Ipv4Addr,
        draining: bool,
    },
    ListFlows {
        filter: FlowFilter,
        cursor: u32,
        limit: usize,
        reply: Sender<(Vec<FlowInfo>, Option<u32>)>,
    },
}

/// A frame on its way to the core that owns its flow.
struct HandedOff {
    ingress: Ingress,
    bytes: Vec<u8>,
}

/// One direction between two cores: frames go one way, emptied buffers come back.
struct HandoffRing {
    frames: ArrayQueue<HandedOff>,
    spare: ArrayQueue<Vec<u8>>,
}

impl HandoffRing {
    fn new() -> Self {
        Self {
            frames: ArrayQueue::new(HANDOFF_RING),
            spare: ArrayQueue::new(HANDOFF_RING),
        }
    }
}

/// State shared by the workers and the control side.
struct Shared {
    table: ArcSwap<RouteTable>,
    table_version: AtomicU64,
    stop: AtomicBool,
    snapshots: Vec<ArcSwap<CoreSnapshot>>,
    next_hops: Arc<ArcSwap<NextHops>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("interface `{0}` not found")]
    UnknownInterface(String),
    #[error("reading route table file {path}: {message}")]
    RouteTableFile { path: String, message: String },
    #[error("route table file {path}: {message}")]
    InvalidRouteTable { path: String, message: String },
    #[error("XDP steering program")]
    Loader(#[from] egw_xdp::LoaderError),
    #[error("worker {worker}: opening the AF_XDP sockets of queue {worker}")]
    Sockets {
        worker: u16,
        #[source]
        source: egw_xdp::xsk::XskError,
    },
    #[error("worker {worker}: {message}")]
    Worker { worker: u16, message: String },
    #[error("starting the NAT event log")]
    NatLog(#[from] egw_natlog::NatLogError),
}

/// An interface as the dataplane uses it.
#[derive(Debug, Clone)]
pub struct InterfaceStatus {
    pub attached: AttachedInterface,
    pub zero_copy: bool,
    pub shared_umem: bool,
    pub queues: u32,
}

/// The running dataplane. Dropping it stops the workers and detaches XDP.
pub struct Dataplane {
    config: GatewayConfig,
    shared: Arc<Shared>,
    commands: Vec<Sender<Command>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    program: Arc<Mutex<SteeringProgram>>,
    monitor: NextHopMonitor,
    interfaces: Vec<InterfaceStatus>,
    initial_table: Option<v1::RouteTable>,
    started: Instant,
    clock: Instant,
    /// The NAT event log's writer, shut down (flushed) after the workers stop.
    nat_log: Mutex<Option<NatLogWriter>>,
    /// A handle on the log's counters that outlives the writer.
    nat_log_stats: Option<NatLogSender>,
}

fn random_u64() -> u64 {
    crate::control::new_epoch()
}

fn xsk_side(side: Side) -> xsk::Side {
    match side {
        Side::Inside => xsk::Side::Inside,
        Side::Outside => xsk::Side::Outside,
    }
}

/// Loads the initial route table: from the configured file, else deny everything.
fn initial_table(
    config: &GatewayConfig,
) -> Result<(RouteTable, Option<v1::RouteTable>), DataplaneError> {
    let Some(path) = &config.route_table_file else {
        return Ok((RouteTable::empty_deny_all(), None));
    };
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| DataplaneError::RouteTableFile {
        path: display.clone(),
        message: error.to_string(),
    })?;
    let invalid = |message: String| DataplaneError::InvalidRouteTable {
        path: display.clone(),
        message,
    };
    let wire = egw_proto::yaml::RouteTable::from_yaml_str(&text)
        .map_err(|error| invalid(error.to_string()))?
        .to_proto();
    let table = egw_proto::spec::compile(&wire).map_err(invalid)?;
    Ok((table, Some(wire)))
}

impl Dataplane {
    /// Loads XDP, opens the sockets and starts the workers, all in the calling thread's network
    /// namespace.
    pub fn start(config: GatewayConfig) -> Result<Self, DataplaneError> {
        let clock = Instant::now();
        let (table, initial_wire) = initial_table(&config)?;
        let mut netlink = Netlink::open()?;
        let links = netlink.links()?;
        let find = |name: &str| {
            links
                .iter()
                .find(|link| link.name == name)
                .cloned()
                .ok_or_else(|| DataplaneError::UnknownInterface(name.to_owned()))
        };
        let inside = find(&config.inside_interface)?;
        let outside = find(config.outside_interface_name())?;
        let mtu = |link_mtu: u32| {
            config
                .mtu
                .unwrap_or_else(|| u16::try_from(link_mtu).unwrap_or(u16::MAX))
        };
        let (inside_mtu, outside_mtu) = (mtu(inside.mtu), mtu(outside.mtu));
        let local_addresses: Vec<Ipv4Addr> = netlink
            .addresses()?
            .into_iter()
            .map(|(_, address)| address)
            .collect();
        info!(
            inside = %inside.name, inside_ifindex = inside.ifindex, inside_mac = %format_mac(&inside.mac), inside_mtu,
            outside = %outside.name, outside_ifindex = outside.ifindex, outside_mac = %format_mac(&outside.mac), outside_mtu,
            one_armed = config.one_armed(),
            local_addresses = ?local_addresses,
            "interfaces"
        );

        let mut served_links = vec![&inside];
        if !config.one_armed() {
            served_links.push(&outside);
        }
        for link in served_links {
            if link.rx_queues > u32::from(config.workers) {
                warn!(
                    interface = %link.name,
                    rx_queues = link.rx_queues,
                    workers = config.workers,
                    "the interface has more receive queues than workers: frames arriving on the \
                     other queues go to the kernel untranslated; set `workers` to the queue count \
                     or reduce the queues (ethtool -L)"
                );
            }
        }
        let mut program = SteeringProgram::load()?;
        let specs = if config.one_armed() {
            vec![InterfaceSpec::new(
                &config.inside_interface,
                InterfaceRole::OneArmed,
            )]
        } else {
            vec![
                InterfaceSpec::new(&config.inside_interface, InterfaceRole::Inside),
                InterfaceSpec::new(config.outside_interface_name(), InterfaceRole::Outside),
            ]
        };
        let attached = program.attach_all(&specs)?;
        for interface in &attached {
            info!(interface = %interface.name, role = ?interface.role, mode = ?interface.mode,
                bpf_link = interface.bpf_link, "XDP steering attached");
        }
        program.set_pod_cidrs(&config.pod_cidrs)?;
        program.set_snat_addrs(&steered_addresses(&config, &table, &[]))?;
        program.set_local_addrs(&local_addresses)?;

        let program = Arc::new(Mutex::new(program));
        let address_listener: AddressListener = {
            let program = Arc::clone(&program);
            let mut current = local_addresses.clone();
            Box::new(move |addresses: &[Ipv4Addr]| {
                if addresses == current.as_slice() {
                    return;
                }
                match lock(&program).set_local_addrs(addresses) {
                    Ok(()) => {
                        info!(local_addresses = ?addresses, "gateway addresses changed");
                        current = addresses.to_vec();
                    }
                    Err(error) => warn!(%error, "updating the XDP local-address map failed"),
                }
            })
        };
        let monitor = NextHopMonitor::start(
            vec![inside.ifindex, outside.ifindex],
            Some(address_listener),
        )?;
        let cores = config.workers;
        let shared = Arc::new(Shared {
            table_version: AtomicU64::new(1),
            table: ArcSwap::from_pointee(table),
            stop: AtomicBool::new(false),
            snapshots: (0..cores)
                .map(|core| {
                    ArcSwap::from_pointee(CoreSnapshot {
                        core,
                        ..CoreSnapshot::default()
                    })
                })
                .collect(),
            next_hops: monitor.snapshot(),
        });
        let rings: Arc<Vec<HandoffRing>> = Arc::new(
            (0..usize::from(cores) * usize::from(cores))
                .map(|_| HandoffRing::new())
                .collect(),
        );
        let steering_seed = random_u64();
        let worker_config = WorkerConfig {
            frame_count: config.xdp.frame_count,
            ring_size: config.xdp.ring_size,
            prefer_zero_copy: config.xdp.zero_copy,
            ..WorkerConfig::default()
        };

        let nat_log = match &config.nat_log {
            Some(nat_log) => {
                let writer = NatLogWriter::start(nat_log.writer_config())?;
                info!(dir = %nat_log.dir.display(), "NAT event log started");
                Some(writer)
            }
            None => None,
        };
        let nat_log_sender = nat_log.as_ref().map(NatLogWriter::sender);
        let mut dataplane = Dataplane {
            nat_log: Mutex::new(nat_log),
            nat_log_stats: nat_log_sender.clone(),
            shared: Arc::clone(&shared),
            commands: Vec::new(),
            threads: Mutex::new(Vec::new()),
            program,
            monitor,
            interfaces: Vec::new(),
            initial_table: initial_wire,
            started: Instant::now(),
            clock,
            config: config.clone(),
        };
        let mut socket_infos: Vec<(SocketInfo, SocketInfo)> = Vec::new();
        for core in 0..cores {
            let queue = u32::from(core);
            let worker = if config.one_armed() {
                Worker::one_armed(&config.inside_interface, queue, &worker_config)
            } else {
                Worker::two_armed(
                    &config.inside_interface,
                    config.outside_interface_name(),
                    queue,
                    &worker_config,
                )
            }
            .map_err(|source| DataplaneError::Sockets {
                worker: core,
                source,
            })?;
            {
                let mut program = lock(&dataplane.program);
                program.register_xsk(
                    &config.inside_interface,
                    queue,
                    &worker.socket_fd(xsk::Side::Inside),
                )?;
                if !config.one_armed() {
                    program.register_xsk(
                        config.outside_interface_name(),
                        queue,
                        &worker.socket_fd(xsk::Side::Outside),
                    )?;
                }
            }
            let inside_info = worker.socket_info(xsk::Side::Inside).clone();
            let outside_info = worker.socket_info(xsk::Side::Outside).clone();
            info!(
                worker = core,
                queue,
                inside_zero_copy = inside_info.zero_copy,
                outside_zero_copy = outside_info.zero_copy,
                shared_umem = inside_info.shared_umem,
                "AF_XDP sockets open"
            );
            socket_infos.push((inside_info, outside_info));

            let engine_config = EngineConfig {
                core,
                cores,
                flow_capacity: config.conntrack.capacity_per_core,
                udp_filtering: config.conntrack.udp_filtering.into(),
                port_range: config.conntrack.port_range,
                timeouts: config.conntrack.timeouts.into(),
                early_drop_unreplied: config.conntrack.early_drop_unreplied,
                inside_address: config.inside_address,
                inside_mtu,
                outside_mtu,
                steering_seed,
                table_seed: random_u64(),
                ..EngineConfig::default()
            };
            let (command_sender, command_receiver) = crossbeam::channel::bounded(COMMAND_QUEUE);
            let (ready_sender, ready_receiver) = crossbeam::channel::bounded(1);
            let context = WorkerContext {
                core,
                cpu: config.cpu_for_worker(core),
                cores,
                engine_config,
                xsk: worker,
                one_armed: config.one_armed(),
                ifindex: [inside.ifindex, outside.ifindex],
                shared: Arc::clone(&shared),
                rings: Arc::clone(&rings),
                commands: command_receiver,
                resolver: dataplane.monitor.resolver(),
                clock,
                nat_log: nat_log_sender.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("egw-worker-{core}"))
                .spawn(move || run_worker(context, ready_sender))
                .map_err(|error| DataplaneError::Worker {
                    worker: core,
                    message: format!("spawning the thread: {error}"),
                })?;
            lock(&dataplane.threads).push(thread);
            dataplane.commands.push(command_sender);
            match ready_receiver.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => {}
                Ok(Err(message)) => {
                    return Err(DataplaneError::Worker {
                        worker: core,
                        message,
                    })
                }
                Err(_) => {
                    return Err(DataplaneError::Worker {
                        worker: core,
                        message: "did not start".into(),
                    })
                }
            }
        }
        let program = lock(&dataplane.program);
        dataplane.interfaces = program
            .attachments()
            .into_iter()
            .map(|attached| {
                let info = socket_infos.first().map(|(inside_info, outside_info)| {
                    if attached.ifindex == inside_info.ifindex {
                        inside_info.clone()
                    } else {
                        outside_info.clone()
                    }
                });
                InterfaceStatus {
                    zero_copy: info.as_ref().is_some_and(|info| info.zero_copy),
                    shared_umem: info.as_ref().is_some_and(|info| info.shared_umem),
                    queues: u32::from(cores),
                    attached,
                }
            })
            .collect();
        drop(program);
        info!(workers = cores, "dataplane started");
        Ok(dataplane)
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    pub fn interfaces(&self) -> &[InterfaceStatus] {
        &self.interfaces
    }

    /// The wire table loaded from the configuration, if any.
    pub fn initial_table(&self) -> Option<&v1::RouteTable> {
        self.initial_table.as_ref()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The served route table.
    pub fn route_table(&self) -> Arc<RouteTable> {
        self.shared.table.load_full()
    }

    /// Installs a compiled table: steers its addresses first, then every worker picks it up at its
    /// next batch.
    pub fn apply_table(&self, table: RouteTable) -> Result<(), egw_xdp::LoaderError> {
        let in_use: Vec<Ipv4Addr> = self
            .snapshots()
            .iter()
            .flat_map(|snapshot| snapshot.port_usage.iter())
            .filter(|usage| usage.flows > 0)
            .map(|usage| usage.address)
            .collect();
        let steered = steered_addresses(&self.config, &table, &in_use);
        lock(&self.program).set_snat_addrs(&steered)?;
        let generation = table.generation();
        self.shared.table.store(Arc::new(table));
        self.shared.table_version.fetch_add(1, Ordering::Release);
        info!(generation, steered_addresses = ?steered, "route table applied");
        Ok(())
    }

    /// The latest published snapshot of every core.
    pub fn snapshots(&self) -> Vec<Arc<CoreSnapshot>> {
        self.shared
            .snapshots
            .iter()
            .map(|snapshot| snapshot.load_full())
            .collect()
    }

    pub fn next_hop_counters(&self) -> Arc<MonitorCounters> {
        self.monitor.counters()
    }

    pub fn next_hops(&self) -> Arc<NextHops> {
        self.shared.next_hops.load_full()
    }

    /// The NAT event log's counters, when the log is on.
    pub fn nat_log_stats(&self) -> Option<NatLogStats> {
        self.nat_log_stats.as_ref().map(NatLogSender::stats)
    }

    pub fn steering_stats(&self) -> Option<egw_xdp::SteeringStats> {
        lock(&self.program).stats().ok()
    }

    pub fn cores(&self) -> u16 {
        self.config.workers
    }

    /// Tells every worker to start or stop draining `address`.
    pub fn set_draining(&self, address: Ipv4Addr, draining: bool) -> Result<(), String> {
        for (core, commands) in self.commands.iter().enumerate() {
            commands
                .send_timeout(Command::Drain { address, draining }, Duration::from_secs(1))
                .map_err(|_| format!("worker {core} is not accepting commands"))?;
        }
        info!(%address, draining, "drain state changed");
        Ok(())
    }

    /// Up to `limit` flows of `core` from slot `cursor`; the cursor to go on from, `None` at the end.
    pub fn list_flows(
        &self,
        core: u16,
        filter: FlowFilter,
        cursor: u32,
        limit: usize,
    ) -> Result<(Vec<FlowInfo>, Option<u32>), String> {
        let commands = self
            .commands
            .get(usize::from(core))
            .ok_or_else(|| format!("no worker {core}"))?;
        let (reply, replies) = crossbeam::channel::bounded(1);
        commands
            .send_timeout(
                Command::ListFlows {
                    filter,
                    cursor,
                    limit,
                    reply,
                },
                Duration::from_secs(1),
            )
            .map_err(|_| format!("worker {core} is not accepting commands"))?;
        replies
            .recv_timeout(Duration::from_secs(2))
            .map_err(|_| format!("worker {core} did not answer"))
    }

    /// Seconds on the workers' clock (for flow ages).
    pub fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    /// The first worker that ended without being told to stop (it panicked), if any.
    pub fn failed_worker(&self) -> Option<usize> {
        if self.shared.stop.load(Ordering::Relaxed) {
            return None;
        }
        lock(&self.threads)
            .iter()
            .position(|thread| thread.is_finished())
    }

    /// Stops the workers and detaches XDP; later calls do nothing.
    pub fn stop(&self) {
        let threads: Vec<JoinHandle<()>> = lock(&self.threads).drain(..).collect();
        if threads.is_empty() {
            return;
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in threads {
            if thread.join().is_err() {
                error!("a worker thread panicked");
            }
        }
        if let Err(error) = lock(&self.program).detach_all() {
            warn!(%error, "detaching XDP failed");
        }
        // After the workers, so their last events (the shutdown deletes) are flushed too.
        if let Some(writer) = lock(&self.nat_log).take() {
            match writer.shutdown() {
                Ok(stats) => info!(
                    written = stats.events_written,
                    dropped = stats.events_dropped,
                    write_errors = stats.write_errors,
                    "NAT event log closed"
                ),
                Err(error) => error!(%error, "closing the NAT event log failed"),
            }
        }
        info!("dataplane stopped");
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Addresses XDP steers on the outside interface: the configured ones, the table's, and those
/// still carrying flows.
fn steered_addresses(
    config: &GatewayConfig,
    table: &RouteTable,
    in_use: &[Ipv4Addr],
) -> Vec<Ipv4Addr> {
    let set: BTreeSet<Ipv4Addr> = config
        .snat_addresses
        .iter()
        .copied()
        .chain(table.snat_addresses())
        .chain(in_use.iter().copied())
        .collect();
    set.into_iter().collect()
}

struct WorkerContext {
    core: u16,
    cpu: usize,
    cores: u16,
    engine_config: EngineConfig,
    xsk: Worker,
    one_armed: bool,
    /// Interface index per engine side: [inside, outside].
    ifindex: [u32; 2],
    shared: Arc<Shared>,
    rings: Arc<Vec<HandoffRing>>,
    commands: Receiver<Command>,
    resolver: Sender<(u32, Ipv4Addr)>,
    clock: Instant,
    nat_log: Option<NatLogSender>,
}

/// Everything a worker touches per packet except the engine (so the engine can lend frames to
/// closures that use it).
struct Io {
    core: u16,
    xsk: Worker,
    ifindex: [u32; 2],
    handoffs: Handoffs,
    resolver: Sender<(u32, Ipv4Addr)>,
    cache: ResolutionCache,
    counters: GatewayCounters,
}

/// The hand-off rings of all ordered core pairs, seen from one core.
struct Handoffs {
    core: u16,
    cores: u16,
    rings: Arc<Vec<HandoffRing>>,
}

impl Handoffs {
    fn ring(&self, from: u16, to: u16) -> &HandoffRing {
        &self.rings[usize::from(from) * usize::from(self.cores) + usize::from(to)]
    }

    /// Copies `bytes` into a recycled buffer on the ring to core `to`; `false` when it is full.
    fn send(&self, to: u16, bytes: &[u8], ingress: Ingress) -> bool {
        let ring = self.ring(self.core, to);
        let mut buffer = ring.spare.pop().unwrap_or_default();
        buffer.clear();
        buffer.extend_from_slice(bytes);
        ring.frames
            .push(HandedOff {
                ingress,
                bytes: buffer,
            })
            .is_ok()
    }
}

impl Io {
    /// Sends a processed frame out of `side`: next-hop MACs, window, TX.
    fn forward(
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
    fn forward_bytes(&mut self, hops: &NextHops, bytes: &[u8], side: Side, destination: Ipv4Addr) {
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

    fn hand_off(&mut self, to: u16, bytes: &[u8], ingress: Ingress) {
        if !self.handoffs.send(to, bytes, ingress) {
            self.counters.handoff_ring_full += 1;
        }
    }
}

fn run_worker(context: WorkerContext, ready: Sender<Result<(), String>>) {
    let WorkerContext {
        core,
        cpu,
        cores,
        engine_config,
        xsk,
        one_armed,
        ifindex,
        shared,
        rings,
        commands,
        resolver,
        clock,
        nat_log,
    } = context;
    let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    if pinned {
        info!(worker = core, cpu, "worker pinned");
    } else {
        warn!(
            worker = core,
            cpu, "pinning the worker to its CPU failed; it runs unpinned"
        );
    }
    let mut engine = match Engine::new(engine_config) {
        Ok(engine) => engine,
        Err(error) => {
            let _ = ready.send(Err(format!("engine configuration: {error}")));
            return;
        }
    };
    // At millions of flows nearly every lookup would also miss the TLB with 4 KiB pages.
    if let Err(error) = egw_xdp::memory::advise_huge_pages(&engine.memory_regions()) {
        warn!(worker = core, %error, "huge pages refused for the flow table; continuing with small pages");
    }
    let mut table_version = shared.table_version.load(Ordering::Acquire);
    engine.set_route_table(shared.table.load_full());
    let mut flow_events = Vec::new();
    let mut flow_events_dropped = 0u64;
    if nat_log.is_some() {
        engine.enable_flow_events(FLOW_EVENT_BUFFER);
        flow_events.reserve(FLOW_EVENT_BUFFER);
    }
    let _ = ready.send(Ok(()));
    drop(ready);

    let mut io = Io {
        core,
        xsk,
        ifindex,
        handoffs: Handoffs { core, cores, rings },
        resolver,
        cache: ResolutionCache::default(),
        counters: GatewayCounters::default(),
    };
    let mut batch: Vec<FrameDesc> = Vec::with_capacity(BATCH);
    let sides: &[(xsk::Side, Ingress)] = if one_armed {
        &[(xsk::Side::Inside, Ingress::OneArmed)]
    } else {
        &[
            (xsk::Side::Inside, Ingress::Inside),
            (xsk::Side::Outside, Ingress::Outside),
        ]
    };
    // Publish at the first opportunity.
    let mut last_publish = Instant::now()
        .checked_sub(PUBLISH_INTERVAL)
        .unwrap_or_else(Instant::now);
    while !shared.stop.load(Ordering::Relaxed) {
        let version = shared.table_version.load(Ordering::Acquire);
        if version != table_version {
            let table = shared.table.load_full();
            info!(
                worker = core,
                generation = table.generation(),
                "route table installed"
            );
            engine.set_route_table(table);
            table_version = version;
        }
        while let Ok(command) = commands.try_recv() {
            serve_command(&mut engine, command, clock.elapsed());
        }
        let hops = shared.next_hops.load();
        let now = clock.elapsed();
        let mut work = 0usize;

        for from in 0..cores {
            if from == core {
                continue;
            }
            // Bounded per source, so a flooding core cannot starve this core's own queues.
            for _ in 0..BATCH {
                let Some(handed) = io.handoffs.ring(from, core).frames.pop() else {
                    break;
                };
                work += 1;
                io.counters.handoffs_received += 1;
                process_copied(
                    &mut engine,
                    &mut io,
                    &hops,
                    &handed.bytes,
                    handed.ingress,
                    now,
                );
                // A full spare queue just frees the buffer.
                let _ = io.handoffs.ring(from, core).spare.push(handed.bytes);
            }
        }
        for &(side, ingress) in sides {
            io.xsk.rx_batch(side, &mut batch, BATCH);
            work += batch.len();
            // Issue the batch's flow-table loads together so their cache misses overlap.
            let mut frames: [&[u8]; BATCH] = [&[]; BATCH];
            for (slot, desc) in frames.iter_mut().zip(&batch) {
                *slot = io.xsk.packet(desc);
            }
            engine.prefetch(&frames[..batch.len()], ingress);
            for desc in batch.drain(..) {
                process_frame(&mut engine, &mut io, &hops, desc, ingress, now);
            }
        }
        engine.release_fragments(now, |bytes, verdict| match verdict {
            Verdict::Forward {
                side,
                destination,
                len,
            } => io.forward_bytes(&hops, &bytes[..len.min(bytes.len())], side, destination),
            Verdict::Handoff { core: to } => io.hand_off(to, bytes, RELEASED_FRAGMENT_INGRESS),
            Verdict::Drop(_) | Verdict::Stashed => {}
        });
        io.xsk.flush();
        drop(hops);

        if work == 0 {
            engine.maintain(now, MAINTAIN_BUDGET);
            if let Err(error) = io.xsk.wait(IDLE_WAIT) {
                warn!(worker = core, %error, "polling the AF_XDP sockets failed");
                std::thread::sleep(IDLE_WAIT);
            }
        }
        if let Some(nat_log) = &nat_log {
            engine.take_flow_events(&mut flow_events);
            if !flow_events.is_empty() {
                submit_flow_events(nat_log, &engine, &mut flow_events);
            }
        }
        if last_publish.elapsed() >= PUBLISH_INTERVAL {
            if let Some(nat_log) = &nat_log {
                let dropped = engine.flow_events_dropped();
                nat_log.record_dropped(dropped.saturating_sub(flow_events_dropped));
                flow_events_dropped = dropped;
            }
            publish(&shared, &engine, &io);
            last_publish = Instant::now();
        }
    }
    if let Some(nat_log) = &nat_log {
        engine.take_flow_events(&mut flow_events);
        submit_flow_events(nat_log, &engine, &mut flow_events);
        nat_log.record_dropped(
            engine
                .flow_events_dropped()
                .saturating_sub(flow_events_dropped),
        );
        log_open_flows_as_deleted(&engine, nat_log, clock.elapsed(), core);
    }
    publish(&shared, &engine, &io);
    info!(worker = core, "worker stopped");
}

/// Flows per page when logging the open flows at shutdown.
const SHUTDOWN_PAGE: usize = 4096;
/// How long, per page, the shutdown logging waits for the writer to catch up.
const SHUTDOWN_PAGE_WAIT: Duration = Duration::from_millis(100);

/// Logs every flow still open as deleted (reason [`SHUTDOWN_REASON`]): the gateway is going away
/// and so are its mappings, and a compliance log must not leave them open-ended.
///
/// A full table holds more flows than the log's queue, so after each page this waits (bounded)
/// until the writer has written as many events as the page added, instead of overflowing the
/// queue and dropping deletes.
/// Queues a worker's flow events for the NAT log, each with the public address (AWS Elastic IP)
/// the current route table gives its external address. Returns how many were dropped.
fn submit_flow_events(
    nat_log: &NatLogSender,
    engine: &Engine,
    events: &mut Vec<egw_engine::FlowEvent>,
) -> usize {
    let table = engine.route_table();
    nat_log.submit_flow_events(events, |external| table.public_address(external))
}

fn log_open_flows_as_deleted(engine: &Engine, nat_log: &NatLogSender, now: Duration, core: u16) {
    let filter = FlowFilter::default();
    let mut cursor = Some(0u32);
    let mut flows = Vec::with_capacity(SHUTDOWN_PAGE);
    let mut events = Vec::with_capacity(SHUTDOWN_PAGE);
    let (mut logged, mut dropped) = (0usize, 0usize);
    while let Some(from) = cursor {
        flows.clear();
        cursor = engine.list_flows(
            &filter,
            from,
            SHUTDOWN_PAGE,
            LIST_SCAN_BUDGET,
            now,
            &mut flows,
        );
        let page = flows.len();
        logged += page;
        events.extend(flows.drain(..).map(|flow| egw_engine::FlowEvent::Removed {
            flow,
            reason: SHUTDOWN_REASON,
        }));
        let written_before = nat_log.stats().events_written;
        dropped += submit_flow_events(nat_log, engine, &mut events);
        if cursor.is_some() && page > 0 {
            let waited = Instant::now();
            while nat_log.stats().events_written < written_before + page as u64
                && waited.elapsed() < SHUTDOWN_PAGE_WAIT
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    info!(
        worker = core,
        flows = logged,
        dropped,
        "open flows logged as deleted (shutdown)"
    );
}

/// The ingress a released fragment is handed off with: the engine classified it by address (it
/// no longer knows the interface it came in on), so the owning core must too.
const RELEASED_FRAGMENT_INGRESS: Ingress = Ingress::OneArmed;

fn process_frame(
    engine: &mut Engine,
    io: &mut Io,
    hops: &NextHops,
    desc: FrameDesc,
    ingress: Ingress,
    now: Duration,
) {
    let offset = desc.offset();
    let len = desc.len();
    let frame = io.xsk.frame_mut(&desc);
    let Some(window) = frame.get_mut(offset..) else {
        io.xsk.recycle(desc);
        return;
    };
    match engine.process(window, len, ingress, now) {
        Verdict::Forward {
            side,
            destination,
            len,
        } => io.forward(hops, desc, side, destination, len),
        Verdict::Handoff { core } => {
            if !io.handoffs.send(core, io.xsk.packet_mut(&desc), ingress) {
                io.counters.handoff_ring_full += 1;
            }
            io.xsk.recycle(desc);
        }
        Verdict::Drop(_) | Verdict::Stashed => io.xsk.recycle(desc),
    }
}

/// Processes a frame that arrived as bytes (handed off by another core) in a fresh UMEM frame.
fn process_copied(
    engine: &mut Engine,
    io: &mut Io,
    hops: &NextHops,
    bytes: &[u8],
    ingress: Ingress,
    now: Duration,
) {
    let Some(mut desc) = io.xsk.alloc_frame(xsk::Side::Inside) else {
        io.counters.no_frame += 1;
        return;
    };
    let offset = desc.offset();
    if desc.set_packet(offset, bytes.len()).is_err() {
        io.counters.frame_too_large += 1;
        io.xsk.recycle(desc);
        return;
    }
    io.xsk.packet_mut(&desc).copy_from_slice(bytes);
    process_frame(engine, io, hops, desc, ingress, now);
}

fn serve_command(engine: &mut Engine, command: Command, now: Duration) {
    match command {
        Command::Drain { address, draining } => engine.set_draining(address, draining),
        Command::ListFlows {
            filter,
            cursor,
            limit,
            reply,
        } => {
            let mut flows = Vec::with_capacity(limit.min(1024));
            let next = engine.list_flows(&filter, cursor, limit, LIST_SCAN_BUDGET, now, &mut flows);
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                reply.try_send((flows, next))
            {
                // The caller gave up waiting.
            }
        }
    }
}

fn publish(shared: &Shared, engine: &Engine, io: &Io) {
    let snapshot = CoreSnapshot {
        core: io.core,
        engine: *engine.counters(),
        gateway: io.counters,
        xsk: io.xsk.counters(),
        occupancy: engine.occupancy(),
        port_usage: engine.port_usage(),
        table_generation: engine.route_table().generation(),
    };
    if let Some(slot) = shared.snapshots.get(usize::from(io.core)) {
        slot.store(Arc::new(snapshot));
    }
}

/// The XDP mode in wire form.
pub fn wire_xdp_mode(mode: AttachMode) -> v1::XdpMode {
    match mode {
        AttachMode::Native => v1::XdpMode::Native,
        AttachMode::Generic => v1::XdpMode::Generic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egw_policy::RouteTableSpec;
    use egw_policy::{ActionSpec, PoolSpec};

    fn config() -> GatewayConfig {
        GatewayConfig::from_yaml(
            "inside_interface: gw-in\ninside_address: 10.244.0.1\npod_cidrs: [10.244.0.0/16]\n\
             snat_addresses: [198.51.100.9, 198.51.100.1]\n",
            std::path::Path::new("test.yaml"),
        )
        .unwrap()
    }

    #[test]
    fn steered_addresses_join_config_table_and_addresses_in_use() {
        let table = RouteTable::compile(RouteTableSpec {
            public_addresses: Default::default(),
            generation: 1,
            pools: vec![PoolSpec {
                name: "a".into(),
                addresses: vec![
                    Ipv4Addr::new(198, 51, 100, 1),
                    Ipv4Addr::new(198, 51, 100, 2),
                ],
                pairing: true,
            }],
            policies: vec![],
            sources: vec![],
            default_action: ActionSpec::Deny {
                reason: "none".into(),
            },
        })
        .unwrap();
        let in_use = [Ipv4Addr::new(198, 51, 100, 7)];
        assert_eq!(
            steered_addresses(&config(), &table, &in_use),
            [1, 2, 7, 9].map(|last| Ipv4Addr::new(198, 51, 100, last))
        );
    }

    /// More open flows than one page: every one is logged once as deleted with reason
    /// `shutdown`, with the addresses the engine mapped.
    #[test]
    fn shutdown_logs_every_open_flow_as_deleted() {
        use egw_policy::{PolicySpec, RuleSpec, SourceSpec};
        use egw_testkit::PacketBuilder;
        const FLOWS: u16 = 5000;
        let table = RouteTable::compile(RouteTableSpec {
            public_addresses: Default::default(),
            generation: 1,
            pools: vec![PoolSpec {
                name: "a".into(),
                addresses: vec![Ipv4Addr::new(198, 51, 100, 1)],
                pairing: true,
            }],
            policies: vec![PolicySpec {
                name: "all".into(),
                rules: vec![RuleSpec {
                    destination: "0.0.0.0/0".parse().unwrap(),
                    action: ActionSpec::Snat { pool: "a".into() },
                    description: String::new(),
                }],
                default_action: None,
            }],
            sources: vec![SourceSpec {
                cidr: "10.244.0.0/16".parse().unwrap(),
                policy: "all".into(),
            }],
            default_action: ActionSpec::Deny {
                reason: "none".into(),
            },
        })
        .unwrap();
        let mut engine = Engine::new(EngineConfig {
            flow_capacity: 8192,
            inside_address: Ipv4Addr::new(10, 244, 0, 1),
            ..EngineConfig::default()
        })
        .unwrap();
        engine.set_route_table(Arc::new(table));
        let now = Duration::from_secs(1);
        for port in 0..FLOWS {
            let mut frame = PacketBuilder::new()
                .eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4(
                    Ipv4Addr::new(10, 244, 1, 10),
                    Ipv4Addr::new(203, 0, 113, 10),
                )
                .udp(10_000 + port, 53)
                .payload(b"q")
                .build();
            let len = frame.len();
            assert!(
                matches!(
                    engine.process(&mut frame, len, Ingress::Inside, now),
                    Verdict::Forward { .. }
                ),
                "flow {port} not created"
            );
        }
        assert_eq!(engine.occupancy().0, u32::from(FLOWS));
        assert!(usize::from(FLOWS) > SHUTDOWN_PAGE);

        let directory = tempfile::tempdir().unwrap();
        let writer =
            NatLogWriter::start(egw_natlog::NatLogConfig::new(directory.path(), "gw")).unwrap();
        log_open_flows_as_deleted(&engine, &writer.sender(), now, 0);
        let stats = writer.shutdown().unwrap();
        assert_eq!(stats.events_dropped, 0);
        let records: Vec<egw_natlog::NatLogRecord> = std::fs::read_dir(directory.path())
            .unwrap()
            .flat_map(|entry| {
                let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                text.lines()
                    .map(|line| serde_json::from_str(line).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(records.len(), usize::from(FLOWS));
        let pod_ports: BTreeSet<u16> = records.iter().map(|record| record.pod.port()).collect();
        assert_eq!(pod_ports, (10_000..10_000 + FLOWS).collect());
        for record in &records {
            assert_eq!(record.event, egw_natlog::EventKind::Delete);
            assert_eq!(record.reason.as_deref(), Some(SHUTDOWN_REASON));
            assert_eq!(*record.external.ip(), Ipv4Addr::new(198, 51, 100, 1));
            assert_eq!(record.remote.to_string(), "203.0.113.10:53");
        }
    }

    #[test]
    fn core_snapshot_reports_every_gateway_drop_reason() {
        let wire = CoreSnapshot::default().to_wire();
        for (name, _) in GatewayCounters::default().drops() {
            assert_eq!(wire.drops.get(name), Some(&0), "{name}");
        }
        for reason in egw_engine::DropReason::ALL {
            assert_eq!(wire.drops.get(reason.name()), Some(&0), "{reason}");
        }
    }
}
