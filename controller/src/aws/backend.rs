//! [`AwsBackend`]: what the cluster reconciler needs of the AWS manager, object-safe so that the
//! reconciler does not depend on the provider type; implemented by [`AwsManager`].

use std::collections::BTreeSet;
use std::time::Instant;

use egw_aws::{AddressProvider, InterfaceProvider, ProviderError, RouteProvider};
use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;

use super::manager::AwsManager;
use super::model::{AwsGatewayInput, AwsGatewayOutcome, CleanupReport};

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
