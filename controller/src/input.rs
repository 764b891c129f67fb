//! The translation's input: plain snapshots of pods, namespaces, gateways and policies, plus
//! conversions from the Kubernetes objects the watch loop and local mode read.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};

use crate::crd::{
    EgressGateway, EgressGatewayPolicy, EgressGatewayPolicySpec, EgressGatewaySpec, InstanceStatus,
};

/// Everything the translation looks at. Order of the vectors does not matter: the translation
/// sorts, so equal snapshots give equal output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub pods: Vec<PodInfo>,
    pub namespaces: Vec<NamespaceInfo>,
    pub gateways: Vec<GatewayInfo>,
    pub policies: Vec<PolicyInfo>,
}

/// What the translation needs of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// The pod's IPv4 address (`status.podIPs`), if it has one yet.
    pub ip: Option<Ipv4Addr>,
    /// `status.phase`; `Succeeded` and `Failed` pods are excluded because their IP may already
    /// belong to another pod.
    pub phase: Option<String>,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    pub host_network: bool,
    pub annotations: BTreeMap<String, String>,
}

impl PodInfo {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What the translation needs of a namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// An EgressGateway with the instances currently known for it.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayInfo {
    pub name: String,
    /// `metadata.labels`, matched by gateway selectors.
    pub labels: BTreeMap<String, String>,
    pub spec: EgressGatewaySpec,
    pub instances: Vec<InstanceInfo>,
}

/// One gateway instance as the controller knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub name: String,
    /// gRPC control endpoint the route table is pushed to.
    pub endpoint: Option<String>,
    /// The instance passes its health checks.
    pub ready: bool,
    pub addresses: Vec<ExternalAddress>,
}

/// One external address of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalAddress {
    /// The address written into translated packets.
    pub snat_ip: Ipv4Addr,
    /// The address the outside world sees, when a cloud NAT maps `snat_ip` (AWS Elastic IP).
    pub public_ip: Option<Ipv4Addr>,
    pub ready: bool,
}

impl InstanceInfo {
    /// The addresses flows may be translated to: none unless the instance itself is Ready.
    pub fn usable_addresses(&self) -> Vec<Ipv4Addr> {
        if !self.ready {
            return Vec::new();
        }
        let mut addresses: Vec<Ipv4Addr> = self
            .addresses
            .iter()
            .filter(|address| address.ready)
            .map(|address| address.snat_ip)
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        addresses
    }
}

/// An EgressGatewayPolicy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyInfo {
    pub name: String,
    pub spec: EgressGatewayPolicySpec,
}

impl PodInfo {
    /// Reads a pod object. The first IPv4 address among `status.podIPs` (falling back to
    /// `status.podIP`) is used: route tables are IPv4-only.
    pub fn from_pod(pod: &Pod) -> PodInfo {
        let status = pod.status.as_ref();
        let listed = status
            .and_then(|status| status.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .map(|pod_ip| pod_ip.ip.as_str());
        let single = status.and_then(|status| status.pod_ip.as_deref());
        let ip = listed
            .chain(single)
            .find_map(|text| text.parse::<Ipv4Addr>().ok());
        PodInfo {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            ip,
            phase: status.and_then(|status| status.phase.clone()),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            host_network: pod
                .spec
                .as_ref()
                .and_then(|spec| spec.host_network)
                .unwrap_or(false),
            annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        }
    }
}

impl NamespaceInfo {
    pub fn from_namespace(namespace: &Namespace) -> NamespaceInfo {
        NamespaceInfo {
            name: namespace.metadata.name.clone().unwrap_or_default(),
            labels: namespace.metadata.labels.clone().unwrap_or_default(),
            annotations: namespace.metadata.annotations.clone().unwrap_or_default(),
        }
    }
}

impl GatewayInfo {
    /// Reads a gateway object. Static gateways take their instances from `spec.static`, each
    /// Ready unless `status.instances` reports it (or one of its addresses) not Ready; other
    /// gateways take them from `status.instances` as the controller last observed them (local
    /// mode; cluster mode uses [`GatewayInfo::with_instances`] with the manager's outcome).
    pub fn from_resource(gateway: &EgressGateway) -> GatewayInfo {
        let observed = gateway
            .status
            .as_ref()
            .map(|status| status.instances.as_slice())
            .unwrap_or_default();
        let instances = match &gateway.spec.static_pool {
            Some(pool) => pool
                .instances
                .iter()
                .map(|instance| {
                    let status = observed.iter().find(|seen| seen.name == instance.name);
                    InstanceInfo {
                        name: instance.name.clone(),
                        endpoint: Some(instance.endpoint.clone()),
                        ready: status.is_none_or(|status| status.ready),
                        addresses: instance
                            .addresses
                            .iter()
                            .map(|&address| ExternalAddress {
                                snat_ip: address,
                                public_ip: None,
                                ready: status.is_none_or(|status| {
                                    status
                                        .addresses
                                        .iter()
                                        .find(|seen| seen.snat_ip == address)
                                        .is_none_or(|seen| seen.ready)
                                }),
                            })
                            .collect(),
                    }
                })
                .collect(),
            None => instances_from_status(observed),
        };
        GatewayInfo {
            name: gateway.metadata.name.clone().unwrap_or_default(),
            labels: gateway.metadata.labels.clone().unwrap_or_default(),
            spec: gateway.spec.clone(),
            instances,
        }
    }

    /// A non-static gateway with the instances its address manager reports now (cluster mode:
    /// the AWS manager's outcome), instead of the possibly stale `status.instances`.
    pub fn with_instances(gateway: &EgressGateway, instances: &[InstanceStatus]) -> GatewayInfo {
        GatewayInfo {
            name: gateway.metadata.name.clone().unwrap_or_default(),
            labels: gateway.metadata.labels.clone().unwrap_or_default(),
            spec: gateway.spec.clone(),
            instances: instances_from_status(instances),
        }
    }
}

fn instances_from_status(observed: &[InstanceStatus]) -> Vec<InstanceInfo> {
    observed
        .iter()
        .map(|status| InstanceInfo {
            name: status.name.clone(),
            endpoint: status.endpoint.clone(),
            ready: status.ready,
            addresses: status
                .addresses
                .iter()
                .map(|address| ExternalAddress {
                    snat_ip: address.snat_ip,
                    public_ip: address.public_ip,
                    ready: address.ready,
                })
                .collect(),
        })
        .collect()
}

impl PolicyInfo {
    pub fn from_resource(policy: &EgressGatewayPolicy) -> PolicyInfo {
        PolicyInfo {
            name: policy.metadata.name.clone().unwrap_or_default(),
            spec: policy.spec.clone(),
        }
    }
}
