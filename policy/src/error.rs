//! Why a [`RouteTableSpec`] was rejected: every error names the offending item and its position.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

#[cfg(doc)]
use crate::RouteTableSpec;

/// Which kind of named object an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Pool,
    Policy,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Pool => "pool",
            NameKind::Policy => "policy",
        })
    }
}

/// Where an action appears in a spec, for error messages. Rule numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionSite {
    Rule {
        policy: String,
        rule_number: usize,
        destination: Ipv4Net,
    },
    PolicyDefault {
        policy: String,
    },
    TableDefault,
}

impl fmt::Display for ActionSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionSite::Rule {
                policy,
                rule_number,
                destination,
            } => write!(f, "policy `{policy}` rule #{rule_number} ({destination})"),
            ActionSite::PolicyDefault { policy } => write!(f, "policy `{policy}` default action"),
            ActionSite::TableDefault => f.write_str("table default action"),
        }
    }
}

/// Why a [`RouteTableSpec`] was rejected. Positions (`#n`) count from 1, in spec order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteTableError {
    #[error("route table has {count} pools; the limit is {limit}")]
    TooManyPools { count: usize, limit: usize },
    #[error("route table has {count} policies; the limit is {limit}")]
    TooManyPolicies { count: usize, limit: usize },
    #[error("route table has {count} sources; the limit is {limit}")]
    TooManySources { count: usize, limit: usize },
    #[error("route table has {count} rules across all policies; the limit is {limit}")]
    TooManyRulesTotal { count: usize, limit: usize },
    #[error("policy `{policy}` has {count} rules; the limit is {limit}")]
    TooManyRules {
        policy: String,
        count: usize,
        limit: usize,
    },
    #[error("pool `{pool}` has {count} addresses; the limit is {limit}")]
    TooManyPoolAddresses {
        pool: String,
        count: usize,
        limit: usize,
    },
    #[error("route table uses more than {limit} distinct deny reasons")]
    TooManyDenyReasons { limit: usize },
    #[error("{kind} #{position} has an empty name")]
    EmptyName { kind: NameKind, position: usize },
    #[error("{kind} #{position} name `{name}` is {len} bytes long; the limit is {limit}")]
    NameTooLong {
        kind: NameKind,
        position: usize,
        name: String,
        len: usize,
        limit: usize,
    },
    #[error("{kind} #{position}: name `{name}` is already used by {kind} #{first_position}")]
    DuplicateName {
        kind: NameKind,
        position: usize,
        first_position: usize,
        name: String,
    },
    #[error("pool `{pool}` has no addresses")]
    EmptyPool { pool: String },
    #[error("pool `{pool}` address {address} cannot be used for SNAT: it is {why}")]
    UnusableAddress {
        pool: String,
        address: Ipv4Addr,
        why: &'static str,
    },
    #[error("pool `{pool}` lists address {address} more than once")]
    DuplicatePoolAddress { pool: String, address: Ipv4Addr },
    #[error("public address {public} is given for {snat}, which is in no pool")]
    PublicAddressForUnknownSnat { snat: Ipv4Addr, public: Ipv4Addr },
    #[error("public address {public} is given for both {first} and {second}")]
    DuplicatePublicAddress {
        public: Ipv4Addr,
        first: Ipv4Addr,
        second: Ipv4Addr,
    },
    #[error("{site}: pool `{pool}` does not exist")]
    UnknownPool { site: ActionSite, pool: String },
    #[error("{site}: deny reason is empty")]
    EmptyDenyReason { site: ActionSite },
    #[error("{site}: deny reason is {len} bytes long; the limit is {limit}")]
    DenyReasonTooLong {
        site: ActionSite,
        len: usize,
        limit: usize,
    },
    #[error(
        "policy `{policy}` rule #{rule_number}: destination {destination} has host bits set; \
         did you mean {suggestion}?"
    )]
    DestinationHostBits {
        policy: String,
        rule_number: usize,
        destination: Ipv4Net,
        suggestion: Ipv4Net,
    },
    #[error(
        "policy `{policy}` rule #{rule_number}: destination {destination} duplicates \
         rule #{first_rule_number}"
    )]
    DuplicateDestination {
        policy: String,
        rule_number: usize,
        first_rule_number: usize,
        destination: Ipv4Net,
    },
    #[error("source #{position}: {cidr} has host bits set; did you mean {suggestion}?")]
    SourceHostBits {
        position: usize,
        cidr: Ipv4Net,
        suggestion: Ipv4Net,
    },
    #[error("source #{position} ({cidr}) duplicates source #{first_position}")]
    DuplicateSource {
        position: usize,
        first_position: usize,
        cidr: Ipv4Net,
    },
    #[error("source #{position} ({cidr}): policy `{policy}` does not exist")]
    UnknownPolicy {
        position: usize,
        cidr: Ipv4Net,
        policy: String,
    },
}
