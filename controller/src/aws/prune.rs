//! Step 7 of a pass: instances that no longer run a gateway pod give their private addresses
//! back (`prune_private_addresses`). Not while some pod's EC2 instance is unknown: a failed node
//! read must not strip a live instance.

use std::collections::BTreeSet;

use egw_aws::{AddressProvider, GatewayRef, InterfaceProvider, RouteProvider};

use super::health::Health;
use super::manager::AwsManager;
use super::state::{Pass, PassError};

impl<P> AwsManager<P>
where
    P: AddressProvider + InterfaceProvider + RouteProvider,
{
    /// Step 7: prunes the private addresses of EC2 instances without a gateway pod, and forgets
    /// the ENIs of pods that are gone.
    pub(super) async fn prune(
        &self,
        pass: &mut Pass<'_>,
        gateway: &GatewayRef,
        health: Health<'_>,
    ) -> Result<(), PassError> {
        let input = pass.input;
        let pods = &health.pods;
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
        let keep: Vec<String> = health.existing_instances.into_iter().collect();
        let pruned = self.record(
            "prune_private_addresses",
            self.provider.prune_private_addresses(gateway, &keep).await,
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
}
