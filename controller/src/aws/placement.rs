//! Steps 3 and 4 of a pass: where each Elastic IP is now, the placement [`plan::plan`]
//! (sticky, balanced; failovers; the route target), and `ensure_private_addresses` on every
//! instance that carries addresses. An instance type that cannot hold its count carries
//! nothing, and the plan is redone without it (condition reason `EniLimitExceeded`).

use std::collections::BTreeMap;

use egw_aws::{
    AddressProvider, GatewayInterface, GatewayRef, InterfaceMode, InterfaceProvider,
    ManagedAddress, PrivateAddressIntent, ProviderError, RouteProvider,
};

use super::health::Health;
use super::manager::AwsManager;
use super::plan::{self, Plan, PlanAddress, PlanInput, PlanInstance, Unhealthy};
use super::state::{Pass, PassError};
use crate::crd::{AwsPool, EniMode};

/// The plan and the private addresses that carry it.
pub(super) struct Placement {
    pub(super) plan: Plan,
    /// Instances (by name) whose type cannot hold their private addresses, and why.
    pub(super) limited: BTreeMap<String, String>,
    /// Each carrying instance (by name): its address count and the ENI holding them.
    pub(super) interfaces: BTreeMap<String, (u32, GatewayInterface)>,
}

/// Step 3a: where each address is now: the gateway instance it is associated with (by EC2
/// instance or by one of the gateway's ENIs), and whether egw may use it (an adopted address
/// associated with anything else is never taken; a warning says so).
pub(super) fn locate_addresses(
    pass: &mut Pass<'_>,
    addresses: &[ManagedAddress],
    health: &Health<'_>,
) -> Vec<PlanAddress> {
    let mut plan_addresses = Vec::new();
    for address in addresses {
        let association = address.association.as_ref();
        let current = association.and_then(|association| {
            association
                .instance_id
                .as_ref()
                .and_then(|id| health.instance_owner.get(id))
                .or_else(|| {
                    association
                        .network_interface_id
                        .as_ref()
                        .and_then(|eni| health.own_interfaces.get(eni))
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
    plan_addresses
}

impl<P> AwsManager<P>
where
    P: AddressProvider + InterfaceProvider + RouteProvider,
{
    /// Steps 3b and 4: plan, then give each carrying instance its private addresses; an
    /// instance whose type cannot hold them is marked and the plan redone without it.
    pub(super) async fn place(
        &self,
        pass: &mut Pass<'_>,
        gateway: &GatewayRef,
        health: &Health<'_>,
        plan_addresses: &[PlanAddress],
    ) -> Result<Placement, PassError> {
        let mode = interface_mode(&pass.input.pool);
        let mut limited: BTreeMap<String, String> = BTreeMap::new();
        let mut interfaces: BTreeMap<String, (u32, GatewayInterface)> = BTreeMap::new();
        let plan = 'plan: loop {
            let plan = plan::plan(&plan_input(pass, health, plan_addresses, &limited));
            for (name, &count) in &plan.counts {
                if count == 0 || interfaces.get(name).is_some_and(|(held, _)| *held == count) {
                    continue;
                }
                let Some(pod) = health.pods.iter().find(|pod| pod.name == *name) else {
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
        Ok(Placement {
            plan,
            limited,
            interfaces,
        })
    }
}

/// The planner's input: the addresses, every pod with its health (instance limits first), and
/// the current route target.
fn plan_input(
    pass: &Pass<'_>,
    health: &Health<'_>,
    plan_addresses: &[PlanAddress],
    limited: &BTreeMap<String, String>,
) -> PlanInput {
    PlanInput {
        addresses: plan_addresses.to_vec(),
        instances: health
            .pods
            .iter()
            .map(|pod| PlanInstance {
                name: pod.name.clone(),
                draining: health.draining.contains(&pod.name),
                unhealthy: limited
                    .get(&pod.name)
                    .map(|why| Unhealthy::LimitExceeded(why.clone()))
                    .or_else(|| health.unhealthy.get(pod.name.as_str()).cloned().flatten()),
            })
            .collect(),
        previous_route_target: pass.route_target.clone(),
    }
}

/// `spec.aws.eniMode` as the provider's interface mode.
fn interface_mode(pool: &AwsPool) -> InterfaceMode {
    match pool.eni_mode {
        EniMode::SecondaryIp => InterfaceMode::SecondaryIp,
        EniMode::EniPerGateway => InterfaceMode::EniPerGateway {
            subnet_id: pool.subnet_id.clone(),
            security_group_ids: pool.security_group_ids.clone(),
        },
    }
}
