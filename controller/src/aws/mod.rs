//! Address management of AWS gateways (`spec.aws`): which gateway pod carries which Elastic IP,
//! on which private IP, and where the VPC routes point.
//!
//! One pass per gateway ([`AwsManager::reconcile_gateway`]):
//!
//! 1. `ensure_addresses`: the gateway's Elastic IPs (adopted or allocated).
//! 2. `describe_instance` for the EC2 instance of every gateway pod (from its node's
//!    `spec.providerID`): an instance carries addresses only while its pod is Ready, not
//!    terminating, and EC2 reports it `running`.
//! 3. [`plan::plan`]: sticky, balanced placement; failovers for addresses taken off instances
//!    that can no longer carry them; the route target.
//! 4. `ensure_private_addresses` on every instance that carries addresses, with its count. An
//!    instance type that cannot hold them carries nothing, and its addresses are planned again
//!    onto the others (condition reason `EniLimitExceeded`).
//! 5. Each address is paired with a private IP of its instance (existing pairings are kept) and
//!    associated there. An adopted address associated with one of this gateway's own instances
//!    is disassociated first; one associated with anything else is never taken.
//! 6. `spec.aws.routes`: `ensure_routes` to the target's ENI and `release_routes` for the routes
//!    no longer listed (all of them when the field was removed).
//! 7. `prune_private_addresses` on instances that no longer run a gateway pod.
//!
//! EC2 is not hammered: a gateway's pass runs again only when its inputs (spec, pods) changed,
//! after [`AwsOptions::resync_interval`], or after a failure (with exponential backoff);
//! otherwise the last outcome is reused.

pub mod node;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use egw_aws::{
    AddressProvider, AddressSource, AssociationTarget, GatewayAddressIntent, GatewayInterface,
    GatewayRef, InstanceState, InterfaceMode, InterfaceProvider, ManagedAddress,
    PrivateAddressIntent, ProviderError, RouteIntent, RouteProvider,
};
use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{
    AddressStatus, AwsPool, ElasticIpSource, EniMode, FailoverStatus, InstanceStatus, RouteStatus,
};
use crate::metrics::Metrics;

use self::plan::{PlanAddress, PlanInput, PlanInstance, Unhealthy};

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

/// What the cluster reconciler needs of the manager, object-safe so that the reconciler does
/// not depend on the provider type.
pub trait AwsBackend: Send + Sync {
    /// The cluster name the manager tags with.
    fn cluster(&self) -> &str;
    /// One gateway: a fresh pass when due, else the last outcome.
    fn reconcile_gateway<'a>(
        &'a mut self,
        input: &'a AwsGatewayInput,
        now: Instant,
        wall: Timestamp,
    ) -> BoxFuture<'a, AwsGatewayOutcome>;
    /// Gives back everything held for a deleted gateway.
    fn cleanup<'a>(
        &'a mut self,
        gateway: &'a str,
        had_routes: bool,
    ) -> BoxFuture<'a, Result<CleanupReport, ProviderError>>;
    /// When the earliest gateway is due for a pass (a retry or a resync).
    fn next_due(&self) -> Option<Instant>;
    /// Forgets every gateway not in `gateways` (deleted, or no longer AWS).
    fn retain(&mut self, gateways: &BTreeSet<String>);
    /// Forgets everything (after losing leadership).
    fn clear(&mut self);
}

/// What the last pass of a gateway left.
#[derive(Debug, Clone)]
struct GatewayMemory {
    /// `(generation, pool, pods, drain)` of the last pass.
    inputs: (Option<i64>, AwsPool, Vec<GatewayPod>, Duration),
    last_pass: Instant,
    /// Consecutive failed passes.
    failures: u32,
    outcome: AwsGatewayOutcome,
    history: VecDeque<FailoverStatus>,
    route_target: Option<String>,
    /// ENI of each instance (by name) as last seen: an address on one of them is on this
    /// gateway even after the pod is gone.
    interfaces: BTreeMap<String, String>,
    /// Since when each unhealthy instance (by name) has been unhealthy, for its drain.
    unhealthy_since: BTreeMap<String, Instant>,
    /// When the earliest drain ends (a pass is due then).
    drain_until: Option<Instant>,
}

/// Manages the Elastic IPs, private addresses and routes of every AWS gateway.
pub struct AwsManager<P> {
    provider: P,
    options: AwsOptions,
    metrics: Metrics,
    gateways: BTreeMap<String, GatewayMemory>,
}

/// A failed step of a pass.
struct PassError {
    error: ProviderError,
}

impl From<ProviderError> for PassError {
    fn from(error: ProviderError) -> Self {
        PassError { error }
    }
}

fn outcome_label(result: &Result<impl Sized, &ProviderError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ProviderError::Retryable { .. }) => "retryable",
        Err(ProviderError::Permanent { .. }) => "permanent",
        Err(ProviderError::NotFound { .. }) => "not_found",
        Err(ProviderError::LimitExceeded { .. }) => "limit_exceeded",
        Err(ProviderError::InstanceLimitExceeded { .. }) => "instance_limit_exceeded",
        Err(ProviderError::InvalidIntent(_)) => "invalid_intent",
        Err(ProviderError::UnexpectedResponse { .. }) => "unexpected_response",
    }
}

fn address_source(source: &ElasticIpSource) -> Result<AddressSource, String> {
    match (&source.allocation_ids, &source.tags, source.allocate) {
        (Some(ids), None, None) => Ok(AddressSource::AllocationIds(ids.clone())),
        (None, Some(tags), None) => Ok(AddressSource::Tags(tags.clone())),
        (None, None, Some(count)) => Ok(AddressSource::Allocate { count }),
        _ => Err("spec.aws.elasticIps: set exactly one of allocationIds, tags and allocate".into()),
    }
}

fn interface_mode(pool: &AwsPool) -> InterfaceMode {
    match pool.eni_mode {
        EniMode::SecondaryIp => InterfaceMode::SecondaryIp,
        EniMode::EniPerGateway => InterfaceMode::EniPerGateway {
            subnet_id: pool.subnet_id.clone(),
            security_group_ids: pool.security_group_ids.clone(),
        },
    }
}

fn ec2_state_name(state: &InstanceState) -> String {
    match state {
        InstanceState::Pending => "pending".to_owned(),
        InstanceState::Running => "running".to_owned(),
        InstanceState::ShuttingDown => "shutting-down".to_owned(),
        InstanceState::Terminated => "terminated".to_owned(),
        InstanceState::Stopping => "stopping".to_owned(),
        InstanceState::Stopped => "stopped".to_owned(),
        InstanceState::Other(other) => other.clone(),
    }
}

/// Why a pod cannot carry addresses, before asking EC2.
fn pod_unhealthy(pod: &GatewayPod) -> Option<Unhealthy> {
    if pod.terminating {
        Some(Unhealthy::PodTerminating)
    } else if !pod.ready || pod.endpoint.is_none() {
        Some(Unhealthy::PodNotReady)
    } else {
        pod.instance_id
            .as_ref()
            .err()
            .map(|why| Unhealthy::Unidentified(why.clone()))
    }
}

fn problem_of(error: &ProviderError) -> AwsProblem {
    AwsProblem {
        reason: AwsReason::AwsError,
        message: crate::error_chain(error),
        retryable: error.is_retryable(),
    }
}

impl<P> AwsManager<P>
where
    P: AddressProvider + InterfaceProvider + RouteProvider,
{
    pub fn new(provider: P, options: AwsOptions, metrics: Metrics) -> AwsManager<P> {
        AwsManager {
            provider,
            options,
            metrics,
            gateways: BTreeMap::new(),
        }
    }

    /// The provider, for tests that look at what it holds.
    pub fn provider(&self) -> &P {
        &self.provider
    }

    fn gateway_ref(&self, gateway: &str) -> GatewayRef {
        GatewayRef {
            cluster: self.options.cluster.clone(),
            gateway: gateway.to_owned(),
        }
    }

    fn record<T>(
        &self,
        operation: &'static str,
        result: Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        self.metrics
            .aws_call(operation, outcome_label(&result.as_ref()));
        result
    }

    fn due_at(&self, memory: &GatewayMemory) -> Instant {
        let due = self.retry_or_resync_at(memory);
        memory.drain_until.map_or(due, |drained| drained.min(due))
    }

    fn retry_or_resync_at(&self, memory: &GatewayMemory) -> Instant {
        if memory.failures == 0 {
            return memory.last_pass + self.options.resync_interval;
        }
        let exponent = (memory.failures - 1).min(16);
        let delay = self
            .options
            .retry_base
            .saturating_mul(1 << exponent)
            .min(self.options.resync_interval);
        memory.last_pass + delay
    }

    /// One gateway: a fresh pass when its inputs changed or it is due, else the last outcome.
    pub async fn reconcile_gateway(
        &mut self,
        input: &AwsGatewayInput,
        now: Instant,
        wall: Timestamp,
    ) -> AwsGatewayOutcome {
        let inputs = (
            input.generation,
            input.pool.clone(),
            input.pods.clone(),
            input.drain,
        );
        if let Some(memory) = self.gateways.get(&input.name) {
            if memory.inputs == inputs && now < self.due_at(memory) {
                return AwsGatewayOutcome {
                    new_failovers: Vec::new(),
                    fresh: false,
                    ..memory.outcome.clone()
                };
            }
        }
        let previous = self.gateways.remove(&input.name);
        let mut history: VecDeque<FailoverStatus> = match &previous {
            Some(memory) => memory.history.clone(),
            None => input.stored_failovers.iter().cloned().collect(),
        };
        let previous_target = match &previous {
            Some(memory) => memory.route_target.clone(),
            None => input
                .stored_routes
                .first()
                .map(|route| route.instance.clone()),
        };
        let known_interfaces = previous
            .as_ref()
            .map(|memory| memory.interfaces.clone())
            .unwrap_or_default();
        let had_routes = previous
            .as_ref()
            .is_some_and(|memory| !memory.outcome.routes.is_empty())
            || !input.stored_routes.is_empty();

        let mut pass = Pass {
            input,
            now,
            outcome: AwsGatewayOutcome::default(),
            route_target: previous_target,
            interfaces: known_interfaces,
            unhealthy_since: previous
                .as_ref()
                .map(|memory| memory.unhealthy_since.clone())
                .unwrap_or_default(),
            drain_until: None,
        };
        let result = self.pass(&mut pass, had_routes).await;
        let mut outcome = pass.outcome;
        let failed = match result {
            Ok(()) => false,
            Err(PassError { error }) => {
                tracing::warn!(
                    gateway = %input.name,
                    error = %crate::error_chain(&error),
                    "AWS pass failed"
                );
                if outcome.instances.is_empty() {
                    outcome.instances = carried_over(input, previous.as_ref());
                    outcome.routes = previous
                        .as_ref()
                        .map(|memory| memory.outcome.routes.clone())
                        .unwrap_or_default();
                }
                outcome.problem = Some(problem_of(&error));
                true
            }
        };
        let time = Time(wall);
        let new_failovers: Vec<FailoverStatus> = outcome
            .new_failovers
            .iter()
            .map(|failover| FailoverStatus {
                time: time.clone(),
                ..failover.clone()
            })
            .collect();
        for failover in &new_failovers {
            self.metrics.aws_failover();
            history.push_back(failover.clone());
        }
        while history.len() > FAILOVER_HISTORY {
            history.pop_front();
        }
        outcome.new_failovers = new_failovers;
        outcome.failovers = history.iter().cloned().collect();
        outcome.fresh = true;
        let failures = if failed {
            previous.as_ref().map_or(0, |memory| memory.failures) + 1
        } else {
            0
        };
        self.gateways.insert(
            input.name.clone(),
            GatewayMemory {
                inputs,
                last_pass: now,
                failures,
                outcome: AwsGatewayOutcome {
                    new_failovers: Vec::new(),
                    ..outcome.clone()
                },
                history,
                route_target: pass.route_target,
                interfaces: pass.interfaces,
                unhealthy_since: pass.unhealthy_since,
                drain_until: pass.drain_until,
            },
        );
        outcome
    }

    async fn pass(&self, pass: &mut Pass<'_>, had_routes: bool) -> Result<(), PassError> {
        let input = pass.input;
        let gateway = self.gateway_ref(&input.name);
        let source = match address_source(&input.pool.elastic_ips) {
            Ok(source) => source,
            Err(message) => {
                pass.outcome.instances = input
                    .pods
                    .iter()
                    .map(|pod| instance_status(pod, false, None, Vec::new()))
                    .collect();
                pass.outcome.problem = Some(AwsProblem {
                    reason: AwsReason::InvalidSpec,
                    message,
                    retryable: false,
                });
                return Ok(());
            }
        };
        let intent = GatewayAddressIntent {
            gateway: gateway.clone(),
            source,
        };
        let adopted = !matches!(intent.source, AddressSource::Allocate { .. });
        let addresses = self.record(
            "ensure_addresses",
            self.provider.ensure_addresses(&intent).await,
        )?;

        // Health of every pod's instance.
        let mut pods: Vec<&GatewayPod> = input.pods.iter().collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        let mut unhealthy: BTreeMap<&str, Option<Unhealthy>> = BTreeMap::new();
        let mut existing_instances: BTreeSet<String> = BTreeSet::new();
        let mut instance_owner: BTreeMap<String, String> = BTreeMap::new();
        let mut descriptions = BTreeMap::new();
        for pod in &pods {
            if let Ok(instance_id) = &pod.instance_id {
                instance_owner
                    .entry(instance_id.clone())
                    .or_insert_with(|| pod.name.clone());
                if !descriptions.contains_key(instance_id) {
                    let description = self.record(
                        "describe_instance",
                        self.provider.describe_instance(instance_id).await,
                    )?;
                    descriptions.insert(instance_id.clone(), description);
                }
            }
        }
        let mut own_interfaces: BTreeMap<String, String> = BTreeMap::new();
        for (name, interface) in &pass.interfaces {
            own_interfaces.insert(interface.clone(), name.clone());
        }
        let mut running: BTreeSet<&str> = BTreeSet::new();
        for pod in &pods {
            let mut why = pod_unhealthy(pod);
            if let Ok(instance_id) = &pod.instance_id {
                // egw's private addresses are per (gateway, EC2 instance): two pods of one
                // gateway on one instance would fight over their count.
                if let Some(owner) = instance_owner
                    .get(instance_id)
                    .filter(|owner| **owner != pod.name)
                {
                    why = Some(Unhealthy::Unidentified(format!(
                        "gateway pod `{owner}` already runs on EC2 instance {instance_id}"
                    )));
                }
                match descriptions.get(instance_id).and_then(Option::as_ref) {
                    None => {
                        // The EC2 side is the root cause when both are wrong.
                        why = Some(Unhealthy::Gone);
                    }
                    Some(description) => {
                        existing_instances.insert(instance_id.clone());
                        for interface in &description.interfaces {
                            own_interfaces
                                .entry(interface.network_interface_id.clone())
                                .or_insert_with(|| pod.name.clone());
                        }
                        if description.state == InstanceState::Running {
                            running.insert(pod.name.as_str());
                        } else {
                            why = Some(Unhealthy::Ec2State(ec2_state_name(&description.state)));
                        }
                    }
                }
            }
            unhealthy.insert(pod.name.as_str(), why);
        }

        // Drains: an instance on a running EC2 instance whose pod stopped being Ready (or is
        // terminating) keeps its addresses for `drain`; one whose EC2 instance is going away
        // has nothing to drain.
        let now = pass.now;
        pass.unhealthy_since
            .retain(|name, _| unhealthy.get(name.as_str()).is_some_and(Option::is_some));
        let mut draining: BTreeSet<String> = BTreeSet::new();
        for (name, why) in &unhealthy {
            let Some(why) = why else {
                continue;
            };
            let since = *pass
                .unhealthy_since
                .entry((*name).to_owned())
                .or_insert(now);
            let drains = matches!(why, Unhealthy::PodNotReady | Unhealthy::PodTerminating)
                && running.contains(name);
            let until = since + input.drain;
            if drains && now < until {
                draining.insert((*name).to_owned());
                pass.drain_until =
                    Some(pass.drain_until.map_or(until, |earlier| earlier.min(until)));
            }
        }

        // Where each address is now.
        let mut plan_addresses = Vec::new();
        for address in &addresses {
            let association = address.association.as_ref();
            let current = association.and_then(|association| {
                association
                    .instance_id
                    .as_ref()
                    .and_then(|id| instance_owner.get(id))
                    .or_else(|| {
                        association
                            .network_interface_id
                            .as_ref()
                            .and_then(|eni| own_interfaces.get(eni))
                    })
                    .cloned()
            });
            let usable = address.owned_by_egw || association.is_none() || current.is_some();
            if !usable {
                let holder = association
                    .and_then(|association| {
                        association
                            .network_interface_id
                            .clone()
                            .or_else(|| association.instance_id.clone())
                    })
                    .unwrap_or_else(|| "another resource".to_owned());
                pass.outcome.warnings.push(format!(
                    "Elastic IP {} ({}) is associated with {holder}, which is not an instance of \
                     this gateway; egw does not take adopted addresses",
                    address.public_ip, address.allocation_id
                ));
            }
            plan_addresses.push(PlanAddress {
                allocation_id: address.allocation_id.clone(),
                public_ip: address.public_ip,
                current_instance: current,
                usable,
            });
        }

        // Plan, then give each carrying instance its private addresses; an instance whose type
        // cannot hold them is marked and the plan redone without it.
        let mode = interface_mode(&input.pool);
        let mut limited: BTreeMap<String, String> = BTreeMap::new();
        let mut interfaces: BTreeMap<String, (u32, GatewayInterface)> = BTreeMap::new();
        let plan = 'plan: loop {
            let plan_input = PlanInput {
                addresses: plan_addresses.clone(),
                instances: pods
                    .iter()
                    .map(|pod| PlanInstance {
                        name: pod.name.clone(),
                        draining: draining.contains(&pod.name),
                        unhealthy: limited
                            .get(&pod.name)
                            .map(|why| Unhealthy::LimitExceeded(why.clone()))
                            .or_else(|| unhealthy.get(pod.name.as_str()).cloned().flatten()),
                    })
                    .collect(),
                previous_route_target: pass.route_target.clone(),
            };
            let plan = plan::plan(&plan_input);
            for (name, &count) in &plan.counts {
                if count == 0 || interfaces.get(name).is_some_and(|(held, _)| *held == count) {
                    continue;
                }
                let Some(pod) = pods.iter().find(|pod| pod.name == *name) else {
                    continue;
                };
                let Ok(instance_id) = &pod.instance_id else {
                    continue;
                };
                let intent = PrivateAddressIntent {
                    gateway: gateway.clone(),
                    instance_id: instance_id.clone(),
                    mode: mode.clone(),
                    count,
                };
                match self.record(
                    "ensure_private_addresses",
                    self.provider.ensure_private_addresses(&intent).await,
                ) {
                    Ok(interface) => {
                        interfaces.insert(name.clone(), (count, interface));
                    }
                    Err(error @ ProviderError::InstanceLimitExceeded { .. }) => {
                        limited.insert(name.clone(), error.to_string());
                        interfaces.remove(name);
                        continue 'plan;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            break plan;
        };
        // Instances whose addresses were all planned away while the plan was redone.
        interfaces.retain(|name, (count, _)| plan.counts.get(name) == Some(count));
        for (name, (_, interface)) in &interfaces {
            pass.interfaces
                .insert(name.clone(), interface.network_interface_id.clone());
        }

        // Pair and associate.
        let by_id: BTreeMap<&str, &ManagedAddress> = addresses
            .iter()
            .map(|address| (address.allocation_id.as_str(), address))
            .collect();
        let mut carried: BTreeMap<String, Vec<AddressStatus>> = BTreeMap::new();
        let mut first_error: Option<ProviderError> = None;
        let mut associated: BTreeSet<String> = BTreeSet::new();
        for (name, (_, interface)) in &interfaces {
            let mut placed: Vec<&ManagedAddress> = plan
                .placements
                .iter()
                .filter(|(_, instance)| *instance == name)
                .filter_map(|(id, _)| by_id.get(id.as_str()).copied())
                .collect();
            placed.sort_by(|a, b| a.allocation_id.cmp(&b.allocation_id));
            let pairs = pair(&placed, interface);
            if pairs.len() < placed.len() {
                pass.outcome.warnings.push(format!(
                    "instance `{name}` has {} private addresses for {} Elastic IPs",
                    interface.private_ips.len(),
                    placed.len()
                ));
            }
            for (address, private_ip) in pairs {
                let target = AssociationTarget {
                    network_interface_id: interface.network_interface_id.clone(),
                    private_ip,
                };
                let ready = match self.associate(address, &target, adopted).await {
                    Ok(()) => {
                        associated.insert(address.allocation_id.clone());
                        true
                    }
                    Err(error) => {
                        first_error.get_or_insert(error);
                        false
                    }
                };
                carried
                    .entry(name.clone())
                    .or_default()
                    .push(AddressStatus {
                        snat_ip: private_ip,
                        public_ip: Some(address.public_ip),
                        allocation_id: Some(address.allocation_id.clone()),
                        ready,
                    });
            }
        }
        // Addresses left on instances that cannot carry them (nothing healthy to move to).
        for address in &plan_addresses {
            if plan.placements.contains_key(&address.allocation_id) {
                continue;
            }
            let (Some(current), Some(managed)) = (
                &address.current_instance,
                by_id.get(address.allocation_id.as_str()),
            ) else {
                continue;
            };
            if let Some(private_ip) = managed
                .association
                .as_ref()
                .and_then(|association| association.private_ip)
            {
                carried
                    .entry(current.clone())
                    .or_default()
                    .push(AddressStatus {
                        snat_ip: private_ip,
                        public_ip: Some(managed.public_ip),
                        allocation_id: Some(managed.allocation_id.clone()),
                        ready: false,
                    });
            }
        }

        // A move whose association failed did not happen; the next pass tries it again.
        pass.outcome.new_failovers = plan
            .moves
            .iter()
            .filter(|step| associated.contains(&step.allocation_id))
            .map(|step| FailoverStatus {
                time: Time(Timestamp::UNIX_EPOCH),
                allocation_id: step.allocation_id.clone(),
                public_ip: step.public_ip,
                from_instance: step.from.clone(),
                to_instance: step.to.clone(),
                reason: step.reason.to_string(),
            })
            .collect();
        pass.outcome.instances = pods
            .iter()
            .map(|pod| {
                let healthy = unhealthy
                    .get(pod.name.as_str())
                    .is_some_and(Option::is_none)
                    && !limited.contains_key(&pod.name);
                let interface = interfaces
                    .get(&pod.name)
                    .map(|(_, interface)| interface.network_interface_id.clone())
                    .or_else(|| pass.interfaces.get(&pod.name).cloned());
                let mut addresses = carried.remove(&pod.name).unwrap_or_default();
                addresses.sort_by(|a, b| a.allocation_id.cmp(&b.allocation_id));
                instance_status(pod, healthy, interface, addresses)
            })
            .collect();
        pass.outcome.problem = if !limited.is_empty() {
            Some(AwsProblem {
                reason: AwsReason::EniLimitExceeded,
                message: limited
                    .iter()
                    .map(|(name, why)| format!("instance `{name}` carries no Elastic IP: {why}"))
                    .collect::<Vec<_>>()
                    .join("; "),
                retryable: false,
            })
        } else if plan.counts.is_empty() {
            Some(AwsProblem {
                reason: AwsReason::NoHealthyInstance,
                message: format!(
                    "no gateway pod is Ready on a running EC2 instance; {} Elastic IPs are not \
                     carried",
                    plan.unplaced.len()
                ),
                retryable: false,
            })
        } else {
            None
        };
        if let Some(error) = first_error {
            return Err(error.into());
        }

        // Routes.
        pass.route_target = plan.route_target.clone();
        match &input.pool.routes {
            Some(routes) => {
                let target = plan
                    .route_target
                    .as_ref()
                    .and_then(|name| interfaces.get(name).map(|(_, interface)| (name, interface)));
                if let Some((name, interface)) = target {
                    let intent = RouteIntent {
                        gateway: gateway.clone(),
                        route_table_ids: routes.route_table_ids.clone(),
                        destination_cidrs: routes.destination_cidrs.clone(),
                        target_network_interface_id: interface.network_interface_id.clone(),
                    };
                    let states =
                        self.record("ensure_routes", self.provider.ensure_routes(&intent).await)?;
                    pass.outcome.routes = states
                        .into_iter()
                        .map(|state| RouteStatus {
                            route_table_id: state.route_table_id,
                            destination_cidr: state.destination_cidr,
                            network_interface_id: state.target_network_interface_id,
                            instance: name.clone(),
                        })
                        .collect();
                    pass.outcome.routes.sort_by(|a, b| {
                        (&a.route_table_id, &a.destination_cidr)
                            .cmp(&(&b.route_table_id, &b.destination_cidr))
                    });
                } else {
                    // Nothing healthy carries addresses: the routes keep pointing where they
                    // do (traffic stops rather than leaving through another path).
                    pass.outcome.routes = input.stored_routes.clone();
                    pass.outcome.warnings.push(
                        "no healthy instance carries an Elastic IP; the VPC routes were left \
                         where they point"
                            .to_owned(),
                    );
                }
                let keep: Vec<(String, String)> = routes
                    .route_table_ids
                    .iter()
                    .flat_map(|table| {
                        routes
                            .destination_cidrs
                            .iter()
                            .map(move |cidr| (table.clone(), cidr.clone()))
                    })
                    .collect();
                self.record(
                    "release_routes",
                    self.provider.release_routes(&gateway, &keep).await,
                )?;
                pass.outcome.routes.retain(|route| {
                    keep.contains(&(route.route_table_id.clone(), route.destination_cidr.clone()))
                });
            }
            None if had_routes => {
                self.record(
                    "release_routes",
                    self.provider.release_routes(&gateway, &[]).await,
                )?;
                pass.route_target = None;
            }
            None => pass.route_target = None,
        }

        // Instances no longer running a gateway pod give their private addresses back. Not while
        // some pod's instance is unknown (a failed node read must not strip a live instance).
        let unidentified: Vec<&str> = pods
            .iter()
            .filter(|pod| pod.instance_id.is_err())
            .map(|pod| pod.name.as_str())
            .collect();
        if !unidentified.is_empty() {
            tracing::info!(
                gateway = %input.name,
                pods = ?unidentified,
                "not pruning private addresses while these pods' EC2 instances are unknown"
            );
            let live: BTreeSet<&str> = pods.iter().map(|pod| pod.name.as_str()).collect();
            pass.interfaces
                .retain(|name, _| live.contains(name.as_str()));
            return Ok(());
        }
        let keep: Vec<String> = existing_instances.into_iter().collect();
        let pruned = self.record(
            "prune_private_addresses",
            self.provider.prune_private_addresses(&gateway, &keep).await,
        )?;
        if !pruned.deleted_network_interface_ids.is_empty()
            || !pruned.unassigned_private_ips.is_empty()
        {
            tracing::info!(
                gateway = %input.name,
                enis = ?pruned.deleted_network_interface_ids,
                private_ips = ?pruned.unassigned_private_ips,
                "pruned private addresses of instances without a gateway pod"
            );
        }
        let live: BTreeSet<&str> = pods.iter().map(|pod| pod.name.as_str()).collect();
        pass.interfaces
            .retain(|name, _| live.contains(name.as_str()));
        Ok(())
    }

    /// Associates `address` with `target` unless it already is; an adopted address on another
    /// private IP of this gateway is disassociated first (only owned addresses may be moved
    /// by reassociation).
    async fn associate(
        &self,
        address: &ManagedAddress,
        target: &AssociationTarget,
        adopted: bool,
    ) -> Result<(), ProviderError> {
        if let Some(association) = &address.association {
            let same_interface = association
                .network_interface_id
                .as_ref()
                .is_none_or(|eni| *eni == target.network_interface_id);
            if same_interface && association.private_ip == Some(target.private_ip) {
                return Ok(());
            }
            if adopted || !address.owned_by_egw {
                self.record("disassociate", self.provider.disassociate(address).await)?;
                let detached = ManagedAddress {
                    association: None,
                    ..address.clone()
                };
                return self
                    .record(
                        "associate",
                        self.provider.associate(&detached, target).await,
                    )
                    .map(|_| ());
            }
        }
        self.record("associate", self.provider.associate(address, target).await)
            .map(|_| ())
    }

    /// Gives back everything held for a deleted gateway: its routes (only when it had any, so
    /// that gateways without routes need no route-table permissions), its private addresses and
    /// ENIs, and the Elastic IPs egw allocated for it. Adopted addresses are left alone.
    pub async fn cleanup(
        &mut self,
        gateway: &str,
        had_routes: bool,
    ) -> Result<CleanupReport, ProviderError> {
        let reference = self.gateway_ref(gateway);
        let mut report = CleanupReport::default();
        if had_routes {
            report.released_routes = self
                .record(
                    "release_routes",
                    self.provider.release_routes(&reference, &[]).await,
                )?
                .len();
        }
        let pruned = self.record(
            "prune_private_addresses",
            self.provider.prune_private_addresses(&reference, &[]).await,
        )?;
        report.deleted_network_interfaces = pruned.deleted_network_interface_ids;
        report.unassigned_private_ips = pruned.unassigned_private_ips;
        report.released_allocations = self.record(
            "release_owned",
            self.provider.release_owned(&reference).await,
        )?;
        self.gateways.remove(gateway);
        Ok(report)
    }
}

/// The state of a pass in progress.
struct Pass<'a> {
    input: &'a AwsGatewayInput,
    now: Instant,
    outcome: AwsGatewayOutcome,
    route_target: Option<String>,
    interfaces: BTreeMap<String, String>,
    unhealthy_since: BTreeMap<String, Instant>,
    drain_until: Option<Instant>,
}

/// Pairs each address with a private IP of `interface`: existing pairings first, then the
/// remaining addresses (by allocation ID) with the remaining private IPs (in order).
fn pair<'a>(
    placed: &[&'a ManagedAddress],
    interface: &GatewayInterface,
) -> Vec<(&'a ManagedAddress, Ipv4Addr)> {
    let mut free: Vec<Ipv4Addr> = interface.private_ips.clone();
    let mut pairs = Vec::new();
    let mut unpaired = Vec::new();
    for address in placed {
        let kept = address.association.as_ref().and_then(|association| {
            let same_interface = association
                .network_interface_id
                .as_ref()
                .is_none_or(|eni| *eni == interface.network_interface_id);
            association
                .private_ip
                .filter(|ip| same_interface && free.contains(ip))
        });
        match kept {
            Some(ip) => {
                free.retain(|free_ip| *free_ip != ip);
                pairs.push((*address, ip));
            }
            None => unpaired.push(*address),
        }
    }
    for (address, ip) in unpaired.into_iter().zip(free) {
        pairs.push((address, ip));
    }
    pairs.sort_by(|a, b| a.0.allocation_id.cmp(&b.0.allocation_id));
    pairs
}

fn instance_status(
    pod: &GatewayPod,
    ready: bool,
    network_interface_id: Option<String>,
    addresses: Vec<AddressStatus>,
) -> InstanceStatus {
    InstanceStatus {
        name: pod.name.clone(),
        node: pod.node.clone(),
        endpoint: pod.endpoint.clone(),
        ready,
        instance_id: pod.instance_id.as_ref().ok().cloned(),
        network_interface_id,
        addresses,
    }
}

/// The instances after a failed pass: what the last pass established (associations do not
/// vanish because a call failed), with readiness re-checked against the pods as they are now.
/// New pods carry nothing until a pass succeeds.
fn carried_over(input: &AwsGatewayInput, previous: Option<&GatewayMemory>) -> Vec<InstanceStatus> {
    let mut pods: Vec<&GatewayPod> = input.pods.iter().collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    pods.into_iter()
        .map(|pod| {
            let earlier = previous.and_then(|memory| {
                memory
                    .outcome
                    .instances
                    .iter()
                    .find(|instance| instance.name == pod.name)
            });
            let still_healthy = pod_unhealthy(pod).is_none();
            match earlier {
                Some(earlier) if earlier.instance_id == pod.instance_id.as_ref().ok().cloned() => {
                    InstanceStatus {
                        node: pod.node.clone(),
                        endpoint: pod.endpoint.clone(),
                        ready: earlier.ready && still_healthy,
                        ..earlier.clone()
                    }
                }
                _ => instance_status(pod, false, None, Vec::new()),
            }
        })
        .collect()
}

impl<P> AwsBackend for AwsManager<P>
where
    P: AddressProvider + InterfaceProvider + RouteProvider,
{
    fn cluster(&self) -> &str {
        &self.options.cluster
    }

    fn reconcile_gateway<'a>(
        &'a mut self,
        input: &'a AwsGatewayInput,
        now: Instant,
        wall: Timestamp,
    ) -> BoxFuture<'a, AwsGatewayOutcome> {
        Box::pin(AwsManager::reconcile_gateway(self, input, now, wall))
    }

    fn cleanup<'a>(
        &'a mut self,
        gateway: &'a str,
        had_routes: bool,
    ) -> BoxFuture<'a, Result<CleanupReport, ProviderError>> {
        Box::pin(AwsManager::cleanup(self, gateway, had_routes))
    }

    fn next_due(&self) -> Option<Instant> {
        self.gateways
            .values()
            .map(|memory| self.due_at(memory))
            .min()
    }

    fn retain(&mut self, gateways: &BTreeSet<String>) {
        self.gateways.retain(|name, _| gateways.contains(name));
    }

    fn clear(&mut self) {
        self.gateways.clear();
    }
}
