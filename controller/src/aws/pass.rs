//! One pass over an AWS gateway: the driver that runs the steps of the module docs of
//! [`crate::aws`] in order, one function each.

use egw_aws::{AddressProvider, InterfaceProvider, RouteProvider};

use super::associate::{carried_elsewhere, record_outcome};
use super::manager::AwsManager;
use super::placement::locate_addresses;
use super::state::{Pass, PassError};

impl<P> AwsManager<P>
where
    P: AddressProvider + InterfaceProvider + RouteProvider,
{
    /// Runs one pass; what it established is in `pass` even when a step fails.
    /// `had_routes`: the gateway had VPC routes before this pass.
    pub(super) async fn pass(
        &self,
        pass: &mut Pass<'_>,
        had_routes: bool,
    ) -> Result<(), PassError> {
        let gateway = self.gateway_ref(&pass.input.name);
        // 1. The Elastic IPs (none: the spec is invalid, and the outcome says so).
        let Some(addresses) = self.ensure_addresses(pass, &gateway).await? else {
            return Ok(());
        };
        // 2. The health of every pod's EC2 instance, and drains.
        let health = self.instance_health(pass).await?;
        // 3. Where each address is now; the plan; 4. private addresses for it.
        let plan_addresses = locate_addresses(pass, &addresses.managed, &health);
        let placement = self.place(pass, &gateway, &health, &plan_addresses).await?;
        // 5. Pair and associate; the outcome (a failed association fails the pass here).
        let mut associations = self.associate_addresses(pass, &addresses, &placement).await;
        carried_elsewhere(&mut associations, &addresses, &plan_addresses, &placement);
        record_outcome(pass, &health, &placement, associations)?;
        // 6. The VPC routes.
        self.routes(pass, &gateway, &placement, had_routes).await?;
        // 7. Private addresses of instances that left the gateway.
        self.prune(pass, &gateway, health).await
    }
}
