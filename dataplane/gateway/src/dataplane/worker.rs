//! A worker thread: pinned to its CPU, it owns one [`Engine`] and one AF_XDP
//! [`egw_xdp::xsk::Worker`] and loops over batches until told to stop.
//!
//! Per batch, one function per step: notice a new route table (one atomic load), serve control
//! commands, drain the frames other cores handed off, then per socket receive a batch, prefetch
//! its flows and process it; release reassembled fragments, flush TX; when idle, expire flows and
//! sleep in `poll`; queue flow events for the NAT log; publish counters every
//! [`PUBLISH_INTERVAL`].

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use egw_engine::{Engine, EngineConfig, Ingress, Verdict};
use egw_natlog::NatLogSender;
use egw_xdp::xsk::{self, FrameDesc, Worker};
use tracing::{info, warn};

use super::command::{serve_command, Command};
use super::handoff::{HandoffRing, Handoffs};
use super::io::Io;
use super::nat_log::FlowLog;
use super::shared::Shared;
use super::snapshot::{CoreSnapshot, GatewayCounters};
use crate::nexthop::{NextHops, ResolutionCache};

/// Frames taken from one socket per batch.
pub const BATCH: usize = 64;
/// How often a worker publishes its counters.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);
/// How long an idle worker sleeps in `poll` before doing housekeeping.
const IDLE_WAIT: Duration = Duration::from_millis(2);
/// Flow-table slots expired per idle round.
const MAINTAIN_BUDGET: u32 = 1024;
/// The ingress a released fragment is handed off with: the engine classified it by address (it
/// no longer knows the interface it came in on), so the owning core must too.
const RELEASED_FRAGMENT_INGRESS: Ingress = Ingress::OneArmed;

/// The sockets a one-armed worker reads, and the ingress of their frames.
const ONE_ARMED_SIDES: &[(xsk::Side, Ingress)] = &[(xsk::Side::Inside, Ingress::OneArmed)];
/// The sockets a two-armed worker reads, and the ingress of their frames.
const TWO_ARMED_SIDES: &[(xsk::Side, Ingress)] = &[
    (xsk::Side::Inside, Ingress::Inside),
    (xsk::Side::Outside, Ingress::Outside),
];

/// Everything a worker thread is started with.
pub(super) struct WorkerContext {
    pub(super) core: u16,
    pub(super) cpu: usize,
    pub(super) cores: u16,
    pub(super) engine_config: EngineConfig,
    pub(super) xsk: Worker,
    pub(super) one_armed: bool,
    /// Interface index per engine side: [inside, outside].
    pub(super) ifindex: [u32; 2],
    pub(super) shared: Arc<Shared>,
    pub(super) rings: Arc<Vec<HandoffRing>>,
    pub(super) commands: Receiver<Command>,
    pub(super) resolver: Sender<(u32, Ipv4Addr)>,
    pub(super) clock: Instant,
    pub(super) nat_log: Option<NatLogSender>,
}

/// A worker's state between batches (the [`Shared`] state stays apart, so a batch can hold the
/// next-hop snapshot it loaded from it while the steps borrow this mutably).
struct WorkerLoop {
    core: u16,
    cores: u16,
    engine: Engine,
    io: Io,
    commands: Receiver<Command>,
    clock: Instant,
    sides: &'static [(xsk::Side, Ingress)],
    batch: Vec<FrameDesc>,
    table_version: u64,
    nat_log: Option<FlowLog>,
    last_publish: Instant,
}

/// The worker thread's body: set up, report readiness on `ready`, loop until stopped, finish.
pub(super) fn run_worker(context: WorkerContext, ready: Sender<Result<(), String>>) {
    let shared = Arc::clone(&context.shared);
    let mut worker = match WorkerLoop::start(context) {
        Ok(worker) => worker,
        Err(message) => {
            let _ = ready.send(Err(message));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    while !shared.stop.load(Ordering::Relaxed) {
        worker.run_batch(&shared);
    }
    worker.finish(&shared);
}

/// Pins the calling thread to `cpu`; a worker that cannot be pinned still runs.
fn pin(core: u16, cpu: usize) {
    let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    if pinned {
        info!(worker = core, cpu, "worker pinned");
    } else {
        warn!(
            worker = core,
            cpu, "pinning the worker to its CPU failed; it runs unpinned"
        );
    }
}

/// Builds the worker's engine, its flow table advised onto huge pages.
fn new_engine(core: u16, config: EngineConfig) -> Result<Engine, String> {
    let engine = Engine::new(config).map_err(|error| format!("engine configuration: {error}"))?;
    // At millions of flows nearly every lookup would also miss the TLB with 4 KiB pages.
    if let Err(error) = egw_xdp::memory::advise_huge_pages(&engine.memory_regions()) {
        warn!(worker = core, %error, "huge pages refused for the flow table; continuing with small pages");
    }
    Ok(engine)
}

impl WorkerLoop {
    /// Pins the thread, builds the engine with the current route table and, when the NAT log is
    /// on, turns on its flow events.
    fn start(context: WorkerContext) -> Result<Self, String> {
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
        pin(core, cpu);
        let mut engine = new_engine(core, engine_config)?;
        let table_version = shared.table_version.load(Ordering::Acquire);
        engine.set_route_table(shared.table.load_full());
        let nat_log = nat_log.map(|sender| FlowLog::start(sender, &mut engine));
        Ok(Self {
            core,
            cores,
            engine,
            io: Io {
                core,
                xsk,
                ifindex,
                handoffs: Handoffs { core, cores, rings },
                resolver,
                cache: ResolutionCache::default(),
                counters: GatewayCounters::default(),
            },
            commands,
            clock,
            sides: if one_armed {
                ONE_ARMED_SIDES
            } else {
                TWO_ARMED_SIDES
            },
            batch: Vec::with_capacity(BATCH),
            table_version,
            nat_log,
            // Publish at the first opportunity.
            last_publish: Instant::now()
                .checked_sub(PUBLISH_INTERVAL)
                .unwrap_or_else(Instant::now),
        })
    }

    /// One round of the loop; the driver of the steps below.
    fn run_batch(&mut self, shared: &Shared) {
        self.install_new_table(shared);
        self.serve_commands();
        let hops = shared.next_hops.load();
        let now = self.clock.elapsed();
        let mut work = self.drain_handoffs(&hops, now);
        let sides = self.sides;
        for &(side, ingress) in sides {
            work += self.receive(side);
            self.prefetch(ingress);
            self.process_batch(&hops, ingress, now);
        }
        self.release_fragments(&hops, now);
        self.io.xsk.flush();
        drop(hops);
        if work == 0 {
            self.idle(now);
        }
        if let Some(nat_log) = &mut self.nat_log {
            nat_log.submit(&mut self.engine);
        }
        if self.last_publish.elapsed() >= PUBLISH_INTERVAL {
            if let Some(nat_log) = &mut self.nat_log {
                nat_log.count_dropped(&self.engine);
            }
            self.publish(shared);
            self.last_publish = Instant::now();
        }
    }

    /// Picks up a route table the control side published since the last batch.
    fn install_new_table(&mut self, shared: &Shared) {
        let version = shared.table_version.load(Ordering::Acquire);
        if version != self.table_version {
            let table = shared.table.load_full();
            info!(
                worker = self.core,
                generation = table.generation(),
                "route table installed"
            );
            self.engine.set_route_table(table);
            self.table_version = version;
        }
    }

    fn serve_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            serve_command(&mut self.engine, command, self.clock.elapsed());
        }
    }

    /// Processes the frames other cores handed to this one; returns how many.
    fn drain_handoffs(&mut self, hops: &NextHops, now: Duration) -> usize {
        let (core, mut work) = (self.core, 0usize);
        for from in 0..self.cores {
            if from == core {
                continue;
            }
            // Bounded per source, so a flooding core cannot starve this core's own queues.
            for _ in 0..BATCH {
                let Some(handed) = self.io.handoffs.ring(from, core).frames.pop() else {
                    break;
                };
                work += 1;
                self.io.counters.handoffs_received += 1;
                process_copied(
                    &mut self.engine,
                    &mut self.io,
                    hops,
                    &handed.bytes,
                    handed.ingress,
                    now,
                );
                // A full spare queue just frees the buffer.
                let _ = self.io.handoffs.ring(from, core).spare.push(handed.bytes);
            }
        }
        work
    }

    /// Takes up to [`BATCH`] frames from the socket of `side`; returns how many.
    fn receive(&mut self, side: xsk::Side) -> usize {
        self.io.xsk.rx_batch(side, &mut self.batch, BATCH);
        self.batch.len()
    }

    /// Issues the batch's flow-table loads together so their cache misses overlap.
    fn prefetch(&mut self, ingress: Ingress) {
        let mut frames: [&[u8]; BATCH] = [&[]; BATCH];
        for (slot, desc) in frames.iter_mut().zip(&self.batch) {
            *slot = self.io.xsk.packet(desc);
        }
        self.engine.prefetch(&frames[..self.batch.len()], ingress);
    }

    /// Translates every frame of the batch and queues it for TX, hand-off or recycling.
    fn process_batch(&mut self, hops: &NextHops, ingress: Ingress, now: Duration) {
        for desc in self.batch.drain(..) {
            process_frame(&mut self.engine, &mut self.io, hops, desc, ingress, now);
        }
    }

    /// Sends the datagrams the engine reassembled from stashed fragments.
    fn release_fragments(&mut self, hops: &NextHops, now: Duration) {
        let io = &mut self.io;
        self.engine
            .release_fragments(now, |bytes, verdict| match verdict {
                Verdict::Forward {
                    side,
                    destination,
                    len,
                } => io.forward_bytes(hops, &bytes[..len.min(bytes.len())], side, destination),
                Verdict::Handoff { core: to } => io.hand_off(to, bytes, RELEASED_FRAGMENT_INGRESS),
                Verdict::Drop(_) | Verdict::Stashed => {}
            });
    }

    /// Nothing arrived: expire some flows, then sleep until a socket is readable.
    fn idle(&mut self, now: Duration) {
        self.engine.maintain(now, MAINTAIN_BUDGET);
        if let Err(error) = self.io.xsk.wait(IDLE_WAIT) {
            warn!(worker = self.core, %error, "polling the AF_XDP sockets failed");
            std::thread::sleep(IDLE_WAIT);
        }
    }

    /// The worker was told to stop: last NAT log events and deletes, last counters.
    fn finish(mut self, shared: &Shared) {
        if let Some(nat_log) = &mut self.nat_log {
            nat_log.finish(&mut self.engine, self.clock.elapsed(), self.core);
        }
        self.publish(shared);
        info!(worker = self.core, "worker stopped");
    }

    fn publish(&self, shared: &Shared) {
        let snapshot = CoreSnapshot {
            core: self.io.core,
            engine: *self.engine.counters(),
            gateway: self.io.counters,
            xsk: self.io.xsk.counters(),
            occupancy: self.engine.occupancy(),
            port_usage: self.engine.port_usage(),
            table_generation: self.engine.route_table().generation(),
        };
        if let Some(slot) = shared.snapshots.get(usize::from(self.io.core)) {
            slot.store(Arc::new(snapshot));
        }
    }
}
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
