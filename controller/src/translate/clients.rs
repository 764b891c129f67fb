//! Step 3 of the translation: which pods are egress clients and what their intent (from the
//! pod's annotations, else its namespace's) resolves to: a program, or why the pod is denied.
//! Excluded pods (terminating, finished, host network, no IPv4 address) get an outcome and no
//! source entry.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::names::{bounded_name, bounded_reason, quoted_list};
use super::output::{
    pod_ref, Diagnostic, DiagnosticReason, Exclusion, IntentSource, ObjectKind, ObjectRef,
    PodOutcome, ProgramRef, Severity,
};
use super::policies::Policies;
use super::resolver::{Program, Resolver, Target};
use crate::annotations::{self, GatewayChoice, Intent};
use crate::input::{PodInfo, Snapshot};

/// A pod with egress intent and what it resolved to.
pub(super) struct Client<'a> {
    pub(super) pod: &'a PodInfo,
    pub(super) from: IntentSource,
    /// Index into the programs, or `Err(reason)`: denied.
    pub(super) resolved: Result<usize, String>,
}

/// The clients of a snapshot.
#[derive(Default)]
pub(super) struct Clients<'a> {
    /// Pods with egress intent that are not excluded, sorted by `namespace/name`.
    pub(super) clients: Vec<Client<'a>>,
    /// IP → the pods (`namespace/name`) that have it, excluded pods left out: an IP claimed
    /// twice is denied.
    pub(super) claims: BTreeMap<Ipv4Addr, Vec<String>>,
    /// Outcomes of excluded pods with egress intent, by `namespace/name`.
    pub(super) excluded: BTreeMap<String, PodOutcome>,
}

/// Finds the clients of `snapshot` and resolves their intents; programs for gateway
/// annotations are appended to `policies.programs`, policy use is counted in `policies.usage`.
pub(super) fn clients<'a>(
    snapshot: &'a Snapshot,
    resolver: &mut Resolver<'a>,
    policies: &mut Policies,
    diagnostics: &mut Vec<Diagnostic>,
) -> Clients<'a> {
    let namespace_intents = namespace_intents(resolver, diagnostics);
    let mut pods: Vec<&PodInfo> = snapshot.pods.iter().collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    pods.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);

    let mut output = Clients::default();
    // Gateway set → the program "everything through this set", one per set.
    let mut gateway_programs: BTreeMap<usize, usize> = BTreeMap::new();
    for pod in pods {
        let excluded = exclusion(pod);
        if let (None, Some(ip)) = (excluded, pod.ip) {
            output.claims.entry(ip).or_default().push(pod.key());
        }
        let (from, intent) = pod_intent(pod, excluded, &namespace_intents, diagnostics);
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
                .excluded
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
        let resolved = intent
            .and_then(|intent| resolve(&intent, pod, resolver, policies, &mut gateway_programs));
        output.clients.push(Client {
            pod,
            from,
            resolved: resolved.map_err(bounded_reason),
        });
    }
    output
}

/// Every namespace's egress intent, with diagnostics for invalid and ignored annotations.
fn namespace_intents<'a>(
    resolver: &Resolver<'a>,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<&'a str, Result<Option<Intent>, String>> {
    let mut intents = BTreeMap::new();
    for &namespace in resolver.namespaces.values() {
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
        intents.insert(namespace.name.as_str(), intent);
    }
    intents
}

/// Why a pod gets no source entry whatever its intent, if it does not.
fn exclusion(pod: &PodInfo) -> Option<Exclusion> {
    if pod.terminating {
        Some(Exclusion::Terminating)
    } else if matches!(pod.phase.as_deref(), Some("Succeeded" | "Failed")) {
        Some(Exclusion::Finished)
    } else if pod.host_network {
        Some(Exclusion::HostNetwork)
    } else if pod.ip.is_none() {
        Some(Exclusion::NoIpv4Address)
    } else {
        None
    }
}

/// The pod's intent: its own annotations, else its namespace's.
fn pod_intent(
    pod: &PodInfo,
    excluded: Option<Exclusion>,
    namespace_intents: &BTreeMap<&str, Result<Option<Intent>, String>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> (IntentSource, Result<Option<Intent>, String>) {
    let pod_intent = annotations::parse(&pod.annotations).map_err(|error| error.to_string());
    match pod_intent {
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
    }
}

/// The program a client's intent resolves to: its policy's, or the one for the gateways its
/// annotations choose (created on first use).
fn resolve(
    intent: &Intent,
    pod: &PodInfo,
    resolver: &mut Resolver<'_>,
    policies: &mut Policies,
    gateway_programs: &mut BTreeMap<usize, usize>,
) -> Result<usize, String> {
    if let Some(policy) = &intent.policy {
        if let Some(usage) = policies.usage.get_mut(policy) {
            usage.add(pod);
        }
        return match policies.compiled.get(policy) {
            Some(result) => result.clone(),
            None => Err(format!("policy `{policy}` not found")),
        };
    }
    let names = chosen_gateways(intent, pod, resolver)?;
    let set = resolver.set_index(names.clone(), None)?;
    let programs = &mut policies.programs;
    Ok(*gateway_programs.entry(set).or_insert_with(|| {
        programs.push(Program {
            base_name: bounded_name(format!("gateway:{}", names.join(","))),
            via: ProgramRef::Gateways(names),
            rules: Vec::new(),
            default: Some(Target::Gateways(set)),
            sets: vec![set],
        });
        programs.len() - 1
    }))
}

/// The gateways a client's gateway annotations choose; they must agree.
fn chosen_gateways(
    intent: &Intent,
    pod: &PodInfo,
    resolver: &Resolver<'_>,
) -> Result<Vec<String>, String> {
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
    match chosen {
        Some((names, _)) => Ok(names),
        None => Err("egress annotations name neither a policy nor a gateway".to_owned()),
    }
}
