//! The checks [`CompiledRouteTable::compile`](crate::CompiledRouteTable::compile) runs before building anything:
//! sizes within the limits, names non-empty, bounded and unique, addresses usable for SNAT, public
//! addresses one-to-one with pool addresses.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use crate::error::{NameKind, RouteTableError};
use crate::limits::{
    MAX_NAME_LEN, MAX_POLICIES, MAX_POOLS, MAX_RULES_PER_POLICY, MAX_RULES_TOTAL, MAX_SOURCES,
};
use crate::spec::{PolicySpec, RouteTableSpec};

pub(crate) fn check_sizes(spec: &RouteTableSpec) -> Result<(), RouteTableError> {
    if spec.pools.len() > MAX_POOLS {
        return Err(RouteTableError::TooManyPools {
            count: spec.pools.len(),
            limit: MAX_POOLS,
        });
    }
    if spec.policies.len() > MAX_POLICIES {
        return Err(RouteTableError::TooManyPolicies {
            count: spec.policies.len(),
            limit: MAX_POLICIES,
        });
    }
    if spec.sources.len() > MAX_SOURCES {
        return Err(RouteTableError::TooManySources {
            count: spec.sources.len(),
            limit: MAX_SOURCES,
        });
    }
    if let Some(policy) = spec
        .policies
        .iter()
        .find(|policy| policy.rules.len() > MAX_RULES_PER_POLICY)
    {
        return Err(RouteTableError::TooManyRules {
            policy: policy.name.clone(),
            count: policy.rules.len(),
            limit: MAX_RULES_PER_POLICY,
        });
    }
    let total_rules: usize = spec.policies.iter().map(|policy| policy.rules.len()).sum();
    if total_rules > MAX_RULES_TOTAL {
        return Err(RouteTableError::TooManyRulesTotal {
            count: total_rules,
            limit: MAX_RULES_TOTAL,
        });
    }
    Ok(())
}

fn check_name(kind: NameKind, position: usize, name: &str) -> Result<(), RouteTableError> {
    if name.is_empty() {
        return Err(RouteTableError::EmptyName { kind, position });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(RouteTableError::NameTooLong {
            kind,
            position,
            name: name.to_owned(),
            len: name.len(),
            limit: MAX_NAME_LEN,
        });
    }
    Ok(())
}

/// Checks names (non-empty, bounded, unique) and maps each to its 0-based index.
pub(crate) fn index_names<'a>(
    kind: NameKind,
    names: impl Iterator<Item = &'a str>,
) -> Result<HashMap<&'a str, usize>, RouteTableError> {
    let mut indices: HashMap<&str, usize> = HashMap::new();
    for (index, name) in names.enumerate() {
        check_name(kind, index + 1, name)?;
        if let Some(&first_index) = indices.get(name) {
            return Err(RouteTableError::DuplicateName {
                kind,
                position: index + 1,
                first_position: first_index + 1,
                name: name.to_owned(),
            });
        }
        indices.insert(name, index);
    }
    Ok(indices)
}

pub(crate) fn index_policy_names(
    policies: &[PolicySpec],
) -> Result<HashMap<&str, usize>, RouteTableError> {
    index_names(
        NameKind::Policy,
        policies.iter().map(|policy| policy.name.as_str()),
    )
}

/// Why `address` cannot be an SNAT source address, phrased to follow "it is".
pub(crate) fn unusable_address_reason(address: Ipv4Addr) -> Option<&'static str> {
    let first_octet = address.octets()[0];
    if address.is_unspecified() {
        Some("the unspecified address")
    } else if address.is_broadcast() {
        Some("the limited broadcast address")
    } else if first_octet == 0 {
        Some("in 0.0.0.0/8 (\"this network\")")
    } else if address.is_loopback() {
        Some("a loopback address (127.0.0.0/8)")
    } else if address.is_link_local() {
        Some("a link-local address (169.254.0.0/16)")
    } else if address.is_multicast() {
        Some("a multicast address (224.0.0.0/4)")
    } else if first_octet >= 240 {
        Some("in the reserved range 240.0.0.0/4")
    } else {
        None
    }
}

/// Every public address belongs to a pool address, and no two pool addresses share one (the
/// cloud maps one public address to one private address).
pub(crate) fn check_public_addresses(
    public_addresses: &BTreeMap<Ipv4Addr, Ipv4Addr>,
    snat_addresses: &[Ipv4Addr],
) -> Result<(), RouteTableError> {
    let mut owners: HashMap<Ipv4Addr, Ipv4Addr> = HashMap::with_capacity(public_addresses.len());
    for (&snat, &public) in public_addresses {
        if snat_addresses.binary_search(&snat).is_err() {
            return Err(RouteTableError::PublicAddressForUnknownSnat { snat, public });
        }
        if let Some(&first) = owners.get(&public) {
            return Err(RouteTableError::DuplicatePublicAddress {
                public,
                first,
                second: snat,
            });
        }
        owners.insert(public, snat);
    }
    Ok(())
}
