//! Step 6 of a pass: `spec.aws.routes` (the NAT-instance pattern). `ensure_routes` points the
//! listed routes at the ENI of the plan's route target, and `release_routes` gives back the
//! routes no longer listed (all of them when the field was removed).

use egw_aws::{AddressProvider, GatewayRef, InterfaceProvider, RouteIntent, RouteProvider};

use super::manager::AwsManager;
use super::placement::Placement;
use super::state::{Pass, PassError};
use crate::crd::{AwsRoutes, RouteStatus};

impl<P> AwsManager<P>
where
    P: AddressProvider + InterfaceProvider + RouteProvider,
{
    /// Step 6: the VPC routes follow the route target; `had_routes`: the gateway had routes
    /// before this pass (so removing `spec.aws.routes` gives them back).
    pub(super) async fn routes(
        &self,
        pass: &mut Pass<'_>,
        gateway: &GatewayRef,
        placement: &Placement,
        had_routes: bool,
    ) -> Result<(), PassError> {
        pass.route_target = placement.plan.route_target.clone();
        match &pass.input.pool.routes {
            Some(routes) => self.ensure_routes(pass, gateway, placement, routes).await?,
            None if had_routes => {
                self.record(
                    "release_routes",
                    self.provider.release_routes(gateway, &[]).await,
                )?;
                pass.route_target = None;
            }
            None => pass.route_target = None,
        }
        Ok(())
    }

    /// Points `routes` at the route target's ENI (or leaves them where they point when no
    /// healthy instance carries addresses), then releases the routes no longer listed.
    async fn ensure_routes(
        &self,
        pass: &mut Pass<'_>,
        gateway: &GatewayRef,
        placement: &Placement,
        routes: &AwsRoutes,
    ) -> Result<(), PassError> {
        let target = placement.plan.route_target.as_ref().and_then(|name| {
            placement
                .interfaces
                .get(name)
                .map(|(_, interface)| (name, interface))
        });
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
            // Nothing healthy carries addresses: the routes keep pointing where they do
            // (traffic stops rather than leaving through another path).
            pass.outcome.routes = pass.input.stored_routes.clone();
            pass.outcome.warnings.push(
                "no healthy instance carries an Elastic IP; the VPC routes were left where they \
                 point"
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
            self.provider.release_routes(gateway, &keep).await,
        )?;
        pass.outcome.routes.retain(|route| {
            keep.contains(&(route.route_table_id.clone(), route.destination_cidr.clone()))
        });
        Ok(())
    }
}
