//! A worker's side of the NAT event log: its engine's flow events queued for the writer between
//! batches, the events the engine dropped counted, and at shutdown every flow still open logged
//! as deleted.

use std::time::{Duration, Instant};

use egw_engine::{Engine, FlowEvent, FlowFilter};
use egw_natlog::NatLogSender;
use tracing::info;

use super::command::LIST_SCAN_BUDGET;

/// Flow events an engine buffers between two batches when the NAT log is on; more are dropped
/// and counted (`egw_natlog_events_dropped_total`).
const FLOW_EVENT_BUFFER: usize = 8192;
/// The reason logged for flows still open when the gateway stops.
pub const SHUTDOWN_REASON: &str = "shutdown";
/// Flows per page when logging the open flows at shutdown.
const SHUTDOWN_PAGE: usize = 4096;
/// How long, per page, the shutdown logging waits for the writer to catch up.
const SHUTDOWN_PAGE_WAIT: Duration = Duration::from_millis(100);

/// One worker's connection to the NAT log.
pub(super) struct FlowLog {
    sender: NatLogSender,
    /// Taken from the engine after each batch; capacity kept between batches.
    events: Vec<FlowEvent>,
    /// `Engine::flow_events_dropped` when last counted, so each count adds only the new drops.
    dropped_seen: u64,
}

impl FlowLog {
    /// Turns on `engine`'s flow events, buffered up to [`FLOW_EVENT_BUFFER`] between batches.
    pub(super) fn start(sender: NatLogSender, engine: &mut Engine) -> Self {
        engine.enable_flow_events(FLOW_EVENT_BUFFER);
        Self {
            sender,
            events: Vec::with_capacity(FLOW_EVENT_BUFFER),
            dropped_seen: 0,
        }
    }

    /// Queues the events of the last batch, if any.
    pub(super) fn submit(&mut self, engine: &mut Engine) {
        engine.take_flow_events(&mut self.events);
        if !self.events.is_empty() {
            submit_flow_events(&self.sender, engine, &mut self.events);
        }
    }

    /// Adds the events the engine dropped since the last count to the log's dropped counter.
    pub(super) fn count_dropped(&mut self, engine: &Engine) {
        let dropped = engine.flow_events_dropped();
        self.sender
            .record_dropped(dropped.saturating_sub(self.dropped_seen));
        self.dropped_seen = dropped;
    }

    /// The worker is stopping: its last events, its last drops, then every open flow as deleted.
    pub(super) fn finish(&mut self, engine: &mut Engine, now: Duration, core: u16) {
        engine.take_flow_events(&mut self.events);
        submit_flow_events(&self.sender, engine, &mut self.events);
        self.sender.record_dropped(
            engine
                .flow_events_dropped()
                .saturating_sub(self.dropped_seen),
        );
        log_open_flows_as_deleted(engine, &self.sender, now, core);
    }
}

/// Queues a worker's flow events for the NAT log, each with the public address (AWS Elastic IP)
/// the current route table gives its external address. Returns how many were dropped.
fn submit_flow_events(
    nat_log: &NatLogSender,
    engine: &Engine,
    events: &mut Vec<FlowEvent>,
) -> usize {
    let table = engine.route_table();
    nat_log.submit_flow_events(events, |external| table.public_address(external))
}

/// Logs every flow still open as deleted (reason [`SHUTDOWN_REASON`]): the gateway is going away
/// and so are its mappings, and a compliance log must not leave them open-ended.
///
/// A full table holds more flows than the log's queue, so after each page this waits (bounded)
/// until the writer has written as many events as the page added, instead of overflowing the
/// queue and dropping deletes.
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
        events.extend(flows.drain(..).map(|flow| FlowEvent::Removed {
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

#[cfg(test)]
mod tests {
    use super::*;
    use egw_engine::{CompiledRouteTable, EngineConfig, Ingress, RouteTableSpec, Verdict};
    use egw_natlog::NatLogWriter;
    use egw_policy::{ActionSpec, PoolSpec};
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    /// More open flows than one page: every one is logged once as deleted with reason
    /// `shutdown`, with the addresses the engine mapped.
    #[test]
    fn shutdown_logs_every_open_flow_as_deleted() {
        use egw_policy::{PolicySpec, RuleSpec, SourceSpec};
        use egw_testkit::PacketBuilder;
        const FLOWS: u16 = 5000;
        let table = CompiledRouteTable::compile(RouteTableSpec {
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
}
