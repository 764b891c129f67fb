//! The custom resources: `EgressGateway` and `EgressGatewayPolicy` (group `egw.dev`, `v1alpha1`).
//!
//! Doc comments on fields become schema descriptions, so they are written for `kubectl explain`.
//! Both kinds are cluster-scoped: a gateway serves every namespace that asks for it, and a policy
//! is referenced by name from namespace or pod annotations.
//!
//! This crate holds the types alone (serde, JSON schema, `CustomResourceExt::crd`), so that
//! offline tools such as `deploy/validate` use them without the controller's Kubernetes client,
//! runtime or AWS SDK. The controller re-exports it as `egw_controller::crd`. The derives are
//! pointed at `kube_core` (`crates(kube_core = ::kube_core)`) because this crate does not depend
//! on the `kube` facade.

// Several `printcolumn(...)` entries legitimately repeat `type_ = ...`; clippy mistakes them for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube_derive::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every egw resource.
pub const GROUP: &str = "egw.dev";
/// API version of every egw resource.
pub const VERSION: &str = "v1alpha1";
/// Namespace gateway pods run in when `spec.namespace` is not set.
pub const DEFAULT_GATEWAY_NAMESPACE: &str = "egw-system";

fn default_gateway_namespace() -> String {
    DEFAULT_GATEWAY_NAMESPACE.to_owned()
}

fn default_true() -> bool {
    true
}

// ---------------------------------------------------------------------------------------------
// EgressGateway
// ---------------------------------------------------------------------------------------------

/// A set of egw gateway instances (pods) and the external addresses they translate pod traffic to.
///
/// Pods and namespaces select a gateway with the `egw.dev/gateway` annotation, or through an
/// EgressGatewayPolicy. Exactly one of `static` and `aws` describes where the addresses come from.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(crates(kube_core = ::kube_core))]
#[kube(
    crates(kube_core = ::kube_core),
    group = "egw.dev",
    version = "v1alpha1",
    kind = "EgressGateway",
    plural = "egressgateways",
    shortname = "egw",
    category = "egw",
    status = "EgressGatewayStatus",
    derive = "PartialEq",
    doc = "EgressGateway: a group of egw gateway instances and the stable external addresses that pod traffic leaves the cluster with.",
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".status.mode",
        description = "Where the external addresses come from: Static or Aws."
    ),
    printcolumn(
        name = "Instances",
        type_ = "integer",
        json_path = ".status.readyInstances",
        description = "Instances with at least one Ready external address."
    ),
    printcolumn(
        name = "Addresses",
        type_ = "integer",
        json_path = ".status.readyAddresses",
        description = "Ready external addresses across all instances."
    ),
    printcolumn(
        name = "MaxNextHops",
        type_ = "integer",
        json_path = ".spec.maxNextHops",
        description = "Most instances one pod's flows spread over; 0 means all."
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube_core::Rule::new("has(self.static) != has(self.aws)").message("set exactly one of `static` and `aws`"))]
#[serde(rename_all = "camelCase")]
pub struct EgressGatewaySpec {
    /// Selects the egw gateway pods (in `namespace`) that are instances of this gateway.
    pub selector: LabelSelector,
    /// Namespace the gateway pods run in. Calico-style `egress.projectcalico.org/namespaceSelector`
    /// annotations are matched against this namespace's labels.
    #[serde(default = "default_gateway_namespace")]
    pub namespace: String,
    /// Fixed external addresses per instance (on-premises, labs). Exclusive with `aws`.
    #[serde(default, rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_pool: Option<StaticPool>,
    /// External addresses from AWS Elastic IPs. Exclusive with `static`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsPool>,
    /// Most instances a single pod's flows are spread over (ECMP next hops). Each pod gets its own
    /// instances, chosen by rendezvous hashing of the pod IP over the Ready instances, so losing an
    /// instance moves only the pods that used it. 0 (the default) uses every Ready instance.
    #[serde(default)]
    pub max_next_hops: u32,
    /// `true` (the default): all flows of one pod leave one instance with the same external
    /// address (RFC 4787 "paired" behaviour). `false`: flows spread over the instance's addresses.
    #[serde(default = "default_true")]
    pub paired_addresses: bool,
    /// How instances are health-checked and drained.
    #[serde(default)]
    pub health: HealthSpec,
}

/// External addresses fixed per instance.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct StaticPool {
    /// The gateway instances and the external addresses each one owns.
    pub instances: Vec<StaticInstance>,
}

/// One gateway instance with fixed external addresses.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct StaticInstance {
    /// Instance name: the gateway pod's name, or any stable name outside Kubernetes.
    #[x_kube(validation = kube_core::Rule::new("self != ''").message("instance name must not be empty"))]
    pub name: String,
    /// gRPC control endpoint of the instance (`host:port`) the controller pushes route tables to.
    pub endpoint: String,
    /// External IPv4 addresses this instance translates pod traffic to.
    pub addresses: Vec<Ipv4Addr>,
}

/// External addresses from AWS Elastic IPs.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(crates(kube_core = ::kube_core))]
#[x_kube(validation = kube_core::Rule::new("(!has(self.subnetId) && !has(self.securityGroupIds)) || (has(self.eniMode) && self.eniMode == 'EniPerGateway')").message("`subnetId` and `securityGroupIds` apply to eniMode EniPerGateway only"))]
#[serde(rename_all = "camelCase")]
pub struct AwsPool {
    /// Which Elastic IPs the gateway uses.
    pub elastic_ips: ElasticIpSource,
    /// How the Elastic IPs are attached to the gateway nodes.
    #[serde(default)]
    pub eni_mode: EniMode,
    /// `EniPerGateway` only: subnet (`subnet-...`) of the ENI egw creates on each gateway node.
    /// Default: the subnet of the node's primary ENI. It must be in the node's availability zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube_core::Rule::new("self.startsWith('subnet-')").message("a subnet ID starts with `subnet-`"))]
    pub subnet_id: Option<String>,
    /// `EniPerGateway` only: security groups (`sg-...`) of the ENI egw creates on each gateway
    /// node. Default: the groups of the node's primary ENI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = kube_core::Rule::new("self.all(id, id.startsWith('sg-'))").message("security group IDs start with `sg-`"))]
    pub security_group_ids: Vec<String>,
    /// NAT-instance pattern: point these VPC route table destinations at the ENI of one healthy
    /// gateway instance (the active one), moving them when it fails. Removing the field gives
    /// the routes back (their previous target is restored, or routes egw created are deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<AwsRoutes>,
}

/// VPC routes egw keeps pointed at the active gateway instance.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct AwsRoutes {
    /// Route tables (`rtb-...`) whose routes egw manages; typically those of the private
    /// subnets whose traffic should leave through the gateway.
    #[x_kube(validation = kube_core::Rule::new("size(self) > 0 && self.all(id, id.startsWith('rtb-'))").message("list at least one route table ID (`rtb-...`)"))]
    pub route_table_ids: Vec<String>,
    /// IPv4 destinations routed to the gateway in every listed table. Default: `0.0.0.0/0`.
    #[serde(default = "AwsRoutes::default_destination_cidrs")]
    #[x_kube(validation = kube_core::Rule::new("size(self) > 0").message("list at least one destination CIDR"))]
    pub destination_cidrs: Vec<String>,
}

impl AwsRoutes {
    fn default_destination_cidrs() -> Vec<String> {
        vec!["0.0.0.0/0".to_owned()]
    }
}

/// Where Elastic IPs come from; set exactly one field.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(crates(kube_core = ::kube_core))]
#[x_kube(validation = kube_core::Rule::new("[has(self.allocationIds), has(self.tags), has(self.allocate)].filter(x, x).size() == 1").message("set exactly one of `allocationIds`, `tags` and `allocate`"))]
#[serde(rename_all = "camelCase")]
pub struct ElasticIpSource {
    /// Adopt these existing Elastic IPs (`eipalloc-...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_ids: Option<Vec<String>>,
    /// Adopt every Elastic IP carrying all of these tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Allocate this many new Elastic IPs (released when the gateway is deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocate: Option<u32>,
}

/// How Elastic IPs reach the gateway instances.
#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EniMode {
    /// Each instance gets a dedicated ENI whose private IPs carry the Elastic IPs.
    EniPerGateway,
    /// Elastic IPs are associated with secondary private IPs on the node's primary ENI.
    #[default]
    SecondaryIp,
}

/// Health checking of gateway instances.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct HealthSpec {
    /// Seconds between health probes of each instance.
    #[serde(default = "HealthSpec::default_probe_interval_seconds")]
    pub probe_interval_seconds: u32,
    /// Consecutive failed probes before an instance stops being Ready.
    #[serde(default = "HealthSpec::default_failure_threshold")]
    pub failure_threshold: u32,
    /// Seconds an instance that stops being Ready keeps its existing flows before its addresses
    /// are handed to other instances.
    #[serde(default = "HealthSpec::default_drain_seconds")]
    pub drain_seconds: u32,
}

impl HealthSpec {
    fn default_probe_interval_seconds() -> u32 {
        2
    }
    fn default_failure_threshold() -> u32 {
        3
    }
    fn default_drain_seconds() -> u32 {
        30
    }
}

impl Default for HealthSpec {
    fn default() -> Self {
        HealthSpec {
            probe_interval_seconds: Self::default_probe_interval_seconds(),
            failure_threshold: Self::default_failure_threshold(),
            drain_seconds: Self::default_drain_seconds(),
        }
    }
}

/// Observed state of an EgressGateway, written by the controller.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct EgressGatewayStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Static` or `Aws`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Instances with at least one Ready external address.
    #[serde(default)]
    pub ready_instances: u32,
    /// Ready external addresses across all instances.
    #[serde(default)]
    pub ready_addresses: u32,
    /// Every known instance and its external addresses.
    #[serde(default)]
    pub instances: Vec<InstanceStatus>,
    /// AWS: the VPC routes egw points at the active instance (`spec.aws.routes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteStatus>,
    /// AWS: the last 10 Elastic IP moves from a failed instance to a healthy one, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failovers: Vec<FailoverStatus>,
    /// `Ready`: at least one instance has a Ready external address. `Degraded`: some instance or
    /// address is not Ready; the reason says which.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One gateway instance as observed.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Instance name (the gateway pod's name).
    pub name: String,
    /// Node the instance runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// gRPC control endpoint (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The instance passes its health checks and accepts route tables.
    #[serde(default)]
    pub ready: bool,
    /// AWS: EC2 instance (`i-...`) of the node the instance runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// AWS: the ENI (`eni-...`) holding the private IPs the instance's Elastic IPs map to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface_id: Option<String>,
    /// External addresses assigned to the instance.
    #[serde(default)]
    pub addresses: Vec<AddressStatus>,
}

/// One VPC route pointed at a gateway instance.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// Route table (`rtb-...`).
    pub route_table_id: String,
    /// Destination of the route.
    pub destination_cidr: String,
    /// ENI (`eni-...`) the route targets.
    pub network_interface_id: String,
    /// Gateway instance (pod) owning that ENI.
    pub instance: String,
}

/// One Elastic IP moved off an instance that stopped being healthy.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct FailoverStatus {
    /// When the controller moved it.
    pub time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// Allocation ID (`eipalloc-...`) of the Elastic IP.
    pub allocation_id: String,
    /// The Elastic IP.
    pub public_ip: Ipv4Addr,
    /// Instance it was taken from.
    pub from_instance: String,
    /// Instance it was moved to.
    pub to_instance: String,
    /// Why it was moved (e.g. `pod not Ready`, `EC2 instance stopping`).
    pub reason: String,
}

/// One external address of an instance.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct AddressStatus {
    /// Address the gateway writes into translated packets (on AWS: the private IP that carries
    /// the Elastic IP).
    pub snat_ip: Ipv4Addr,
    /// Address the outside world sees, when it differs from `snatIp` (AWS Elastic IP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<Ipv4Addr>,
    /// AWS allocation ID of the Elastic IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_id: Option<String>,
    /// The address is attached and usable for translation.
    #[serde(default)]
    pub ready: bool,
}

// ---------------------------------------------------------------------------------------------
// EgressGatewayPolicy
// ---------------------------------------------------------------------------------------------

/// Per-destination choice of egress gateway, referenced by name from the `egw.dev/policy`
/// annotation of a namespace or pod.
///
/// Rules are matched by longest destination prefix, like a routing table; the rule without a
/// `destination` is the default. A destination no rule matches is denied.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(crates(kube_core = ::kube_core))]
#[kube(
    crates(kube_core = ::kube_core),
    group = "egw.dev",
    version = "v1alpha1",
    kind = "EgressGatewayPolicy",
    plural = "egressgatewaypolicies",
    shortname = "egwp",
    category = "egw",
    status = "EgressGatewayPolicyStatus",
    derive = "PartialEq",
    doc = "EgressGatewayPolicy: per-destination choice of egress gateway (or bypass, or deny), by longest prefix match.",
    printcolumn(
        name = "Namespaces",
        type_ = "integer",
        json_path = ".status.namespaces",
        description = "Namespaces with pods using this policy."
    ),
    printcolumn(
        name = "Pods",
        type_ = "integer",
        json_path = ".status.pods",
        description = "Pods using this policy."
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EgressGatewayPolicySpec {
    /// Rules, matched by longest destination prefix; their order does not matter.
    pub rules: Vec<PolicyRule>,
}

/// One destination rule: route through a gateway, bypass gateways, or deny.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(crates(kube_core = ::kube_core))]
#[x_kube(validation = kube_core::Rule::new("has(self.gateway) ? (!has(self.action) || self.action == 'Gateway') : (has(self.action) && self.action != 'Gateway')").message("a rule sets `gateway` (with action Gateway or no action), or action Bypass or Deny"))]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Destinations this rule applies to. Omit it for the default rule (at most one per policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// The gateway to leave through. Required unless `action` is Bypass or Deny.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayReference>,
    /// `Gateway` (implied by `gateway`), `Bypass`: leave without a gateway, or `Deny`: drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<RuleAction>,
    /// Free text for humans; for Deny rules it is part of the reason that denied flows report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Destination match of a rule.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// IPv4 network in CIDR notation without host bits, e.g. `203.0.113.0/24`.
    pub cidr: String,
}

/// Names one EgressGateway, or selects EgressGateways by their labels.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(crates(kube_core = ::kube_core))]
#[x_kube(validation = kube_core::Rule::new("has(self.name) != has(self.selector)").message("set exactly one of `name` and `selector`"))]
#[serde(rename_all = "camelCase")]
pub struct GatewayReference {
    /// Name of an EgressGateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Selects EgressGateways by label; their instances form one set of next hops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Overrides the gateways' `maxNextHops` for this rule (as Calico's rule-level
    /// `maxNextHops`); 0 uses every Ready instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_next_hops: Option<u32>,
}

/// What a rule does with matching flows.
#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    /// Translate through the rule's `gateway`.
    Gateway,
    /// Do not use a gateway: forward unchanged.
    Bypass,
    /// Drop the flow.
    Deny,
}

/// Observed use of an EgressGatewayPolicy, written by the controller.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct EgressGatewayPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Namespaces with pods using this policy.
    #[serde(default)]
    pub namespaces: u32,
    /// Pods using this policy.
    #[serde(default)]
    pub pods: u32,
    /// Up to 10 of those namespaces, sorted.
    #[serde(default)]
    pub sample_namespaces: Vec<String>,
    /// Up to 10 of those pods as `namespace/name`, sorted.
    #[serde(default)]
    pub sample_pods: Vec<String>,
    /// `Ready`: the policy is valid and every gateway it names has a Ready address. `Degraded`:
    /// some rule denies because its gateway is missing or not Ready; the message says which.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
