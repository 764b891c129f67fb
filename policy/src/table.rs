//! The compiled route table: immutable lookup structures and the per-new-flow [`CompiledRouteTable::lookup`].
//!
//! [`CompiledRouteTable::compile`] (in `compile.rs`) builds it; this module only reads it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use crate::decision::{decode_decision, Decision, DenyId, PoolId};
use crate::limits::NO_TABLE_INSTALLED_REASON;
use crate::pool::Pool;
use crate::prefix::PrefixMap;
use crate::spec::{ActionSpec, RouteTableSpec};

#[derive(Debug, Clone)]
pub(crate) struct CompiledPolicy {
    /// Values are [`encode_decision`](crate::decision::encode_decision)d.
    pub(crate) rules: PrefixMap,
    pub(crate) default: Decision,
}

/// A validated, compiled route table. Immutable; share it as `Arc<CompiledRouteTable>`.
pub struct CompiledRouteTable {
    pub(crate) spec: RouteTableSpec,
    pub(crate) pools: Box<[Pool]>,
    pub(crate) deny_reasons: Box<[String]>,
    /// Values are indices into `policies`.
    pub(crate) sources: PrefixMap,
    pub(crate) policies: Box<[CompiledPolicy]>,
    pub(crate) default_decision: Decision,
    /// Sorted and deduplicated across pools.
    pub(crate) snat_addresses: Box<[Ipv4Addr]>,
}

impl fmt::Debug for CompiledRouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledRouteTable")
            .field("generation", &self.spec.generation)
            .field("pools", &self.pools.len())
            .field("policies", &self.policies.len())
            .field("sources", &self.spec.sources.len())
            .field("default_decision", &self.default_decision)
            .finish_non_exhaustive()
    }
}

impl CompiledRouteTable {
    /// The table to run with before the control plane installs one: generation 0, no pools, and
    /// every flow denied with [`NO_TABLE_INSTALLED_REASON`].
    pub fn empty_deny_all() -> CompiledRouteTable {
        CompiledRouteTable {
            spec: RouteTableSpec {
                generation: 0,
                pools: Vec::new(),
                policies: Vec::new(),
                sources: Vec::new(),
                default_action: ActionSpec::Deny {
                    reason: NO_TABLE_INSTALLED_REASON.to_owned(),
                },
                public_addresses: BTreeMap::new(),
            },
            pools: Box::new([]),
            deny_reasons: Box::new([NO_TABLE_INSTALLED_REASON.to_owned()]),
            sources: PrefixMap::build(&[]),
            policies: Box::new([]),
            default_decision: Decision::Deny(DenyId(0)),
            snat_addresses: Box::new([]),
        }
    }

    /// Whether `src` matches a source entry (otherwise the table default applies): lets the
    /// engine tell "no policy for this pod" apart from "the policy denies this destination".
    #[inline]
    pub fn source_has_policy(&self, src: Ipv4Addr) -> bool {
        self.sources.longest_match(u32::from(src)).is_some()
    }

    /// Decides what to do with a new flow from `src` to `dst`. Allocation-free: at most one hash
    /// probe per distinct prefix length present among the sources, then among the policy's rules.
    #[inline]
    pub fn lookup(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Decision {
        let Some(policy_index) = self.sources.longest_match(u32::from(src)) else {
            return self.default_decision;
        };
        // Source values are indices of `policies`, checked by `compile_sources`: the `else` cannot
        // happen, and `get` costs the same bounds check indexing would.
        let Some(policy) = self.policies.get(policy_index as usize) else {
            return self.default_decision;
        };
        match policy.rules.longest_match(u32::from(dst)) {
            Some(encoded) => decode_decision(encoded),
            None => policy.default,
        }
    }

    #[inline]
    pub fn generation(&self) -> u64 {
        self.spec.generation
    }

    /// The pool `id` names.
    ///
    /// # Panics
    /// If `id` came from another table and is out of range here; use [`CompiledRouteTable::get_pool`]
    /// when the id may be stale.
    #[inline]
    #[expect(
        clippy::indexing_slicing,
        reason = "documented panic on another table's id; `get_pool` is the checked form"
    )]
    pub fn pool(&self, id: PoolId) -> &Pool {
        &self.pools[id.index()]
    }

    /// The pool `id` names, or `None` if `id` is out of range (it came from another table).
    #[inline]
    pub fn get_pool(&self, id: PoolId) -> Option<&Pool> {
        self.pools.get(id.index())
    }

    /// The id of the pool called `name`.
    pub fn pool_id(&self, name: &str) -> Option<PoolId> {
        self.pools
            .iter()
            .find(|pool| pool.name == name)
            .map(|pool| pool.id)
    }

    /// The address the outside world sees `snat` as (a cloud 1:1 NAT), when the table says.
    #[inline]
    pub fn public_address(&self, snat: Ipv4Addr) -> Option<Ipv4Addr> {
        self.spec.public_addresses.get(&snat).copied()
    }

    /// All pools, indexed by [`PoolId::index`].
    #[inline]
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// The reason behind a [`Decision::Deny`].
    ///
    /// # Panics
    /// If `id` came from another table and is out of range here.
    #[inline]
    #[expect(
        clippy::indexing_slicing,
        reason = "documented panic on another table's id, as `pool`"
    )]
    pub fn deny_reason(&self, id: DenyId) -> &str {
        &self.deny_reasons[id.index()]
    }

    /// All distinct deny reasons, indexed by [`DenyId::index`].
    #[inline]
    pub fn deny_reasons(&self) -> &[String] {
        &self.deny_reasons
    }

    /// Every SNAT address of every pool, each once, in ascending order.
    #[inline]
    pub fn snat_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.snat_addresses.iter().copied()
    }

    /// The validated input this table was compiled from.
    #[inline]
    pub fn spec(&self) -> &RouteTableSpec {
        &self.spec
    }
}
