//! What the translation produces: per-instance tables, pod outcomes, reports of policies and
//! gateways, and diagnostics (the types the pusher, status and Events read).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use egw_policy::RouteTableSpec;

use crate::input::PodInfo;

/// Identifies one gateway instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceKey {
    pub gateway: String,
    pub instance: String,
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.gateway, self.instance)
    }
}

/// The route table for one instance and where to push it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceTable {
    pub endpoint: Option<String>,
    pub spec: RouteTableSpec,
}

/// Where a pod's intent came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IntentSource {
    Pod,
    Namespace,
}

/// What a client pod's intent resolved to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProgramRef {
    Policy(String),
    Gateways(Vec<String>),
}

/// The next hops of a pod for one gateway set its program routes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHops {
    pub gateways: Vec<String>,
    /// Best first.
    pub instances: Vec<InstanceKey>,
}

/// Why a pod with egress intent has no source entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusion {
    Terminating,
    Finished,
    HostNetwork,
    NoIpv4Address,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Exclusion::Terminating => "pod is terminating",
            Exclusion::Finished => "pod has finished (Succeeded or Failed)",
            Exclusion::HostNetwork => "pod uses the host network and leaves with the node's IP",
            Exclusion::NoIpv4Address => "pod has no IPv4 address yet",
        })
    }
}

/// The outcome for one pod with egress intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodOutcome {
    Routed {
        ip: Ipv4Addr,
        from: IntentSource,
        via: ProgramRef,
        next_hops: Vec<NextHops>,
    },
    Denied {
        ip: Ipv4Addr,
        from: IntentSource,
        reason: String,
    },
    Excluded {
        from: IntentSource,
        why: Exclusion,
    },
}

/// Who uses an object, for status: counts plus a bounded sorted sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub pods: usize,
    pub namespaces: usize,
    pub sample_pods: Vec<String>,
    pub sample_namespaces: Vec<String>,
}

/// Use and problems of one EgressGatewayPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyReport {
    /// `Some(reason)` when the policy is invalid and every pod using it is denied.
    pub invalid: Option<String>,
    /// Rules that deny because their gateway is missing or not Ready.
    pub problems: Vec<String>,
    pub usage: Usage,
}

/// One instance as the translation saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceReport {
    pub name: String,
    pub ready: bool,
    pub usable_addresses: Vec<Ipv4Addr>,
    /// Pods for which this instance is a next hop.
    pub next_hop_for_pods: usize,
}

/// Use and problems of one EgressGateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayReport {
    pub instances: Vec<InstanceReport>,
    pub ready_instances: usize,
    pub ready_addresses: usize,
    pub problems: Vec<String>,
    pub usage: Usage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjectKind {
    Pod,
    Namespace,
    EgressGateway,
    EgressGatewayPolicy,
}

/// The object a diagnostic is about (the Event's `involvedObject`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: ObjectKind,
    pub namespace: Option<String>,
    pub name: String,
}

/// Machine-readable diagnostic reasons; `Display` gives the CamelCase Event reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiagnosticReason {
    PodDenied,
    AnnotationIgnored,
    AnnotationInvalid,
    HostNetworkPod,
    NamespaceNotFound,
    PolicyInvalid,
    RuleDenies,
    GatewayNotReady,
    InstanceNotReady,
    DuplicateInstance,
    /// Two instances (of one or two gateways) have the same control endpoint: one gateway
    /// process serves one table, so only the first is used.
    SharedEndpoint,
    TableRejected,
}

impl fmt::Display for DiagnosticReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub object: ObjectRef,
    pub severity: Severity,
    pub reason: DiagnosticReason,
    pub message: String,
}

/// Everything [`translate`](super::translate) produces. All maps are sorted; diagnostics are sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Translation {
    pub tables: BTreeMap<InstanceKey, InstanceTable>,
    /// Pods with egress intent, by `namespace/name`.
    pub pods: BTreeMap<String, PodOutcome>,
    /// Every policy of the snapshot, by name.
    pub policies: BTreeMap<String, PolicyReport>,
    /// Every gateway of the snapshot, by name.
    pub gateways: BTreeMap<String, GatewayReport>,
    pub diagnostics: Vec<Diagnostic>,
}

/// The Event object of a pod.
pub(super) fn pod_ref(pod: &PodInfo) -> ObjectRef {
    ObjectRef {
        kind: ObjectKind::Pod,
        namespace: Some(pod.namespace.clone()),
        name: pod.name.clone(),
    }
}

/// The Event object of a cluster-scoped object (gateway, policy, namespace).
pub(super) fn cluster_ref(kind: ObjectKind, name: &str) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: None,
        name: name.to_owned(),
    }
}
