//! `/metrics` (OpenMetrics text, prometheus-client) and `/healthz` over HTTP.
//!
//! Every scrape reads the workers' published [`CoreSnapshot`]s (an atomic load each; the packet
//! path is never locked or slowed by a scrape) and renders them. Series:
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `egw_rx_packets_total`, `egw_rx_bytes_total` | `core` | frames the engine received |
//! | `egw_tx_packets_total`, `egw_tx_bytes_total` | `core` | frames queued for transmission |
//! | `egw_drops_total` | `core`, `reason` | drops by reason: [`egw_engine::DropReason::name`] and [`GatewayCounters::drops`](crate::dataplane::GatewayCounters::drops) |
//! | `egw_conntrack_flows`, `egw_conntrack_capacity` | `core` | flows tracked and the table's capacity |
//! | `egw_flows_created_total`, `egw_flows_expired_total` | `core` | flows created and expired |
//! | `egw_flows_early_dropped_total` | `core` | unanswered flows evicted for new ones while the table was full |
//! | `egw_handoffs_total` | `core` | packets handed to the core owning their flow |
//! | `egw_ports_in_use`, `egw_ports_total` | `external_ip`, `protocol` | SNAT ports leased / allocatable, all cores |
//! | `egw_port_utilization_ratio` | `external_ip`, `protocol` | `ports_in_use / ports_total` |
//! | `egw_port_exhaustion` | `external_ip`, `protocol` | 1 when the ratio is at or above the threshold (default 0.9) |
//! | `egw_xdp_info` | `interface`, `mode`, `socket_mode` | 1; `mode` native/generic, `socket_mode` zero_copy/copy |
//! | `egw_route_table_generation` | | generation of the served route table |
//! | `egw_natlog_events_written_total`, `egw_natlog_events_dropped_total`, `egw_natlog_bytes_written_total`, `egw_natlog_write_errors_total`, `egw_natlog_rotations_total`, `egw_natlog_ipfix_messages_sent_total`, `egw_natlog_ipfix_send_errors_total` | | NAT event log counters (only when the log is on) |
//!
//! `/healthz` answers 200 `ok` while every dataplane worker runs, 503 otherwise.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use egw_natlog::NatLogStats;
use egw_xdp::AttachMode;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::dataplane::{CoreSnapshot, Dataplane};

/// The content type of the OpenMetrics text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("binding the metrics listener on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving metrics on {address}")]
    Serve {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How one interface's XDP program and AF_XDP sockets run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpInterface {
    pub name: String,
    pub mode: AttachMode,
    pub zero_copy: bool,
}

/// Everything one scrape shows, read from the dataplane without locking its workers.
#[derive(Debug, Clone, Default)]
pub struct GatewayView {
    pub cores: Vec<Arc<CoreSnapshot>>,
    pub interfaces: Vec<XdpInterface>,
    pub route_table_generation: u64,
    /// `None` when the NAT log is off.
    pub nat_log: Option<NatLogStats>,
    /// False once a dataplane worker has stopped unexpectedly.
    pub healthy: bool,
}

/// What the HTTP handlers read.
pub trait MetricsSource: Send + Sync + 'static {
    fn view(&self) -> GatewayView;
}

impl MetricsSource for Dataplane {
    fn view(&self) -> GatewayView {
        GatewayView {
            cores: self.snapshots(),
            interfaces: self
                .interfaces()
                .iter()
                .map(|interface| XdpInterface {
                    name: interface.attached.name.clone(),
                    mode: interface.attached.mode,
                    zero_copy: interface.zero_copy,
                })
                .collect(),
            route_table_generation: self.route_table().generation(),
            nat_log: self.nat_log_stats(),
            healthy: self.failed_worker().is_none(),
        }
    }
}

type Labels = Vec<(&'static str, String)>;
type CounterFamily = Family<Labels, Counter<u64, AtomicU64>>;
type GaugeFamily = Family<Labels, Gauge<i64>>;
type RatioFamily = Family<Labels, Gauge<f64, AtomicU64>>;

fn core_labels(core: u16) -> Labels {
    vec![("core", core.to_string())]
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> CounterFamily {
    let family = CounterFamily::default();
    registry.register(name, help, family.clone());
    family
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> GaugeFamily {
    let family = GaugeFamily::default();
    registry.register(name, help, family.clone());
    family
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Renders `view` as OpenMetrics text; `exhaustion_threshold` sets `egw_port_exhaustion`.
///
/// One function per group of series, called in the order the series appear in the output.
pub fn render(view: &GatewayView, exhaustion_threshold: f64) -> String {
    let mut registry = Registry::default();
    register_core_series(&mut registry, &view.cores);
    register_port_series(&mut registry, &view.cores, exhaustion_threshold);
    register_xdp_info(&mut registry, &view.interfaces);
    register_route_table_generation(&mut registry, view.route_table_generation);
    if let Some(stats) = &view.nat_log {
        register_nat_log_series(&mut registry, stats);
    }
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// Per-core packet, drop, flow and hand-off counters and the conntrack occupancy.
fn register_core_series(registry: &mut Registry, cores: &[Arc<CoreSnapshot>]) {
    let rx_packets = counter(registry, "egw_rx_packets", "Frames received by the engine.");
    let rx_bytes = counter(registry, "egw_rx_bytes", "Bytes received by the engine.");
    let tx_packets = counter(
        registry,
        "egw_tx_packets",
        "Frames queued for transmission.",
    );
    let tx_bytes = counter(registry, "egw_tx_bytes", "Bytes queued for transmission.");
    let drops = counter(registry, "egw_drops", "Packets dropped, by reason.");
    let flows_created = counter(registry, "egw_flows_created", "Flows created.");
    let flows_expired = counter(registry, "egw_flows_expired", "Flows expired.");
    let flows_early_dropped = counter(
        registry,
        "egw_flows_early_dropped",
        "Unanswered flows evicted to admit new ones while the table was full.",
    );
    let handoffs = counter(
        registry,
        "egw_handoffs",
        "Packets handed to the core that owns their flow.",
    );
    let flows = gauge(registry, "egw_conntrack_flows", "Flows tracked.");
    let capacity = gauge(
        registry,
        "egw_conntrack_capacity",
        "Flows the core's table holds at most.",
    );
    for core in cores {
        let labels = core_labels(core.core);
        rx_packets
            .get_or_create(&labels)
            .inc_by(core.engine.rx_packets);
        rx_bytes.get_or_create(&labels).inc_by(core.engine.rx_bytes);
        tx_packets
            .get_or_create(&labels)
            .inc_by(core.gateway.tx_packets);
        tx_bytes
            .get_or_create(&labels)
            .inc_by(core.gateway.tx_bytes);
        flows_created
            .get_or_create(&labels)
            .inc_by(core.engine.flows_created);
        flows_expired
            .get_or_create(&labels)
            .inc_by(core.engine.flows_expired);
        flows_early_dropped
            .get_or_create(&labels)
            .inc_by(core.engine.flows_early_dropped);
        handoffs.get_or_create(&labels).inc_by(core.engine.handoffs);
        let (tracked, table_capacity) = core.occupancy;
        flows.get_or_create(&labels).set(i64::from(tracked));
        capacity
            .get_or_create(&labels)
            .set(i64::from(table_capacity));
        let engine_drops = core
            .engine
            .drops
            .iter()
            .map(|(reason, count)| (reason.name(), count));
        for (reason, count) in engine_drops.chain(core.gateway.drops()) {
            drops
                .get_or_create(&vec![
                    ("core", core.core.to_string()),
                    ("reason", reason.to_owned()),
                ])
                .inc_by(count);
        }
    }
}

/// SNAT port use per external IP and protocol, summed over the cores, and its exhaustion flag.
fn register_port_series(
    registry: &mut Registry,
    cores: &[Arc<CoreSnapshot>],
    exhaustion_threshold: f64,
) {
    let ports_in_use = gauge(
        registry,
        "egw_ports_in_use",
        "SNAT ports with at least one lease, all cores.",
    );
    let ports_total = gauge(
        registry,
        "egw_ports_total",
        "SNAT ports the gateway may allocate, all cores.",
    );
    let utilization = RatioFamily::default();
    registry.register(
        "egw_port_utilization_ratio",
        "SNAT ports in use over ports allocatable.",
        utilization.clone(),
    );
    let exhaustion = gauge(
        registry,
        "egw_port_exhaustion",
        "1 when port utilisation is at or above the configured threshold.",
    );
    let mut usage: BTreeMap<(Ipv4Addr, &'static str), (u64, u64)> = BTreeMap::new();
    for core in cores {
        for external in &core.port_usage {
            for protocol in &external.usage {
                let entry = usage
                    .entry((external.address, protocol.protocol.name()))
                    .or_default();
                entry.0 += u64::from(protocol.ports_in_use);
                entry.1 += u64::from(protocol.ports_total);
            }
        }
    }
    for ((address, protocol), (in_use, total)) in usage {
        let labels = vec![
            ("external_ip", address.to_string()),
            ("protocol", protocol.to_owned()),
        ];
        let ratio = if total == 0 {
            0.0
        } else {
            in_use as f64 / total as f64
        };
        ports_in_use
            .get_or_create(&labels)
            .set(saturating_i64(in_use));
        ports_total
            .get_or_create(&labels)
            .set(saturating_i64(total));
        utilization.get_or_create(&labels).set(ratio);
        exhaustion
            .get_or_create(&labels)
            .set(i64::from(total > 0 && ratio >= exhaustion_threshold));
    }
}

/// One `egw_xdp_info` series per interface, its labels naming the XDP and socket modes.
fn register_xdp_info(registry: &mut Registry, interfaces: &[XdpInterface]) {
    let xdp = gauge(
        registry,
        "egw_xdp_info",
        "XDP attach mode and AF_XDP socket mode per interface (always 1).",
    );
    for interface in interfaces {
        let mode = match interface.mode {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        };
        let socket_mode = if interface.zero_copy {
            "zero_copy"
        } else {
            "copy"
        };
        xdp.get_or_create(&vec![
            ("interface", interface.name.clone()),
            ("mode", mode.to_owned()),
            ("socket_mode", socket_mode.to_owned()),
        ])
        .set(1);
    }
}

fn register_route_table_generation(registry: &mut Registry, route_table_generation: u64) {
    let generation = Gauge::<i64>::default();
    generation.set(saturating_i64(route_table_generation));
    registry.register(
        "egw_route_table_generation",
        "Generation of the served route table.",
        generation,
    );
}

/// The NAT event log's counters (only when the log is on).
fn register_nat_log_series(registry: &mut Registry, stats: &NatLogStats) {
    for (name, help, value) in [
        (
            "egw_natlog_events_written",
            "NAT log events written to the file.",
            stats.events_written,
        ),
        (
            "egw_natlog_events_dropped",
            "NAT log events lost (queue or engine buffer full).",
            stats.events_dropped,
        ),
        (
            "egw_natlog_bytes_written",
            "NAT log bytes written.",
            stats.bytes_written,
        ),
        (
            "egw_natlog_write_errors",
            "NAT log writes that failed.",
            stats.write_errors,
        ),
        (
            "egw_natlog_rotations",
            "NAT log files started after the first.",
            stats.rotations,
        ),
        (
            "egw_natlog_ipfix_messages_sent",
            "IPFIX messages sent to the collector.",
            stats.ipfix_messages_sent,
        ),
        (
            "egw_natlog_ipfix_send_errors",
            "IPFIX messages that could not be sent.",
            stats.ipfix_send_errors,
        ),
    ] {
        let metric = Counter::<u64, AtomicU64>::default();
        metric.inc_by(value);
        registry.register(name, help, metric);
    }
}

/// The `/metrics` and `/healthz` routes over `source`.
pub fn router<S: MetricsSource>(source: Arc<S>, exhaustion_threshold: f64) -> Router {
    let health_source = Arc::clone(&source);
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let source = Arc::clone(&source);
                async move {
                    let body = render(&source.view(), exhaustion_threshold);
                    ([(CONTENT_TYPE, OPENMETRICS)], body).into_response()
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let healthy = health_source.view().healthy;
                async move {
                    if healthy {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "a dataplane worker stopped\n",
                        )
                    }
                }
            }),
        )
}

/// Binds `address` (so a taken port fails startup, not later).
pub async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, MetricsError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| MetricsError::Bind { address, source })
}

/// Serves the routes on `listener` until `shutdown` completes.
pub async fn serve<S: MetricsSource>(
    listener: tokio::net::TcpListener,
    source: Arc<S>,
    exhaustion_threshold: f64,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), MetricsError> {
    let address = listener
        .local_addr()
        .map_err(|source| MetricsError::Serve {
            address: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
    axum::serve(listener, router(source, exhaustion_threshold))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| MetricsError::Serve { address, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use egw_engine::PortUsage;
    use egw_engine::{DropReason, ExternalUsage, Protocol};

    fn view() -> GatewayView {
        let mut core = CoreSnapshot {
            core: 1,
            occupancy: (3, 1024),
            ..CoreSnapshot::default()
        };
        core.engine.rx_packets = 42;
        core.engine.flows_created = 5;
        core.engine.drops.record(DropReason::ALL[0]);
        core.gateway.no_route = 2;
        let usage = |protocol, ports_in_use, ports_total| PortUsage {
            protocol,
            ports_in_use,
            ports_total,
            leases: u64::from(ports_in_use),
        };
        core.port_usage = vec![ExternalUsage {
            address: Ipv4Addr::new(198, 51, 100, 1),
            draining: false,
            usage: [
                usage(Protocol::Tcp, 95, 100),
                usage(Protocol::Udp, 10, 100),
                usage(Protocol::Icmp, 0, 0),
            ],
            flows: 105,
        }];
        GatewayView {
            cores: vec![Arc::new(core)],
            interfaces: vec![XdpInterface {
                name: "gw-in".into(),
                mode: AttachMode::Generic,
                zero_copy: false,
            }],
            route_table_generation: 7,
            nat_log: Some(NatLogStats {
                events_written: 9,
                events_dropped: 1,
                bytes_written: 900,
                rotations: 0,
                write_errors: 0,
                backend: None,
                ipfix_messages_sent: 0,
                ipfix_send_errors: 0,
            }),
            healthy: true,
        }
    }

    #[test]
    fn renders_every_documented_series() {
        let text = render(&view(), 0.9);
        let first_reason = DropReason::ALL[0].name();
        for line in [
            "egw_rx_packets_total{core=\"1\"} 42".to_owned(),
            "egw_flows_created_total{core=\"1\"} 5".to_owned(),
            "egw_conntrack_flows{core=\"1\"} 3".to_owned(),
            "egw_conntrack_capacity{core=\"1\"} 1024".to_owned(),
            format!("egw_drops_total{{core=\"1\",reason=\"{first_reason}\"}} 1"),
            "egw_drops_total{core=\"1\",reason=\"no_route\"} 2".to_owned(),
            "egw_ports_in_use{external_ip=\"198.51.100.1\",protocol=\"tcp\"} 95".to_owned(),
            "egw_port_utilization_ratio{external_ip=\"198.51.100.1\",protocol=\"tcp\"} 0.95"
                .to_owned(),
            "egw_port_exhaustion{external_ip=\"198.51.100.1\",protocol=\"tcp\"} 1".to_owned(),
            "egw_port_exhaustion{external_ip=\"198.51.100.1\",protocol=\"udp\"} 0".to_owned(),
            "egw_port_exhaustion{external_ip=\"198.51.100.1\",protocol=\"icmp\"} 0".to_owned(),
            "egw_xdp_info{interface=\"gw-in\",mode=\"generic\",socket_mode=\"copy\"} 1".to_owned(),
            "egw_route_table_generation 7".to_owned(),
            "egw_natlog_events_written_total 9".to_owned(),
            "egw_natlog_events_dropped_total 1".to_owned(),
            "egw_tx_packets_total{core=\"1\"} 0".to_owned(),
            "egw_handoffs_total{core=\"1\"} 0".to_owned(),
            "egw_flows_expired_total{core=\"1\"} 0".to_owned(),
        ] {
            assert!(
                text.lines().any(|candidate| candidate == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_exhaustion_threshold_is_configurable_and_natlog_series_follow_the_log() {
        let mut quiet = view();
        quiet.nat_log = None;
        let text = render(&quiet, 0.96);
        assert!(
            text.contains("egw_port_exhaustion{external_ip=\"198.51.100.1\",protocol=\"tcp\"} 0")
        );
        assert!(!text.contains("egw_natlog_"), "{text}");
    }

    /// The dashboard (deploy/grafana/egw.json) queries only series the gateway renders.
    #[test]
    fn every_gateway_metric_the_dashboard_queries_is_rendered() {
        let dashboard = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/egw.json"),
        )
        .unwrap();
        let rendered = render(&view(), 0.9);
        let mut checked = 0;
        for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.starts_with("egw_") || word.starts_with("egw_controller_") {
                continue;
            }
            checked += 1;
            assert!(
                rendered
                    .lines()
                    .any(|line| line.starts_with(&format!("{word}{{"))
                        || line.starts_with(&format!("{word} "))),
                "the dashboard queries {word}, which the gateway does not export"
            );
        }
        assert!(
            checked >= 10,
            "only {checked} gateway metrics found in the dashboard"
        );
    }

    struct Fixed(GatewayView);

    impl MetricsSource for Fixed {
        fn view(&self) -> GatewayView {
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn serves_metrics_and_health_over_http() {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut sick = view();
        sick.healthy = false;
        let server = tokio::spawn(serve(listener, Arc::new(Fixed(view())), 0.9, async {
            let _ = stopped.await;
        }));
        let (status, body) = http_get(address, "/metrics").await;
        assert!(status.contains("200"), "{status}");
        assert!(
            body.contains("egw_rx_packets_total{core=\"1\"} 42"),
            "{body}"
        );
        let (status, body) = http_get(address, "/healthz").await;
        assert!(status.contains("200"), "{status}");
        assert_eq!(body, "ok\n");
        let _ = stop.send(());
        server.await.unwrap().unwrap();

        let router = router(Arc::new(Fixed(sick)), 0.9);
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let (status, _) = http_get(address, "/healthz").await;
        assert!(status.contains("503"), "{status}");
        server.abort();
    }

    /// A one-shot HTTP/1.0 GET: the status line and the body.
    async fn http_get(address: SocketAddr, path: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }
}
