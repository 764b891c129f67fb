//! Starting the dataplane, one function per step: the initial route table, the interfaces, the
//! XDP steering program, the next-hop monitor, the shared state and hand-off rings, the NAT log,
//! then per queue a worker (its AF_XDP sockets and UMEM, their XSKMAP entries, its engine
//! configuration and its pinned thread).

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use egw_engine::{CompiledRouteTable, EngineConfig};
use egw_natlog::{NatLogSender, NatLogWriter};
use egw_proto::v1;
use egw_xdp::xsk::{self, SocketInfo, Worker, WorkerConfig};
use egw_xdp::{InterfaceRole, InterfaceSpec, SteeringProgram};
use tracing::{info, warn};

use super::command::{Command, COMMAND_QUEUE};
use super::error::DataplaneError;
use super::handoff::{self, HandoffRing};
use super::shared::Shared;
use super::worker::{run_worker, WorkerContext};
use super::{lock, steered_addresses, Dataplane, InterfaceStatus};
use crate::config::GatewayConfig;
use crate::netlink::{AddressListener, Netlink, NextHopMonitor};
use crate::nexthop::{format_mac, Link};

/// How long starting a worker may take before the dataplane gives up.
const WORKER_START_TIMEOUT: Duration = Duration::from_secs(10);

/// The interfaces the gateway serves, as the kernel reported them at start.
struct Interfaces {
    inside: Link,
    outside: Link,
    inside_mtu: u16,
    outside_mtu: u16,
    local_addresses: Vec<Ipv4Addr>,
}

/// What every worker is started with, besides its own sockets and core number.
struct WorkerSetup {
    worker_config: WorkerConfig,
    /// Interface index per engine side: [inside, outside].
    ifindex: [u32; 2],
    inside_mtu: u16,
    outside_mtu: u16,
    steering_seed: u64,
    shared: Arc<Shared>,
    rings: Arc<Vec<HandoffRing>>,
    clock: Instant,
    nat_log: Option<NatLogSender>,
}

fn random_u64() -> u64 {
    crate::control::new_epoch()
}

impl Dataplane {
    /// Loads XDP, opens the sockets and starts the workers, all in the calling thread's network
    /// namespace.
    pub fn start(config: GatewayConfig) -> Result<Self, DataplaneError> {
        let clock = Instant::now();
        let (table, initial_wire) = initial_table(&config)?;
        let interfaces = find_interfaces(&config)?;
        warn_about_unserved_queues(&config, &interfaces);
        let program = attach_steering(&config, &table, &interfaces.local_addresses)?;
        let program = Arc::new(Mutex::new(program));
        let monitor = start_next_hop_monitor(&program, &interfaces)?;
        let nat_log = start_nat_log(&config)?;
        let cores = config.workers;
        let shared = Arc::new(Shared::new(table, cores, monitor.snapshot()));
        let setup = WorkerSetup {
            worker_config: WorkerConfig {
                frame_count: config.xdp.frame_count,
                ring_size: config.xdp.ring_size,
                prefer_zero_copy: config.xdp.zero_copy,
                ..WorkerConfig::default()
            },
            ifindex: [interfaces.inside.ifindex, interfaces.outside.ifindex],
            inside_mtu: interfaces.inside_mtu,
            outside_mtu: interfaces.outside_mtu,
            steering_seed: random_u64(),
            shared: Arc::clone(&shared),
            rings: handoff::rings(cores),
            clock,
            nat_log: nat_log.as_ref().map(NatLogWriter::sender),
        };
        let mut dataplane = Dataplane {
            nat_log: Mutex::new(nat_log),
            nat_log_stats: setup.nat_log.clone(),
            shared,
            commands: Vec::new(),
            threads: Mutex::new(Vec::new()),
            program,
            monitor,
            interfaces: Vec::new(),
            initial_table: initial_wire,
            started: Instant::now(),
            clock,
            config,
        };
        let mut socket_infos = Vec::new();
        for core in 0..cores {
            socket_infos.push(dataplane.start_worker(&setup, core)?);
        }
        dataplane.interfaces = dataplane.interface_statuses(&socket_infos);
        info!(workers = cores, "dataplane started");
        Ok(dataplane)
    }

    /// Opens queue `core`'s sockets, registers them with XDP and starts the worker thread;
    /// returns the (inside, outside) socket details.
    fn start_worker(
        &mut self,
        setup: &WorkerSetup,
        core: u16,
    ) -> Result<(SocketInfo, SocketInfo), DataplaneError> {
        let queue = u32::from(core);
        let worker = open_sockets(&self.config, queue, &setup.worker_config).map_err(|source| {
            DataplaneError::Sockets {
                worker: core,
                source,
            }
        })?;
        self.register_sockets(&worker, queue)?;
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
        let (command_sender, command_receiver) = crossbeam::channel::bounded(COMMAND_QUEUE);
        let context = WorkerContext {
            core,
            cpu: self.config.cpu_for_worker(core),
            cores: self.config.workers,
            engine_config: engine_config(&self.config, setup, core),
            xsk: worker,
            one_armed: self.config.one_armed(),
            ifindex: setup.ifindex,
            shared: Arc::clone(&setup.shared),
            rings: Arc::clone(&setup.rings),
            commands: command_receiver,
            resolver: self.monitor.resolver(),
            clock: setup.clock,
            nat_log: setup.nat_log.clone(),
        };
        self.spawn_worker(context, command_sender)?;
        Ok((inside_info, outside_info))
    }

    /// Puts the worker's sockets into the XSKMAP of their interfaces, so XDP redirects to them.
    fn register_sockets(&self, worker: &Worker, queue: u32) -> Result<(), DataplaneError> {
        let mut program = lock(&self.program);
        program.register_xsk(
            &self.config.inside_interface,
            queue,
            &worker.socket_fd(xsk::Side::Inside),
        )?;
        if !self.config.one_armed() {
            program.register_xsk(
                self.config.outside_interface_name(),
                queue,
                &worker.socket_fd(xsk::Side::Outside),
            )?;
        }
        Ok(())
    }

    /// Starts the worker's thread and waits until its engine is ready. The thread and its command
    /// queue are kept before waiting, so a failure still stops and joins it (on drop).
    fn spawn_worker(
        &mut self,
        context: WorkerContext,
        commands: Sender<Command>,
    ) -> Result<(), DataplaneError> {
        let core = context.core;
        let (ready_sender, ready_receiver) = crossbeam::channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name(format!("egw-worker-{core}"))
            .spawn(move || run_worker(context, ready_sender))
            .map_err(|error| DataplaneError::Worker {
                worker: core,
                message: format!("spawning the thread: {error}"),
            })?;
        lock(&self.threads).push(thread);
        self.commands.push(commands);
        match ready_receiver.recv_timeout(WORKER_START_TIMEOUT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(DataplaneError::Worker {
                worker: core,
                message,
            }),
            Err(_) => Err(DataplaneError::Worker {
                worker: core,
                message: "did not start".into(),
            }),
        }
    }

    /// Each attached interface with the details of its first queue's socket.
    fn interface_statuses(
        &self,
        socket_infos: &[(SocketInfo, SocketInfo)],
    ) -> Vec<InterfaceStatus> {
        let program = lock(&self.program);
        program
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
                    queues: u32::from(self.config.workers),
                    attached,
                }
            })
            .collect()
    }
}

/// Loads the initial route table: from the configured file, else deny everything.
fn initial_table(
    config: &GatewayConfig,
) -> Result<(CompiledRouteTable, Option<v1::RouteTable>), DataplaneError> {
    let Some(path) = &config.route_table_file else {
        return Ok((CompiledRouteTable::empty_deny_all(), None));
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
    let wire = egw_proto::yaml::RouteTableDocument::from_yaml_str(&text)
        .map_err(|error| invalid(error.to_string()))?
        .to_proto();
    let table = egw_proto::spec::compile(&wire).map_err(invalid)?;
    Ok((table, Some(wire)))
}

/// Finds the inside and outside links, their MTUs (the configured one wins) and the gateway's
/// own addresses.
fn find_interfaces(config: &GatewayConfig) -> Result<Interfaces, DataplaneError> {
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
    Ok(Interfaces {
        inside,
        outside,
        inside_mtu,
        outside_mtu,
        local_addresses,
    })
}

/// Warns when a served interface has more receive queues than workers: AF_XDP sockets bind per
/// queue, so the other queues' frames would bypass the gateway.
fn warn_about_unserved_queues(config: &GatewayConfig, interfaces: &Interfaces) {
    let mut served_links = vec![&interfaces.inside];
    if !config.one_armed() {
        served_links.push(&interfaces.outside);
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
}

/// Loads the XDP steering program, attaches it to the served interfaces and fills its maps.
fn attach_steering(
    config: &GatewayConfig,
    table: &CompiledRouteTable,
    local_addresses: &[Ipv4Addr],
) -> Result<SteeringProgram, DataplaneError> {
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
    program.set_snat_addrs(&steered_addresses(config, table, &[]))?;
    program.set_local_addrs(local_addresses)?;
    Ok(program)
}

/// Starts the netlink monitor of routes and neighbours, which also keeps XDP's map of the
/// gateway's own addresses current.
fn start_next_hop_monitor(
    program: &Arc<Mutex<SteeringProgram>>,
    interfaces: &Interfaces,
) -> Result<NextHopMonitor, DataplaneError> {
    let address_listener: AddressListener = {
        let program = Arc::clone(program);
        let mut current = interfaces.local_addresses.clone();
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
    Ok(NextHopMonitor::start(
        vec![interfaces.inside.ifindex, interfaces.outside.ifindex],
        Some(address_listener),
    )?)
}

/// Starts the NAT event log's writer when the configuration asks for one.
fn start_nat_log(config: &GatewayConfig) -> Result<Option<NatLogWriter>, DataplaneError> {
    let Some(nat_log) = &config.nat_log else {
        return Ok(None);
    };
    let writer = NatLogWriter::start(nat_log.writer_config())?;
    info!(dir = %nat_log.dir.display(), "NAT event log started");
    Ok(Some(writer))
}

/// Opens queue `queue`'s AF_XDP sockets (one per served interface, sharing a UMEM).
fn open_sockets(
    config: &GatewayConfig,
    queue: u32,
    worker_config: &WorkerConfig,
) -> Result<Worker, xsk::XskError> {
    if config.one_armed() {
        Worker::one_armed(&config.inside_interface, queue, worker_config)
    } else {
        Worker::two_armed(
            &config.inside_interface,
            config.outside_interface_name(),
            queue,
            worker_config,
        )
    }
}

/// The engine configuration of worker `core`: conntrack settings from the gateway's, the steering
/// seed all cores share, a table seed of its own.
fn engine_config(config: &GatewayConfig, setup: &WorkerSetup, core: u16) -> EngineConfig {
    EngineConfig {
        core,
        cores: config.workers,
        flow_capacity: config.conntrack.capacity_per_core,
        udp_filtering: config.conntrack.udp_filtering.into(),
        port_range: config.conntrack.port_range,
        timeouts: config.conntrack.timeouts.into(),
        early_drop_unreplied: config.conntrack.early_drop_unreplied,
        inside_address: config.inside_address,
        inside_mtu: setup.inside_mtu,
        outside_mtu: setup.outside_mtu,
        steering_seed: setup.steering_seed,
        table_seed: random_u64(),
        ..EngineConfig::default()
    }
}
