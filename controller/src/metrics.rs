//! Prometheus metrics of the controller (`/metrics`, OpenMetrics text).
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `egw_controller_reconciles_total` | counter | |
//! | `egw_controller_errors_total` | counter | `reason` |
//! | `egw_controller_push_duration_seconds` | histogram | |
//! | `egw_controller_tables_pushed_total` | counter | |
//! | `egw_controller_gateway_restarts_total` | counter | |
//! | `egw_controller_leader` | gauge | |
//! | `egw_controller_aws_calls_total` | counter | `operation`, `outcome` |
//! | `egw_controller_aws_failovers_total` | counter | |

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Error reasons, the values of the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorReason {
    /// A gateway could not be reached (or its call timed out).
    GatewayUnreachable,
    /// A gateway refused a call: a table, or the controller's identity.
    PushRefused,
    /// An endpoint is malformed or its TLS setup failed.
    Endpoint,
    /// Writing a status, an Event, a finalizer or the Lease failed.
    KubeApi,
    /// The local manifest directory could not be loaded.
    LocalLoad,
    /// An AWS pass or cleanup failed.
    Aws,
}

impl ErrorReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::GatewayUnreachable => "gateway_unreachable",
            ErrorReason::PushRefused => "push_refused",
            ErrorReason::Endpoint => "endpoint",
            ErrorReason::KubeApi => "kube_api",
            ErrorReason::LocalLoad => "local_load",
            ErrorReason::Aws => "aws",
        }
    }
}

type Labels = Vec<(String, String)>;

/// Cheap to clone: every metric is shared.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Counter,
    errors: Family<Labels, Counter>,
    push_duration: Histogram,
    tables_pushed: Counter,
    gateway_restarts: Counter,
    leader: Gauge,
    aws_calls: Family<Labels, Counter>,
    aws_failovers: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("egw_controller");
        let reconciles = Counter::default();
        let errors = Family::<Labels, Counter>::default();
        // 1 ms .. ~16 s.
        let push_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let tables_pushed = Counter::default();
        let gateway_restarts = Counter::default();
        let leader = Gauge::default();
        let aws_calls = Family::<Labels, Counter>::default();
        let aws_failovers = Counter::default();
        registry.register(
            "reconciles",
            "Translations of the cluster (or local) state",
            reconciles.clone(),
        );
        registry.register("errors", "Errors by reason", errors.clone());
        registry.register(
            "push_duration_seconds",
            "Duration of ApplyRouteTable calls",
            push_duration.clone(),
        );
        registry.register(
            "tables_pushed",
            "Route tables accepted by gateways",
            tables_pushed.clone(),
        );
        registry.register(
            "gateway_restarts",
            "Gateway restarts detected (epoch changed or generation went back)",
            gateway_restarts.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        registry.register(
            "aws_calls",
            "AWS provider operations by operation and outcome (ok, retryable, permanent, not_found, limit_exceeded, ...)",
            aws_calls.clone(),
        );
        registry.register(
            "aws_failovers",
            "Elastic IPs moved off a failed gateway instance",
            aws_failovers.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            reconciles,
            errors,
            push_duration,
            tables_pushed,
            gateway_restarts,
            leader,
            aws_calls,
            aws_failovers,
        }
    }

    pub fn reconciled(&self) {
        self.reconciles.inc();
    }

    pub fn error(&self, reason: ErrorReason) {
        self.errors
            .get_or_create(&vec![("reason".to_owned(), reason.as_str().to_owned())])
            .inc();
    }

    pub fn pushed(&self, seconds: f64) {
        self.push_duration.observe(seconds);
        self.tables_pushed.inc();
    }

    pub fn push_failed(&self, seconds: f64) {
        self.push_duration.observe(seconds);
    }

    pub fn gateway_restarted(&self) {
        self.gateway_restarts.inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// One AWS provider operation and how it ended (`ok` or the error kind).
    pub fn aws_call(&self, operation: &str, outcome: &str) {
        self.aws_calls
            .get_or_create(&vec![
                ("operation".to_owned(), operation.to_owned()),
                ("outcome".to_owned(), outcome.to_owned()),
            ])
            .inc();
    }

    pub fn aws_failover(&self) {
        self.aws_failovers.inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_counts() {
        let metrics = Metrics::new();
        metrics.reconciled();
        metrics.error(ErrorReason::PushRefused);
        metrics.error(ErrorReason::PushRefused);
        metrics.pushed(0.003);
        metrics.aws_call("associate", "ok");
        metrics.aws_call("associate", "retryable");
        metrics.aws_failover();
        let text = metrics.render();
        assert!(text.contains("egw_controller_reconciles_total 1"), "{text}");
        assert!(
            text.contains("egw_controller_errors_total{reason=\"push_refused\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("egw_controller_tables_pushed_total 1"),
            "{text}"
        );
        assert!(
            text.contains("egw_controller_push_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("egw_controller_leader 0"), "{text}");
        assert!(
            text.contains(
                "egw_controller_aws_calls_total{operation=\"associate\",outcome=\"retryable\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("egw_controller_aws_failovers_total 1"),
            "{text}"
        );
    }
}
