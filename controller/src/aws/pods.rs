//! What a gateway pod contributes to a pass on its own: whether it can carry addresses before
//! EC2 is asked, and its instance status.

use super::model::GatewayPod;
use super::plan::Unhealthy;
use crate::crd::{AddressStatus, InstanceStatus};

/// Why a pod cannot carry addresses, before asking EC2.
pub(super) fn pod_unhealthy(pod: &GatewayPod) -> Option<Unhealthy> {
    if pod.terminating {
        Some(Unhealthy::PodTerminating)
    } else if !pod.ready || pod.endpoint.is_none() {
        Some(Unhealthy::PodNotReady)
    } else {
        pod.instance_id
            .as_ref()
            .err()
            .map(|why| Unhealthy::Unidentified(why.clone()))
    }
}

/// The status of `pod`'s instance.
pub(super) fn instance_status(
    pod: &GatewayPod,
    ready: bool,
    network_interface_id: Option<String>,
    addresses: Vec<AddressStatus>,
) -> InstanceStatus {
    InstanceStatus {
        name: pod.name.clone(),
        node: pod.node.clone(),
        endpoint: pod.endpoint.clone(),
        ready,
        instance_id: pod.instance_id.as_ref().ok().cloned(),
        network_interface_id,
        addresses,
    }
}
