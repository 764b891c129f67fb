//! Step 4 of the translation: each client's source entry (deny, or its program with its next
//! hops per gateway set), with IPs claimed by several pods denied; the pod outcomes, and who
//! uses which gateway and instance.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::clients::{Client, Clients};
use super::names::bounded_reason;
use super::output::{
    pod_ref, Diagnostic, DiagnosticReason, InstanceKey, NextHops, PodOutcome, Severity,
};
use super::resolver::{next_hops, GatewaySet, Program};
use super::usage::UsageBuilder;

/// A client pod's source entry, before it is specialised per instance.
pub(super) enum Entry {
    Deny(String),
    Program {
        program: usize,
        /// Next hops per gateway set index.
        hops: BTreeMap<usize, Vec<InstanceKey>>,
    },
}

/// The clients' entries and what they use.
#[derive(Default)]
pub(super) struct Routing {
    /// Source entry per client IP.
    pub(super) entries: BTreeMap<Ipv4Addr, Entry>,
    /// Outcome per client, by `namespace/name`.
    pub(super) pods: BTreeMap<String, PodOutcome>,
    /// Who routes through each gateway.
    pub(super) gateway_usage: BTreeMap<String, UsageBuilder>,
    /// Pods per next-hop instance.
    pub(super) hop_counts: BTreeMap<InstanceKey, usize>,
}

/// Gives every client with an IP its entry and outcome.
pub(super) fn route(
    clients: &Clients<'_>,
    programs: &[Program],
    sets: &[GatewaySet],
    diagnostics: &mut Vec<Diagnostic>,
) -> Routing {
    let mut output = Routing::default();
    for client in &clients.clients {
        let Some(ip) = client.pod.ip else { continue };
        let claimants = clients
            .claims
            .get(&ip)
            .map(Vec::as_slice)
            .unwrap_or_default();
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
                output.entries.insert(ip, Entry::Deny(reason.clone()));
                PodOutcome::Denied {
                    ip,
                    from: client.from,
                    reason,
                }
            }
            Ok(program_index) => output.route_program(client, ip, program_index, programs, sets),
        };
        output.pods.insert(client.pod.key(), outcome);
    }
    output
}

impl Routing {
    /// Enters a client routed by program `program_index`: its next hops in every gateway set
    /// of the program.
    fn route_program(
        &mut self,
        client: &Client<'_>,
        ip: Ipv4Addr,
        program_index: usize,
        programs: &[Program],
        sets: &[GatewaySet],
    ) -> PodOutcome {
        let program = &programs[program_index];
        let mut hops = BTreeMap::new();
        let mut listed = Vec::new();
        for &set in &program.sets {
            let gateway_set = &sets[set];
            let instances = next_hops(ip, gateway_set);
            for name in &gateway_set.names {
                self.gateway_usage
                    .entry(name.clone())
                    .or_default()
                    .add(client.pod);
            }
            for instance in &instances {
                *self.hop_counts.entry(instance.clone()).or_default() += 1;
            }
            listed.push(NextHops {
                gateways: gateway_set.names.clone(),
                instances: instances.clone(),
            });
            hops.insert(set, instances);
        }
        self.entries.insert(
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
}
