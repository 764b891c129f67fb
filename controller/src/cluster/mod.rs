//! Cluster mode: watch the API server, translate, push, and report back.
//!
//! * Reflectors (kube-runtime watchers with local stores) follow Pods, Namespaces,
//!   EgressGateways and EgressGatewayPolicies. Any change schedules a reconcile after
//!   [`ClusterOptions::debounce`], so a burst of pod churn is one translation. Nothing is
//!   translated before all four stores have listed once: an empty store must not wipe tables.
//! * [`Reconciler::reconcile`] translates the stores' state, hands the tables to the
//!   [`GatewayPusher`], writes status with server-side apply (field manager `egw-controller`),
//!   publishes each new diagnostic once as an Event, and keeps the `egw.dev/cleanup` finalizer on
//!   every EgressGateway (removing it after the cleanup hook when the gateway is deleted).
//! * AWS gateways (`spec.aws`, with `--aws`): before translating, the [`AwsBackend`] places
//!   their Elastic IPs on their gateway pods (pods in `spec.namespace` matching `spec.selector`,
//!   pushed to at `<pod IP>:<gateway gRPC port>`, their EC2 instance read once from the Node's
//!   `spec.providerID`). Its outcome is the gateway's instances for the translation and for
//!   `status`; failovers become Normal `Failover` Events, problems Warning Events. A deleted AWS
//!   gateway keeps the finalizer until its routes, private addresses and allocated Elastic IPs
//!   are given back (`CleanupFailed` Events and backoff otherwise). Without `--aws` an AWS
//!   gateway has no instances: its pods are denied and its status says why.
//! * Only the holder of the leader Lease reconciles ([`leader`]); a replica that loses it stops
//!   its pushers at once.
//! * A full reconcile also runs every [`ClusterOptions::resync_interval`], retrying writes that
//!   failed.

pub mod http;
pub mod leader;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::aws::node::instance_id_from_provider_id;
use crate::aws::{
    AwsBackend, AwsGatewayInput, AwsGatewayOutcome, AwsProblem, AwsReason, GatewayPod,
    DEFAULT_GATEWAY_GRPC_PORT,
};
use crate::crd::{
    AddressStatus, EgressGateway, EgressGatewayPolicy, InstanceStatus, GROUP, VERSION,
};
use crate::input::{GatewayInfo, NamespaceInfo, PodInfo, PolicyInfo, Snapshot};
use crate::metrics::{ErrorReason, Metrics};
use crate::push::{GatewayPusher, PushOptions};
use crate::status::{gateway_status, policy_status, with_aws_problem};
use crate::translate::{translate, Diagnostic, GatewayReport, ObjectKind, Translation};

use self::leader::{LeaderElector, LeaseOptions};

/// Field manager of every server-side apply, and the Events' reporting controller.
pub const FIELD_MANAGER: &str = "egw-controller";
/// Finalizer kept on every EgressGateway until its cleanup hook ran.
pub const GATEWAY_FINALIZER: &str = "egw.dev/cleanup";
/// Longest Event note the API server accepts.
const MAX_NOTE: usize = 1024;
/// How long a node's EC2 instance ID is trusted before the Node is read again.
const NODE_CACHE_TTL: Duration = Duration::from_secs(120);

/// Settings of [`run`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub push: PushOptions,
    pub lease: LeaseOptions,
    pub debounce: Duration,
    pub resync_interval: Duration,
    /// Where `/metrics` and `/healthz` are served; `None` serves nothing.
    pub http_address: Option<SocketAddr>,
    /// Port of the gateway pods' gRPC control server: AWS gateway instances are pushed to at
    /// `<pod IP>:<port>`.
    pub gateway_grpc_port: u16,
}

/// Why cluster mode stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot serve /metrics on {address}")]
    Http {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The objects a reconcile looks at (the reflector stores' contents).
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub pods: Vec<Arc<Pod>>,
    pub namespaces: Vec<Arc<Namespace>>,
    pub gateways: Vec<Arc<EgressGateway>>,
    pub policies: Vec<Arc<EgressGatewayPolicy>>,
}

fn is_deleting<K: Resource>(object: &K) -> bool {
    object.meta().deletion_timestamp.is_some()
}

/// The address manager's instances of each AWS gateway, by gateway name.
pub type AwsOutcomes = BTreeMap<String, AwsGatewayOutcome>;

impl ClusterState {
    /// The translation input without address managers: AWS gateways have no instances (fail
    /// closed). See [`ClusterState::snapshot_with`].
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_with(&AwsOutcomes::new())
    }

    /// The translation input. Gateways being deleted are left out: their pods fail closed
    /// while the cleanup hook runs. AWS gateways take their instances from `aws` (the manager's
    /// outcome of this reconcile), never from their possibly stale status.
    pub fn snapshot_with(&self, aws: &AwsOutcomes) -> Snapshot {
        Snapshot {
            pods: self.pods.iter().map(|pod| PodInfo::from_pod(pod)).collect(),
            namespaces: self
                .namespaces
                .iter()
                .map(|namespace| NamespaceInfo::from_namespace(namespace))
                .collect(),
            gateways: self
                .gateways
                .iter()
                .filter(|gateway| !is_deleting(gateway.as_ref()))
                .map(|gateway| match gateway.spec.static_pool {
                    Some(_) => GatewayInfo::from_resource(gateway),
                    None => GatewayInfo::with_instances(
                        gateway,
                        aws.get(&gateway.name_any())
                            .map(|outcome| outcome.instances.as_slice())
                            .unwrap_or_default(),
                    ),
                })
                .collect(),
            policies: self
                .policies
                .iter()
                .map(|policy| PolicyInfo::from_resource(policy))
                .collect(),
        }
    }

    /// A reference to the object a diagnostic is about, with its uid when the object is known.
    fn reference(&self, diagnostic: &Diagnostic) -> ObjectReference {
        let object = &diagnostic.object;
        let known = match object.kind {
            ObjectKind::Pod => self
                .pods
                .iter()
                .find(|pod| {
                    pod.metadata.name.as_deref() == Some(&object.name)
                        && pod.metadata.namespace == object.namespace
                })
                .map(|pod| pod.object_ref(&())),
            ObjectKind::Namespace => self
                .namespaces
                .iter()
                .find(|namespace| namespace.metadata.name.as_deref() == Some(&object.name))
                .map(|namespace| namespace.object_ref(&())),
            ObjectKind::EgressGateway => self
                .gateways
                .iter()
                .find(|gateway| gateway.metadata.name.as_deref() == Some(&object.name))
                .map(|gateway| gateway.object_ref(&())),
            ObjectKind::EgressGatewayPolicy => self
                .policies
                .iter()
                .find(|policy| policy.metadata.name.as_deref() == Some(&object.name))
                .map(|policy| policy.object_ref(&())),
        };
        known.unwrap_or_else(|| {
            let (api_version, kind) = match object.kind {
                ObjectKind::Pod => ("v1".to_owned(), "Pod"),
                ObjectKind::Namespace => ("v1".to_owned(), "Namespace"),
                ObjectKind::EgressGateway => (format!("{GROUP}/{VERSION}"), "EgressGateway"),
                ObjectKind::EgressGatewayPolicy => {
                    (format!("{GROUP}/{VERSION}"), "EgressGatewayPolicy")
                }
            };
            ObjectReference {
                api_version: Some(api_version),
                kind: Some(kind.to_owned()),
                name: Some(object.name.clone()),
                namespace: object.namespace.clone(),
                ..ObjectReference::default()
            }
        })
    }
}

/// What one reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub tables: usize,
    pub statuses_written: usize,
    pub events_published: usize,
    pub finalizers_changed: usize,
    /// Failed writes and cleanups, as log lines; they are retried on the next reconcile.
    pub errors: Vec<String>,
}

/// A failed cleanup of a deleted gateway, retried with backoff (not on every reconcile: pod
/// churn must not hammer EC2 with a cleanup that lacks a permission).
#[derive(Debug, Clone)]
struct CleanupRetry {
    failures: u32,
    next: std::time::Instant,
    why: String,
}

/// First delay before retrying a failed cleanup; doubled per failure up to five minutes.
pub const CLEANUP_RETRY_BASE: Duration = Duration::from_secs(5);
const CLEANUP_RETRY_MAX: Duration = Duration::from_secs(300);

fn cleanup_failed_event(gateway: &str, why: &str) -> GatewayEvent {
    GatewayEvent {
        gateway: gateway.to_owned(),
        warning: true,
        reason: "CleanupFailed".to_owned(),
        note: format!("{why}; the egw.dev/cleanup finalizer is kept and the cleanup retried"),
    }
}

/// One Event about an EgressGateway that is not a translation diagnostic (AWS problems,
/// failovers, cleanup failures).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GatewayEvent {
    gateway: String,
    warning: bool,
    reason: String,
    note: String,
}

/// The leader's work: translate, push, write status, Events and finalizers.
pub struct Reconciler {
    client: Client,
    recorder: Recorder,
    pusher: GatewayPusher,
    metrics: Metrics,
    /// Diagnostics already published as Events; a diagnostic is published again only after it
    /// went away and came back.
    published: BTreeSet<Diagnostic>,
    /// The last status written per `(kind, name)`, with the resourceVersion the object had in
    /// the store then: until the watch delivers the object with that status, the store is stale
    /// and the same status must not be written again.
    written: BTreeMap<(&'static str, String), (Option<String>, serde_json::Value)>,
    /// The AWS address manager (`--aws`); without it AWS gateways fail closed.
    aws: Option<Box<dyn AwsBackend>>,
    gateway_grpc_port: u16,
    /// EC2 instance ID per node name, with when it was read. A Node's providerID is immutable,
    /// but a node name can come back as a new Node on another instance (EKS names nodes after
    /// their private IP), so entries expire after [`NODE_CACHE_TTL`] and are dropped once no
    /// gateway pod runs on the node.
    node_instances: BTreeMap<String, (String, std::time::Instant)>,
    /// Warning gateway Events already published; like diagnostics, published again only after
    /// they went away and came back.
    published_gateway_events: BTreeSet<GatewayEvent>,
    /// Deleted gateways whose cleanup failed, by name.
    cleanup_retries: BTreeMap<String, CleanupRetry>,
    cleanup_retry_base: Duration,
}

fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut cut = limit - '…'.len_utf8();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

impl Reconciler {
    /// `identity` names this replica in Events (`reportingInstance`).
    pub fn new(
        client: Client,
        identity: String,
        push: PushOptions,
        metrics: Metrics,
    ) -> Reconciler {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance: Some(identity),
            },
        );
        Reconciler {
            client,
            recorder,
            pusher: GatewayPusher::new(push, metrics.clone()),
            metrics,
            published: BTreeSet::new(),
            written: BTreeMap::new(),
            aws: None,
            gateway_grpc_port: DEFAULT_GATEWAY_GRPC_PORT,
            node_instances: BTreeMap::new(),
            published_gateway_events: BTreeSet::new(),
            cleanup_retries: BTreeMap::new(),
            cleanup_retry_base: CLEANUP_RETRY_BASE,
        }
    }

    /// Manages AWS gateways with `aws` (the controller's `--aws`).
    pub fn with_aws(mut self, aws: Box<dyn AwsBackend>) -> Reconciler {
        self.aws = Some(aws);
        self
    }

    /// First delay before a failed cleanup is retried (default [`CLEANUP_RETRY_BASE`]).
    pub fn with_cleanup_retry_base(mut self, base: Duration) -> Reconciler {
        self.cleanup_retry_base = base;
        self
    }

    /// Port AWS gateway instances are pushed to (`<pod IP>:<port>`).
    pub fn with_gateway_grpc_port(mut self, port: u16) -> Reconciler {
        self.gateway_grpc_port = port;
        self
    }

    /// When an AWS gateway is next due for a pass (a retry after a failure, a drain's end, a
    /// resync) or a failed cleanup for its retry.
    pub fn aws_due(&self) -> Option<std::time::Instant> {
        let cleanup = self.cleanup_retries.values().map(|retry| retry.next).min();
        let pass = self.aws.as_ref().and_then(|aws| aws.next_due());
        match (cleanup, pass) {
            (Some(cleanup), Some(pass)) => Some(cleanup.min(pass)),
            (cleanup, pass) => cleanup.or(pass),
        }
    }

    /// Stops pushing and forgets published Events (after losing leadership).
    pub fn step_down(&mut self) {
        self.pusher.clear();
        self.published.clear();
        self.written.clear();
        self.published_gateway_events.clear();
        self.cleanup_retries.clear();
        if let Some(aws) = self.aws.as_mut() {
            aws.clear();
        }
    }

    /// The pushers, for their states.
    pub fn pusher(&self) -> &GatewayPusher {
        &self.pusher
    }

    /// One full reconcile of `state` at time `now`.
    pub async fn reconcile(&mut self, state: &ClusterState, now: Timestamp) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let mut gateway_events = Vec::new();
        self.finalizers(state, &mut gateway_events, &mut report)
            .await;
        let aws = self.aws_gateways(state, now, &mut report).await;
        for (gateway, outcome) in &aws {
            for failover in &outcome.new_failovers {
                gateway_events.push(GatewayEvent {
                    gateway: gateway.clone(),
                    warning: false,
                    reason: "Failover".to_owned(),
                    note: format!(
                        "moved {} ({}) from {} to {}: {}",
                        failover.public_ip,
                        failover.allocation_id,
                        failover.from_instance,
                        failover.to_instance,
                        failover.reason
                    ),
                });
            }
            if let Some(problem) = &outcome.problem {
                gateway_events.push(GatewayEvent {
                    gateway: gateway.clone(),
                    warning: true,
                    reason: problem.reason.to_string(),
                    note: problem.message.clone(),
                });
            }
        }
        let translation = translate(&state.snapshot_with(&aws));
        self.metrics.reconciled();
        report.tables = translation.tables.len();
        for problem in self.pusher.update(&translation.tables) {
            report.errors.push(format!(
                "instance {}: {}",
                problem.instance,
                crate::error_chain(&problem.error)
            ));
        }
        let now = Time(now);
        self.policy_statuses(state, &translation, &now, &mut report)
            .await;
        self.gateway_statuses(state, &translation, &aws, &now, &mut report)
            .await;
        self.events(state, &translation, &mut report).await;
        self.gateway_events(state, gateway_events, &mut report)
            .await;
        for error in &report.errors {
            tracing::warn!("{error}");
        }
        report
    }

    fn kube_error(&self, report: &mut ReconcileReport, what: String, error: &kube::Error) {
        self.metrics.error(ErrorReason::KubeApi);
        report
            .errors
            .push(format!("{what}: {}", crate::error_chain(error)));
    }

    async fn finalizers(
        &mut self,
        state: &ClusterState,
        events: &mut Vec<GatewayEvent>,
        report: &mut ReconcileReport,
    ) {
        let api: Api<EgressGateway> = Api::all(self.client.clone());
        let deleting: BTreeSet<String> = state
            .gateways
            .iter()
            .filter(|gateway| is_deleting(gateway.as_ref()))
            .map(|gateway| gateway.name_any())
            .collect();
        self.cleanup_retries
            .retain(|name, _| deleting.contains(name));
        for gateway in &state.gateways {
            let name = gateway.name_any();
            let finalizers = gateway.finalizers();
            let has = finalizers
                .iter()
                .any(|finalizer| finalizer == GATEWAY_FINALIZER);
            let wanted: Vec<String> = if is_deleting(gateway.as_ref()) {
                if !has {
                    continue;
                }
                let now = std::time::Instant::now();
                if let Some(retry) = self
                    .cleanup_retries
                    .get(&name)
                    .filter(|retry| now < retry.next)
                {
                    // Backing off: the finalizer stays, the Warning stays published.
                    events.push(cleanup_failed_event(&name, &retry.why));
                    continue;
                }
                if let Err(why) = self.cleanup_gateway(gateway).await {
                    report
                        .errors
                        .push(format!("cleanup of EgressGateway {name}: {why}"));
                    events.push(cleanup_failed_event(&name, &why));
                    let failures = self
                        .cleanup_retries
                        .get(&name)
                        .map_or(0, |retry| retry.failures)
                        + 1;
                    let delay = self
                        .cleanup_retry_base
                        .saturating_mul(1 << (failures - 1).min(10))
                        .min(CLEANUP_RETRY_MAX);
                    self.cleanup_retries.insert(
                        name,
                        CleanupRetry {
                            failures,
                            next: now + delay,
                            why,
                        },
                    );
                    continue;
                }
                self.cleanup_retries.remove(&name);
                finalizers
                    .iter()
                    .filter(|finalizer| *finalizer != GATEWAY_FINALIZER)
                    .cloned()
                    .collect()
            } else if has {
                continue;
            } else {
                finalizers
                    .iter()
                    .cloned()
                    .chain([GATEWAY_FINALIZER.to_owned()])
                    .collect()
            };
            // The resourceVersion makes the merge patch conditional: a concurrent change to the
            // list is a 409, retried on the next reconcile with the fresh object.
            let patch = serde_json::json!({
                "metadata": {
                    "resourceVersion": gateway.resource_version(),
                    "finalizers": wanted,
                }
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => report.finalizers_changed += 1,
                Err(error) => {
                    self.kube_error(report, format!("finalizer of EgressGateway {name}"), &error)
                }
            }
        }
    }

    /// Releases what the controller holds for a deleted gateway. Static gateways hold nothing
    /// outside the cluster; AWS gateways give back their routes, private addresses, ENIs and
    /// the Elastic IPs egw allocated. An error keeps the finalizer (the cleanup is retried).
    async fn cleanup_gateway(&mut self, gateway: &EgressGateway) -> Result<(), String> {
        let name = gateway.name_any();
        let Some(pool) = &gateway.spec.aws else {
            tracing::info!(gateway = %name, "gateway deleted; releasing its finalizer");
            return Ok(());
        };
        let Some(aws) = self.aws.as_mut() else {
            return Err(
                "an AWS gateway is cleaned up only by an egw-controller started with --aws (if                  egw never managed it, remove the finalizer by hand)"
                    .to_owned(),
            );
        };
        let had_routes = pool.routes.is_some()
            || gateway
                .status
                .as_ref()
                .is_some_and(|status| !status.routes.is_empty());
        match aws.cleanup(&name, had_routes).await {
            Ok(released) => {
                tracing::info!(
                    gateway = %name,
                    routes = released.released_routes,
                    enis = ?released.deleted_network_interfaces,
                    private_ips = ?released.unassigned_private_ips,
                    elastic_ips = ?released.released_allocations,
                    "AWS gateway deleted and cleaned up; releasing its finalizer"
                );
                Ok(())
            }
            Err(error) => {
                self.metrics.error(ErrorReason::Aws);
                Err(crate::error_chain(&error))
            }
        }
    }

    /// The EC2 instance ID of a node, from its providerID (cached: it never changes).
    async fn node_instance_id(
        &mut self,
        node: &str,
        report: &mut ReconcileReport,
    ) -> Result<String, String> {
        let now = std::time::Instant::now();
        if let Some((instance_id, _)) = self
            .node_instances
            .get(node)
            .filter(|(_, read)| now.duration_since(*read) < NODE_CACHE_TTL)
        {
            return Ok(instance_id.clone());
        }
        let api: Api<Node> = Api::all(self.client.clone());
        match api.get_opt(node).await {
            Ok(Some(found)) => {
                let provider_id = found
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.provider_id.as_deref())
                    .unwrap_or_default();
                let parsed = if provider_id.is_empty() {
                    Err(crate::aws::node::ProviderIdError::Missing)
                } else {
                    instance_id_from_provider_id(provider_id)
                };
                match parsed {
                    Ok(instance_id) => {
                        self.node_instances
                            .insert(node.to_owned(), (instance_id.clone(), now));
                        Ok(instance_id)
                    }
                    Err(error) => Err(format!("node {node}: {error}")),
                }
            }
            Ok(None) => Err(format!("node {node} not found")),
            Err(error) => {
                self.kube_error(report, format!("Node {node}"), &error);
                Err(format!("node {node}: {}", crate::error_chain(&error)))
            }
        }
    }

    /// The gateway pods of an AWS gateway: pods in `spec.namespace` matching `spec.selector`.
    async fn gateway_pods(
        &mut self,
        state: &ClusterState,
        gateway: &EgressGateway,
        report: &mut ReconcileReport,
    ) -> Result<Vec<GatewayPod>, String> {
        let selector = crate::selector::from_label_selector(&gateway.spec.selector)
            .map_err(|error| format!("spec.selector: {error}"))?;
        let mut pods = Vec::new();
        for pod in &state.pods {
            if pod.metadata.namespace.as_deref() != Some(gateway.spec.namespace.as_str()) {
                continue;
            }
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            if !crate::selector::selects(&selector, &labels) {
                continue;
            }
            let info = PodInfo::from_pod(pod);
            let status = pod.status.as_ref();
            let running = status.and_then(|status| status.phase.as_deref()) == Some("Running");
            let ready_condition = status
                .and_then(|status| status.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True");
            let node = pod.spec.as_ref().and_then(|spec| spec.node_name.clone());
            let instance_id = match &node {
                Some(node) => self.node_instance_id(node, report).await,
                None => Err("pod is not scheduled to a node".to_owned()),
            };
            pods.push(GatewayPod {
                name: info.name.clone(),
                node,
                endpoint: info.ip.map(|ip| format!("{ip}:{}", self.gateway_grpc_port)),
                ready: running && ready_condition,
                terminating: info.terminating,
                instance_id,
            });
        }
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pods)
    }

    /// Runs the AWS manager for every AWS gateway (or, without `--aws`, fails them closed).
    async fn aws_gateways(
        &mut self,
        state: &ClusterState,
        now: Timestamp,
        report: &mut ReconcileReport,
    ) -> AwsOutcomes {
        let mut outcomes = AwsOutcomes::new();
        let gateways: Vec<&Arc<EgressGateway>> = state
            .gateways
            .iter()
            .filter(|gateway| gateway.spec.static_pool.is_none() && !is_deleting(gateway.as_ref()))
            .collect();
        // Gateways passed to the manager this time; it forgets the others, so that no stale
        // memory (a deleted gateway, one whose selector broke) keeps asking for passes.
        let mut managed = BTreeSet::new();
        for gateway in gateways {
            let name = gateway.name_any();
            let Some(pool) = gateway.spec.aws.clone() else {
                continue;
            };
            if self.aws.is_none() {
                outcomes.insert(
                    name,
                    AwsGatewayOutcome {
                        problem: Some(AwsProblem {
                            reason: AwsReason::AwsNotEnabled,
                            message: "the gateway uses AWS Elastic IPs: start egw-controller                                       with --aws (and --cluster-name) to manage them; until                                       then its pods are denied"
                                .to_owned(),
                            retryable: false,
                        }),
                        ..AwsGatewayOutcome::default()
                    },
                );
                continue;
            }
            let pods = match self.gateway_pods(state, gateway, report).await {
                Ok(pods) => pods,
                Err(message) => {
                    outcomes.insert(
                        name,
                        AwsGatewayOutcome {
                            problem: Some(AwsProblem {
                                reason: AwsReason::InvalidSpec,
                                message,
                                retryable: false,
                            }),
                            ..AwsGatewayOutcome::default()
                        },
                    );
                    continue;
                }
            };
            let stored = gateway.status.clone().unwrap_or_default();
            let input = AwsGatewayInput {
                name: name.clone(),
                generation: gateway.metadata.generation,
                pool,
                pods,
                drain: Duration::from_secs(u64::from(gateway.spec.health.drain_seconds)),
                stored_routes: stored.routes,
                stored_failovers: stored.failovers,
            };
            let Some(aws) = self.aws.as_mut() else {
                continue;
            };
            managed.insert(name.clone());
            let outcome = aws
                .reconcile_gateway(&input, std::time::Instant::now(), now)
                .await;
            if let Some(problem) = outcome.problem.as_ref().filter(|_| outcome.fresh) {
                if problem.reason == AwsReason::AwsError {
                    self.metrics.error(ErrorReason::Aws);
                    report
                        .errors
                        .push(format!("AWS for EgressGateway {name}: {}", problem.message));
                }
            }
            outcomes.insert(name, outcome);
        }
        if let Some(aws) = self.aws.as_mut() {
            aws.retain(&managed);
        }
        let gateway_nodes: BTreeSet<&str> = outcomes
            .values()
            .flat_map(|outcome| &outcome.instances)
            .filter_map(|instance| instance.node.as_deref())
            .collect();
        self.node_instances
            .retain(|node, _| gateway_nodes.contains(node.as_str()));
        outcomes
    }

    /// Publishes gateway Events: every Normal one (failovers happen once), Warnings once until
    /// they go away.
    async fn gateway_events(
        &mut self,
        state: &ClusterState,
        events: Vec<GatewayEvent>,
        report: &mut ReconcileReport,
    ) {
        let mut published = BTreeSet::new();
        for event in events {
            if event.warning && self.published_gateway_events.contains(&event) {
                published.insert(event);
                continue;
            }
            let Some(gateway) = state
                .gateways
                .iter()
                .find(|gateway| gateway.name_any() == event.gateway)
            else {
                continue;
            };
            let reference = gateway.object_ref(&());
            let kube_event = Event {
                type_: if event.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: event.reason.clone(),
                note: Some(truncate(&event.note, MAX_NOTE)),
                action: if event.warning {
                    "ManageAddresses"
                } else {
                    "Failover"
                }
                .to_owned(),
                secondary: None,
            };
            match self.recorder.publish(&kube_event, &reference).await {
                Ok(()) => {
                    report.events_published += 1;
                    if event.warning {
                        published.insert(event);
                    }
                }
                Err(error) => self.kube_error(
                    report,
                    format!("Event {} for EgressGateway {}", event.reason, event.gateway),
                    &error,
                ),
            }
        }
        self.published_gateway_events = published;
    }

    /// The status written for this very version of `object`, which the store does not show yet;
    /// it is the previous status (condition transition times) until the watch catches up.
    fn pending_status<K: Resource, S: DeserializeOwned>(
        &self,
        object: &K,
        kind: &'static str,
    ) -> Option<S> {
        let key = (kind, object.meta().name.clone().unwrap_or_default());
        let (version, status) = self.written.get(&key)?;
        if *version != object.meta().resource_version {
            return None;
        }
        serde_json::from_value(status.clone()).ok()
    }

    /// Writes `status` with server-side apply unless it was just written for this version of
    /// the object.
    async fn apply_status<K>(
        &mut self,
        api: &Api<K>,
        object: &K,
        kind: &'static str,
        status: serde_json::Value,
        report: &mut ReconcileReport,
    ) where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        let key = (kind, name.clone());
        let version = object.meta().resource_version.clone();
        if self
            .written
            .get(&key)
            .is_some_and(|(written_version, written)| {
                *written_version == version && *written == status
            })
        {
            return;
        }
        let body = serde_json::json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": kind,
            "status": status,
        });
        let result = api
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await;
        match result {
            Ok(_) => {
                report.statuses_written += 1;
                self.written.insert(key, (version, status));
            }
            Err(error) => self.kube_error(report, format!("status of {kind} {name}"), &error),
        }
    }

    async fn policy_statuses(
        &mut self,
        state: &ClusterState,
        translation: &Translation,
        now: &Time,
        report: &mut ReconcileReport,
    ) {
        let api: Api<EgressGatewayPolicy> = Api::all(self.client.clone());
        for policy in &state.policies {
            let name = policy.name_any();
            let Some(policy_report) = translation.policies.get(&name) else {
                continue;
            };
            let pending = self.pending_status(policy.as_ref(), "EgressGatewayPolicy");
            let previous = pending.as_ref().or(policy.status.as_ref());
            let status = policy_status(policy_report, policy.metadata.generation, previous, now);
            if policy.status.as_ref() == Some(&status) {
                continue;
            }
            let value = serde_json::to_value(&status).unwrap_or_default();
            self.apply_status(&api, policy.as_ref(), "EgressGatewayPolicy", value, report)
                .await;
        }
    }

    async fn gateway_statuses(
        &mut self,
        state: &ClusterState,
        translation: &Translation,
        aws: &AwsOutcomes,
        now: &Time,
        report: &mut ReconcileReport,
    ) {
        let api: Api<EgressGateway> = Api::all(self.client.clone());
        for gateway in &state.gateways {
            if is_deleting(gateway.as_ref()) {
                continue;
            }
            let name = gateway.name_any();
            let Some(gateway_report) = translation.gateways.get(&name) else {
                continue;
            };
            let outcome = aws.get(&name);
            let (mode, instances) = observed_instances(gateway, gateway_report, outcome);
            let pending = self.pending_status(gateway.as_ref(), "EgressGateway");
            let previous = pending.as_ref().or(gateway.status.as_ref());
            let mut status = gateway_status(
                gateway_report,
                mode,
                instances,
                gateway.metadata.generation,
                previous,
                now,
            );
            if let Some(outcome) = outcome {
                status.routes = outcome.routes.clone();
                status.failovers = outcome.failovers.clone();
                status = with_aws_problem(
                    status,
                    outcome
                        .problem
                        .as_ref()
                        .map(|problem| (problem.reason.to_string(), problem.message.as_str()))
                        .as_ref()
                        .map(|(reason, message)| (reason.as_str(), *message)),
                    &outcome.warnings,
                    previous,
                    now,
                );
            }
            if gateway.status.as_ref() == Some(&status) {
                continue;
            }
            let value = serde_json::to_value(&status).unwrap_or_default();
            self.apply_status(&api, gateway.as_ref(), "EgressGateway", value, report)
                .await;
        }
    }

    async fn events(
        &mut self,
        state: &ClusterState,
        translation: &Translation,
        report: &mut ReconcileReport,
    ) {
        let current: BTreeSet<Diagnostic> = translation.diagnostics.iter().cloned().collect();
        let mut published = BTreeSet::new();
        for diagnostic in &current {
            if self.published.contains(diagnostic) {
                published.insert(diagnostic.clone());
                continue;
            }
            let event = Event {
                type_: EventType::Warning,
                reason: diagnostic.reason.to_string(),
                note: Some(truncate(&diagnostic.message, MAX_NOTE)),
                action: "Translate".to_owned(),
                secondary: None,
            };
            let reference = state.reference(diagnostic);
            match self.recorder.publish(&event, &reference).await {
                Ok(()) => {
                    report.events_published += 1;
                    published.insert(diagnostic.clone());
                }
                Err(error) => self.kube_error(
                    report,
                    format!(
                        "Event {} for {:?} {}",
                        diagnostic.reason, diagnostic.object.kind, diagnostic.object.name
                    ),
                    &error,
                ),
            }
        }
        self.published = published;
    }
}

/// `status.mode` and `status.instances` of a gateway: static instances as the translation saw
/// them; other modes keep the instances their address manager reported.
fn observed_instances(
    gateway: &EgressGateway,
    report: &GatewayReport,
    aws: Option<&AwsGatewayOutcome>,
) -> (&'static str, Vec<InstanceStatus>) {
    match &gateway.spec.static_pool {
        Some(pool) => {
            let seen: BTreeMap<&str, _> = report
                .instances
                .iter()
                .map(|instance| (instance.name.as_str(), instance))
                .collect();
            let instances = pool
                .instances
                .iter()
                .map(|instance| {
                    let seen = seen.get(instance.name.as_str());
                    InstanceStatus {
                        name: instance.name.clone(),
                        node: None,
                        endpoint: Some(instance.endpoint.clone()),
                        ready: seen.is_some_and(|seen| seen.ready),
                        instance_id: None,
                        network_interface_id: None,
                        addresses: instance
                            .addresses
                            .iter()
                            .map(|&address| AddressStatus {
                                snat_ip: address,
                                public_ip: None,
                                allocation_id: None,
                                ready: seen
                                    .is_some_and(|seen| seen.usable_addresses.contains(&address)),
                            })
                            .collect(),
                    }
                })
                .collect();
            ("Static", instances)
        }
        None => (
            "Aws",
            aws.map(|outcome| outcome.instances.clone())
                .unwrap_or_default(),
        ),
    }
}

/// Aborts the watcher tasks when cluster mode returns, however it returns.
struct Watchers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Watchers {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Follows one kind into a store; every change wakes the reconcile loop.
fn follow<K>(api: Api<K>, metrics: Metrics, wake: Arc<Notify>, watchers: &mut Watchers) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        // Managed fields are often the bulk of an object and never read here.
        .modify(|object: &mut K| object.meta_mut().managed_fields = None)
        .reflect(writer);
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => wake.notify_one(),
                Err(error) => {
                    metrics.error(ErrorReason::KubeApi);
                    tracing::warn!(
                        kind = %K::kind(&()),
                        error = %crate::error_chain(&error),
                        "watch failed; retrying"
                    );
                }
            }
        }
    });
    watchers.0.push(task);
    reader
}

/// Runs cluster mode until `shutdown` completes, without an AWS address manager.
pub async fn run(
    client: Client,
    options: ClusterOptions,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ClusterError> {
    run_with_aws(client, options, metrics, None, shutdown).await
}

/// Shortest time between a reconcile and one woken for an AWS gateway's next pass: a due time
/// that is already past (which a pass would have moved) must not turn the loop into a busy one.
const MIN_AWS_WAIT: Duration = Duration::from_millis(500);

/// Completes at `due`, but not before [`MIN_AWS_WAIT`] after `last_reconcile`; or never.
async fn sleep_until(due: Option<std::time::Instant>, last_reconcile: tokio::time::Instant) {
    match due {
        Some(due) => {
            let earliest = last_reconcile + MIN_AWS_WAIT;
            tokio::time::sleep_until(tokio::time::Instant::from_std(due).max(earliest)).await;
        }
        None => std::future::pending().await,
    }
}

/// Runs cluster mode until `shutdown` completes; `aws` manages AWS gateways (`--aws`).
///
/// Serves `/metrics` and `/healthz`, follows the four kinds, waits until their caches have
/// listed once, then elects a leader and reconciles while leading.
pub async fn run_with_aws(
    client: Client,
    options: ClusterOptions,
    metrics: Metrics,
    aws: Option<Box<dyn AwsBackend>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ClusterError> {
    // The loop beats at least every renewal period; four missed periods mean it is stuck.
    let health = http::Health::new(
        options.lease.renew_interval * 4 + options.resync_interval.min(Duration::from_secs(60)),
    );
    health.beat();
    let http_stop = serve_http(options.http_address, &metrics, &health).await?;

    let wake = Arc::new(Notify::new());
    let mut watchers = Watchers(Vec::new());
    let caches = Caches::follow(&client, &metrics, &wake, &mut watchers);

    let elector = LeaderElector::new(client.clone(), options.lease.clone());
    let mut reconciler = Reconciler::new(
        client,
        options.lease.identity.clone(),
        options.push.clone(),
        metrics.clone(),
    )
    .with_gateway_grpc_port(options.gateway_grpc_port);
    if let Some(aws) = aws {
        reconciler = reconciler.with_aws(aws);
    }
    tokio::pin!(shutdown);
    if caches
        .wait_until_synced(&health, options.lease.renew_interval, &mut shutdown)
        .await
    {
        tracing::info!("caches synced");
        let leader = Leader {
            elector,
            reconciler,
            leading: false,
        };
        leader
            .run(&caches, &options, &metrics, &health, &wake, &mut shutdown)
            .await;
    }
    let _ = http_stop.send(());
    drop(watchers);
    Ok(())
}

/// Serves `/metrics` and `/healthz` on `address` (if any) until the returned sender is used
/// or dropped.
async fn serve_http(
    address: Option<SocketAddr>,
    metrics: &Metrics,
    health: &http::Health,
) -> Result<tokio::sync::oneshot::Sender<()>, ClusterError> {
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(address) = address {
        let listener_metrics = metrics.clone();
        let listener_health = health.clone();
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| ClusterError::Http { address, source })?;
        tracing::info!(%address, "serving /metrics and /healthz");
        tokio::spawn(async move {
            let served = axum::serve(listener, http::router(listener_metrics, listener_health))
                .with_graceful_shutdown(async {
                    let _ = http_stopped.await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "/metrics server stopped");
            }
        });
    }
    Ok(http_stop)
}

/// The local stores of the four kinds cluster mode follows.
struct Caches {
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    gateways: Store<EgressGateway>,
    policies: Store<EgressGatewayPolicy>,
}

impl Caches {
    /// Follows every kind; every change notifies `wake`.
    fn follow(
        client: &Client,
        metrics: &Metrics,
        wake: &Arc<Notify>,
        watchers: &mut Watchers,
    ) -> Caches {
        Caches {
            pods: follow(
                Api::<Pod>::all(client.clone()),
                metrics.clone(),
                Arc::clone(wake),
                watchers,
            ),
            namespaces: follow(
                Api::<Namespace>::all(client.clone()),
                metrics.clone(),
                Arc::clone(wake),
                watchers,
            ),
            gateways: follow(
                Api::<EgressGateway>::all(client.clone()),
                metrics.clone(),
                Arc::clone(wake),
                watchers,
            ),
            policies: follow(
                Api::<EgressGatewayPolicy>::all(client.clone()),
                metrics.clone(),
                Arc::clone(wake),
                watchers,
            ),
        }
    }

    /// Waits until every store has listed once (an empty store must not wipe tables), beating
    /// `health` meanwhile; `false` when `shutdown` came first.
    async fn wait_until_synced(
        &self,
        health: &http::Health,
        beat_interval: Duration,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> bool {
        let synced = async {
            let _ = self.pods.wait_until_ready().await;
            let _ = self.namespaces.wait_until_ready().await;
            let _ = self.gateways.wait_until_ready().await;
            let _ = self.policies.wait_until_ready().await;
        };
        tokio::pin!(synced);
        let mut waiting = tokio::time::interval(beat_interval);
        loop {
            // Waiting for the caches (e.g. CRDs not installed yet) is not a stalled loop.
            health.beat();
            tokio::select! {
                () = &mut *shutdown => return false,
                () = &mut synced => return true,
                _ = waiting.tick() => {}
            }
        }
    }

    /// What the stores hold now, for one reconcile.
    fn state(&self) -> ClusterState {
        ClusterState {
            pods: self.pods.state(),
            namespaces: self.namespaces.state(),
            gateways: self.gateways.state(),
            policies: self.policies.state(),
        }
    }
}

/// Leader election and the reconciles of the leader.
struct Leader {
    elector: LeaderElector,
    reconciler: Reconciler,
    /// This replica leads (as of the last election tick).
    leading: bool,
}

impl Leader {
    /// Elects and reconciles (on changes, resyncs and AWS retries) until `shutdown`; then
    /// steps down and releases the Lease.
    async fn run(
        mut self,
        caches: &Caches,
        options: &ClusterOptions,
        metrics: &Metrics,
        health: &http::Health,
        wake: &Notify,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) {
        let mut election = tokio::time::interval(options.lease.renew_interval);
        election.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resync = tokio::time::interval(options.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_reconcile = tokio::time::Instant::now();
        loop {
            health.beat();
            let due = tokio::select! {
                () = &mut *shutdown => break,
                _ = election.tick() => self.elect(metrics).await,
                () = wake.notified() => {
                    tokio::time::sleep(options.debounce).await;
                    true
                }
                _ = resync.tick() => true,
                // An AWS gateway's retry (after a failed pass) or resync.
                () = sleep_until(
                    self.reconciler.aws_due().filter(|_| self.leading && self.elector.is_leader()),
                    last_reconcile,
                ) => true,
            };
            if due && self.leading && self.elector.is_leader() {
                self.reconciler
                    .reconcile(&caches.state(), Timestamp::now())
                    .await;
                last_reconcile = tokio::time::Instant::now();
            }
        }
        self.reconciler.step_down();
        if self.leading {
            if let Err(error) = self.elector.release(Timestamp::now()).await {
                tracing::warn!(error = %crate::error_chain(&error), "could not release the Lease");
            }
        }
    }

    /// Acquires or renews the Lease; `true` when this replica just became the leader (a
    /// reconcile is due). Losing the lead stops the pushers.
    async fn elect(&mut self, metrics: &Metrics) -> bool {
        if let Err(error) = self.elector.try_acquire_or_renew(Timestamp::now()).await {
            metrics.error(ErrorReason::KubeApi);
            tracing::warn!(error = %crate::error_chain(&error), "leader election");
        }
        let now_leading = self.elector.is_leader();
        if now_leading == self.leading {
            return false;
        }
        tracing::info!(leading = now_leading, "leadership changed");
        metrics.set_leader(now_leading);
        if !now_leading {
            self.reconciler.step_down();
        }
        self.leading = now_leading;
        self.leading
    }
}
