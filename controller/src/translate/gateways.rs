//! Step 1 of the translation: the gateways and their instances. Each instance's usable
//! addresses, control endpoint and public addresses are collected for the later steps, and each
//! gateway gets its report (duplicate instances, shared endpoints, instances without a Ready
//! address, gateways that cannot carry traffic).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::output::{
    cluster_ref, Diagnostic, DiagnosticReason, GatewayReport, InstanceKey, InstanceReport,
    ObjectKind, ObjectRef, Severity,
};
use crate::endpoint::GatewayEndpoint;
use crate::input::{GatewayInfo, InstanceInfo, Snapshot};

/// The gateways of a snapshot, as the later steps need them.
#[derive(Default)]
pub(super) struct Gateways<'a> {
    /// The first gateway of each name.
    pub(super) by_name: BTreeMap<&'a str, &'a GatewayInfo>,
    /// Usable addresses per instance.
    pub(super) usable: BTreeMap<InstanceKey, Vec<Ipv4Addr>>,
    /// Every instance that gets a table: its control endpoint and whether its gateway pairs
    /// addresses.
    pub(super) instances: BTreeMap<InstanceKey, (Option<String>, bool)>,
    /// Usable address → the address the outside world sees it as (AWS Elastic IP).
    pub(super) public_addresses: BTreeMap<InstanceKey, BTreeMap<Ipv4Addr, Ipv4Addr>>,
    /// Every gateway's report, by name (usage and next-hop counts are filled in later).
    pub(super) reports: BTreeMap<String, GatewayReport>,
    /// Control endpoint → the instance that has it: a gateway process serves one route table,
    /// so an endpoint claimed twice (two EgressGateways selecting the same gateway pods) is used
    /// by the first claimant only, instead of two pushers overwriting each other's table.
    endpoint_owners: BTreeMap<String, InstanceKey>,
}

/// Collects the gateways of `snapshot` and their instances.
pub(super) fn gateways<'a>(
    snapshot: &'a Snapshot,
    diagnostics: &mut Vec<Diagnostic>,
) -> Gateways<'a> {
    let mut state = Gateways::default();
    for gateway in &snapshot.gateways {
        state
            .by_name
            .entry(gateway.name.as_str())
            .or_insert(gateway);
    }
    let by_name: Vec<&GatewayInfo> = state.by_name.values().copied().collect();
    for gateway in by_name {
        let report = state.add_gateway(gateway, diagnostics);
        state.reports.insert(gateway.name.clone(), report);
    }
    state
}

impl Gateways<'_> {
    /// Adds the instances of `gateway` (sorted by name, the first of each name) and reports on
    /// it.
    fn add_gateway(
        &mut self,
        gateway: &GatewayInfo,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> GatewayReport {
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
            self.add_instance(gateway, instance, &object, &mut report, diagnostics);
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
        report
    }

    /// Adds one instance of `gateway`, unless its endpoint is taken.
    fn add_instance(
        &mut self,
        gateway: &GatewayInfo,
        instance: &InstanceInfo,
        object: &ObjectRef,
        report: &mut GatewayReport,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        let key = InstanceKey {
            gateway: gateway.name.clone(),
            instance: instance.name.clone(),
        };
        if let Some(message) = self.claim_endpoint(instance, &key) {
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
            return;
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
        self.instances.insert(
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
            self.public_addresses.insert(key.clone(), publics);
        }
        self.usable.insert(key, addresses);
    }

    /// Claims the instance's control endpoint for `key`; `Some(problem)` when another instance
    /// already has it.
    fn claim_endpoint(&mut self, instance: &InstanceInfo, key: &InstanceKey) -> Option<String> {
        let endpoint = instance.endpoint.as_deref()?;
        // `h:p`, `https://h:p` and `https://h:p/` are one gateway; unparsable endpoints are
        // compared as written (the pusher reports them).
        let normalized = GatewayEndpoint::parse(endpoint)
            .map(|parsed| parsed.to_string())
            .unwrap_or_else(|_| endpoint.trim().to_owned());
        if let Some(owner) = self.endpoint_owners.get(&normalized) {
            return Some(format!(
                "instance `{}` has endpoint {endpoint}, which instance `{}` of gateway `{}` \
                 already has; a gateway process serves one EgressGateway, so this instance is \
                 not used",
                instance.name, owner.instance, owner.gateway
            ));
        }
        self.endpoint_owners.insert(normalized, key.clone());
        None
    }
}
