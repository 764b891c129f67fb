//! [`CompiledRouteTable::compile`]: validates a [`RouteTableSpec`] and builds the compiled table — pools
//! with their precomputed address hashes, interned deny reasons, one prefix map per policy and
//! one for the sources.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::decision::{encode_decision, Decision, DenyId, PoolId};
use crate::error::{ActionSite, NameKind, RouteTableError};
use crate::limits::{
    MAX_ADDRESSES_PER_POOL, MAX_DENY_REASONS, MAX_DENY_REASON_LEN, MAX_POOLS,
    NO_RULE_MATCHES_REASON,
};
use crate::pool::{mix64, Pool};
use crate::prefix::PrefixMap;
use crate::spec::{ActionSpec, PolicySpec, PoolSpec, RouteTableSpec, SourceSpec};
use crate::table::{CompiledPolicy, CompiledRouteTable};
use crate::validate::{
    check_public_addresses, check_sizes, index_names, index_policy_names, unusable_address_reason,
};

impl CompiledRouteTable {
    /// Validates `spec` and compiles it. Every error names the offending item.
    pub fn compile(spec: RouteTableSpec) -> Result<CompiledRouteTable, RouteTableError> {
        check_sizes(&spec)?;
        let (pools, pool_ids) = compile_pools(&spec.pools)?;
        let policy_indices = index_policy_names(&spec.policies)?;

        let mut deny_reasons = DenyReasons::default();
        let default_decision = resolve_action(
            &spec.default_action,
            || ActionSite::TableDefault,
            &pool_ids,
            &mut deny_reasons,
        )?;

        let policies = spec
            .policies
            .iter()
            .map(|policy| compile_policy(policy, &pool_ids, &mut deny_reasons))
            .collect::<Result<Box<[_]>, _>>()?;

        let sources = compile_sources(&spec.sources, &policy_indices)?;

        let mut snat_addresses: Vec<Ipv4Addr> = pools
            .iter()
            .flat_map(|pool| pool.addresses.iter().copied())
            .collect();
        snat_addresses.sort_unstable();
        snat_addresses.dedup();
        check_public_addresses(&spec.public_addresses, &snat_addresses)?;

        Ok(CompiledRouteTable {
            spec,
            pools: pools.into_boxed_slice(),
            deny_reasons: deny_reasons.reasons.into_boxed_slice(),
            sources,
            policies,
            default_decision,
            snat_addresses: snat_addresses.into_boxed_slice(),
        })
    }
}

fn compile_pools(
    specs: &[PoolSpec],
) -> Result<(Vec<Pool>, HashMap<&str, PoolId>), RouteTableError> {
    let name_indices = index_names(NameKind::Pool, specs.iter().map(|pool| pool.name.as_str()))?;
    let mut pools = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        if spec.addresses.is_empty() {
            return Err(RouteTableError::EmptyPool {
                pool: spec.name.clone(),
            });
        }
        if spec.addresses.len() > MAX_ADDRESSES_PER_POOL {
            return Err(RouteTableError::TooManyPoolAddresses {
                pool: spec.name.clone(),
                count: spec.addresses.len(),
                limit: MAX_ADDRESSES_PER_POOL,
            });
        }
        for (position, &address) in spec.addresses.iter().enumerate() {
            if let Some(why) = unusable_address_reason(address) {
                return Err(RouteTableError::UnusableAddress {
                    pool: spec.name.clone(),
                    address,
                    why,
                });
            }
            if spec
                .addresses
                .iter()
                .take(position)
                .any(|&seen| seen == address)
            {
                return Err(RouteTableError::DuplicatePoolAddress {
                    pool: spec.name.clone(),
                    address,
                });
            }
        }
        let id = PoolId(pool_id_bits(index));
        pools.push(Pool {
            id,
            name: spec.name.clone(),
            addresses: spec.addresses.clone().into_boxed_slice(),
            address_hashes: spec
                .addresses
                .iter()
                .map(|&address| mix64(u64::from(u32::from(address))))
                .collect(),
            pairing: spec.pairing,
        });
    }
    let ids = name_indices
        .into_iter()
        .map(|(name, index)| (name, PoolId(pool_id_bits(index))))
        .collect();
    Ok((pools, ids))
}

/// `index` is below [`MAX_POOLS`], checked by [`check_sizes`](crate::validate::check_sizes), so it fits.
fn pool_id_bits(index: usize) -> u16 {
    const _: () = assert!(MAX_POOLS <= 1 << 16);
    index as u16
}

/// Interns deny reasons so that a [`Decision`] carries a 16-bit id instead of a string.
#[derive(Default)]
struct DenyReasons {
    reasons: Vec<String>,
    ids: HashMap<String, DenyId>,
}

impl DenyReasons {
    fn intern(&mut self, reason: &str) -> Result<DenyId, RouteTableError> {
        if let Some(&id) = self.ids.get(reason) {
            return Ok(id);
        }
        let index = self.reasons.len();
        let bits = u16::try_from(index).map_err(|_| RouteTableError::TooManyDenyReasons {
            limit: MAX_DENY_REASONS,
        })?;
        let id = DenyId(bits);
        self.reasons.push(reason.to_owned());
        self.ids.insert(reason.to_owned(), id);
        Ok(id)
    }
}

fn resolve_action(
    action: &ActionSpec,
    site: impl FnOnce() -> ActionSite,
    pool_ids: &HashMap<&str, PoolId>,
    deny_reasons: &mut DenyReasons,
) -> Result<Decision, RouteTableError> {
    match action {
        ActionSpec::Bypass => Ok(Decision::Bypass),
        ActionSpec::Snat { pool } => match pool_ids.get(pool.as_str()) {
            Some(&id) => Ok(Decision::Snat(id)),
            None => Err(RouteTableError::UnknownPool {
                site: site(),
                pool: pool.clone(),
            }),
        },
        ActionSpec::Deny { reason } => {
            if reason.trim().is_empty() {
                return Err(RouteTableError::EmptyDenyReason { site: site() });
            }
            if reason.len() > MAX_DENY_REASON_LEN {
                return Err(RouteTableError::DenyReasonTooLong {
                    site: site(),
                    len: reason.len(),
                    limit: MAX_DENY_REASON_LEN,
                });
            }
            deny_reasons.intern(reason).map(Decision::Deny)
        }
    }
}

fn compile_policy(
    spec: &PolicySpec,
    pool_ids: &HashMap<&str, PoolId>,
    deny_reasons: &mut DenyReasons,
) -> Result<CompiledPolicy, RouteTableError> {
    let mut first_rule_numbers: HashMap<Ipv4Net, usize> = HashMap::with_capacity(spec.rules.len());
    let mut entries = Vec::with_capacity(spec.rules.len());
    for (index, rule) in spec.rules.iter().enumerate() {
        let rule_number = index + 1;
        let destination = rule.destination;
        if destination.trunc() != destination {
            return Err(RouteTableError::DestinationHostBits {
                policy: spec.name.clone(),
                rule_number,
                destination,
                suggestion: destination.trunc(),
            });
        }
        if let Some(&first_rule_number) = first_rule_numbers.get(&destination) {
            return Err(RouteTableError::DuplicateDestination {
                policy: spec.name.clone(),
                rule_number,
                first_rule_number,
                destination,
            });
        }
        first_rule_numbers.insert(destination, rule_number);
        let decision = resolve_action(
            &rule.action,
            || ActionSite::Rule {
                policy: spec.name.clone(),
                rule_number,
                destination,
            },
            pool_ids,
            deny_reasons,
        )?;
        entries.push((destination, encode_decision(decision)));
    }
    let default = match &spec.default_action {
        Some(action) => resolve_action(
            action,
            || ActionSite::PolicyDefault {
                policy: spec.name.clone(),
            },
            pool_ids,
            deny_reasons,
        )?,
        None => Decision::Deny(deny_reasons.intern(NO_RULE_MATCHES_REASON)?),
    };
    Ok(CompiledPolicy {
        rules: PrefixMap::build(&entries),
        default,
    })
}

fn compile_sources(
    specs: &[SourceSpec],
    policy_indices: &HashMap<&str, usize>,
) -> Result<PrefixMap, RouteTableError> {
    let mut first_positions: HashMap<Ipv4Net, usize> = HashMap::with_capacity(specs.len());
    let mut entries = Vec::with_capacity(specs.len());
    for (index, source) in specs.iter().enumerate() {
        let position = index + 1;
        let cidr = source.cidr;
        if cidr.trunc() != cidr {
            return Err(RouteTableError::SourceHostBits {
                position,
                cidr,
                suggestion: cidr.trunc(),
            });
        }
        if let Some(&first_position) = first_positions.get(&cidr) {
            return Err(RouteTableError::DuplicateSource {
                position,
                first_position,
                cidr,
            });
        }
        first_positions.insert(cidr, position);
        let Some(&policy_index) = policy_indices.get(source.policy.as_str()) else {
            return Err(RouteTableError::UnknownPolicy {
                position,
                cidr,
                policy: source.policy.clone(),
            });
        };
        // Below MAX_POLICIES, checked by `check_sizes`.
        entries.push((cidr, policy_index as u32));
    }
    Ok(PrefixMap::build(&entries))
}
