//! Step 6 of the translation: one route table per instance. Every client's entry is
//! specialised for the instance (SNAT through its pool where it is a next hop, deny otherwise),
//! and the table is compiled as the gateway will; a table the engine would reject is replaced by
//! one that denies everything, with a diagnostic.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use egw_policy::{
    ActionSpec, CompiledRouteTable, PolicySpec, PoolSpec, RouteTableSpec, RuleSpec, SourceSpec,
};
use ipnet::Ipv4Net;

use super::names::{bounded_reason, fnv1a64, quoted_list};
use super::output::{
    cluster_ref, Diagnostic, DiagnosticReason, InstanceKey, InstanceTable, ObjectKind, Severity,
};
use super::resolver::{GatewaySet, Program, Target};
use super::routing::Entry;

/// Deny reason for sources that are not egress clients.
pub const NOT_A_CLIENT_REASON: &str = "source is not an egress client (no egw annotation)";

/// What every instance's table is built from.
pub(super) struct TableInputs<'a> {
    /// Usable addresses per instance.
    pub(super) usable: &'a BTreeMap<InstanceKey, Vec<Ipv4Addr>>,
    pub(super) entries: &'a BTreeMap<Ipv4Addr, Entry>,
    pub(super) programs: &'a [Program],
    pub(super) sets: &'a [GatewaySet],
}

/// One table per instance of `instances` (control endpoint, address pairing), with its public
/// addresses.
pub(super) fn tables(
    instances: BTreeMap<InstanceKey, (Option<String>, bool)>,
    mut public_addresses: BTreeMap<InstanceKey, BTreeMap<Ipv4Addr, Ipv4Addr>>,
    inputs: &TableInputs<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<InstanceKey, InstanceTable> {
    let mut tables = BTreeMap::new();
    for (key, (endpoint, paired)) in instances {
        let addresses = inputs.usable.get(&key).cloned().unwrap_or_default();
        let mut spec = build_table(
            &key,
            addresses,
            paired,
            inputs.entries,
            inputs.programs,
            inputs.sets,
        );
        spec.public_addresses = public_addresses.remove(&key).unwrap_or_default();
        let spec = checked(&key, spec, diagnostics);
        tables.insert(key, InstanceTable { endpoint, spec });
    }
    tables
}

/// `spec` if the engine accepts it, else a table denying everything, with a diagnostic.
fn checked(
    key: &InstanceKey,
    spec: RouteTableSpec,
    diagnostics: &mut Vec<Diagnostic>,
) -> RouteTableSpec {
    match CompiledRouteTable::compile(spec.clone()) {
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
    }
}

/// The table of instance `key`: its pool (named after it) and every client's entry specialised
/// for it.
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
