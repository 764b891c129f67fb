//! [`AwsManager`]: what it holds per gateway between passes, when a gateway is due again, and
//! how every EC2 call is counted.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use egw_aws::{AddressProvider, GatewayRef, InterfaceProvider, ProviderError, RouteProvider};

use super::model::{AwsGatewayOutcome, AwsOptions, GatewayPod};
use crate::crd::{AwsPool, FailoverStatus};
use crate::metrics::Metrics;

/// What the last pass of a gateway left.
#[derive(Debug, Clone)]
pub(super) struct GatewayMemory {
    /// `(generation, pool, pods, drain)` of the last pass.
    pub(super) inputs: (Option<i64>, AwsPool, Vec<GatewayPod>, Duration),
    pub(super) last_pass: Instant,
    /// Consecutive failed passes.
    pub(super) failures: u32,
    pub(super) outcome: AwsGatewayOutcome,
    pub(super) history: VecDeque<FailoverStatus>,
    pub(super) route_target: Option<String>,
    /// ENI of each instance (by name) as last seen: an address on one of them is on this
    /// gateway even after the pod is gone.
    pub(super) interfaces: BTreeMap<String, String>,
    /// Since when each unhealthy instance (by name) has been unhealthy, for its drain.
    pub(super) unhealthy_since: BTreeMap<String, Instant>,
    /// When the earliest drain ends (a pass is due then).
    pub(super) drain_until: Option<Instant>,
}

/// Manages the Elastic IPs, private addresses and routes of every AWS gateway.
pub struct AwsManager<P> {
    pub(super) provider: P,
    pub(super) options: AwsOptions,
    pub(super) metrics: Metrics,
    pub(super) gateways: BTreeMap<String, GatewayMemory>,
}

/// The `outcome` label of an EC2 call's result.
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

    /// The EC2-side name of `gateway` (tags carry the cluster and the gateway).
    pub(super) fn gateway_ref(&self, gateway: &str) -> GatewayRef {
        GatewayRef {
            cluster: self.options.cluster.clone(),
            gateway: gateway.to_owned(),
        }
    }

    /// Counts an EC2 call by its outcome (`egw_controller_aws_calls_total`) and passes its result on.
    pub(super) fn record<T>(
        &self,
        operation: &'static str,
        result: Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        self.metrics
            .aws_call(operation, outcome_label(&result.as_ref()));
        result
    }

    /// When `memory`'s gateway is due for a pass: a retry, a resync or the end of a drain.
    pub(super) fn due_at(&self, memory: &GatewayMemory) -> Instant {
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
}
