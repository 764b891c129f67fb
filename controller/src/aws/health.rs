//! Step 2 of a pass: the health of every gateway pod's instance. `describe_instance` for the EC2
//! instance of each pod; an instance carries addresses only while its pod is Ready, not
//! terminating, alone on its EC2 instance, and EC2 reports it `running`. An instance whose pod
//! stopped being Ready on a running EC2 instance drains (keeps its addresses) for a while.

use std::collections::{BTreeMap, BTreeSet};

use egw_aws::{
    AddressProvider, InstanceDescription, InstanceState, InterfaceProvider, RouteProvider,
};

use super::manager::AwsManager;
use super::model::GatewayPod;
use super::plan::Unhealthy;
use super::pods::pod_unhealthy;
use super::state::{Pass, PassError};

/// The health of a gateway's instances.
pub(super) struct Health<'a> {
    /// The gateway pods, sorted by name.
    pub(super) pods: Vec<&'a GatewayPod>,
    /// Why each pod (by name) cannot carry addresses, if it cannot.
    pub(super) unhealthy: BTreeMap<&'a str, Option<Unhealthy>>,
    /// EC2 instances that exist and run a gateway pod.
    pub(super) existing_instances: BTreeSet<String>,
    /// EC2 instance → the first gateway pod (by name) on it.
    pub(super) instance_owner: BTreeMap<String, String>,
    /// ENI → the gateway pod whose instance has it.
    pub(super) own_interfaces: BTreeMap<String, String>,
    /// Pods that keep their addresses while they drain.
    pub(super) draining: BTreeSet<String>,
}

impl<P> AwsManager<P>
where
    P: AddressProvider + InterfaceProvider + RouteProvider,
{
    /// Step 2: `describe_instance` for every pod's EC2 instance, then each pod's health and
    /// drain.
    pub(super) async fn instance_health<'a>(
        &self,
        pass: &mut Pass<'a>,
    ) -> Result<Health<'a>, PassError> {
        let mut pods: Vec<&'a GatewayPod> = pass.input.pods.iter().collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
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
        let mut health = Health {
            pods,
            unhealthy: BTreeMap::new(),
            existing_instances: BTreeSet::new(),
            instance_owner,
            own_interfaces,
            draining: BTreeSet::new(),
        };
        let running = health.classify(&descriptions);
        health.draining = drains(pass, &health.unhealthy, &running);
        Ok(health)
    }
}

impl<'a> Health<'a> {
    /// Each pod's health from its own state and its EC2 instance's; returns the pods on running
    /// EC2 instances.
    fn classify(
        &mut self,
        descriptions: &BTreeMap<String, Option<InstanceDescription>>,
    ) -> BTreeSet<&'a str> {
        let mut running: BTreeSet<&'a str> = BTreeSet::new();
        for &pod in &self.pods {
            let mut why = pod_unhealthy(pod);
            if let Ok(instance_id) = &pod.instance_id {
                // egw's private addresses are per (gateway, EC2 instance): two pods of one
                // gateway on one instance would fight over their count.
                if let Some(owner) = self
                    .instance_owner
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
                        self.existing_instances.insert(instance_id.clone());
                        for interface in &description.interfaces {
                            self.own_interfaces
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
            self.unhealthy.insert(pod.name.as_str(), why);
        }
        running
    }
}

/// Drains: an instance on a running EC2 instance whose pod stopped being Ready (or is
/// terminating) keeps its addresses for `drain`; one whose EC2 instance is going away has
/// nothing to drain. Returns the draining pods; records when the earliest drain ends.
fn drains(
    pass: &mut Pass<'_>,
    unhealthy: &BTreeMap<&str, Option<Unhealthy>>,
    running: &BTreeSet<&str>,
) -> BTreeSet<String> {
    let now = pass.now;
    pass.unhealthy_since
        .retain(|name, _| unhealthy.get(name.as_str()).is_some_and(Option::is_some));
    let mut draining: BTreeSet<String> = BTreeSet::new();
    for (name, why) in unhealthy {
        let Some(why) = why else {
            continue;
        };
        let since = *pass
            .unhealthy_since
            .entry((*name).to_owned())
            .or_insert(now);
        let drains = matches!(why, Unhealthy::PodNotReady | Unhealthy::PodTerminating)
            && running.contains(name);
        let until = since + pass.input.drain;
        if drains && now < until {
            draining.insert((*name).to_owned());
            pass.drain_until = Some(pass.drain_until.map_or(until, |earlier| earlier.min(until)));
        }
    }
    draining
}

/// EC2's name of an instance state, for conditions.
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
