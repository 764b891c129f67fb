//! [`AwsManager::cleanup`]: everything held for a deleted gateway given back.

use egw_aws::{AddressProvider, InterfaceProvider, ProviderError, RouteProvider};

use super::manager::AwsManager;
use super::model::CleanupReport;

impl<P> AwsManager<P>
where
    P: AddressProvider + InterfaceProvider + RouteProvider,
{
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
