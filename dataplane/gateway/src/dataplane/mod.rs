//! The dataplane: the XDP steering program plus one pinned worker thread per AF_XDP queue, each
//! owning an [`egw_engine::Engine`] and an [`egw_xdp::xsk::Worker`].
//!
//! Nothing on the packet path takes a lock. Between batches a worker does one atomic load to notice
//! a new route table, one to load the next-hop snapshot, drains its command channel and hand-off
//! rings, and every [`PUBLISH_INTERVAL`] publishes a counter snapshot through an
//! [`arc_swap::ArcSwap`].
//!
//! This module is the control side's handle, [`Dataplane`]; its parts:
//!
//! - `setup`: [`Dataplane::start`], one step per function (route table, interfaces, XDP attach,
//!   next-hop monitor, NAT log, then per queue: sockets and UMEM, XSKMAP entries, thread).
//! - `worker`: a worker thread's loop, one function per per-batch step (table check, commands,
//!   hand-off drain, receive, prefetch, process, fragments, TX flush, idle work, publish).
//! - `io`: what a worker touches per packet besides its engine, and TX with next-hop MACs.
//! - `handoff`: the single-producer single-consumer rings between cores.
//! - `command`: the requests the control side sends a worker.
//! - `nat_log`: a worker's side of the NAT event log.
//! - `shared`, `snapshot`: the state the workers and the control side share, and the counters
//!   the workers publish.
//!
//! The wire (`egw_proto`) forms of these are made in [`crate::backend`].

mod command;
mod error;
mod handoff;
mod io;
mod nat_log;
mod setup;
mod shared;
mod snapshot;
mod worker;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use egw_engine::{CompiledRouteTable, FlowFilter, FlowInfo};
use egw_natlog::{NatLogSender, NatLogStats, NatLogWriter};
use egw_proto::v1;
use egw_xdp::{AttachedInterface, SteeringProgram};
use tracing::{error, info, warn};

use self::command::Command;
use self::shared::Shared;
use crate::config::GatewayConfig;
use crate::netlink::{MonitorCounters, NextHopMonitor};
use crate::nexthop::NextHops;

pub use self::command::LIST_SCAN_BUDGET;
pub use self::error::DataplaneError;
pub use self::nat_log::SHUTDOWN_REASON;
pub use self::snapshot::{CoreSnapshot, GatewayCounters};
pub use self::worker::{BATCH, PUBLISH_INTERVAL};

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

impl Dataplane {
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
    pub fn route_table(&self) -> Arc<CompiledRouteTable> {
        self.shared.table.load_full()
    }

    /// Installs a compiled table: steers its addresses first, then every worker picks it up at its
    /// next batch.
    pub fn apply_table(&self, table: CompiledRouteTable) -> Result<(), egw_xdp::LoaderError> {
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
    table: &CompiledRouteTable,
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

#[cfg(test)]
mod tests {
    use super::*;
    use egw_engine::RouteTableSpec;
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
        let table = CompiledRouteTable::compile(RouteTableSpec {
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
}
