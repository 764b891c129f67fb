//! What the AWS manager is given and what it reports: settings, gateway pods and inputs,
//! outcomes, problems and cleanup reports.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use egw_aws::ProviderError;

use crate::crd::{AwsPool, FailoverStatus, InstanceStatus, RouteStatus};

/// Port of the gateways' gRPC control server, pushed to at `<pod IP>:<port>`.
pub const DEFAULT_GATEWAY_GRPC_PORT: u16 = 7443;
/// How often an AWS gateway is checked against EC2 when nothing changed.
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(60);
/// First retry delay after a failed pass; doubled per failure up to the resync interval.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(5);
/// Failovers kept in `status.failovers`.
pub const FAILOVER_HISTORY: usize = 10;

/// Settings of the [`AwsManager`].
#[derive(Debug, Clone)]
pub struct AwsOptions {
    /// Cluster name, tagged on everything egw creates (`egw.dev/cluster`).
    pub cluster: String,
    pub resync_interval: Duration,
    pub retry_base: Duration,
}

impl AwsOptions {
    pub fn new(cluster: String) -> AwsOptions {
        AwsOptions {
            cluster,
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            retry_base: DEFAULT_RETRY_BASE,
        }
    }
}

/// A gateway pod as the manager sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPod {
    pub name: String,
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// Where its route table is pushed (`<pod IP>:<port>`), once the pod has an IP.
    pub endpoint: Option<String>,
    /// The pod's Ready condition is True (and it runs).
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    /// EC2 instance ID of its node, or why it is unknown.
    pub instance_id: Result<String, String>,
}

/// Everything one pass of a gateway depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsGatewayInput {
    pub name: String,
    pub generation: Option<i64>,
    pub pool: AwsPool,
    pub pods: Vec<GatewayPod>,
    /// `spec.health.drainSeconds`: how long an instance whose pod stopped being Ready keeps its
    /// Elastic IPs (for its existing flows) before they move.
    pub drain: Duration,
    /// `status.routes` as stored: the route target survives a controller restart, and routes
    /// are given back when `spec.aws.routes` was removed.
    pub stored_routes: Vec<RouteStatus>,
    /// `status.failovers` as stored, continued after a controller restart.
    pub stored_failovers: Vec<FailoverStatus>,
}

/// Why an AWS gateway is not (fully) in the state it should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AwsReason {
    /// An EC2 call failed; the message has the AWS code.
    AwsError,
    /// An instance type cannot hold the private addresses its Elastic IPs need.
    EniLimitExceeded,
    /// No gateway pod is Ready on a running EC2 instance.
    NoHealthyInstance,
    /// The gateway's spec cannot be acted on (e.g. its pod selector is invalid).
    InvalidSpec,
    /// The controller runs without `--aws`.
    AwsNotEnabled,
}

impl fmt::Display for AwsReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A problem of an AWS gateway, for its conditions and Events.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AwsProblem {
    pub reason: AwsReason,
    pub message: String,
    /// A transient failure: the pass is retried soon.
    pub retryable: bool,
}

/// What the manager reports for one gateway.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AwsGatewayOutcome {
    /// The gateway's instances (sorted by name) with the Elastic IPs they carry: the
    /// translation's instances and `status.instances`.
    pub instances: Vec<InstanceStatus>,
    pub routes: Vec<RouteStatus>,
    /// The last [`FAILOVER_HISTORY`] failovers, oldest first.
    pub failovers: Vec<FailoverStatus>,
    /// Failovers of this very pass (empty when the last outcome was reused), for Events.
    pub new_failovers: Vec<FailoverStatus>,
    /// A pass ran for this outcome (`false`: the last outcome was reused).
    pub fresh: bool,
    /// The main problem, if any.
    pub problem: Option<AwsProblem>,
    /// Lesser problems (addresses that cannot be used, ...), for the Degraded condition.
    pub warnings: Vec<String>,
}

/// What [`AwsManager::cleanup`] gave back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub released_routes: usize,
    pub deleted_network_interfaces: Vec<String>,
    pub unassigned_private_ips: Vec<Ipv4Addr>,
    pub released_allocations: Vec<String>,
}

/// The problem a failed EC2 call leaves.
pub(super) fn problem_of(error: &ProviderError) -> AwsProblem {
    AwsProblem {
        reason: AwsReason::AwsError,
        message: crate::error_chain(error),
        retryable: error.is_retryable(),
    }
}
