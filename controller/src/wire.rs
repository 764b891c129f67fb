//! The one place where the engine's [`RouteTableSpec`] becomes the wire table
//! (`egw.v1.RouteTable`) the gateways accept.
//!
//! The wire format has no per-policy default action: a policy's `default_action` travels as a
//! last rule for `0.0.0.0/0`. That is the same decision under longest-prefix match, because the
//! engine only applies a policy default when no rule matches, and a `/0` rule matches everything;
//! a policy that already has a `/0` rule never reaches its default, so nothing is appended.

use egw_engine::route::{ActionSpec, RouteTableSpec};
use egw_proto::v1;

/// Description of the `0.0.0.0/0` rule that carries a policy's default action.
pub const POLICY_DEFAULT_DESCRIPTION: &str = "policy default";

const CATCH_ALL: &str = "0.0.0.0/0";

/// Converts an action.
pub fn action_to_wire(action: &ActionSpec) -> v1::Action {
    let kind = match action {
        ActionSpec::Snat { pool } => v1::action::Kind::Snat(v1::SnatAction { pool: pool.clone() }),
        ActionSpec::Bypass => v1::action::Kind::Bypass(v1::BypassAction {}),
        ActionSpec::Deny { reason } => v1::action::Kind::Deny(v1::DenyAction {
            reason: reason.clone(),
        }),
    };
    v1::Action { kind: Some(kind) }
}

/// Converts a whole table, generation included.
pub fn table_to_wire(spec: &RouteTableSpec) -> v1::RouteTable {
    let pools = spec
        .pools
        .iter()
        .map(|pool| v1::Pool {
            name: pool.name.clone(),
            addresses: pool
                .addresses
                .iter()
                .map(|address| v1::PoolAddress {
                    snat_ip: address.to_string(),
                    public_ip: String::new(),
                })
                .collect(),
            pairing: pool.pairing,
        })
        .collect();
    let policies = spec
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
            let has_catch_all = policy
                .rules
                .iter()
                .any(|rule| rule.destination.prefix_len() == 0);
            if let (Some(default), false) = (&policy.default_action, has_catch_all) {
                rules.push(v1::Rule {
                    destination: CATCH_ALL.to_owned(),
                    action: Some(action_to_wire(default)),
                    description: POLICY_DEFAULT_DESCRIPTION.to_owned(),
                });
            }
            v1::Policy {
                name: policy.name.clone(),
                rules,
            }
        })
        .collect();
    let sources = spec
        .sources
        .iter()
        .map(|source| v1::Source {
            cidr: source.cidr.to_string(),
            policy: source.policy.clone(),
        })
        .collect();
    v1::RouteTable {
        generation: spec.generation,
        pools,
        policies,
        sources,
        default_action: Some(action_to_wire(&spec.default_action)),
    }
}
