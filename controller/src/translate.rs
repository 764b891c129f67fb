//! The pure core of the controller: cluster state in, one route table per gateway instance out,
//! plus the diagnostics the watch loop turns into Events and status.
//!
//! # Semantics
//!
//! * **Who is a client.** A pod is an egress client when it, or (if the pod has no egress
//!   annotation) its namespace, carries an egress annotation (see [`crate::annotations`]).
//!   Terminating pods, `Succeeded`/`Failed` pods, `hostNetwork` pods and pods without an IPv4
//!   address are excluded: they get no source entry (a diagnostic says why).
//! * **Program.** A client's intent resolves to a *program*: the rules of its EgressGatewayPolicy
//!   (longest destination prefix wins, the rule without destination is the default, no match is
//!   denied), or — for a gateway annotation — a single default rule "everything through these
//!   gateways".
//! * **Fail closed.** When intent cannot be honoured (policy or gateway not found, invalid
//!   policy, bad or conflicting annotations, no gateway instance with a Ready address, an IP
//!   claimed by several pods), the pod gets a source entry that denies with a human-readable
//!   reason in *every* instance's table. A policy rule whose gateway is missing or not Ready
//!   denies just that rule's destinations, with the reason, and the policy is reported degraded.
//! * **Next hops (`maxNextHops`).** For each pod and each gateway set a rule routes through, the
//!   instances with at least one Ready address are ranked by rendezvous weight
//!   [`instance_weight`]`(pod IP, gateway, instance)`, highest first, ties to the smaller
//!   `(gateway, instance)`; the first `maxNextHops` (all when 0; the smallest non-zero value when
//!   a selector matched several gateways; a policy rule's `gateway.maxNextHops` overrides both)
//!   are the pod's next hops for that set. Nodes spread the
//!   pod's flows over them (ECMP); removing an instance moves only the pods that used it.
//! * **Tables.** Every instance of every gateway gets a table. Its one pool (named after the
//!   instance) holds the instance's Ready addresses. Each client pod has a `/32` source entry.
//!   On instance `I` of gateway `G`, a rule through gateway set `S` SNATs through `I`'s pool when
//!   `I` is one of the pod's next hops for `S`, and otherwise denies (traffic should not arrive
//!   there; if it does, it must not leak). Sources no entry covers are denied
//!   ([`NOT_A_CLIENT_REASON`]).
//! * **Names in tables.** A program's table policy is `policy:NAME` or `gateway:G1,G2`, followed by
//!   `[..]` with one character per gateway set of the program that contains `G`: `L` when `I` is
//!   a next hop, `-` when not. Deny-only entries use `deny:HASH` (FNV-1a of the reason). Names
//!   over 200 bytes are shortened and suffixed with a hash of the full name.
//! * **Determinism.** Everything is sorted; equal snapshots give equal tables, so pushes are
//!   idempotent. `generation` is left at 0 for the pusher to stamp.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use egw_policy::{
    ActionSpec, PolicySpec, PoolSpec, RouteTable, RouteTableSpec, RuleSpec, SourceSpec,
};
use ipnet::Ipv4Net;
use kube::core::Selector;

use crate::annotations::{self, GatewayChoice, Intent};
use crate::crd::RuleAction;
use crate::input::{GatewayInfo, InstanceInfo, NamespaceInfo, PodInfo, PolicyInfo, Snapshot};
use crate::selector;

/// Deny reason for sources that are not egress clients.
pub const NOT_A_CLIENT_REASON: &str = "source is not an egress client (no egw annotation)";
/// Most pods and namespaces listed in a usage sample.
pub const SAMPLE_LIMIT: usize = 10;
/// Longest table policy name before it is shortened with a hash.
const MAX_TABLE_NAME: usize = 200;
/// Longest deny reason the engine accepts.
const MAX_REASON: usize = egw_policy::MAX_DENY_REASON_LEN;

// ---------------------------------------------------------------------------------------------
// Output types
// ---------------------------------------------------------------------------------------------

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

/// Everything [`translate`] produces. All maps are sorted; diagnostics are sorted.
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

// ---------------------------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------------------------

/// FNV-1a, 64 bits: a fixed, platform-independent string hash.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The splitmix64 finalizer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Rendezvous weight of an instance for a pod:
/// `mix64(mix64(u32(pod_ip)) ^ mix64(fnv1a64("gateway/instance")))`. Fixed so that the node
/// side can compute the same next hops; changing it reshuffles every pod.
pub fn instance_weight(pod_ip: Ipv4Addr, instance: &InstanceKey) -> u64 {
    let key = format!("{}/{}", instance.gateway, instance.instance);
    mix64(mix64(u64::from(u32::from(pod_ip))) ^ mix64(fnv1a64(key.as_bytes())))
}

fn bounded_name(base: String) -> String {
    if base.len() <= MAX_TABLE_NAME {
        return base;
    }
    let hash = fnv1a64(base.as_bytes());
    let mut cut = MAX_TABLE_NAME - 17;
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{hash:016x}", &base[..cut])
}

fn bounded_reason(reason: String) -> String {
    if reason.len() <= MAX_REASON {
        return reason;
    }
    let mut cut = MAX_REASON - '…'.len_utf8();
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &reason[..cut])
}

fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Resolution
// ---------------------------------------------------------------------------------------------

/// A set of gateways used together, with the instances that can carry traffic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GatewaySet {
    names: Vec<String>,
    usable: Vec<InstanceKey>,
    /// 0: all.
    max_next_hops: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Index into `Resolver::sets`.
    Gateways(usize),
    Bypass,
    Deny(String),
}

#[derive(Debug, Clone)]
struct Program {
    base_name: String,
    via: ProgramRef,
    rules: Vec<(Ipv4Net, Target, String)>,
    default: Option<Target>,
    /// Distinct gateway sets, in order of first appearance (rules by destination, then default).
    sets: Vec<usize>,
}

struct Resolver<'a> {
    gateways: BTreeMap<&'a str, &'a GatewayInfo>,
    namespaces: BTreeMap<&'a str, &'a NamespaceInfo>,
    sets: Vec<GatewaySet>,
    /// Usable addresses per instance.
    usable: BTreeMap<InstanceKey, Vec<Ipv4Addr>>,
}

impl<'a> Resolver<'a> {
    /// Interns the gateway set `names`; `hops_override` replaces the gateways' `maxNextHops`.
    fn set_index(
        &mut self,
        names: Vec<String>,
        hops_override: Option<u32>,
    ) -> Result<usize, String> {
        let mut usable = Vec::new();
        let mut max_next_hops = 0_usize;
        for name in &names {
            let Some(gateway) = self.gateways.get(name.as_str()) else {
                return Err(format!("gateway `{name}` not found"));
            };
            let hops = usize::try_from(gateway.spec.max_next_hops).unwrap_or(usize::MAX);
            if hops > 0 && (max_next_hops == 0 || hops < max_next_hops) {
                max_next_hops = hops;
            }
            usable.extend(
                self.usable
                    .iter()
                    .filter(|(key, addresses)| key.gateway == *name && !addresses.is_empty())
                    .map(|(key, _)| key.clone()),
            );
        }
        if let Some(hops) = hops_override {
            max_next_hops = usize::try_from(hops).unwrap_or(usize::MAX);
        }
        if usable.is_empty() {
            return Err(if names.len() == 1 {
                format!("gateway `{}` has no Ready external address", names[0])
            } else {
                format!(
                    "gateways {} have no Ready external address",
                    quoted_list(&names)
                )
            });
        }
        let set = GatewaySet {
            names,
            usable,
            max_next_hops,
        };
        Ok(match self.sets.iter().position(|known| *known == set) {
            Some(index) => index,
            None => {
                self.sets.push(set);
                self.sets.len() - 1
            }
        })
    }

    fn matching(&self, selects: impl Fn(&GatewayInfo) -> bool) -> Vec<String> {
        self.gateways
            .values()
            .filter(|gateway| selects(gateway))
            .map(|gateway| gateway.name.clone())
            .collect()
    }

    /// Gateway names an annotation choice selects, for a client in `client_namespace`.
    fn choose(
        &self,
        choice: &GatewayChoice,
        client_namespace: &str,
    ) -> Result<Vec<String>, String> {
        match choice {
            GatewayChoice::Name(name) => {
                if self.gateways.contains_key(name.as_str()) {
                    Ok(vec![name.clone()])
                } else {
                    Err(format!("gateway `{name}` not found"))
                }
            }
            GatewayChoice::Selector { text, selector } => {
                let names = self.matching(|gateway| selector::selects(selector, &gateway.labels));
                if names.is_empty() {
                    Err(format!("no EgressGateway matches selector `{text}`"))
                } else {
                    Ok(names)
                }
            }
            GatewayChoice::Calico {
                text,
                selector,
                namespace_selector,
            } => {
                let names = self.matching(|gateway| {
                    selector::selects(selector, &gateway.labels)
                        && self.namespace_matches(
                            &gateway.spec.namespace,
                            namespace_selector.as_ref(),
                            client_namespace,
                        )
                });
                if names.is_empty() {
                    Err(format!(
                        "no EgressGateway matches Calico selector `{text}` in the selected namespaces"
                    ))
                } else {
                    Ok(names)
                }
            }
        }
    }

    /// Calico's namespace selector over the gateway's namespace; Calico labels every namespace
    /// with `projectcalico.org/name`, and Kubernetes with `kubernetes.io/metadata.name`.
    fn namespace_matches(
        &self,
        gateway_namespace: &str,
        namespace_selector: Option<&Selector>,
        client_namespace: &str,
    ) -> bool {
        let Some(namespace_selector) = namespace_selector else {
            return gateway_namespace == client_namespace;
        };
        let mut labels = self
            .namespaces
            .get(gateway_namespace)
            .map(|namespace| namespace.labels.clone())
            .unwrap_or_default();
        for key in ["projectcalico.org/name", "kubernetes.io/metadata.name"] {
            labels
                .entry(key.to_owned())
                .or_insert_with(|| gateway_namespace.to_owned());
        }
        selector::selects(namespace_selector, &labels)
    }

    /// Compiles a policy into a program, or says why it is invalid. Rule problems (missing or
    /// unready gateways) become Deny targets and are returned beside the program.
    fn compile_policy(&mut self, policy: &PolicyInfo) -> Result<(Program, Vec<String>), String> {
        let mut rules: Vec<(Ipv4Net, Target, String)> = Vec::new();
        let mut default: Option<(usize, Target)> = None;
        let mut problems = Vec::new();
        for (index, rule) in policy.spec.rules.iter().enumerate() {
            let number = index + 1;
            let description = rule.description.clone().unwrap_or_default();
            let action = rule.action.unwrap_or(RuleAction::Gateway);
            let target = match (&rule.gateway, action) {
                (Some(reference), RuleAction::Gateway) => {
                    let names = match (&reference.name, &reference.selector) {
                        (Some(name), None) => Ok(vec![name.clone()]),
                        (None, Some(label_selector)) => {
                            let selector = selector::from_label_selector(label_selector)
                                .map_err(|error| format!("rule #{number}: {error}"))?;
                            let names = self
                                .matching(|gateway| selector::selects(&selector, &gateway.labels));
                            if names.is_empty() {
                                Err(format!(
                                    "no EgressGateway matches the selector of rule #{number}"
                                ))
                            } else {
                                Ok(names)
                            }
                        }
                        _ => {
                            return Err(format!(
                            "rule #{number}: gateway must set exactly one of `name` and `selector`"
                        ))
                        }
                    };
                    match names.and_then(|names| self.set_index(names, reference.max_next_hops)) {
                        Ok(set) => Target::Gateways(set),
                        Err(reason) => {
                            let where_ = match &rule.destination {
                                Some(destination) => destination.cidr.clone(),
                                None => "default".to_owned(),
                            };
                            problems.push(format!("rule #{number} ({where_}): {reason}"));
                            Target::Deny(bounded_reason(format!(
                                "policy `{}` rule #{number}: {reason}",
                                policy.name
                            )))
                        }
                    }
                }
                (None, RuleAction::Bypass) => Target::Bypass,
                (None, RuleAction::Deny) => {
                    Target::Deny(bounded_reason(if description.is_empty() {
                        format!("denied by policy `{}` rule #{number}", policy.name)
                    } else {
                        format!(
                            "denied by policy `{}` rule #{number}: {description}",
                            policy.name
                        )
                    }))
                }
                (Some(_), other) => {
                    return Err(format!(
                        "rule #{number} sets a gateway and action {other:?}; use one or the other"
                    ))
                }
                (None, RuleAction::Gateway) => {
                    return Err(format!(
                        "rule #{number} has no gateway; set `gateway`, or action Bypass or Deny"
                    ))
                }
            };
            match &rule.destination {
                None => {
                    if let Some((first, _)) = default {
                        return Err(format!(
                            "rules #{first} and #{number} both lack a destination; only one default rule is allowed"
                        ));
                    }
                    default = Some((number, target));
                }
                Some(destination) => {
                    let cidr: Ipv4Net = destination.cidr.trim().parse().map_err(|_| {
                        format!(
                            "rule #{number}: destination `{}` is not an IPv4 CIDR",
                            destination.cidr
                        )
                    })?;
                    if cidr.trunc() != cidr {
                        return Err(format!(
                            "rule #{number}: destination {cidr} has host bits set; did you mean {}?",
                            cidr.trunc()
                        ));
                    }
                    if let Some(first) = policy.spec.rules[..index].iter().position(|earlier| {
                        earlier
                            .destination
                            .as_ref()
                            .and_then(|earlier| earlier.cidr.trim().parse::<Ipv4Net>().ok())
                            == Some(cidr)
                    }) {
                        return Err(format!(
                            "rule #{number}: destination {cidr} duplicates rule #{}",
                            first + 1
                        ));
                    }
                    rules.push((cidr, target, description));
                }
            }
        }
        rules.sort_by_key(|(cidr, _, _)| *cidr);
        if policy.spec.rules.is_empty() {
            problems.push("policy has no rules; every destination is denied".to_owned());
        }
        let default = default.map(|(_, target)| target);
        let mut program = Program {
            base_name: bounded_name(format!("policy:{}", policy.name)),
            via: ProgramRef::Policy(policy.name.clone()),
            rules,
            default,
            sets: Vec::new(),
        };
        program.sets = program_sets(&program);
        Ok((program, problems))
    }
}

fn program_sets(program: &Program) -> Vec<usize> {
    let mut sets = Vec::new();
    for target in program
        .rules
        .iter()
        .map(|(_, target, _)| target)
        .chain(program.default.as_ref())
    {
        if let Target::Gateways(set) = target {
            if !sets.contains(set) {
                sets.push(*set);
            }
        }
    }
    sets
}

/// The instances of `set` a pod uses, best first.
fn next_hops(pod_ip: Ipv4Addr, set: &GatewaySet) -> Vec<InstanceKey> {
    let mut ranked: Vec<(u64, &InstanceKey)> = set
        .usable
        .iter()
        .map(|key| (instance_weight(pod_ip, key), key))
        .collect();
    ranked.sort_by(|(weight_a, key_a), (weight_b, key_b)| {
        weight_b.cmp(weight_a).then_with(|| key_a.cmp(key_b))
    });
    let limit = if set.max_next_hops == 0 {
        ranked.len()
    } else {
        set.max_next_hops
    };
    ranked
        .into_iter()
        .take(limit)
        .map(|(_, key)| key.clone())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Translation
// ---------------------------------------------------------------------------------------------

/// A client pod's source entry, before it is specialised per instance.
enum Entry {
    Deny(String),
    Program {
        program: usize,
        /// Next hops per gateway set index.
        hops: BTreeMap<usize, Vec<InstanceKey>>,
    },
}

struct Client<'a> {
    pod: &'a PodInfo,
    from: IntentSource,
    /// `Err(reason)`: denied.
    resolved: Result<usize, String>,
}

#[derive(Default)]
struct UsageBuilder {
    pods: BTreeSet<String>,
    namespaces: BTreeSet<String>,
}

impl UsageBuilder {
    fn add(&mut self, pod: &PodInfo) {
        self.pods.insert(pod.key());
        self.namespaces.insert(pod.namespace.clone());
    }

    fn finish(self) -> Usage {
        Usage {
            pods: self.pods.len(),
            namespaces: self.namespaces.len(),
            sample_pods: self.pods.into_iter().take(SAMPLE_LIMIT).collect(),
            sample_namespaces: self.namespaces.into_iter().take(SAMPLE_LIMIT).collect(),
        }
    }
}

fn pod_ref(pod: &PodInfo) -> ObjectRef {
    ObjectRef {
        kind: ObjectKind::Pod,
        namespace: Some(pod.namespace.clone()),
        name: pod.name.clone(),
    }
}

fn cluster_ref(kind: ObjectKind, name: &str) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: None,
        name: name.to_owned(),
    }
}

/// Translates a snapshot of the cluster into per-instance route tables and diagnostics.
/// Pure and deterministic.
pub fn translate(snapshot: &Snapshot) -> Translation {
    let mut output = Translation::default();
    let mut diagnostics: Vec<Diagnostic> = Vec::new();

    // Gateways and their instances.
    let mut gateways: BTreeMap<&str, &GatewayInfo> = BTreeMap::new();
    for gateway in &snapshot.gateways {
        gateways.entry(gateway.name.as_str()).or_insert(gateway);
    }
    let mut usable: BTreeMap<InstanceKey, Vec<Ipv4Addr>> = BTreeMap::new();
    let mut instance_endpoints: BTreeMap<InstanceKey, (Option<String>, bool)> = BTreeMap::new();
    // Usable address → the address the outside world sees it as (AWS Elastic IP).
    let mut public_addresses: BTreeMap<InstanceKey, BTreeMap<Ipv4Addr, Ipv4Addr>> = BTreeMap::new();
    // Control endpoint → the instance that has it: a gateway process serves one route table, so
    // an endpoint claimed twice (two EgressGateways selecting the same gateway pods) is used by
    // the first claimant only, instead of two pushers overwriting each other's table.
    let mut endpoint_owners: BTreeMap<String, InstanceKey> = BTreeMap::new();
    for gateway in gateways.values() {
        let mut report = GatewayReport::default();
        let mut instances: Vec<&InstanceInfo> = gateway.instances.iter().collect();
        instances.sort_by(|a, b| a.name.cmp(&b.name));
        let object = cluster_ref(ObjectKind::EgressGateway, &gateway.name);
        for (position, instance) in instances.iter().enumerate() {
            if position > 0 && instances[position - 1].name == instance.name {
                let message = format!(
                    "instance `{}` is listed more than once; only the first is used",
                    instance.name
                );
                report.problems.push(message.clone());
                diagnostics.push(Diagnostic {
                    object: object.clone(),
                    severity: Severity::Error,
                    reason: DiagnosticReason::DuplicateInstance,
                    message,
                });
                continue;
            }
            let key = InstanceKey {
                gateway: gateway.name.clone(),
                instance: instance.name.clone(),
            };
            if let Some(endpoint) = instance.endpoint.as_deref() {
                // `h:p`, `https://h:p` and `https://h:p/` are one gateway; unparsable endpoints
                // are compared as written (the pusher reports them).
                let normalized = crate::endpoint::GatewayEndpoint::parse(endpoint)
                    .map(|parsed| parsed.to_string())
                    .unwrap_or_else(|_| endpoint.trim().to_owned());
                if let Some(owner) = endpoint_owners.get(&normalized) {
                    let message = format!(
                        "instance `{}` has endpoint {endpoint}, which instance `{}` of gateway \
                         `{}` already has; a gateway process serves one EgressGateway, so this \
                         instance is not used",
                        instance.name, owner.instance, owner.gateway
                    );
                    report.problems.push(message.clone());
                    report.instances.push(InstanceReport {
                        name: instance.name.clone(),
                        ready: false,
                        usable_addresses: Vec::new(),
                        next_hop_for_pods: 0,
                    });
                    diagnostics.push(Diagnostic {
                        object: object.clone(),
                        severity: Severity::Error,
                        reason: DiagnosticReason::SharedEndpoint,
                        message,
                    });
                    continue;
                }
                endpoint_owners.insert(normalized, key.clone());
            }
            let addresses = instance.usable_addresses();
            if addresses.is_empty() {
                let message = if instance.ready {
                    format!("instance `{}` has no Ready external address", instance.name)
                } else {
                    format!("instance `{}` is not Ready", instance.name)
                };
                report.problems.push(message.clone());
                diagnostics.push(Diagnostic {
                    object: object.clone(),
                    severity: Severity::Warning,
                    reason: DiagnosticReason::InstanceNotReady,
                    message,
                });
            } else {
                report.ready_instances += 1;
                report.ready_addresses += addresses.len();
            }
            report.instances.push(InstanceReport {
                name: instance.name.clone(),
                ready: instance.ready,
                usable_addresses: addresses.clone(),
                next_hop_for_pods: 0,
            });
            instance_endpoints.insert(
                key.clone(),
                (instance.endpoint.clone(), gateway.spec.paired_addresses),
            );
            let publics: BTreeMap<Ipv4Addr, Ipv4Addr> = instance
                .addresses
                .iter()
                .filter(|address| addresses.contains(&address.snat_ip))
                .filter_map(|address| Some((address.snat_ip, address.public_ip?)))
                .collect();
            if !publics.is_empty() {
                public_addresses.insert(key.clone(), publics);
            }
            usable.insert(key, addresses);
        }
        if report.ready_instances == 0 {
            let message = if gateway.instances.is_empty() {
                "gateway has no instances; pods using it are denied".to_owned()
            } else {
                "no instance has a Ready external address; pods using the gateway are denied"
                    .to_owned()
            };
            report.problems.push(message.clone());
            diagnostics.push(Diagnostic {
                object,
                severity: Severity::Error,
                reason: DiagnosticReason::GatewayNotReady,
                message,
            });
        }
        output.gateways.insert(gateway.name.clone(), report);
    }

    let mut resolver = Resolver {
        gateways,
        namespaces: snapshot
            .namespaces
            .iter()
            .map(|namespace| (namespace.name.as_str(), namespace))
            .collect(),
        sets: Vec::new(),
        usable,
    };

    // Policies.
    let mut programs: Vec<Program> = Vec::new();
    let mut policy_programs: BTreeMap<String, Result<usize, String>> = BTreeMap::new();
    let mut policy_usage: BTreeMap<String, UsageBuilder> = BTreeMap::new();
    let mut policies: Vec<&PolicyInfo> = snapshot.policies.iter().collect();
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    for policy in policies {
        if policy_programs.contains_key(&policy.name) {
            continue;
        }
        let object = cluster_ref(ObjectKind::EgressGatewayPolicy, &policy.name);
        let mut report = PolicyReport::default();
        let compiled = match resolver.compile_policy(policy) {
            Ok((program, problems)) => {
                for problem in &problems {
                    diagnostics.push(Diagnostic {
                        object: object.clone(),
                        severity: Severity::Warning,
                        reason: DiagnosticReason::RuleDenies,
                        message: problem.clone(),
                    });
                }
                report.problems = problems;
                programs.push(program);
                Ok(programs.len() - 1)
            }
            Err(why) => {
                diagnostics.push(Diagnostic {
                    object,
                    severity: Severity::Error,
                    reason: DiagnosticReason::PolicyInvalid,
                    message: why.clone(),
                });
                report.invalid = Some(why.clone());
                Err(bounded_reason(format!(
                    "policy `{}` is invalid: {why}",
                    policy.name
                )))
            }
        };
        policy_programs.insert(policy.name.clone(), compiled);
        policy_usage.insert(policy.name.clone(), UsageBuilder::default());
        output.policies.insert(policy.name.clone(), report);
    }

    // Clients.
    let mut gateway_programs: BTreeMap<usize, usize> = BTreeMap::new();
    let mut namespace_intents: BTreeMap<&str, Result<Option<Intent>, String>> = BTreeMap::new();
    for namespace in resolver.namespaces.values() {
        let intent = annotations::parse(&namespace.annotations).map_err(|error| error.to_string());
        let object = ObjectRef {
            kind: ObjectKind::Namespace,
            namespace: None,
            name: namespace.name.clone(),
        };
        match &intent {
            Err(error) => diagnostics.push(Diagnostic {
                object,
                severity: Severity::Error,
                reason: DiagnosticReason::AnnotationInvalid,
                message: error.clone(),
            }),
            Ok(Some(parsed)) => {
                for (key, why) in &parsed.ignored {
                    diagnostics.push(Diagnostic {
                        object: object.clone(),
                        severity: Severity::Warning,
                        reason: DiagnosticReason::AnnotationIgnored,
                        message: format!("annotation `{key}` is ignored: {why}"),
                    });
                }
            }
            Ok(None) => {}
        }
        namespace_intents.insert(namespace.name.as_str(), intent);
    }

    let mut pods: Vec<&PodInfo> = snapshot.pods.iter().collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    pods.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);

    let mut clients: Vec<Client> = Vec::new();
    let mut claims: BTreeMap<Ipv4Addr, Vec<String>> = BTreeMap::new();
    for pod in pods {
        let excluded = if pod.terminating {
            Some(Exclusion::Terminating)
        } else if matches!(pod.phase.as_deref(), Some("Succeeded" | "Failed")) {
            Some(Exclusion::Finished)
        } else if pod.host_network {
            Some(Exclusion::HostNetwork)
        } else if pod.ip.is_none() {
            Some(Exclusion::NoIpv4Address)
        } else {
            None
        };
        if let (None, Some(ip)) = (excluded, pod.ip) {
            claims.entry(ip).or_default().push(pod.key());
        }

        let pod_intent = annotations::parse(&pod.annotations).map_err(|error| error.to_string());
        let (from, intent) = match pod_intent {
            Ok(None) => {
                let namespace_intent = match namespace_intents.get(pod.namespace.as_str()) {
                    Some(intent) => intent.clone(),
                    None => {
                        if excluded.is_none() {
                            diagnostics.push(Diagnostic {
                                object: pod_ref(pod),
                                severity: Severity::Warning,
                                reason: DiagnosticReason::NamespaceNotFound,
                                message: format!(
                                    "namespace `{}` is unknown; its egress annotations cannot be applied",
                                    pod.namespace
                                ),
                            });
                        }
                        Ok(None)
                    }
                };
                (IntentSource::Namespace, namespace_intent)
            }
            other => (IntentSource::Pod, other),
        };
        let intent = match intent {
            Ok(None) => continue,
            Ok(Some(intent)) => Ok(intent),
            Err(error) => Err(error),
        };
        if let Some(why) = excluded {
            if why == Exclusion::HostNetwork && from == IntentSource::Pod {
                diagnostics.push(Diagnostic {
                    object: pod_ref(pod),
                    severity: Severity::Warning,
                    reason: DiagnosticReason::HostNetworkPod,
                    message: "pod uses the host network: egress annotations do not apply and it leaves with the node's IP".to_owned(),
                });
            }
            output
                .pods
                .insert(pod.key(), PodOutcome::Excluded { from, why });
            continue;
        }
        if from == IntentSource::Pod {
            if let Ok(intent) = &intent {
                for (key, why) in &intent.ignored {
                    diagnostics.push(Diagnostic {
                        object: pod_ref(pod),
                        severity: Severity::Warning,
                        reason: DiagnosticReason::AnnotationIgnored,
                        message: format!("annotation `{key}` is ignored: {why}"),
                    });
                }
            }
        }

        let resolved = intent.and_then(|intent| {
            if let Some(policy) = &intent.policy {
                if let Some(usage) = policy_usage.get_mut(policy) {
                    usage.add(pod);
                }
                return match policy_programs.get(policy) {
                    Some(result) => result.clone(),
                    None => Err(format!("policy `{policy}` not found")),
                };
            }
            let mut chosen: Option<(Vec<String>, &GatewayChoice)> = None;
            for choice in &intent.gateways {
                let names = resolver.choose(choice, &pod.namespace)?;
                if let Some((earlier, _)) = &chosen {
                    if *earlier != names {
                        return Err(format!(
                            "annotations `{}` and `{}` select different gateways ({} vs {})",
                            annotations::GATEWAY,
                            annotations::CALICO_SELECTOR,
                            quoted_list(earlier),
                            quoted_list(&names)
                        ));
                    }
                } else {
                    chosen = Some((names, choice));
                }
            }
            let Some((names, _)) = chosen else {
                return Err("egress annotations name neither a policy nor a gateway".to_owned());
            };
            let set = resolver.set_index(names.clone(), None)?;
            Ok(*gateway_programs.entry(set).or_insert_with(|| {
                let program = Program {
                    base_name: bounded_name(format!("gateway:{}", names.join(","))),
                    via: ProgramRef::Gateways(names),
                    rules: Vec::new(),
                    default: Some(Target::Gateways(set)),
                    sets: vec![set],
                };
                programs.push(program);
                programs.len() - 1
            }))
        });
        clients.push(Client {
            pod,
            from,
            resolved: resolved.map_err(bounded_reason),
        });
    }

    // Entries per client, with IP conflicts denied.
    let mut entries: BTreeMap<Ipv4Addr, Entry> = BTreeMap::new();
    let mut gateway_usage: BTreeMap<String, UsageBuilder> = BTreeMap::new();
    let mut hop_counts: BTreeMap<InstanceKey, usize> = BTreeMap::new();
    for client in &clients {
        let Some(ip) = client.pod.ip else { continue };
        let claimants = claims.get(&ip).map(Vec::as_slice).unwrap_or_default();
        let resolved = if claimants.len() > 1 {
            Err(bounded_reason(format!(
                "IP {ip} is claimed by {} pods ({})",
                claimants.len(),
                claimants.join(", ")
            )))
        } else {
            client.resolved.clone()
        };
        let outcome = match resolved {
            Err(reason) => {
                diagnostics.push(Diagnostic {
                    object: pod_ref(client.pod),
                    severity: Severity::Error,
                    reason: DiagnosticReason::PodDenied,
                    message: reason.clone(),
                });
                entries.insert(ip, Entry::Deny(reason.clone()));
                PodOutcome::Denied {
                    ip,
                    from: client.from,
                    reason,
                }
            }
            Ok(program_index) => {
                let program = &programs[program_index];
                let mut hops = BTreeMap::new();
                let mut listed = Vec::new();
                for &set in &program.sets {
                    let gateway_set = &resolver.sets[set];
                    let instances = next_hops(ip, gateway_set);
                    for name in &gateway_set.names {
                        gateway_usage
                            .entry(name.clone())
                            .or_default()
                            .add(client.pod);
                    }
                    for instance in &instances {
                        *hop_counts.entry(instance.clone()).or_default() += 1;
                    }
                    listed.push(NextHops {
                        gateways: gateway_set.names.clone(),
                        instances: instances.clone(),
                    });
                    hops.insert(set, instances);
                }
                entries.insert(
                    ip,
                    Entry::Program {
                        program: program_index,
                        hops,
                    },
                );
                PodOutcome::Routed {
                    ip,
                    from: client.from,
                    via: program.via.clone(),
                    next_hops: listed,
                }
            }
        };
        output.pods.insert(client.pod.key(), outcome);
    }

    for (name, usage) in policy_usage {
        if let Some(report) = output.policies.get_mut(&name) {
            report.usage = usage.finish();
        }
    }
    for (name, usage) in gateway_usage {
        if let Some(report) = output.gateways.get_mut(&name) {
            report.usage = usage.finish();
        }
    }
    for (name, report) in output.gateways.iter_mut() {
        for instance in &mut report.instances {
            instance.next_hop_for_pods = hop_counts
                .get(&InstanceKey {
                    gateway: name.clone(),
                    instance: instance.name.clone(),
                })
                .copied()
                .unwrap_or(0);
        }
    }

    // One table per instance.
    for (key, (endpoint, paired)) in instance_endpoints {
        let addresses = resolver.usable.get(&key).cloned().unwrap_or_default();
        let mut spec = build_table(&key, addresses, paired, &entries, &programs, &resolver.sets);
        spec.public_addresses = public_addresses.remove(&key).unwrap_or_default();
        let spec = match RouteTable::compile(spec.clone()) {
            Ok(_) => spec,
            Err(error) => {
                let reason = bounded_reason(format!(
                    "controller produced an invalid route table: {error}"
                ));
                diagnostics.push(Diagnostic {
                    object: cluster_ref(ObjectKind::EgressGateway, &key.gateway),
                    severity: Severity::Error,
                    reason: DiagnosticReason::TableRejected,
                    message: format!("instance `{}`: {reason}", key.instance),
                });
                RouteTableSpec {
                    public_addresses: Default::default(),
                    generation: 0,
                    pools: Vec::new(),
                    policies: Vec::new(),
                    sources: Vec::new(),
                    default_action: ActionSpec::Deny { reason },
                }
            }
        };
        output.tables.insert(key, InstanceTable { endpoint, spec });
    }

    diagnostics.sort();
    diagnostics.dedup();
    output.diagnostics = diagnostics;
    output
}

fn build_table(
    key: &InstanceKey,
    addresses: Vec<Ipv4Addr>,
    paired: bool,
    entries: &BTreeMap<Ipv4Addr, Entry>,
    programs: &[Program],
    sets: &[GatewaySet],
) -> RouteTableSpec {
    let pools = if addresses.is_empty() {
        Vec::new()
    } else {
        vec![PoolSpec {
            name: key.instance.clone(),
            addresses,
            pairing: paired,
        }]
    };
    let mut policies: BTreeMap<String, PolicySpec> = BTreeMap::new();
    let mut sources = Vec::with_capacity(entries.len());
    for (&ip, entry) in entries {
        let (name, policy) = match entry {
            Entry::Deny(reason) => {
                let name = format!("deny:{:016x}", fnv1a64(reason.as_bytes()));
                let policy = PolicySpec {
                    name: name.clone(),
                    rules: Vec::new(),
                    default_action: Some(ActionSpec::Deny {
                        reason: reason.clone(),
                    }),
                };
                (name, policy)
            }
            Entry::Program { program, hops } => specialise(key, &programs[*program], hops, sets),
        };
        policies.entry(name.clone()).or_insert(policy);
        sources.push(SourceSpec {
            cidr: Ipv4Net::from(ip),
            policy: name,
        });
    }
    RouteTableSpec {
        public_addresses: Default::default(),
        generation: 0,
        pools,
        policies: policies.into_values().collect(),
        sources,
        default_action: ActionSpec::Deny {
            reason: NOT_A_CLIENT_REASON.to_owned(),
        },
    }
}

/// The program as instance `key` must run it for a pod with next hops `hops`.
fn specialise(
    key: &InstanceKey,
    program: &Program,
    hops: &BTreeMap<usize, Vec<InstanceKey>>,
    sets: &[GatewaySet],
) -> (String, PolicySpec) {
    let action = |target: &Target| -> ActionSpec {
        match target {
            Target::Bypass => ActionSpec::Bypass,
            Target::Deny(reason) => ActionSpec::Deny {
                reason: reason.clone(),
            },
            Target::Gateways(set) => {
                let is_next_hop = hops.get(set).is_some_and(|hops| hops.contains(key));
                let names = &sets[*set].names;
                if is_next_hop {
                    ActionSpec::Snat {
                        pool: key.instance.clone(),
                    }
                } else if names.contains(&key.gateway) {
                    ActionSpec::Deny {
                        reason: bounded_reason(format!(
                            "instance `{}` is not a next hop of this source for gateway `{}`",
                            key.instance, key.gateway
                        )),
                    }
                } else {
                    ActionSpec::Deny {
                        reason: bounded_reason(format!(
                            "destination is routed through {}, not gateway `{}`",
                            quoted_list(names),
                            key.gateway
                        )),
                    }
                }
            }
        }
    };
    let marks: String = program
        .sets
        .iter()
        .filter(|set| sets[**set].names.contains(&key.gateway))
        .map(|set| {
            if hops.get(set).is_some_and(|hops| hops.contains(key)) {
                'L'
            } else {
                '-'
            }
        })
        .collect();
    let name = if marks.is_empty() {
        program.base_name.clone()
    } else {
        format!("{}[{marks}]", program.base_name)
    };
    let policy = PolicySpec {
        name: name.clone(),
        rules: program
            .rules
            .iter()
            .map(|(destination, target, description)| RuleSpec {
                destination: *destination,
                action: action(target),
                description: description.clone(),
            })
            .collect(),
        default_action: program.default.as_ref().map(action),
    };
    (name, policy)
}
