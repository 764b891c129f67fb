//! Wire route tables (`egw.v1.RouteTable`) to the engine's [`RouteTableSpec`] and back: the one
//! conversion the gateway (applying a pushed table), the controller (pushing one) and the lab use.
//!
//! Only syntax is checked here (addresses, CIDRs, a missing action); names, duplicates and limits
//! are checked by [`egw_policy::CompiledRouteTable::compile`], whose errors name the item too.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::v1;
use crate::yaml::DEFAULT_DENY_REASON;
use egw_policy::RouteTableSpec;
use egw_policy::{ActionSpec, PolicySpec, PoolSpec, RuleSpec, SourceSpec};
use ipnet::Ipv4Net;

/// A field of a wire table that does not convert; `field` is a path such as
/// `policies[via-a].rules[2].destination`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConvertError {
    pub field: String,
    pub problem: String,
}

fn error(field: String, problem: impl Into<String>) -> ConvertError {
    ConvertError {
        field,
        problem: problem.into(),
    }
}

fn parse_ip(field: String, text: &str) -> Result<Ipv4Addr, ConvertError> {
    text.trim()
        .parse()
        .map_err(|_| error(field, format!("{text:?} is not an IPv4 address")))
}

/// `a.b.c.d/n`, or a bare address as a /32 — the YAML form's rule, with the field path added.
fn parse_cidr(field: String, text: &str) -> Result<Ipv4Net, ConvertError> {
    crate::yaml::parse_cidr(text.trim()).map_err(|problem| error(field, problem))
}

fn action_from_wire(
    field: String,
    action: Option<&v1::Action>,
) -> Result<ActionSpec, ConvertError> {
    use v1::action::Kind;
    match action.and_then(|action| action.kind.as_ref()) {
        Some(Kind::Snat(snat)) => Ok(ActionSpec::Snat {
            pool: snat.pool.clone(),
        }),
        Some(Kind::Bypass(_)) => Ok(ActionSpec::Bypass),
        Some(Kind::Deny(deny)) => Ok(ActionSpec::Deny {
            reason: deny.reason.clone(),
        }),
        None => Err(error(field, "an action (snat, bypass or deny) is required")),
    }
}

fn label(name: &str, index: usize) -> String {
    if name.is_empty() {
        index.to_string()
    } else {
        name.to_owned()
    }
}

/// Converts a wire table; errors name the offending field.
pub fn spec_from_wire(table: &v1::RouteTable) -> Result<RouteTableSpec, ConvertError> {
    let mut public_addresses = BTreeMap::new();
    let pools = table
        .pools
        .iter()
        .enumerate()
        .map(|(index, pool)| {
            let pool_label = label(&pool.name, index);
            let addresses = pool
                .addresses
                .iter()
                .enumerate()
                .map(|(position, address)| {
                    let field = format!("pools[{pool_label}].addresses[{position}]");
                    let snat = parse_ip(format!("{field}.snat_ip"), &address.snat_ip)?;
                    if !address.public_ip.is_empty() {
                        let public = parse_ip(format!("{field}.public_ip"), &address.public_ip)?;
                        if let Some(other) = public_addresses.insert(snat, public) {
                            if other != public {
                                return Err(error(
                                    format!("{field}.public_ip"),
                                    format!(
                                        "{snat} is given public addresses {other} and {public}"
                                    ),
                                ));
                            }
                        }
                    }
                    Ok(snat)
                })
                .collect::<Result<_, _>>()?;
            Ok(PoolSpec {
                name: pool.name.clone(),
                addresses,
                pairing: pool.pairing,
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    let policies = table
        .policies
        .iter()
        .enumerate()
        .map(|(index, policy)| {
            let policy_label = label(&policy.name, index);
            let rules = policy
                .rules
                .iter()
                .enumerate()
                .map(|(position, rule)| {
                    let field = format!("policies[{policy_label}].rules[{position}]");
                    Ok(RuleSpec {
                        destination: parse_cidr(format!("{field}.destination"), &rule.destination)?,
                        action: action_from_wire(format!("{field}.action"), rule.action.as_ref())?,
                        description: rule.description.clone(),
                    })
                })
                .collect::<Result<_, ConvertError>>()?;
            Ok(PolicySpec {
                name: policy.name.clone(),
                rules,
                default_action: None,
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    let sources = table
        .sources
        .iter()
        .enumerate()
        .map(|(position, source)| {
            Ok(SourceSpec {
                cidr: parse_cidr(format!("sources[{position}].cidr"), &source.cidr)?,
                policy: source.policy.clone(),
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    let default_action = match &table.default_action {
        None => ActionSpec::Deny {
            reason: DEFAULT_DENY_REASON.to_owned(),
        },
        Some(action) => action_from_wire("default_action".to_owned(), Some(action))?,
    };
    Ok(RouteTableSpec {
        public_addresses,
        generation: table.generation,
        pools,
        policies,
        sources,
        default_action,
    })
}

fn action_to_wire(action: &ActionSpec) -> v1::Action {
    use v1::action::Kind;
    let kind = match action {
        ActionSpec::Snat { pool } => Kind::Snat(v1::SnatAction { pool: pool.clone() }),
        ActionSpec::Bypass => Kind::Bypass(v1::BypassAction {}),
        ActionSpec::Deny { reason } => Kind::Deny(v1::DenyAction {
            reason: reason.clone(),
        }),
    };
    v1::Action { kind: Some(kind) }
}

/// Converts and compiles a wire table: what every receiver of a table runs. The error names
/// the offending field (conversion) or item (`CompiledRouteTable::compile`'s validation).
pub fn compile(table: &v1::RouteTable) -> Result<egw_policy::CompiledRouteTable, String> {
    let spec = spec_from_wire(table).map_err(|error| error.to_string())?;
    egw_policy::CompiledRouteTable::compile(spec).map_err(|error| error.to_string())
}

/// The wire form of a spec. A policy default action has no wire form: a policy's default becomes a
/// trailing `0.0.0.0/0` rule unless the policy already has one.
pub fn spec_to_wire(spec: &RouteTableSpec) -> v1::RouteTable {
    let everything = Ipv4Net::default();
    v1::RouteTable {
        generation: spec.generation,
        pools: spec
            .pools
            .iter()
            .map(|pool| v1::Pool {
                name: pool.name.clone(),
                addresses: pool
                    .addresses
                    .iter()
                    .map(|address| v1::PoolAddress {
                        snat_ip: address.to_string(),
                        public_ip: spec
                            .public_addresses
                            .get(address)
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                    })
                    .collect(),
                pairing: pool.pairing,
            })
            .collect(),
        policies: spec
            .policies
            .iter()
            .map(|policy| {
                let mut rules: Vec<v1::Rule> = policy
                    .rules
                    .iter()
                    .map(|rule| v1::Rule {
                        destination: rule.destination.to_string(),
                        action: Some(action_to_wire(&rule.action)),
                        description: rule.description.clone(),
                    })
                    .collect();
                if let Some(default) = &policy.default_action {
                    if !policy
                        .rules
                        .iter()
                        .any(|rule| rule.destination == everything)
                    {
                        rules.push(v1::Rule {
                            destination: everything.to_string(),
                            action: Some(action_to_wire(default)),
                            description: "policy default".to_owned(),
                        });
                    }
                }
                v1::Policy {
                    name: policy.name.clone(),
                    rules,
                }
            })
            .collect(),
        sources: spec
            .sources
            .iter()
            .map(|source| v1::Source {
                cidr: source.cidr.to_string(),
                policy: source.policy.clone(),
            })
            .collect(),
        default_action: Some(action_to_wire(&spec.default_action)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egw_policy::CompiledRouteTable;
    use egw_policy::Decision;

    const TABLE: &str = r#"
generation: 7
pools:
  - name: pool-a
    addresses: [198.51.100.1, {snat: 10.0.1.5, public: 54.1.2.3}]
policies:
  - name: via-a
    rules:
      - { destination: 0.0.0.0/0, snat: pool-a, description: "default egress" }
      - { destination: 203.0.113.128/25, bypass: true }
      - { destination: 192.0.2.0/24, deny: "partner blocked" }
sources:
  - { cidr: 10.244.1.10/32, policy: via-a }
"#;

    fn wire() -> v1::RouteTable {
        crate::yaml::RouteTableDocument::from_yaml_str(TABLE)
            .unwrap()
            .to_proto()
    }

    #[test]
    fn converts_a_yaml_table_and_compiles_it() {
        let spec = spec_from_wire(&wire()).unwrap();
        assert_eq!(spec.generation, 7);
        assert_eq!(
            spec.pools[0].addresses,
            vec![Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(10, 0, 1, 5)]
        );
        assert!(spec.pools[0].pairing);
        assert_eq!(spec.policies[0].rules.len(), 3);
        assert_eq!(
            spec.policies[0].rules[2].action,
            ActionSpec::Deny {
                reason: "partner blocked".into()
            }
        );
        assert_eq!(
            spec.default_action,
            ActionSpec::Deny {
                reason: DEFAULT_DENY_REASON.into()
            }
        );
        let table = CompiledRouteTable::compile(spec).unwrap();
        let pod = Ipv4Addr::new(10, 244, 1, 10);
        assert!(matches!(
            table.lookup(pod, Ipv4Addr::new(8, 8, 8, 8)),
            Decision::Snat(_)
        ));
        assert_eq!(
            table.lookup(pod, Ipv4Addr::new(203, 0, 113, 200)),
            Decision::Bypass
        );
        assert!(matches!(
            table.lookup(Ipv4Addr::new(10, 244, 1, 11), Ipv4Addr::new(8, 8, 8, 8)),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn round_trips_through_the_wire_form() {
        let spec = spec_from_wire(&wire()).unwrap();
        let back = spec_from_wire(&spec_to_wire(&spec)).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn public_addresses_travel_with_their_pool_address() {
        let spec = spec_from_wire(&wire()).unwrap();
        assert_eq!(
            spec.public_addresses,
            BTreeMap::from([(Ipv4Addr::new(10, 0, 1, 5), Ipv4Addr::new(54, 1, 2, 3))])
        );
        let table = CompiledRouteTable::compile(spec.clone()).unwrap();
        assert_eq!(
            table.public_address(Ipv4Addr::new(10, 0, 1, 5)),
            Some(Ipv4Addr::new(54, 1, 2, 3))
        );
        assert_eq!(table.public_address(Ipv4Addr::new(198, 51, 100, 1)), None);
        let wire = spec_to_wire(&spec);
        assert_eq!(wire.pools[0].addresses[1].public_ip, "54.1.2.3");
        assert_eq!(wire.pools[0].addresses[0].public_ip, "");
    }

    #[test]
    fn one_pool_address_with_two_public_addresses_is_rejected() {
        let mut wire = wire();
        let mut second = wire.pools[0].clone();
        second.name = "pool-b".into();
        second.addresses[1].public_ip = "54.9.9.9".into();
        wire.pools.push(second);
        let error = spec_from_wire(&wire).unwrap_err();
        assert_eq!(error.field, "pools[pool-b].addresses[1].public_ip");
        assert!(error.problem.contains("54.1.2.3"), "{error}");
    }

    #[test]
    fn policy_default_becomes_a_catch_all_rule() {
        let mut spec = spec_from_wire(&wire()).unwrap();
        spec.policies[0].rules.remove(0);
        spec.policies[0].default_action = Some(ActionSpec::Bypass);
        let wire = spec_to_wire(&spec);
        let last = wire.policies[0].rules.last().unwrap();
        assert_eq!(last.destination, "0.0.0.0/0");
        let back = spec_from_wire(&wire).unwrap();
        let original = CompiledRouteTable::compile(spec).unwrap();
        let converted = CompiledRouteTable::compile(back).unwrap();
        let pod = Ipv4Addr::new(10, 244, 1, 10);
        for dst in [[8, 8, 8, 8], [192, 0, 2, 1], [203, 0, 113, 129]] {
            let dst = Ipv4Addr::from(dst);
            assert_eq!(
                format!("{:?}", original.lookup(pod, dst)),
                format!("{:?}", converted.lookup(pod, dst))
            );
        }
    }

    #[test]
    fn errors_name_the_field() {
        let mut table = wire();
        table.pools[0].addresses[1].snat_ip = "10.0.1".into();
        assert_eq!(
            spec_from_wire(&table).unwrap_err().field,
            "pools[pool-a].addresses[1].snat_ip"
        );

        let mut table = wire();
        table.policies[0].rules[2].destination = "192.0.2.0/33".into();
        assert_eq!(
            spec_from_wire(&table).unwrap_err().field,
            "policies[via-a].rules[2].destination"
        );

        let mut table = wire();
        table.policies[0].rules[1].action = None;
        let error = spec_from_wire(&table).unwrap_err();
        assert_eq!(error.field, "policies[via-a].rules[1].action");
        assert!(error.to_string().contains("required"));

        let mut table = wire();
        table.sources[0].cidr = "pod".into();
        assert_eq!(spec_from_wire(&table).unwrap_err().field, "sources[0].cidr");

        let mut table = wire();
        table.default_action = Some(v1::Action { kind: None });
        assert_eq!(spec_from_wire(&table).unwrap_err().field, "default_action");
    }

    #[test]
    fn bare_addresses_are_host_routes() {
        let mut table = wire();
        table.sources[0].cidr = "10.244.1.10".into();
        let spec = spec_from_wire(&table).unwrap();
        assert_eq!(spec.sources[0].cidr, "10.244.1.10/32".parse().unwrap());
    }
}
