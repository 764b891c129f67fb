//! The YAML form of a route table, written by humans.
//!
//! The same document is accepted by `egwctl routes apply -f table.yaml` and by
//! the gateway configuration for its initial table:
//!
//! ```yaml
//! generation: 1
//! pools:
//!   - name: pool-a
//!     addresses: [198.51.100.1]          # or [{snat: 10.0.1.5, public: 54.1.2.3}]
//!     pairing: true                       # default true
//! policies:
//!   - name: via-a
//!     rules:
//!       - { destination: 0.0.0.0/0, snat: pool-a, description: "default egress" }
//!       - { destination: 203.0.113.128/25, bypass: true }
//!       - { destination: 192.0.2.0/24, deny: "partner blocked" }
//! sources:
//!   - { cidr: 10.244.1.10/32, policy: via-a }
//! default: { deny: "no policy for source" }   # the default when omitted
//! ```
//!
//! Unknown fields are errors. Addresses and CIDRs are checked for syntax here;
//! semantic checks (unknown pool or policy names, duplicates) belong to the
//! gateway, which validates every table it is given.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::v1;

/// The deny reason used when a table does not say what to do with unknown sources.
pub const DEFAULT_DENY_REASON: &str = "no policy for source";

/// Errors turning YAML text or a wire message into a [`RouteTableDocument`].
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// The text is not a valid route table document.
    #[error("invalid route table YAML: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// A wire message holds a value the YAML form cannot express.
    #[error("route table field {field}: {problem}")]
    Field {
        /// Path of the offending field, e.g. `policies[0].rules[2].destination`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// A complete route table. See the module documentation for the shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTableDocument {
    /// Version chosen by the writer; the gateway refuses older generations.
    #[serde(default)]
    pub generation: u64,
    /// Named sets of external addresses.
    #[serde(default)]
    pub pools: Vec<Pool>,
    /// Named rule lists.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// Pod addresses and the policy each uses.
    #[serde(default)]
    pub sources: Vec<Source>,
    /// The action for sources matched by no entry of `sources`.
    #[serde(default = "default_action", rename = "default")]
    pub default_action: Action,
}

/// A named set of external addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Unique name.
    pub name: String,
    /// The addresses of the pool.
    pub addresses: Vec<PoolAddress>,
    /// True (the default): a pod always uses the same address of the pool.
    #[serde(default = "default_true")]
    pub pairing: bool,
}

/// One external address: written either as a bare IP (`198.51.100.1`) or as
/// `{snat: 10.0.1.5, public: 54.1.2.3}` when the public address differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolAddress {
    /// The address the gateway rewrites sources to.
    pub snat: Ipv4Addr,
    /// The public address remote hosts see (e.g. an AWS Elastic IP); informational.
    pub public: Option<Ipv4Addr>,
}

/// A named rule list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Unique name.
    pub name: String,
    /// Rules, matched by longest destination prefix.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One destination rule: `{destination: CIDR, <action>, description: TEXT}`
/// where `<action>` is exactly one of `snat: POOL`, `bypass: true`, `deny: REASON`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Destination prefix.
    pub destination: Ipv4Net,
    /// What to do with matching traffic.
    pub action: Action,
    /// Free text for operators.
    pub description: Option<String>,
}

/// What to do with traffic: written `{snat: POOL}`, `{bypass: true}` or `{deny: REASON}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Rewrite the source to an address of the named pool.
    Snat {
        /// Pool name.
        pool: String,
    },
    /// Forward untranslated.
    Bypass,
    /// Drop.
    Deny {
        /// Why.
        reason: String,
    },
}

/// Binds pod addresses to a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Pod address (a bare IP means /32) or CIDR.
    #[serde(deserialize_with = "deserialize_cidr")]
    pub cidr: Ipv4Net,
    /// Policy name.
    pub policy: String,
}

fn default_true() -> bool {
    true
}

fn default_action() -> Action {
    Action::Deny {
        reason: DEFAULT_DENY_REASON.to_owned(),
    }
}

/// Parses `a.b.c.d/n`, or a bare `a.b.c.d` as a /32 (the YAML and the wire form share it).
pub(crate) fn parse_cidr(text: &str) -> Result<Ipv4Net, String> {
    if text.contains('/') {
        text.parse::<Ipv4Net>()
            .map_err(|error| format!("{text:?} is not an IPv4 CIDR: {error}"))
    } else {
        text.parse::<Ipv4Addr>()
            .map(Ipv4Net::from)
            .map_err(|error| format!("{text:?} is not an IPv4 address or CIDR: {error}"))
    }
}

fn deserialize_cidr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Ipv4Net, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_cidr(&text).map_err(serde::de::Error::custom)
}

/// The written form of a pool address, before normalisation.
#[derive(Serialize, Deserialize)]
#[serde(untagged, expecting = "an IPv4 address or {snat: IP, public: IP}")]
enum PoolAddressWritten {
    Bare(Ipv4Addr),
    Detailed(PoolAddressDetailed),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolAddressDetailed {
    snat: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public: Option<Ipv4Addr>,
}

impl Serialize for PoolAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.public {
            None => PoolAddressWritten::Bare(self.snat),
            Some(public) => PoolAddressWritten::Detailed(PoolAddressDetailed {
                snat: self.snat,
                public: Some(public),
            }),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PoolAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match PoolAddressWritten::deserialize(deserializer)? {
            PoolAddressWritten::Bare(snat) => PoolAddress { snat, public: None },
            PoolAddressWritten::Detailed(detailed) => PoolAddress {
                snat: detailed.snat,
                public: detailed.public,
            },
        })
    }
}

/// The written form of an action: exactly one field set.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionWritten {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snat: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bypass: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deny: Option<String>,
}

impl ActionWritten {
    fn into_action(self) -> Result<Action, String> {
        match (self.snat, self.bypass, self.deny) {
            (Some(pool), None, None) => Ok(Action::Snat { pool }),
            (None, Some(true), None) => Ok(Action::Bypass),
            (None, Some(false), None) => {
                Err("`bypass: false` is not an action; use `snat: POOL` or `deny: REASON`".into())
            }
            (None, None, Some(reason)) => Ok(Action::Deny { reason }),
            (None, None, None) => Err(
                "an action is required: one of `snat: POOL`, `bypass: true`, `deny: REASON`".into(),
            ),
            _ => Err("only one of `snat`, `bypass`, `deny` may be given".into()),
        }
    }

    fn from_action(action: &Action) -> Self {
        match action {
            Action::Snat { pool } => ActionWritten {
                snat: Some(pool.clone()),
                ..Default::default()
            },
            Action::Bypass => ActionWritten {
                bypass: Some(true),
                ..Default::default()
            },
            Action::Deny { reason } => ActionWritten {
                deny: Some(reason.clone()),
                ..Default::default()
            },
        }
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ActionWritten::from_action(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ActionWritten::deserialize(deserializer)?
            .into_action()
            .map_err(serde::de::Error::custom)
    }
}

/// The written form of a rule; serde's `flatten` cannot be combined with
/// `deny_unknown_fields`, so the action fields are spelled out.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleWritten {
    destination: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snat: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bypass: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deny: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let action = ActionWritten::from_action(&self.action);
        RuleWritten {
            destination: self.destination.to_string(),
            snat: action.snat,
            bypass: action.bypass,
            deny: action.deny,
            description: self.description.clone(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let written = RuleWritten::deserialize(deserializer)?;
        let destination = parse_cidr(&written.destination).map_err(serde::de::Error::custom)?;
        let action = ActionWritten {
            snat: written.snat,
            bypass: written.bypass,
            deny: written.deny,
        }
        .into_action()
        .map_err(|problem| {
            serde::de::Error::custom(format!("rule for {destination}: {problem}"))
        })?;
        Ok(Rule {
            destination,
            action,
            description: written.description,
        })
    }
}

impl RouteTableDocument {
    /// Parses a YAML document.
    pub fn from_yaml_str(text: &str) -> Result<Self, YamlError> {
        Ok(serde_yaml::from_str(text)?)
    }

    /// Renders the table as YAML that [`RouteTableDocument::from_yaml_str`] reads back.
    pub fn to_yaml_string(&self) -> Result<String, YamlError> {
        Ok(serde_yaml::to_string(self)?)
    }

    /// The wire form of the table.
    pub fn to_proto(&self) -> v1::RouteTable {
        v1::RouteTable::from(self.clone())
    }
}

impl From<Action> for v1::Action {
    fn from(action: Action) -> Self {
        use v1::action::Kind;
        let kind = match action {
            Action::Snat { pool } => Kind::Snat(v1::SnatAction { pool }),
            Action::Bypass => Kind::Bypass(v1::BypassAction {}),
            Action::Deny { reason } => Kind::Deny(v1::DenyAction { reason }),
        };
        v1::Action { kind: Some(kind) }
    }
}

impl From<RouteTableDocument> for v1::RouteTable {
    fn from(table: RouteTableDocument) -> Self {
        v1::RouteTable {
            generation: table.generation,
            pools: table
                .pools
                .into_iter()
                .map(|pool| v1::Pool {
                    name: pool.name,
                    addresses: pool
                        .addresses
                        .into_iter()
                        .map(|address| v1::PoolAddress {
                            snat_ip: address.snat.to_string(),
                            public_ip: address.public.map(|ip| ip.to_string()).unwrap_or_default(),
                        })
                        .collect(),
                    pairing: pool.pairing,
                })
                .collect(),
            policies: table
                .policies
                .into_iter()
                .map(|policy| v1::Policy {
                    name: policy.name,
                    rules: policy
                        .rules
                        .into_iter()
                        .map(|rule| v1::Rule {
                            destination: rule.destination.to_string(),
                            action: Some(rule.action.into()),
                            description: rule.description.unwrap_or_default(),
                        })
                        .collect(),
                })
                .collect(),
            sources: table
                .sources
                .into_iter()
                .map(|source| v1::Source {
                    cidr: source.cidr.to_string(),
                    policy: source.policy,
                })
                .collect(),
            default_action: Some(table.default_action.into()),
        }
    }
}

fn field_error(field: String, problem: impl Into<String>) -> YamlError {
    YamlError::Field {
        field,
        problem: problem.into(),
    }
}

fn ip_from_wire(field: String, text: &str) -> Result<Ipv4Addr, YamlError> {
    text.parse()
        .map_err(|_| field_error(field, format!("{text:?} is not an IPv4 address")))
}

fn cidr_from_wire(field: String, text: &str) -> Result<Ipv4Net, YamlError> {
    parse_cidr(text).map_err(|problem| field_error(field, problem))
}

fn action_from_wire(field: String, action: Option<v1::Action>) -> Result<Action, YamlError> {
    use v1::action::Kind;
    match action.and_then(|action| action.kind) {
        Some(Kind::Snat(snat)) => Ok(Action::Snat { pool: snat.pool }),
        Some(Kind::Bypass(_)) => Ok(Action::Bypass),
        Some(Kind::Deny(deny)) => Ok(Action::Deny {
            reason: deny.reason,
        }),
        None => Err(field_error(field, "no action set")),
    }
}

impl TryFrom<v1::RouteTable> for RouteTableDocument {
    type Error = YamlError;

    /// Fails when an address or CIDR string of the wire message does not parse.
    /// An absent `default_action` becomes the default deny.
    fn try_from(table: v1::RouteTable) -> Result<Self, Self::Error> {
        let mut pools = Vec::with_capacity(table.pools.len());
        for (pool_index, pool) in table.pools.into_iter().enumerate() {
            let mut addresses = Vec::with_capacity(pool.addresses.len());
            for (address_index, address) in pool.addresses.into_iter().enumerate() {
                let field =
                    |name: &str| format!("pools[{pool_index}].addresses[{address_index}].{name}");
                let snat = ip_from_wire(field("snat_ip"), &address.snat_ip)?;
                let public = if address.public_ip.is_empty() {
                    None
                } else {
                    Some(ip_from_wire(field("public_ip"), &address.public_ip)?)
                };
                addresses.push(PoolAddress { snat, public });
            }
            pools.push(Pool {
                name: pool.name,
                addresses,
                pairing: pool.pairing,
            });
        }

        let mut policies = Vec::with_capacity(table.policies.len());
        for (policy_index, policy) in table.policies.into_iter().enumerate() {
            let mut rules = Vec::with_capacity(policy.rules.len());
            for (rule_index, rule) in policy.rules.into_iter().enumerate() {
                let field =
                    |name: &str| format!("policies[{policy_index}].rules[{rule_index}].{name}");
                rules.push(Rule {
                    destination: cidr_from_wire(field("destination"), &rule.destination)?,
                    action: action_from_wire(field("action"), rule.action)?,
                    description: Some(rule.description).filter(|text| !text.is_empty()),
                });
            }
            policies.push(Policy {
                name: policy.name,
                rules,
            });
        }

        let mut sources = Vec::with_capacity(table.sources.len());
        for (source_index, source) in table.sources.into_iter().enumerate() {
            sources.push(Source {
                cidr: cidr_from_wire(format!("sources[{source_index}].cidr"), &source.cidr)?,
                policy: source.policy,
            });
        }

        let default_action = match table.default_action {
            None => default_action(),
            Some(action) => action_from_wire("default_action".into(), Some(action))?,
        };

        Ok(RouteTableDocument {
            generation: table.generation,
            pools,
            policies,
            sources,
            default_action,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
generation: 1
pools:
  - name: pool-a
    addresses: [198.51.100.1]
    pairing: true
  - name: pool-b
    addresses: [{snat: 10.0.1.5, public: 54.1.2.3}, {snat: 10.0.1.6}]
    pairing: false
policies:
  - name: via-a
    rules:
      - { destination: 0.0.0.0/0, snat: pool-a, description: "default egress" }
      - { destination: 203.0.113.128/25, bypass: true }
      - { destination: 192.0.2.0/24, deny: "partner blocked" }
sources:
  - { cidr: 10.244.1.10/32, policy: via-a }
  - { cidr: 10.244.2.0/24, policy: via-a }
default: { snat: pool-b }
"#;

    fn example() -> RouteTableDocument {
        RouteTableDocument::from_yaml_str(EXAMPLE).unwrap()
    }

    #[test]
    fn parses_the_documented_shape() {
        let table = example();
        assert_eq!(table.generation, 1);
        assert_eq!(
            table.pools[0].addresses[0].snat,
            Ipv4Addr::new(198, 51, 100, 1)
        );
        assert_eq!(table.pools[0].addresses[0].public, None);
        assert_eq!(
            table.pools[1].addresses[0].public,
            Some(Ipv4Addr::new(54, 1, 2, 3))
        );
        assert_eq!(table.pools[1].addresses[1].public, None);
        assert!(!table.pools[1].pairing);
        let rules = &table.policies[0].rules;
        assert_eq!(
            rules[0].action,
            Action::Snat {
                pool: "pool-a".into()
            }
        );
        assert_eq!(rules[0].description.as_deref(), Some("default egress"));
        assert_eq!(rules[1].action, Action::Bypass);
        assert_eq!(rules[1].destination, "203.0.113.128/25".parse().unwrap());
        assert_eq!(
            rules[2].action,
            Action::Deny {
                reason: "partner blocked".into()
            }
        );
        assert_eq!(table.sources[1].cidr, "10.244.2.0/24".parse().unwrap());
        assert_eq!(
            table.default_action,
            Action::Snat {
                pool: "pool-b".into()
            }
        );
    }

    #[test]
    fn defaults_apply_when_omitted() {
        let table = RouteTableDocument::from_yaml_str(
            "pools: [{name: p, addresses: [198.51.100.1]}]\nsources: [{cidr: 10.0.0.1, policy: x}]\n",
        )
        .unwrap();
        assert_eq!(table.generation, 0);
        assert!(table.pools[0].pairing, "pairing defaults to true");
        assert_eq!(table.sources[0].cidr, "10.0.0.1/32".parse().unwrap());
        assert_eq!(
            table.default_action,
            Action::Deny {
                reason: DEFAULT_DENY_REASON.into()
            }
        );
    }

    #[test]
    fn yaml_round_trip_is_lossless() {
        let table = example();
        let text = table.to_yaml_string().unwrap();
        assert_eq!(RouteTableDocument::from_yaml_str(&text).unwrap(), table);
    }

    #[test]
    fn proto_round_trip_is_lossless() {
        let table = example();
        let wire = table.to_proto();
        assert_eq!(wire.pools[1].addresses[0].public_ip, "54.1.2.3");
        assert_eq!(wire.pools[1].addresses[1].public_ip, "");
        assert_eq!(wire.sources[0].cidr, "10.244.1.10/32");
        assert!(matches!(
            wire.policies[0].rules[1].action.as_ref().unwrap().kind,
            Some(v1::action::Kind::Bypass(_))
        ));
        assert_eq!(RouteTableDocument::try_from(wire).unwrap(), table);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        for text in [
            "generation: 1\nbogus: 2\n",
            "pools: [{name: p, addresses: [198.51.100.1], pairng: true}]\n",
            "policies: [{name: p, rules: [{destination: 0.0.0.0/0, snat: a, extra: 1}]}]\n",
            "sources: [{cidr: 10.0.0.1/32, policy: p, weight: 1}]\n",
            "default: {deny: x, why: y}\n",
            "pools: [{name: p, addresses: [{snat: 10.0.0.1, elastic: 1.2.3.4}]}]\n",
        ] {
            assert!(
                RouteTableDocument::from_yaml_str(text).is_err(),
                "accepted: {text}"
            );
        }
    }

    #[test]
    fn malformed_actions_and_addresses_are_rejected_with_reasons() {
        let both = "policies: [{name: p, rules: [{destination: 0.0.0.0/0, snat: a, deny: b}]}]\n";
        let error = RouteTableDocument::from_yaml_str(both)
            .unwrap_err()
            .to_string();
        assert!(error.contains("only one of"), "{error}");

        let none = "policies: [{name: p, rules: [{destination: 0.0.0.0/0}]}]\n";
        let error = RouteTableDocument::from_yaml_str(none)
            .unwrap_err()
            .to_string();
        assert!(error.contains("an action is required"), "{error}");

        let bypass_false = "default: {bypass: false}\n";
        assert!(RouteTableDocument::from_yaml_str(bypass_false).is_err());

        let bad_cidr = "sources: [{cidr: 10.0.0.300/32, policy: p}]\n";
        let error = RouteTableDocument::from_yaml_str(bad_cidr)
            .unwrap_err()
            .to_string();
        assert!(error.contains("10.0.0.300/32"), "{error}");

        let bad_ip = "pools: [{name: p, addresses: [not-an-ip]}]\n";
        assert!(RouteTableDocument::from_yaml_str(bad_ip).is_err());
    }

    #[test]
    fn wire_values_the_yaml_cannot_hold_name_the_field() {
        let mut wire = example().to_proto();
        wire.policies[0].rules[2].destination = "192.0.2.0/33".into();
        let error = RouteTableDocument::try_from(wire).unwrap_err().to_string();
        assert!(
            error.contains("policies[0].rules[2].destination"),
            "{error}"
        );

        let mut wire = example().to_proto();
        wire.pools[0].addresses[0].snat_ip = "x".into();
        let error = RouteTableDocument::try_from(wire).unwrap_err().to_string();
        assert!(error.contains("pools[0].addresses[0].snat_ip"), "{error}");

        let mut wire = example().to_proto();
        wire.default_action = None;
        assert_eq!(
            RouteTableDocument::try_from(wire).unwrap().default_action,
            Action::Deny {
                reason: DEFAULT_DENY_REASON.into()
            }
        );
    }
}
