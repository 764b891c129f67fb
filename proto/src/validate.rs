//! Semantic checks of a route table, shared by the gateway (before it swaps
//! tables) and the controller (before it pushes one).
//!
//! [`validate`] parses the wire form (addresses, CIDRs, actions) and checks
//! what parsing cannot: names are unique and non-empty, every reference
//! resolves, no address is in two pools, prefixes have no host bits set, and
//! no destination or source appears twice. Every problem is reported, each
//! with the path of the offending element.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::v1;
use crate::yaml::{self, Action, RouteTable};

/// One problem of a route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableProblem {
    /// Where, e.g. `policies[via-a].rules[2]`.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for TableProblem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.path, self.problem)
    }
}

/// All problems of an invalid route table (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.problems))]
pub struct InvalidTable {
    /// The problems, in table order.
    pub problems: Vec<TableProblem>,
}

fn render(problems: &[TableProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses and checks a wire-form table, returning its typed form.
pub fn validate(table: &v1::RouteTable) -> Result<RouteTable, InvalidTable> {
    let parsed = RouteTable::try_from(table.clone()).map_err(|error| {
        let (path, problem) = match error {
            yaml::YamlError::Field { field, problem } => (field, problem),
            other => ("table".to_owned(), other.to_string()),
        };
        InvalidTable {
            problems: vec![TableProblem { path, problem }],
        }
    })?;
    check(&parsed)?;
    Ok(parsed)
}

/// Checks a typed table (e.g. one read from YAML).
pub fn check(table: &RouteTable) -> Result<(), InvalidTable> {
    let mut problems = Vec::new();
    let mut problem = |path: String, text: String| {
        problems.push(TableProblem {
            path,
            problem: text,
        })
    };

    let mut pool_names = HashSet::new();
    let mut address_owner: HashMap<Ipv4Addr, &str> = HashMap::new();
    for (index, pool) in table.pools.iter().enumerate() {
        let path = format!("pools[{}]", label(&pool.name, index));
        if pool.name.is_empty() {
            problem(path.clone(), "the pool has no name".into());
        } else if !pool_names.insert(pool.name.as_str()) {
            problem(
                path.clone(),
                format!("pool name {:?} is used twice", pool.name),
            );
        }
        if pool.addresses.is_empty() {
            problem(path.clone(), "the pool has no addresses".into());
        }
        for address in &pool.addresses {
            if let Some(owner) = address_owner.insert(address.snat, &pool.name) {
                problem(
                    path.clone(),
                    format!("address {} is also in pool {owner:?}", address.snat),
                );
            }
        }
    }

    let mut policy_names = HashSet::new();
    for (policy_index, policy) in table.policies.iter().enumerate() {
        let policy_label = label(&policy.name, policy_index);
        if policy.name.is_empty() {
            problem(
                format!("policies[{policy_label}]"),
                "the policy has no name".into(),
            );
        } else if !policy_names.insert(policy.name.as_str()) {
            problem(
                format!("policies[{policy_label}]"),
                format!("policy name {:?} is used twice", policy.name),
            );
        }
        let mut destinations: HashMap<Ipv4Net, usize> = HashMap::new();
        for (rule_index, rule) in policy.rules.iter().enumerate() {
            let path = format!("policies[{policy_label}].rules[{rule_index}]");
            if let Some(text) = host_bits(&rule.destination) {
                problem(path.clone(), text);
            }
            if let Some(first) = destinations.insert(rule.destination, rule_index) {
                problem(
                    path.clone(),
                    format!("destination {} is also rules[{first}]", rule.destination),
                );
            }
            if let Some(text) = unknown_pool(&rule.action, &pool_names) {
                problem(path, text);
            }
        }
    }

    let mut source_cidrs: HashMap<Ipv4Net, usize> = HashMap::new();
    for (index, source) in table.sources.iter().enumerate() {
        let path = format!("sources[{index}]");
        if let Some(text) = host_bits(&source.cidr) {
            problem(path.clone(), text);
        }
        if let Some(first) = source_cidrs.insert(source.cidr, index) {
            problem(
                path.clone(),
                format!("{} is also sources[{first}]", source.cidr),
            );
        }
        if !policy_names.contains(source.policy.as_str()) {
            problem(path, format!("unknown policy {:?}", source.policy));
        }
    }

    if let Some(text) = unknown_pool(&table.default_action, &pool_names) {
        problem("default".into(), text);
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(InvalidTable { problems })
    }
}

/// The problem of an SNAT action naming a pool the table does not define.
fn unknown_pool(action: &Action, pool_names: &HashSet<&str>) -> Option<String> {
    match action {
        Action::Snat { pool } if !pool_names.contains(pool.as_str()) => {
            Some(format!("unknown pool {pool:?}"))
        }
        _ => None,
    }
}

/// A name for messages: the element's name, or its index when it has none.
fn label(name: &str, index: usize) -> String {
    if name.is_empty() {
        index.to_string()
    } else {
        name.to_owned()
    }
}

fn host_bits(prefix: &Ipv4Net) -> Option<String> {
    (prefix.trunc() != *prefix).then(|| {
        format!(
            "{prefix} has host bits set; did you mean {}?",
            prefix.trunc()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RouteTable {
        RouteTable::from_yaml_str(text).unwrap()
    }

    const GOOD: &str = r#"
generation: 3
pools:
  - { name: pool-a, addresses: [198.51.100.1, 198.51.100.2] }
  - { name: pool-b, addresses: [{snat: 10.0.1.5, public: 54.1.2.3}] }
policies:
  - name: via-a
    rules:
      - { destination: 0.0.0.0/0, snat: pool-a }
      - { destination: 203.0.113.128/25, bypass: true }
      - { destination: 192.0.2.0/24, deny: blocked }
  - name: via-b
    rules:
      - { destination: 0.0.0.0/0, snat: pool-b }
sources:
  - { cidr: 10.244.1.10/32, policy: via-a }
  - { cidr: 10.244.2.0/24, policy: via-b }
default: { snat: pool-b }
"#;

    #[test]
    fn a_consistent_table_passes_in_both_forms() {
        check(&parse(GOOD)).unwrap();
        let typed = validate(&parse(GOOD).to_proto()).unwrap();
        assert_eq!(typed, parse(GOOD));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let bad = r#"
pools:
  - { name: pool-a, addresses: [198.51.100.1] }
  - { name: pool-a, addresses: [198.51.100.1] }
  - { name: empty, addresses: [] }
policies:
  - name: via-a
    rules:
      - { destination: 0.0.0.0/0, snat: pool-z }
      - { destination: 0.0.0.0/0, bypass: true }
      - { destination: 192.0.2.7/24, deny: x }
sources:
  - { cidr: 10.244.1.10/32, policy: via-a }
  - { cidr: 10.244.1.10/32, policy: nowhere }
default: { snat: missing }
"#;
        let problems: Vec<String> = check(&parse(bad))
            .unwrap_err()
            .problems
            .iter()
            .map(ToString::to_string)
            .collect();
        let expected = [
            "pools[pool-a]: pool name \"pool-a\" is used twice",
            "pools[pool-a]: address 198.51.100.1 is also in pool \"pool-a\"",
            "pools[empty]: the pool has no addresses",
            "policies[via-a].rules[0]: unknown pool \"pool-z\"",
            "policies[via-a].rules[1]: destination 0.0.0.0/0 is also rules[0]",
            "policies[via-a].rules[2]: 192.0.2.7/24 has host bits set; did you mean 192.0.2.0/24?",
            "sources[1]: 10.244.1.10/32 is also sources[0]",
            "sources[1]: unknown policy \"nowhere\"",
            "default: unknown pool \"missing\"",
        ];
        assert_eq!(problems, expected);
    }

    #[test]
    fn unparsable_wire_values_are_problems_too() {
        let mut wire = parse(GOOD).to_proto();
        wire.sources[1].cidr = "10.244.2.0/33".into();
        let error = validate(&wire).unwrap_err();
        assert_eq!(error.problems[0].path, "sources[1].cidr");

        let mut wire = parse(GOOD).to_proto();
        wire.policies[0].rules[0].action = Some(v1::Action { kind: None });
        let error = validate(&wire).unwrap_err().to_string();
        assert!(
            error.starts_with("policies[0].rules[0].action: "),
            "{error}"
        );
    }
}
