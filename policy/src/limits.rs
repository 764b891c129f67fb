//! Bounds every route table must respect, and the fixed deny reasons the engine reports.
//!
//! The limits bound a compiled table's memory and keep ids within their 16-bit encodings; the
//! controller checks its own input against the same constants.

/// Most pools a table may define.
pub const MAX_POOLS: usize = 1_024;
/// Most addresses one pool may hold; [`Pool::select`](crate::Pool::select) hashes every eligible address per new flow.
pub const MAX_ADDRESSES_PER_POOL: usize = 64;
/// Most policies a table may define.
pub const MAX_POLICIES: usize = 4_096;
/// Most destination rules one policy may hold.
pub const MAX_RULES_PER_POLICY: usize = 4_096;
/// Most destination rules across all policies of a table, bounding its memory.
pub const MAX_RULES_TOTAL: usize = 262_144;
/// Most source CIDRs a table may map.
pub const MAX_SOURCES: usize = 65_536;
/// Most distinct deny reasons a table may use ([`DenyId`](crate::DenyId) is 16 bits wide).
pub const MAX_DENY_REASONS: usize = 1 << 16;
/// Longest pool or policy name, in bytes (a Kubernetes DNS subdomain name).
pub const MAX_NAME_LEN: usize = 253;
/// Longest deny reason, in bytes; reasons end up in logs and metrics labels.
pub const MAX_DENY_REASON_LEN: usize = 256;

/// Reason of the denial for a policy with no matching rule and no default action.
pub const NO_RULE_MATCHES_REASON: &str = "no rule matches destination";
/// Reason of the denial of [`CompiledRouteTable::empty_deny_all`](crate::CompiledRouteTable::empty_deny_all).
pub const NO_TABLE_INSTALLED_REASON: &str = "no route table installed";
