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
//!
//! # Steps
//!
//! [`translate`] runs them in this order, one module each (`resolver`, `names`, `usage` and
//! `output` are the pieces they share):
//!
//! 1. `gateways`: the gateways and their instances (usable addresses, endpoints, reports).
//! 2. `policies`: every policy compiled into a program (`resolver` interns gateway sets).
//! 3. `clients`: which pods are clients, and what their intent resolves to.
//! 4. `routing`: each client's source entry and next hops, IP conflicts denied.
//! 5. Usage and next-hop counts into the policy and gateway reports (`fill_reports`).
//! 6. `tables`: one route table per instance, checked by compiling it.
//! 7. Diagnostics sorted and deduplicated.

mod clients;
mod gateways;
mod names;
mod output;
mod policies;
mod resolver;
mod routing;
mod tables;
mod usage;

use std::collections::BTreeMap;

pub use self::names::{fnv1a64, instance_weight};
pub use self::output::{
    Diagnostic, DiagnosticReason, Exclusion, GatewayReport, InstanceKey, InstanceReport,
    InstanceTable, IntentSource, NextHops, ObjectKind, ObjectRef, PodOutcome, PolicyReport,
    ProgramRef, Severity, Translation, Usage,
};
pub use self::tables::NOT_A_CLIENT_REASON;
pub use self::usage::SAMPLE_LIMIT;

use self::gateways::Gateways;
use self::resolver::Resolver;
use self::tables::TableInputs;
use self::usage::UsageBuilder;
use crate::input::Snapshot;

/// Translates a snapshot of the cluster into per-instance route tables and diagnostics.
/// Pure and deterministic.
pub fn translate(snapshot: &Snapshot) -> Translation {
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    let Gateways {
        by_name,
        usable,
        instances,
        public_addresses,
        reports: mut gateway_reports,
        ..
    } = gateways::gateways(snapshot, &mut diagnostics);
    let mut resolver = Resolver::new(by_name, &snapshot.namespaces, usable);
    let mut policies = policies::policies(snapshot, &mut resolver, &mut diagnostics);
    let clients = clients::clients(snapshot, &mut resolver, &mut policies, &mut diagnostics);
    let routing = routing::route(
        &clients,
        &policies.programs,
        &resolver.sets,
        &mut diagnostics,
    );
    fill_reports(
        &mut policies.reports,
        policies.usage,
        &mut gateway_reports,
        routing.gateway_usage,
        &routing.hop_counts,
    );
    let inputs = TableInputs {
        usable: &resolver.usable,
        entries: &routing.entries,
        programs: &policies.programs,
        sets: &resolver.sets,
    };
    let tables = tables::tables(instances, public_addresses, &inputs, &mut diagnostics);
    let mut pods = clients.excluded;
    pods.extend(routing.pods);
    diagnostics.sort();
    diagnostics.dedup();
    Translation {
        tables,
        pods,
        policies: policies.reports,
        gateways: gateway_reports,
        diagnostics,
    }
}

/// Puts who uses each policy and gateway, and for how many pods each instance is a next hop,
/// into their reports.
fn fill_reports(
    policy_reports: &mut BTreeMap<String, PolicyReport>,
    policy_usage: BTreeMap<String, UsageBuilder>,
    gateway_reports: &mut BTreeMap<String, GatewayReport>,
    gateway_usage: BTreeMap<String, UsageBuilder>,
    hop_counts: &BTreeMap<InstanceKey, usize>,
) {
    for (name, usage) in policy_usage {
        if let Some(report) = policy_reports.get_mut(&name) {
            report.usage = usage.finish();
        }
    }
    for (name, usage) in gateway_usage {
        if let Some(report) = gateway_reports.get_mut(&name) {
            report.usage = usage.finish();
        }
    }
    for (name, report) in gateway_reports.iter_mut() {
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
}
