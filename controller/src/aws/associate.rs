//! Step 5 of a pass: each Elastic IP paired with a private IP of its instance (existing
//! pairings are kept) and associated there. An adopted address associated with one of this
//! gateway's own instances is disassociated first; one associated with anything else is never
//! taken. Then the pass's outcome: instances with the addresses they carry, the failovers that
//! happened, and the main problem.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use egw_aws::{
    AddressProvider, AssociationTarget, GatewayInterface, InterfaceProvider, ManagedAddress,
    ProviderError, RouteProvider,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::addresses::Addresses;
use super::health::Health;
use super::manager::AwsManager;
use super::model::{AwsProblem, AwsReason};
use super::placement::Placement;
use super::plan::PlanAddress;
use super::pods::instance_status;
use super::state::Pass;
use crate::crd::{AddressStatus, FailoverStatus};

/// What the associations left.
pub(super) struct Associations {
    /// The addresses each instance (by name) carries.
    pub(super) carried: BTreeMap<String, Vec<AddressStatus>>,
    /// Allocation IDs now associated where the plan puts them.
    pub(super) associated: BTreeSet<String>,
    /// The first failed association: the pass fails with it once the outcome is recorded.
    pub(super) first_error: Option<ProviderError>,
}

impl<P> AwsManager<P>
where
    P: AddressProvider + InterfaceProvider + RouteProvider,
{
    /// Step 5: pairs every placed address with a private IP of its instance and associates it
    /// there. A failed association is kept (not retried in this pass) and the others go on.
    pub(super) async fn associate_addresses(
        &self,
        pass: &mut Pass<'_>,
        addresses: &Addresses,
        placement: &Placement,
    ) -> Associations {
        let by_id = by_allocation_id(&addresses.managed);
        let mut output = Associations {
            carried: BTreeMap::new(),
            associated: BTreeSet::new(),
            first_error: None,
        };
        for (name, (_, interface)) in &placement.interfaces {
            let mut placed: Vec<&ManagedAddress> = placement
                .plan
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
                let ready = match self.associate(address, &target, addresses.adopted).await {
                    Ok(()) => {
                        output.associated.insert(address.allocation_id.clone());
                        true
                    }
                    Err(error) => {
                        output.first_error.get_or_insert(error);
                        false
                    }
                };
                output
                    .carried
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
        output
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
}

/// The gateway's addresses by allocation ID.
fn by_allocation_id(addresses: &[ManagedAddress]) -> BTreeMap<&str, &ManagedAddress> {
    addresses
        .iter()
        .map(|address| (address.allocation_id.as_str(), address))
        .collect()
}

/// Addresses left on instances that cannot carry them (nothing healthy to move to): reported
/// on those instances, not Ready.
pub(super) fn carried_elsewhere(
    associations: &mut Associations,
    addresses: &Addresses,
    plan_addresses: &[PlanAddress],
    placement: &Placement,
) {
    let by_id = by_allocation_id(&addresses.managed);
    for address in plan_addresses {
        if placement
            .plan
            .placements
            .contains_key(&address.allocation_id)
        {
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
            associations
                .carried
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
}

/// The pass's outcome from the associations: failovers (a move whose association failed did
/// not happen; the next pass tries it again), every instance with its addresses, and the main
/// problem. Returns the first failed association, which fails the pass.
pub(super) fn record_outcome(
    pass: &mut Pass<'_>,
    health: &Health<'_>,
    placement: &Placement,
    mut associations: Associations,
) -> Result<(), ProviderError> {
    let plan = &placement.plan;
    pass.outcome.new_failovers = plan
        .moves
        .iter()
        .filter(|step| associations.associated.contains(&step.allocation_id))
        .map(|step| FailoverStatus {
            time: Time(Timestamp::UNIX_EPOCH),
            allocation_id: step.allocation_id.clone(),
            public_ip: step.public_ip,
            from_instance: step.from.clone(),
            to_instance: step.to.clone(),
            reason: step.reason.to_string(),
        })
        .collect();
    pass.outcome.instances = health
        .pods
        .iter()
        .map(|pod| {
            let healthy = health
                .unhealthy
                .get(pod.name.as_str())
                .is_some_and(Option::is_none)
                && !placement.limited.contains_key(&pod.name);
            let interface = placement
                .interfaces
                .get(&pod.name)
                .map(|(_, interface)| interface.network_interface_id.clone())
                .or_else(|| pass.interfaces.get(&pod.name).cloned());
            let mut addresses = associations.carried.remove(&pod.name).unwrap_or_default();
            addresses.sort_by(|a, b| a.allocation_id.cmp(&b.allocation_id));
            instance_status(pod, healthy, interface, addresses)
        })
        .collect();
    pass.outcome.problem = main_problem(placement);
    match associations.first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Instance limits first, then no healthy instance at all.
fn main_problem(placement: &Placement) -> Option<AwsProblem> {
    if !placement.limited.is_empty() {
        Some(AwsProblem {
            reason: AwsReason::EniLimitExceeded,
            message: placement
                .limited
                .iter()
                .map(|(name, why)| format!("instance `{name}` carries no Elastic IP: {why}"))
                .collect::<Vec<_>>()
                .join("; "),
            retryable: false,
        })
    } else if placement.plan.counts.is_empty() {
        Some(AwsProblem {
            reason: AwsReason::NoHealthyInstance,
            message: format!(
                "no gateway pod is Ready on a running EC2 instance; {} Elastic IPs are not \
                 carried",
                placement.plan.unplaced.len()
            ),
            retryable: false,
        })
    } else {
        None
    }
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
