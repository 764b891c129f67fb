//! [`AwsManager::reconcile_gateway`]: whether a gateway's pass is due, the pass itself (see
//! the `pass` module), and what it leaves for the next one (failover history, route target,
//! interfaces, drains, backoff). A failed pass keeps what the last one established.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use egw_aws::{AddressProvider, InterfaceProvider, RouteProvider};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::manager::{AwsManager, GatewayMemory};
use super::model::{problem_of, AwsGatewayInput, AwsGatewayOutcome, GatewayPod, FAILOVER_HISTORY};
use super::pods::{instance_status, pod_unhealthy};
use super::state::{Pass, PassError};
use crate::crd::{AwsPool, FailoverStatus, InstanceStatus};

/// What decides whether a gateway's last outcome still holds: `(generation, pool, pods, drain)`.
type PassInputs = (Option<i64>, AwsPool, Vec<GatewayPod>, Duration);

impl<P> AwsManager<P>
where
    P: AddressProvider + InterfaceProvider + RouteProvider,
{
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
        let had_routes = previous
            .as_ref()
            .is_some_and(|memory| !memory.outcome.routes.is_empty())
            || !input.stored_routes.is_empty();
        let mut pass = start_pass(input, now, previous.as_ref());
        let result = self.pass(&mut pass, had_routes).await;
        let mut outcome = std::mem::take(&mut pass.outcome);
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
        self.remember(input, inputs, previous, pass, outcome, failed, wall)
    }

    /// Stamps the pass's failovers with `wall`, adds them to the history, and remembers the
    /// pass for the next one.
    #[allow(clippy::too_many_arguments, reason = "the parts of one finished pass")]
    fn remember(
        &mut self,
        input: &AwsGatewayInput,
        inputs: PassInputs,
        previous: Option<GatewayMemory>,
        pass: Pass<'_>,
        mut outcome: AwsGatewayOutcome,
        failed: bool,
        wall: Timestamp,
    ) -> AwsGatewayOutcome {
        let mut history: VecDeque<FailoverStatus> = match &previous {
            Some(memory) => memory.history.clone(),
            None => input.stored_failovers.iter().cloned().collect(),
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
                last_pass: pass.now,
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
}

/// A pass that continues from `previous` (or, after a controller restart, from the status the
/// input carries).
fn start_pass<'a>(
    input: &'a AwsGatewayInput,
    now: Instant,
    previous: Option<&GatewayMemory>,
) -> Pass<'a> {
    let route_target = match previous {
        Some(memory) => memory.route_target.clone(),
        None => input
            .stored_routes
            .first()
            .map(|route| route.instance.clone()),
    };
    Pass {
        input,
        now,
        outcome: AwsGatewayOutcome::default(),
        route_target,
        interfaces: previous
            .map(|memory| memory.interfaces.clone())
            .unwrap_or_default(),
        unhealthy_since: previous
            .map(|memory| memory.unhealthy_since.clone())
            .unwrap_or_default(),
        drain_until: None,
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
