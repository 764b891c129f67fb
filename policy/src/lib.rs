//! Compiled, immutable route tables: which external address (if any) a new flow leaves with.
//!
//! A flow's source (the pod IP) selects a *policy* by longest-prefix match over the table's source
//! CIDRs (pods are usually /32, a namespace may use a wider CIDR). The policy's destination rules
//! are resolved by longest-prefix match too, and yield a [`Decision`]: SNAT through a pool, forward
//! unchanged (bypass), or deny with a reason. A policy without a matching rule falls back to its
//! own default, else denies with [`NO_RULE_MATCHES_REASON`]. A source no CIDR covers gets the
//! table's default action, which the control plane should keep a deny (no open relay).
//!
//! [`CompiledRouteTable::compile`] validates a plain-data [`RouteTableSpec`] and builds allocation-free
//! lookup structures. The caller swaps whole tables atomically (`Arc<CompiledRouteTable>`); a table is never
//! mutated after compilation. [`PoolId`] and [`DenyId`] values are indices into the table that
//! produced them and are meaningless for any other table.
//!
//! This crate is what the control plane, the API crate, the lab and the engine share: the spec,
//! its limits, [`CompiledRouteTable::compile`] and the compiled table. It depends on nothing but `ipnet`
//! and `thiserror`, so nothing that only needs the spec links the NAT engine.
//!
//! Modules follow the table's life: [`spec`](crate::RouteTableSpec) and limits (the input),
//! validation and compilation, then the compiled table, its pool selection and its prefix map.

mod compile;
mod decision;
mod error;
mod limits;
mod pool;
mod prefix;
mod spec;
mod table;
mod validate;

pub use decision::{Decision, DenyId, PoolId};
pub use error::{ActionSite, NameKind, RouteTableError};
pub use limits::{
    MAX_ADDRESSES_PER_POOL, MAX_DENY_REASONS, MAX_DENY_REASON_LEN, MAX_NAME_LEN, MAX_POLICIES,
    MAX_POOLS, MAX_RULES_PER_POLICY, MAX_RULES_TOTAL, MAX_SOURCES, NO_RULE_MATCHES_REASON,
    NO_TABLE_INSTALLED_REASON,
};
pub use pool::Pool;
pub use spec::{ActionSpec, PolicySpec, PoolSpec, RouteTableSpec, RuleSpec, SourceSpec};
pub use table::CompiledRouteTable;
