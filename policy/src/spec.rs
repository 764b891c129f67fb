//! A route table as plain data: what the control plane describes and [`CompiledRouteTable::compile`]
//! validates. Nothing here is checked yet; see [`crate::RouteTableError`] for what compile rejects.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

#[cfg(doc)]
use crate::{CompiledRouteTable, NO_RULE_MATCHES_REASON};

/// A route table as the control plane describes it; compiled by [`CompiledRouteTable::compile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTableSpec {
    /// Monotonic version chosen by the control plane; reported back, never interpreted here.
    pub generation: u64,
    pub pools: Vec<PoolSpec>,
    pub policies: Vec<PolicySpec>,
    pub sources: Vec<SourceSpec>,
    /// Action for sources no [`SourceSpec`] covers.
    pub default_action: ActionSpec,
    /// Pool address → the address the outside world sees it as, where a cloud 1:1 NAT sits
    /// behind the gateway (an AWS Elastic IP on the private address). The engine translates to
    /// the pool address; the gateway reports and logs the public one, so "who used public IP:port
    /// X" is answered without asking the cloud. Ports are preserved by such a NAT.
    pub public_addresses: BTreeMap<Ipv4Addr, Ipv4Addr>,
}

/// A named set of external addresses flows are translated to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    pub addresses: Vec<Ipv4Addr>,
    /// `true`: every flow of one pod uses the same address (RFC 4787 REQ-2 "paired").
    pub pairing: bool,
}

/// Destination rules resolved by longest-prefix match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub name: String,
    pub rules: Vec<RuleSpec>,
    /// Action when no rule matches; `None` denies with [`NO_RULE_MATCHES_REASON`].
    pub default_action: Option<ActionSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub destination: Ipv4Net,
    pub action: ActionSpec,
    /// Free text for humans; not interpreted.
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionSpec {
    Snat { pool: String },
    Bypass,
    Deny { reason: String },
}

/// Maps the pods inside `cidr` to the policy named `policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub cidr: Ipv4Net,
    pub policy: String,
}
