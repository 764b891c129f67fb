//! Route table behaviour through the public API: semantics, validation, and address selection.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers (clippy.toml covers only #[test] functions): a malformed literal or a \
              missing element in a test should fail loudly"
)]

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use egw_policy::*;
use ipnet::Ipv4Net;
use proptest::prelude::*;

fn net(text: &str) -> Ipv4Net {
    text.parse().unwrap()
}

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn snat(pool: &str) -> ActionSpec {
    ActionSpec::Snat {
        pool: pool.to_owned(),
    }
}

fn deny(reason: &str) -> ActionSpec {
    ActionSpec::Deny {
        reason: reason.to_owned(),
    }
}

fn pool(name: &str, addresses: &[&str], pairing: bool) -> PoolSpec {
    PoolSpec {
        name: name.to_owned(),
        addresses: addresses.iter().map(|text| ip(text)).collect(),
        pairing,
    }
}

fn rule(destination: &str, action: ActionSpec) -> RuleSpec {
    RuleSpec {
        destination: net(destination),
        action,
        description: String::new(),
    }
}

fn policy(name: &str, rules: Vec<RuleSpec>, default_action: Option<ActionSpec>) -> PolicySpec {
    PolicySpec {
        name: name.to_owned(),
        rules,
        default_action,
    }
}

fn source(cidr: &str, policy: &str) -> SourceSpec {
    SourceSpec {
        cidr: net(cidr),
        policy: policy.to_owned(),
    }
}

/// Two pools, two policies, pods and a namespace CIDR: the shape the controller produces.
fn sample_spec() -> RouteTableSpec {
    RouteTableSpec {
        public_addresses: Default::default(),
        generation: 7,
        pools: vec![
            pool("pool-a", &["203.0.113.1", "203.0.113.2"], true),
            pool("pool-b", &["198.51.100.1", "203.0.113.2"], false),
        ],
        policies: vec![
            policy(
                "via-a",
                vec![
                    rule("0.0.0.0/0", snat("pool-a")),
                    rule("10.0.0.0/8", ActionSpec::Bypass),
                    rule("10.96.0.0/12", snat("pool-b")),
                    rule("10.96.0.1/32", deny("api server is internal")),
                ],
                None,
            ),
            policy(
                "internal-only",
                vec![rule("192.168.0.0/16", ActionSpec::Bypass)],
                Some(deny("internal-only namespace")),
            ),
            policy(
                "no-default",
                vec![rule("192.168.0.0/16", ActionSpec::Bypass)],
                None,
            ),
        ],
        sources: vec![
            source("10.244.0.0/16", "via-a"),
            source("10.244.1.5/32", "internal-only"),
            source("10.245.0.7/32", "no-default"),
        ],
        default_action: deny("unknown source"),
    }
}

/// What a decision means, independent of the table's internal ids.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Snat(String),
    Bypass,
    Deny(String),
}

fn outcome(table: &CompiledRouteTable, decision: Decision) -> Outcome {
    match decision {
        Decision::Snat(id) => Outcome::Snat(table.pool(id).name().to_owned()),
        Decision::Bypass => Outcome::Bypass,
        Decision::Deny(id) => Outcome::Deny(table.deny_reason(id).to_owned()),
    }
}

fn lookup(table: &CompiledRouteTable, src: &str, dst: &str) -> Outcome {
    outcome(table, table.lookup(ip(src), ip(dst)))
}

fn snat_to(pool: &str) -> Outcome {
    Outcome::Snat(pool.to_owned())
}

fn denied(reason: &str) -> Outcome {
    Outcome::Deny(reason.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Semantics
// ---------------------------------------------------------------------------------------------

#[test]
fn destination_rules_resolve_by_longest_prefix() {
    let table = CompiledRouteTable::compile(sample_spec()).unwrap();
    let pod = "10.244.3.3";
    assert_eq!(lookup(&table, pod, "8.8.8.8"), snat_to("pool-a"));
    assert_eq!(lookup(&table, pod, "10.1.2.3"), Outcome::Bypass);
    assert_eq!(lookup(&table, pod, "10.96.5.5"), snat_to("pool-b"));
    assert_eq!(
        lookup(&table, pod, "10.96.0.1"),
        denied("api server is internal")
    );
    assert_eq!(lookup(&table, pod, "10.96.0.2"), snat_to("pool-b"));
    assert_eq!(lookup(&table, pod, "10.112.0.0"), Outcome::Bypass);
    assert_eq!(lookup(&table, pod, "255.255.255.255"), snat_to("pool-a"));
}

#[test]
fn sources_resolve_by_longest_prefix() {
    let table = CompiledRouteTable::compile(sample_spec()).unwrap();
    // 10.244.1.5/32 overrides the namespace-wide 10.244.0.0/16.
    assert_eq!(
        lookup(&table, "10.244.1.5", "8.8.8.8"),
        denied("internal-only namespace")
    );
    assert_eq!(lookup(&table, "10.244.1.5", "192.168.1.1"), Outcome::Bypass);
    assert_eq!(lookup(&table, "10.244.1.6", "8.8.8.8"), snat_to("pool-a"));
}

#[test]
fn unknown_source_gets_the_table_default() {
    let table = CompiledRouteTable::compile(sample_spec()).unwrap();
    assert_eq!(
        lookup(&table, "10.243.0.1", "8.8.8.8"),
        denied("unknown source")
    );
    assert_eq!(
        lookup(&table, "0.0.0.0", "10.1.1.1"),
        denied("unknown source")
    );
}

#[test]
fn policy_without_matching_rule_uses_its_default_or_denies() {
    let table = CompiledRouteTable::compile(sample_spec()).unwrap();
    assert_eq!(
        lookup(&table, "10.244.1.5", "1.1.1.1"),
        denied("internal-only namespace")
    );
    assert_eq!(
        lookup(&table, "10.245.0.7", "1.1.1.1"),
        denied(NO_RULE_MATCHES_REASON)
    );
    assert_eq!(lookup(&table, "10.245.0.7", "192.168.3.4"), Outcome::Bypass);
}

#[test]
fn source_slash_zero_catches_every_source() {
    let mut spec = sample_spec();
    spec.sources.push(source("0.0.0.0/0", "no-default"));
    let table = CompiledRouteTable::compile(spec).unwrap();
    assert_eq!(lookup(&table, "1.2.3.4", "192.168.0.1"), Outcome::Bypass);
    assert_eq!(lookup(&table, "10.244.3.3", "8.8.8.8"), snat_to("pool-a"));
}

#[test]
fn empty_deny_all_denies_everything() {
    let table = CompiledRouteTable::empty_deny_all();
    assert_eq!(table.generation(), 0);
    assert!(table.pools().is_empty());
    assert_eq!(table.snat_addresses().count(), 0);
    for (src, dst) in [
        ("10.0.0.1", "8.8.8.8"),
        ("0.0.0.0", "0.0.0.0"),
        ("1.1.1.1", "255.255.255.255"),
    ] {
        assert_eq!(lookup(&table, src, dst), denied(NO_TABLE_INSTALLED_REASON));
    }
    // Its spec compiles to a table with the same behaviour.
    let recompiled = CompiledRouteTable::compile(table.spec().clone()).unwrap();
    assert_eq!(
        lookup(&recompiled, "10.0.0.1", "8.8.8.8"),
        denied(NO_TABLE_INSTALLED_REASON)
    );
}

#[test]
fn accessors_expose_the_compiled_spec() {
    let spec = sample_spec();
    let table = CompiledRouteTable::compile(spec.clone()).unwrap();
    assert_eq!(table.generation(), 7);
    assert_eq!(table.spec(), &spec);
    let names: Vec<&str> = table.pools().iter().map(Pool::name).collect();
    assert_eq!(names, ["pool-a", "pool-b"]);
    for (index, pool) in table.pools().iter().enumerate() {
        assert_eq!(pool.id().index(), index);
        assert_eq!(table.pool(pool.id()).name(), pool.name());
        assert_eq!(table.pool_id(pool.name()), Some(pool.id()));
    }
    assert_eq!(table.pool_id("nope"), None);
    let pool_b = table.pool(table.pool_id("pool-b").unwrap());
    assert_eq!(pool_b.addresses(), [ip("198.51.100.1"), ip("203.0.113.2")]);
    assert!(!pool_b.pairing());
    assert!(table.pools()[0].pairing());
    // Distinct and sorted although 203.0.113.2 is in both pools.
    let addresses: Vec<Ipv4Addr> = table.snat_addresses().collect();
    assert_eq!(
        addresses,
        [ip("198.51.100.1"), ip("203.0.113.1"), ip("203.0.113.2")]
    );
    // Deny reasons are interned once each.
    let reasons: HashSet<&String> = table.deny_reasons().iter().collect();
    assert_eq!(reasons.len(), table.deny_reasons().len());
    assert!(table
        .deny_reasons()
        .iter()
        .any(|reason| reason == NO_RULE_MATCHES_REASON));
}

#[test]
fn stale_pool_id_is_detected_by_get_pool() {
    let table = CompiledRouteTable::compile(sample_spec()).unwrap();
    let Decision::Snat(id) = table.lookup(ip("10.244.3.3"), ip("10.96.5.5")) else {
        panic!("expected SNAT");
    };
    assert_eq!(table.get_pool(id).map(Pool::name), Some("pool-b"));
    assert!(CompiledRouteTable::empty_deny_all().get_pool(id).is_none());
}

#[test]
fn route_table_is_shareable_across_cores() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledRouteTable>();
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

fn compile_error(spec: RouteTableSpec) -> RouteTableError {
    CompiledRouteTable::compile(spec).unwrap_err()
}

#[test]
fn rejects_duplicate_pool_name() {
    let mut spec = sample_spec();
    spec.pools.push(pool("pool-a", &["192.0.2.1"], false));
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::DuplicateName {
            kind: NameKind::Pool,
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        "pool #3: name `pool-a` is already used by pool #1"
    );
}

#[test]
fn rejects_duplicate_policy_name() {
    let mut spec = sample_spec();
    spec.policies.push(policy("internal-only", vec![], None));
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::DuplicateName {
            kind: NameKind::Policy,
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        "policy #4: name `internal-only` is already used by policy #2"
    );
}

#[test]
fn rejects_empty_names() {
    let mut spec = sample_spec();
    spec.pools[1].name = String::new();
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::EmptyName {
            kind: NameKind::Pool,
            position: 2
        }
    ));
    assert_eq!(error.to_string(), "pool #2 has an empty name");

    let mut spec = sample_spec();
    spec.policies[0].name = String::new();
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::EmptyName {
            kind: NameKind::Policy,
            position: 1
        }
    ));
    assert_eq!(error.to_string(), "policy #1 has an empty name");
}

#[test]
fn rejects_overlong_name() {
    let mut spec = sample_spec();
    spec.policies[2].name = "p".repeat(MAX_NAME_LEN + 1);
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::NameTooLong {
            kind: NameKind::Policy,
            position: 3,
            ..
        }
    ));
    assert!(error.to_string().starts_with("policy #3 name `ppp"));
    assert!(error
        .to_string()
        .ends_with("` is 254 bytes long; the limit is 253"));
}

#[test]
fn rejects_empty_pool() {
    let mut spec = sample_spec();
    spec.pools[0].addresses.clear();
    let error = compile_error(spec);
    assert!(matches!(error, RouteTableError::EmptyPool { .. }));
    assert_eq!(error.to_string(), "pool `pool-a` has no addresses");
}

#[test]
fn rejects_unusable_pool_addresses() {
    let cases = [
        ("0.0.0.0", "it is the unspecified address"),
        ("255.255.255.255", "it is the limited broadcast address"),
        ("0.1.2.3", "it is in 0.0.0.0/8 (\"this network\")"),
        ("127.0.0.1", "it is a loopback address (127.0.0.0/8)"),
        ("169.254.1.1", "it is a link-local address (169.254.0.0/16)"),
        ("224.0.0.1", "it is a multicast address (224.0.0.0/4)"),
        ("239.255.255.250", "it is a multicast address (224.0.0.0/4)"),
        ("240.0.0.1", "it is in the reserved range 240.0.0.0/4"),
    ];
    for (address, why) in cases {
        let mut spec = sample_spec();
        spec.pools[1].addresses.push(ip(address));
        let error = compile_error(spec);
        assert!(
            matches!(error, RouteTableError::UnusableAddress { .. }),
            "{address}: {error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("pool `pool-b` address {address} cannot be used for SNAT: {why}")
        );
    }
}

#[test]
fn accepts_private_and_documentation_addresses() {
    let mut spec = sample_spec();
    spec.pools[1]
        .addresses
        .extend([ip("10.0.0.1"), ip("172.16.0.1"), ip("100.64.0.1")]);
    CompiledRouteTable::compile(spec).unwrap();
}

#[test]
fn rejects_duplicate_pool_address() {
    let mut spec = sample_spec();
    spec.pools[0].addresses.push(ip("203.0.113.1"));
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::DuplicatePoolAddress { .. }
    ));
    assert_eq!(
        error.to_string(),
        "pool `pool-a` lists address 203.0.113.1 more than once"
    );
}

#[test]
fn rejects_unknown_pool_in_rule_and_defaults() {
    let mut spec = sample_spec();
    spec.policies[0].rules[2].action = snat("pool-x");
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::UnknownPool {
            site: ActionSite::Rule { rule_number: 3, .. },
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        "policy `via-a` rule #3 (10.96.0.0/12): pool `pool-x` does not exist"
    );

    let mut spec = sample_spec();
    spec.policies[1].default_action = Some(snat("pool-x"));
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::UnknownPool {
            site: ActionSite::PolicyDefault { .. },
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        "policy `internal-only` default action: pool `pool-x` does not exist"
    );

    let mut spec = sample_spec();
    spec.default_action = snat("pool-x");
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::UnknownPool {
            site: ActionSite::TableDefault,
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        "table default action: pool `pool-x` does not exist"
    );
}

#[test]
fn rejects_unknown_policy_in_source() {
    let mut spec = sample_spec();
    spec.sources.push(source("10.250.0.0/16", "via-z"));
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::UnknownPolicy { position: 4, .. }
    ));
    assert_eq!(
        error.to_string(),
        "source #4 (10.250.0.0/16): policy `via-z` does not exist"
    );
}

#[test]
fn rejects_destination_with_host_bits() {
    let mut spec = sample_spec();
    spec.policies[0].rules[1].destination = net("10.0.0.1/8");
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::DestinationHostBits { rule_number: 2, .. }
    ));
    assert_eq!(
        error.to_string(),
        "policy `via-a` rule #2: destination 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"
    );
}

#[test]
fn rejects_source_with_host_bits() {
    let mut spec = sample_spec();
    spec.sources[0].cidr = net("10.244.3.0/16");
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::SourceHostBits { position: 1, .. }
    ));
    assert_eq!(
        error.to_string(),
        "source #1: 10.244.3.0/16 has host bits set; did you mean 10.244.0.0/16?"
    );
}

#[test]
fn rejects_duplicate_destination_within_a_policy() {
    let mut spec = sample_spec();
    spec.policies[0]
        .rules
        .push(rule("10.0.0.0/8", snat("pool-a")));
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::DuplicateDestination {
            rule_number: 5,
            first_rule_number: 2,
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        "policy `via-a` rule #5: destination 10.0.0.0/8 duplicates rule #2"
    );
}

#[test]
fn same_destination_in_two_policies_is_fine() {
    let mut spec = sample_spec();
    spec.policies[1]
        .rules
        .push(rule("10.0.0.0/8", snat("pool-a")));
    CompiledRouteTable::compile(spec).unwrap();
}

#[test]
fn rejects_duplicate_source() {
    let mut spec = sample_spec();
    spec.sources.push(source("10.244.1.5/32", "via-a"));
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::DuplicateSource {
            position: 4,
            first_position: 2,
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        "source #4 (10.244.1.5/32) duplicates source #2"
    );
}

#[test]
fn rejects_empty_deny_reason() {
    let mut spec = sample_spec();
    spec.policies[0].rules[3].action = deny("  ");
    let error = compile_error(spec);
    assert!(matches!(error, RouteTableError::EmptyDenyReason { .. }));
    assert_eq!(
        error.to_string(),
        "policy `via-a` rule #4 (10.96.0.1/32): deny reason is empty"
    );

    let mut spec = sample_spec();
    spec.default_action = deny("");
    let error = compile_error(spec);
    assert_eq!(
        error.to_string(),
        "table default action: deny reason is empty"
    );
}

#[test]
fn rejects_overlong_deny_reason() {
    let mut spec = sample_spec();
    spec.policies[1].default_action = Some(deny(&"x".repeat(MAX_DENY_REASON_LEN + 1)));
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::DenyReasonTooLong { len: 257, .. }
    ));
    assert_eq!(
        error.to_string(),
        "policy `internal-only` default action: deny reason is 257 bytes long; the limit is 256"
    );
}

/// `count` distinct unicast addresses starting at 192.0.2.0's neighbourhood.
fn addresses(count: usize) -> Vec<Ipv4Addr> {
    (0..count as u32)
        .map(|i| Ipv4Addr::from(0xc000_0000 + 1 + i))
        .collect()
}

#[test]
fn rejects_too_many_pool_addresses() {
    let mut spec = sample_spec();
    spec.pools[0].addresses = addresses(MAX_ADDRESSES_PER_POOL + 1);
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::TooManyPoolAddresses { count: 65, .. }
    ));
    assert_eq!(
        error.to_string(),
        "pool `pool-a` has 65 addresses; the limit is 64"
    );

    let mut spec = sample_spec();
    spec.pools[0].addresses = addresses(MAX_ADDRESSES_PER_POOL);
    CompiledRouteTable::compile(spec).unwrap();
}

#[test]
fn rejects_too_many_pools() {
    let mut spec = sample_spec();
    spec.pools = (0..=MAX_POOLS)
        .map(|i| PoolSpec {
            name: format!("pool-{i}"),
            addresses: vec![ip("192.0.2.1")],
            pairing: false,
        })
        .collect();
    let error = compile_error(spec.clone());
    assert!(matches!(
        error,
        RouteTableError::TooManyPools { count: 1025, .. }
    ));
    assert_eq!(
        error.to_string(),
        "route table has 1025 pools; the limit is 1024"
    );

    spec.pools.pop();
    spec.pools[0].name = "pool-a".to_owned();
    spec.pools[1].name = "pool-b".to_owned();
    let table = CompiledRouteTable::compile(spec).unwrap();
    assert_eq!(table.pools().len(), MAX_POOLS);
    assert_eq!(table.snat_addresses().count(), 1);
}

#[test]
fn rejects_too_many_policies() {
    let mut spec = sample_spec();
    spec.policies = (0..=MAX_POLICIES)
        .map(|i| policy(&format!("p{i}"), vec![], None))
        .collect();
    spec.sources.clear();
    let error = compile_error(spec);
    assert!(matches!(
        error,
        RouteTableError::TooManyPolicies { count: 4097, .. }
    ));
    assert_eq!(
        error.to_string(),
        "route table has 4097 policies; the limit is 4096"
    );
}

fn slash_32_rules(count: usize, action: impl Fn(usize) -> ActionSpec) -> Vec<RuleSpec> {
    (0..count)
        .map(|i| RuleSpec {
            destination: Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i as u32), 32).unwrap(),
            action: action(i),
            description: String::new(),
        })
        .collect()
}

#[test]
fn rejects_too_many_rules_in_a_policy() {
    let mut spec = sample_spec();
    spec.policies[1].rules = slash_32_rules(MAX_RULES_PER_POLICY + 1, |_| ActionSpec::Bypass);
    let error = compile_error(spec.clone());
    assert!(matches!(
        error,
        RouteTableError::TooManyRules { count: 4097, .. }
    ));
    assert_eq!(
        error.to_string(),
        "policy `internal-only` has 4097 rules; the limit is 4096"
    );

    spec.policies[1].rules.pop();
    let table = CompiledRouteTable::compile(spec).unwrap();
    assert_eq!(lookup(&table, "10.244.1.5", "10.0.15.255"), Outcome::Bypass);
    assert_eq!(
        lookup(&table, "10.244.1.5", "10.0.16.0"),
        denied("internal-only namespace")
    );
}

#[test]
fn rejects_too_many_rules_in_total() {
    let mut spec = sample_spec();
    let policies_needed = MAX_RULES_TOTAL / MAX_RULES_PER_POLICY + 1;
    spec.policies.extend((0..policies_needed).map(|i| {
        policy(
            &format!("bulk-{i}"),
            slash_32_rules(MAX_RULES_PER_POLICY, |_| ActionSpec::Bypass),
            None,
        )
    }));
    let error = compile_error(spec);
    assert!(matches!(error, RouteTableError::TooManyRulesTotal { .. }));
    assert_eq!(
        error.to_string(),
        "route table has 266246 rules across all policies; the limit is 262144"
    );
}

#[test]
fn rejects_too_many_sources() {
    let mut spec = sample_spec();
    spec.sources = (0..=MAX_SOURCES as u32)
        .map(|i| SourceSpec {
            cidr: Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap(),
            policy: "via-a".to_owned(),
        })
        .collect();
    let error = compile_error(spec.clone());
    assert!(matches!(
        error,
        RouteTableError::TooManySources { count: 65537, .. }
    ));
    assert_eq!(
        error.to_string(),
        "route table has 65537 sources; the limit is 65536"
    );

    // At the limit it compiles, and every /32 resolves to its policy.
    spec.sources.pop();
    let table = CompiledRouteTable::compile(spec).unwrap();
    assert_eq!(lookup(&table, "10.0.255.255", "10.1.1.1"), Outcome::Bypass);
    assert_eq!(
        lookup(&table, "10.1.0.0", "10.1.1.1"),
        denied("unknown source")
    );
}

#[test]
fn rejects_too_many_distinct_deny_reasons() {
    let mut spec = sample_spec();
    let policies_needed = MAX_DENY_REASONS.div_ceil(MAX_RULES_PER_POLICY);
    spec.policies.extend((0..policies_needed).map(|p| {
        policy(
            &format!("deny-{p}"),
            slash_32_rules(MAX_RULES_PER_POLICY, |i| deny(&format!("reason {p}/{i}"))),
            Some(ActionSpec::Bypass),
        )
    }));
    let error = compile_error(spec);
    assert!(matches!(error, RouteTableError::TooManyDenyReasons { .. }));
    assert_eq!(
        error.to_string(),
        "route table uses more than 65536 distinct deny reasons"
    );
}

// ---------------------------------------------------------------------------------------------
// Address selection
// ---------------------------------------------------------------------------------------------

const FOUR_ADDRESSES: [&str; 4] = [
    "203.0.113.10",
    "203.0.113.11",
    "203.0.113.12",
    "203.0.113.13",
];

fn single_pool_table(pairing: bool, addresses: &[&str]) -> CompiledRouteTable {
    CompiledRouteTable::compile(RouteTableSpec {
        public_addresses: Default::default(),
        generation: 1,
        pools: vec![pool("egress", addresses, pairing)],
        policies: vec![policy("all", vec![], Some(snat("egress")))],
        sources: vec![source("10.0.0.0/8", "all")],
        default_action: deny("unknown source"),
    })
    .unwrap()
}

fn pod(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + i)
}

/// A stand-in for the engine's 5-tuple hash: anything well spread.
fn flow_hash(i: u64) -> u64 {
    i.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (i << 7)
}

#[test]
fn pairing_gives_a_pod_the_same_address_for_every_flow_and_every_copy() {
    let first = single_pool_table(true, &FOUR_ADDRESSES);
    let second = single_pool_table(true, &FOUR_ADDRESSES);
    let first_pool = &first.pools()[0];
    let second_pool = &second.pools()[0];
    let mut used = HashSet::new();
    for i in 0..500 {
        let chosen = first_pool.select(pod(i), 0, |_| true).unwrap();
        for flow in 0..20 {
            assert_eq!(
                first_pool.select(pod(i), flow_hash(flow), |_| true),
                Some(chosen)
            );
            assert_eq!(
                second_pool.select(pod(i), flow_hash(flow), |_| true),
                Some(chosen)
            );
        }
        used.insert(chosen);
    }
    // Pods themselves spread over the pool.
    assert_eq!(used.len(), FOUR_ADDRESSES.len());
}

#[test]
fn selection_does_not_depend_on_address_order() {
    let forward = single_pool_table(true, &FOUR_ADDRESSES);
    let mut reversed_addresses = FOUR_ADDRESSES;
    reversed_addresses.reverse();
    let reversed = single_pool_table(true, &reversed_addresses);
    for i in 0..500 {
        assert_eq!(
            forward.pools()[0].select(pod(i), 0, |_| true),
            reversed.pools()[0].select(pod(i), 0, |_| true)
        );
    }
}

#[test]
fn paired_selection_is_pinned_across_releases() {
    // Gateways of different versions must agree on a pod's address: this pins the hash.
    // Values cross-checked with an independent Python implementation of `Pool::select`'s doc.
    let table = single_pool_table(true, &FOUR_ADDRESSES);
    let chosen: Vec<Ipv4Addr> = (1..=8)
        .map(|i| table.pools()[0].select(pod(i), 0, |_| true).unwrap())
        .collect();
    let expected: Vec<Ipv4Addr> = PINNED_PAIRED_CHOICES.iter().map(|text| ip(text)).collect();
    assert_eq!(chosen, expected);
}

const PINNED_PAIRED_CHOICES: [&str; 8] = [
    "203.0.113.12",
    "203.0.113.12",
    "203.0.113.10",
    "203.0.113.11",
    "203.0.113.12",
    "203.0.113.13",
    "203.0.113.13",
    "203.0.113.11",
];

#[test]
fn without_pairing_flows_spread_over_the_pool() {
    let table = single_pool_table(false, &FOUR_ADDRESSES);
    let pool = &table.pools()[0];
    let flows = 4_000u64;
    let mut counts: BTreeMap<Ipv4Addr, u64> = BTreeMap::new();
    for flow in 0..flows {
        let chosen = pool
            .select(ip("10.0.0.1"), flow_hash(flow), |_| true)
            .unwrap();
        *counts.entry(chosen).or_default() += 1;
    }
    assert_eq!(counts.len(), 4, "{counts:?}");
    // Expected share 1000 each; a fair hash stays far inside these bounds (σ ≈ 27).
    for (&address, &count) in &counts {
        assert!(
            (700..=1300).contains(&count),
            "{address}: {count} of {flows}"
        );
    }
}

#[test]
fn draining_an_address_moves_only_its_flows() {
    for pairing in [false, true] {
        let table = single_pool_table(pairing, &FOUR_ADDRESSES);
        let pool = &table.pools()[0];
        let drained = ip(FOUR_ADDRESSES[2]);
        let mut moved = 0;
        for i in 0..2_000u32 {
            let src = pod(i % 700);
            let hash = flow_hash(u64::from(i));
            let before = pool.select(src, hash, |_| true).unwrap();
            let after = pool
                .select(src, hash, |address| address != drained)
                .unwrap();
            assert_ne!(after, drained);
            if before == drained {
                moved += 1;
            } else {
                assert_eq!(after, before, "flow {i} moved although its address stayed");
            }
        }
        assert!(
            moved > 0,
            "no flow used the drained address (pairing {pairing})"
        );
    }
}

#[test]
fn no_eligible_address_selects_nothing() {
    let table = single_pool_table(false, &FOUR_ADDRESSES);
    assert_eq!(table.pools()[0].select(ip("10.0.0.1"), 42, |_| false), None);
    let only = ip(FOUR_ADDRESSES[3]);
    for flow in 0..100 {
        assert_eq!(
            table.pools()[0].select(ip("10.0.0.1"), flow, |a| a == only),
            Some(only)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Property: lookup equals a naive linear longest-prefix scan over the spec
// ---------------------------------------------------------------------------------------------

fn naive_lookup(spec: &RouteTableSpec, src: Ipv4Addr, dst: Ipv4Addr) -> Outcome {
    let resolve = |action: &ActionSpec| match action {
        ActionSpec::Snat { pool } => Outcome::Snat(pool.clone()),
        ActionSpec::Bypass => Outcome::Bypass,
        ActionSpec::Deny { reason } => Outcome::Deny(reason.clone()),
    };
    let Some(source) = spec
        .sources
        .iter()
        .filter(|source| source.cidr.contains(&src))
        .max_by_key(|source| source.cidr.prefix_len())
    else {
        return resolve(&spec.default_action);
    };
    let policy = spec
        .policies
        .iter()
        .find(|policy| policy.name == source.policy)
        .unwrap();
    match policy
        .rules
        .iter()
        .filter(|rule| rule.destination.contains(&dst))
        .max_by_key(|rule| rule.destination.prefix_len())
    {
        Some(rule) => resolve(&rule.action),
        None => match &policy.default_action {
            Some(action) => resolve(action),
            None => Outcome::Deny(NO_RULE_MATCHES_REASON.to_owned()),
        },
    }
}

fn address_strategy() -> impl Strategy<Value = Ipv4Addr> {
    // Mostly inside 10.0.0.0/16 so that random prefixes nest and overlap.
    prop_oneof![
        any::<u32>(),
        (0u32..=0xffff).prop_map(|low| 0x0a00_0000 | low),
        (0u32..=0xff).prop_map(|octet| 0x0a00_0000 | octet << 8),
    ]
    .prop_map(Ipv4Addr::from)
}

fn prefix_strategy() -> impl Strategy<Value = Ipv4Net> {
    (address_strategy(), 0u8..=32)
        .prop_map(|(address, length)| Ipv4Net::new(address, length).unwrap().trunc())
}

const POOL_NAMES: [&str; 3] = ["p0", "p1", "p2"];
const DENY_REASONS: [&str; 3] = ["r0", "r1", "r2"];

fn action_strategy() -> impl Strategy<Value = ActionSpec> {
    prop_oneof![
        (0..POOL_NAMES.len()).prop_map(|i| snat(POOL_NAMES[i])),
        Just(ActionSpec::Bypass),
        (0..DENY_REASONS.len()).prop_map(|i| deny(DENY_REASONS[i])),
    ]
}

fn policy_strategy(name: String) -> impl Strategy<Value = PolicySpec> {
    (
        proptest::collection::vec((prefix_strategy(), action_strategy()), 0..40),
        proptest::option::of(action_strategy()),
    )
        .prop_map(move |(rules, default_action)| {
            let mut seen = HashSet::new();
            let rules = rules
                .into_iter()
                .filter(|(destination, _)| seen.insert(*destination))
                .map(|(destination, action)| RuleSpec {
                    destination,
                    action,
                    description: String::new(),
                })
                .collect();
            PolicySpec {
                name: name.clone(),
                rules,
                default_action,
            }
        })
}

fn spec_strategy() -> impl Strategy<Value = RouteTableSpec> {
    (
        policy_strategy("q0".to_owned()),
        policy_strategy("q1".to_owned()),
        policy_strategy("q2".to_owned()),
        proptest::collection::vec((prefix_strategy(), 0..3usize), 0..40),
        action_strategy(),
    )
        .prop_map(|(q0, q1, q2, sources, default_action)| {
            let mut seen = HashSet::new();
            let sources = sources
                .into_iter()
                .filter(|(cidr, _)| seen.insert(*cidr))
                .map(|(cidr, policy)| SourceSpec {
                    cidr,
                    policy: format!("q{policy}"),
                })
                .collect();
            RouteTableSpec {
                public_addresses: Default::default(),
                generation: 1,
                pools: POOL_NAMES
                    .iter()
                    .enumerate()
                    .map(|(i, name)| PoolSpec {
                        name: (*name).to_owned(),
                        addresses: vec![Ipv4Addr::new(192, 0, 2, i as u8 + 1)],
                        pairing: i % 2 == 0,
                    })
                    .collect(),
                policies: vec![q0, q1, q2],
                sources,
                default_action,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn lookup_equals_naive_longest_prefix_scan(
        spec in spec_strategy(),
        flows in proptest::collection::vec((address_strategy(), address_strategy()), 1..64),
    ) {
        let table = CompiledRouteTable::compile(spec.clone()).unwrap();
        for (src, dst) in flows {
            prop_assert_eq!(
                outcome(&table, table.lookup(src, dst)),
                naive_lookup(&spec, src, dst),
                "src {} dst {}", src, dst
            );
        }
    }
}

#[test]
fn public_addresses_must_name_pool_addresses_and_be_unique() {
    let mut spec = sample_spec();
    let pool_address = spec.pools[0].addresses[0];
    let elastic_ip = Ipv4Addr::new(54, 1, 2, 3);
    spec.public_addresses.insert(pool_address, elastic_ip);
    let table = CompiledRouteTable::compile(spec.clone()).unwrap();
    assert_eq!(table.public_address(pool_address), Some(elastic_ip));

    let mut unknown = spec.clone();
    let stranger = Ipv4Addr::new(192, 0, 2, 77);
    unknown
        .public_addresses
        .insert(stranger, Ipv4Addr::new(54, 1, 2, 4));
    assert_eq!(
        CompiledRouteTable::compile(unknown).unwrap_err(),
        RouteTableError::PublicAddressForUnknownSnat {
            snat: stranger,
            public: Ipv4Addr::new(54, 1, 2, 4)
        }
    );

    let mut shared = spec;
    let other_pool_address = shared.pools[0].addresses[1];
    shared
        .public_addresses
        .insert(other_pool_address, elastic_ip);
    assert!(matches!(
        CompiledRouteTable::compile(shared).unwrap_err(),
        RouteTableError::DuplicatePublicAddress { public, .. } if public == elastic_ip
    ));
}
