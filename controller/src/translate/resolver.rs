//! Resolution of intents into programs: gateway sets (the instances that can carry traffic),
//! annotation choices and policies compiled into programs, and a pod's next hops in a set.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kube::core::Selector;

use super::names::{bounded_name, bounded_reason, instance_weight, quoted_list};
use super::output::{InstanceKey, ProgramRef};
use crate::annotations::GatewayChoice;
use crate::crd::{Destination, GatewayReference, PolicyRule, RuleAction};
use crate::input::{GatewayInfo, NamespaceInfo, PolicyInfo};
use crate::selector;

/// A set of gateways used together, with the instances that can carry traffic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct GatewaySet {
    pub(super) names: Vec<String>,
    pub(super) usable: Vec<InstanceKey>,
    /// 0: all.
    pub(super) max_next_hops: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// Index into `Resolver::sets`.
    Gateways(usize),
    Bypass,
    Deny(String),
}

#[derive(Debug, Clone)]
pub(super) struct Program {
    pub(super) base_name: String,
    pub(super) via: ProgramRef,
    pub(super) rules: Vec<(Ipv4Net, Target, String)>,
    pub(super) default: Option<Target>,
    /// Distinct gateway sets, in order of first appearance (rules by destination, then default).
    pub(super) sets: Vec<usize>,
}

pub(super) struct Resolver<'a> {
    pub(super) gateways: BTreeMap<&'a str, &'a GatewayInfo>,
    pub(super) namespaces: BTreeMap<&'a str, &'a NamespaceInfo>,
    pub(super) sets: Vec<GatewaySet>,
    /// Usable addresses per instance.
    pub(super) usable: BTreeMap<InstanceKey, Vec<Ipv4Addr>>,
}

impl<'a> Resolver<'a> {
    /// A resolver over the snapshot's gateways (first of each name) and namespaces, with the
    /// usable addresses of every instance.
    pub(super) fn new(
        gateways: BTreeMap<&'a str, &'a GatewayInfo>,
        namespaces: &'a [NamespaceInfo],
        usable: BTreeMap<InstanceKey, Vec<Ipv4Addr>>,
    ) -> Resolver<'a> {
        Resolver {
            gateways,
            namespaces: namespaces
                .iter()
                .map(|namespace| (namespace.name.as_str(), namespace))
                .collect(),
            sets: Vec::new(),
            usable,
        }
    }

    /// Interns the gateway set `names`; `hops_override` replaces the gateways' `maxNextHops`.
    pub(super) fn set_index(
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
    pub(super) fn choose(
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
    pub(super) fn compile_policy(
        &mut self,
        policy: &PolicyInfo,
    ) -> Result<(Program, Vec<String>), String> {
        let mut rules: Vec<(Ipv4Net, Target, String)> = Vec::new();
        let mut default: Option<(usize, Target)> = None;
        let mut problems = Vec::new();
        for (index, rule) in policy.spec.rules.iter().enumerate() {
            let number = index + 1;
            let description = rule.description.clone().unwrap_or_default();
            // The target first: it interns the rule's gateway set even when the destination
            // then makes the policy invalid, which fixes the set numbering.
            let target = self.rule_target(policy, number, rule, &description, &mut problems)?;
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
                    let cidr = rule_destination(&policy.spec.rules[..index], number, destination)?;
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

    /// What rule `number` of `policy` does: `Err` when the rule makes the policy invalid; a
    /// gateway that is missing or not Ready gives a Deny target and a problem.
    fn rule_target(
        &mut self,
        policy: &PolicyInfo,
        number: usize,
        rule: &PolicyRule,
        description: &str,
        problems: &mut Vec<String>,
    ) -> Result<Target, String> {
        let action = rule.action.unwrap_or(RuleAction::Gateway);
        Ok(match (&rule.gateway, action) {
            (Some(reference), RuleAction::Gateway) => {
                let names = self.rule_gateways(reference, number)?;
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
            (None, RuleAction::Deny) => Target::Deny(bounded_reason(if description.is_empty() {
                format!("denied by policy `{}` rule #{number}", policy.name)
            } else {
                format!(
                    "denied by policy `{}` rule #{number}: {description}",
                    policy.name
                )
            })),
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
        })
    }

    /// The gateways rule `number` names or selects. The outer `Err` makes the policy invalid;
    /// the inner one (no gateway matches) only makes the rule deny.
    fn rule_gateways(
        &self,
        reference: &GatewayReference,
        number: usize,
    ) -> Result<Result<Vec<String>, String>, String> {
        match (&reference.name, &reference.selector) {
            (Some(name), None) => Ok(Ok(vec![name.clone()])),
            (None, Some(label_selector)) => {
                let selector = selector::from_label_selector(label_selector)
                    .map_err(|error| format!("rule #{number}: {error}"))?;
                let names = self.matching(|gateway| selector::selects(&selector, &gateway.labels));
                Ok(if names.is_empty() {
                    Err(format!(
                        "no EgressGateway matches the selector of rule #{number}"
                    ))
                } else {
                    Ok(names)
                })
            }
            _ => Err(format!(
                "rule #{number}: gateway must set exactly one of `name` and `selector`"
            )),
        }
    }
}

/// The destination of rule `number`: an IPv4 network without host bits that none of the
/// `earlier` rules lists, or why the policy is invalid.
fn rule_destination(
    earlier: &[PolicyRule],
    number: usize,
    destination: &Destination,
) -> Result<Ipv4Net, String> {
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
    if let Some(first) = earlier.iter().position(|earlier| {
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
    Ok(cidr)
}

/// The distinct gateway sets a program routes through, in order of first appearance.
pub(super) fn program_sets(program: &Program) -> Vec<usize> {
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
pub(super) fn next_hops(pod_ip: Ipv4Addr, set: &GatewaySet) -> Vec<InstanceKey> {
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
