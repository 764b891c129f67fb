//! Compiled, immutable route tables: which external address (if any) a new flow leaves with.
//!
//! A flow's source (the pod IP) selects a *policy* by longest-prefix match over the table's source
//! CIDRs (pods are usually /32, a namespace may use a wider CIDR). The policy's destination rules
//! are resolved by longest-prefix match too, and yield a [`Decision`]: SNAT through a pool, forward
//! unchanged (bypass), or deny with a reason. A policy without a matching rule falls back to its
//! own default, else denies with [`NO_RULE_MATCHES_REASON`]. A source no CIDR covers gets the
//! table's default action, which the control plane should keep a deny (no open relay).
//!
//! [`RouteTable::compile`] validates a plain-data [`RouteTableSpec`] and builds allocation-free
//! lookup structures. The caller swaps whole tables atomically (`Arc<RouteTable>`); a table is never
//! mutated after compilation. [`PoolId`] and [`DenyId`] values are indices into the table that
//! produced them and are meaningless for any other table.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Most pools a table may define.
pub const MAX_POOLS: usize = 1_024;
/// Most addresses one pool may hold; [`Pool::select`] hashes every eligible address per new flow.
pub const MAX_ADDRESSES_PER_POOL: usize = 64;
/// Most policies a table may define.
pub const MAX_POLICIES: usize = 4_096;
/// Most destination rules one policy may hold.
pub const MAX_RULES_PER_POLICY: usize = 4_096;
/// Most destination rules across all policies of a table, bounding its memory.
pub const MAX_RULES_TOTAL: usize = 262_144;
/// Most source CIDRs a table may map.
pub const MAX_SOURCES: usize = 65_536;
/// Most distinct deny reasons a table may use ([`DenyId`] is 16 bits wide).
pub const MAX_DENY_REASONS: usize = 1 << 16;
/// Longest pool or policy name, in bytes (a Kubernetes DNS subdomain name).
pub const MAX_NAME_LEN: usize = 253;
/// Longest deny reason, in bytes; reasons end up in logs and metrics labels.
pub const MAX_DENY_REASON_LEN: usize = 256;

/// Reason of the denial for a policy with no matching rule and no default action.
pub const NO_RULE_MATCHES_REASON: &str = "no rule matches destination";
/// Reason of the denial of [`RouteTable::empty_deny_all`].
pub const NO_TABLE_INSTALLED_REASON: &str = "no route table installed";

// ---------------------------------------------------------------------------------------------
// Input specification
// ---------------------------------------------------------------------------------------------

/// A route table as the control plane describes it; compiled by [`RouteTable::compile`].
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

// ---------------------------------------------------------------------------------------------
// Validation errors
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Compiled table
// ---------------------------------------------------------------------------------------------

/// Index of a [`Pool`] in the [`RouteTable`] that produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(u16);

impl PoolId {
    /// Position in [`RouteTable::pools`], e.g. to index per-pool counters.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Index of a deny reason in the [`RouteTable`] that produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DenyId(u16);

impl DenyId {
    /// Dense index (`0..number of distinct reasons`), e.g. to index per-reason counters.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// What to do with a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Translate the source to an address of this pool ([`Pool::select`]).
    Snat(PoolId),
    /// Forward unchanged.
    Bypass,
    /// Drop; [`RouteTable::deny_reason`] says why.
    Deny(DenyId),
}

/// A compiled pool of external addresses.
#[derive(Debug, Clone)]
pub struct Pool {
    id: PoolId,
    name: String,
    addresses: Box<[Ipv4Addr]>,
    /// `mix64(address)` per address, precomputed so that [`Pool::select`] mixes once per address.
    address_hashes: Box<[u64]>,
    pairing: bool,
}

impl Pool {
    pub fn id(&self) -> PoolId {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool's addresses, in spec order (never empty).
    pub fn addresses(&self) -> &[Ipv4Addr] {
        &self.addresses
    }

    pub fn pairing(&self) -> bool {
        self.pairing
    }

    /// Picks the external address for a new flow, or `None` when `eligible` rejects them all
    /// (`eligible` lets the caller exclude draining addresses).
    ///
    /// Rendezvous (highest-random-weight) hashing: every eligible address gets a weight and the
    /// highest wins, so removing or draining one address moves only the flows that used it, and
    /// the order of addresses in the pool does not matter. The key is the source address when the
    /// pool pairs (a pod always gets the same address, RFC 4787 REQ-2), else `flow_hash` (flows
    /// spread over the pool).
    ///
    /// The weight is `mix64(mix64(key) ^ mix64(u32::from(address)))`, where `mix64` is the
    /// splitmix64 finalizer (Steele, Lea & Flood 2014) and `key` is `u32::from(src)` or
    /// `flow_hash` widened to `u64`; equal weights go to the numerically higher address. The
    /// function is fixed and platform-independent so that every core and every gateway replica
    /// picks the same address for a pod. Changing it remaps every paired pod: treat it as a
    /// wire format.
    pub fn select(
        &self,
        src: Ipv4Addr,
        flow_hash: u64,
        eligible: impl Fn(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        let key = if self.pairing {
            u64::from(u32::from(src))
        } else {
            flow_hash
        };
        let key_hash = mix64(key);
        let mut best: Option<(u64, Ipv4Addr)> = None;
        for (&address, &address_hash) in self.addresses.iter().zip(self.address_hashes.iter()) {
            if !eligible(address) {
                continue;
            }
            let weight = mix64(key_hash ^ address_hash);
            let wins = match best {
                None => true,
                Some((best_weight, best_address)) => {
                    (weight, u32::from(address)) > (best_weight, u32::from(best_address))
                }
            };
            if wins {
                best = Some((weight, address));
            }
        }
        best.map(|(_, address)| address)
    }
}

/// The splitmix64 output function: a bijective, well-mixing 64-bit integer hash.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug, Clone)]
struct CompiledPolicy {
    /// Values are [`encode_decision`]d.
    rules: PrefixMap,
    default: Decision,
}

/// A validated, compiled route table. Immutable; share it as `Arc<RouteTable>`.
pub struct RouteTable {
    spec: RouteTableSpec,
    pools: Box<[Pool]>,
    deny_reasons: Box<[String]>,
    /// Values are indices into `policies`.
    sources: PrefixMap,
    policies: Box<[CompiledPolicy]>,
    default_decision: Decision,
    /// Sorted and deduplicated across pools.
    snat_addresses: Box<[Ipv4Addr]>,
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field("generation", &self.spec.generation)
            .field("pools", &self.pools.len())
            .field("policies", &self.policies.len())
            .field("sources", &self.spec.sources.len())
            .field("default_decision", &self.default_decision)
            .finish_non_exhaustive()
    }
}

impl RouteTable {
    /// Validates `spec` and compiles it. Every error names the offending item.
    pub fn compile(spec: RouteTableSpec) -> Result<RouteTable, RouteTableError> {
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

        Ok(RouteTable {
            spec,
            pools: pools.into_boxed_slice(),
            deny_reasons: deny_reasons.reasons.into_boxed_slice(),
            sources,
            policies,
            default_decision,
            snat_addresses: snat_addresses.into_boxed_slice(),
        })
    }

    /// The table to run with before the control plane installs one: generation 0, no pools, and
    /// every flow denied with [`NO_TABLE_INSTALLED_REASON`].
    pub fn empty_deny_all() -> RouteTable {
        RouteTable {
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
    pub fn source_has_policy(&self, src: Ipv4Addr) -> bool {
        self.sources.longest_match(u32::from(src)).is_some()
    }

    /// Decides what to do with a new flow from `src` to `dst`. Allocation-free: at most one hash
    /// probe per distinct prefix length present among the sources, then among the policy's rules.
    pub fn lookup(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Decision {
        let Some(policy_index) = self.sources.longest_match(u32::from(src)) else {
            return self.default_decision;
        };
        // Source values are indices of `policies`, checked by `compile_sources`.
        let policy = &self.policies[policy_index as usize];
        match policy.rules.longest_match(u32::from(dst)) {
            Some(encoded) => decode_decision(encoded),
            None => policy.default,
        }
    }

    pub fn generation(&self) -> u64 {
        self.spec.generation
    }

    /// The pool `id` names.
    ///
    /// # Panics
    /// If `id` came from another table and is out of range here; use [`RouteTable::get_pool`]
    /// when the id may be stale.
    pub fn pool(&self, id: PoolId) -> &Pool {
        &self.pools[id.index()]
    }

    /// The pool `id` names, or `None` if `id` is out of range (it came from another table).
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
    pub fn public_address(&self, snat: Ipv4Addr) -> Option<Ipv4Addr> {
        self.spec.public_addresses.get(&snat).copied()
    }

    /// All pools, indexed by [`PoolId::index`].
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// The reason behind a [`Decision::Deny`].
    ///
    /// # Panics
    /// If `id` came from another table and is out of range here.
    pub fn deny_reason(&self, id: DenyId) -> &str {
        &self.deny_reasons[id.index()]
    }

    /// All distinct deny reasons, indexed by [`DenyId::index`].
    pub fn deny_reasons(&self) -> &[String] {
        &self.deny_reasons
    }

    /// Every SNAT address of every pool, each once, in ascending order.
    pub fn snat_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.snat_addresses.iter().copied()
    }

    /// The validated input this table was compiled from.
    pub fn spec(&self) -> &RouteTableSpec {
        &self.spec
    }
}

// ---------------------------------------------------------------------------------------------
// Compilation
// ---------------------------------------------------------------------------------------------

fn check_sizes(spec: &RouteTableSpec) -> Result<(), RouteTableError> {
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
fn index_names<'a>(
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

fn index_policy_names(policies: &[PolicySpec]) -> Result<HashMap<&str, usize>, RouteTableError> {
    index_names(
        NameKind::Policy,
        policies.iter().map(|policy| policy.name.as_str()),
    )
}

/// Why `address` cannot be an SNAT source address, phrased to follow "it is".
fn unusable_address_reason(address: Ipv4Addr) -> Option<&'static str> {
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
fn check_public_addresses(
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
            if spec.addresses[..position].contains(&address) {
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

/// `index` is below [`MAX_POOLS`], checked by [`check_sizes`], so it fits.
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

const DECISION_TAG_SHIFT: u32 = 16;
const DECISION_TAG_BYPASS: u32 = 0;
const DECISION_TAG_SNAT: u32 = 1;
const DECISION_TAG_DENY: u32 = 2;

/// Packs a decision into a [`PrefixMap`] value: tag in bits 16.., id in bits 0..16.
fn encode_decision(decision: Decision) -> u32 {
    match decision {
        Decision::Bypass => DECISION_TAG_BYPASS << DECISION_TAG_SHIFT,
        Decision::Snat(PoolId(id)) => DECISION_TAG_SNAT << DECISION_TAG_SHIFT | u32::from(id),
        Decision::Deny(DenyId(id)) => DECISION_TAG_DENY << DECISION_TAG_SHIFT | u32::from(id),
    }
}

fn decode_decision(encoded: u32) -> Decision {
    let id = (encoded & 0xffff) as u16;
    match encoded >> DECISION_TAG_SHIFT {
        DECISION_TAG_BYPASS => Decision::Bypass,
        DECISION_TAG_SNAT => Decision::Snat(PoolId(id)),
        _ => Decision::Deny(DenyId(id)),
    }
}

// ---------------------------------------------------------------------------------------------
// Longest-prefix match
// ---------------------------------------------------------------------------------------------

/// Immutable longest-prefix-match map from IPv4 prefixes to `u32` values (below `u32::MAX`).
///
/// One open-addressing hash table (linear probing, load factor at most 1/2) per prefix length
/// present, probed longest first: a lookup costs at most one probe sequence per distinct length,
/// and tables with /32 pods or a handful of wide CIDRs probe one or two levels. Each slot packs
/// `value << 32 | network` in a `u64`, so a probe touches one word; [`EMPTY_SLOT`] cannot be a
/// real entry because values stay below `u32::MAX`.
#[derive(Debug, Clone)]
struct PrefixMap {
    /// Longest prefix length first.
    levels: Box<[PrefixLevel]>,
}

#[derive(Debug, Clone)]
struct PrefixLevel {
    netmask: u32,
    /// `64 - log2(slots.len())`: Fibonacci hashing keeps the top bits of `network * φ`.
    hash_shift: u32,
    slots: Box<[u64]>,
}

const EMPTY_SLOT: u64 = u64::MAX;
/// 2^64 / φ, odd: multiplying by it spreads every input bit into the top bits.
const FIBONACCI_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl PrefixLevel {
    fn home_slot(&self, network: u32) -> usize {
        (u64::from(network).wrapping_mul(FIBONACCI_MULTIPLIER) >> self.hash_shift) as usize
    }

    fn get(&self, network: u32) -> Option<u32> {
        let index_mask = self.slots.len() - 1;
        let mut index = self.home_slot(network);
        // Terminates: at least half the slots are empty.
        loop {
            let slot = self.slots[index];
            if slot == EMPTY_SLOT {
                return None;
            }
            if slot as u32 == network {
                return Some((slot >> 32) as u32);
            }
            index = (index + 1) & index_mask;
        }
    }

    /// Inserts or replaces; the caller sized `slots` for every entry at load factor 1/2.
    fn insert(&mut self, network: u32, value: u32) {
        debug_assert!(value != u32::MAX, "u32::MAX values would alias EMPTY_SLOT");
        let index_mask = self.slots.len() - 1;
        let mut index = self.home_slot(network);
        loop {
            let slot = self.slots[index];
            if slot == EMPTY_SLOT || slot as u32 == network {
                self.slots[index] = u64::from(value) << 32 | u64::from(network);
                return;
            }
            index = (index + 1) & index_mask;
        }
    }
}

impl PrefixMap {
    /// Builds from `(prefix, value)` pairs whose prefixes have no host bits set. A later duplicate
    /// prefix replaces an earlier one (validation rejects duplicates before this point).
    fn build(entries: &[(Ipv4Net, u32)]) -> PrefixMap {
        let mut by_length: Vec<Vec<(u32, u32)>> = vec![Vec::new(); 33];
        for &(prefix, value) in entries {
            by_length[usize::from(prefix.prefix_len())].push((u32::from(prefix.network()), value));
        }
        let levels = by_length
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, level_entries)| !level_entries.is_empty())
            .map(|(length, level_entries)| {
                let slot_count = (level_entries.len() * 2).next_power_of_two();
                let mut level = PrefixLevel {
                    netmask: netmask(length),
                    hash_shift: 64 - slot_count.trailing_zeros(),
                    slots: vec![EMPTY_SLOT; slot_count].into_boxed_slice(),
                };
                for &(network, value) in level_entries {
                    level.insert(network, value);
                }
                level
            })
            .collect();
        PrefixMap { levels }
    }

    fn longest_match(&self, address: u32) -> Option<u32> {
        self.levels
            .iter()
            .find_map(|level| level.get(address & level.netmask))
    }
}

fn netmask(prefix_len: usize) -> u32 {
    match prefix_len {
        0 => 0,
        length => u32::MAX << (32 - length),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn mix64_is_the_splitmix64_finalizer() {
        // First output of the reference splitmix64 generator seeded with 0.
        assert_eq!(mix64(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
        assert_eq!(mix64(0), 0);
    }

    #[test]
    fn decision_encoding_round_trips() {
        for decision in [
            Decision::Bypass,
            Decision::Snat(PoolId(0)),
            Decision::Snat(PoolId(1023)),
            Decision::Deny(DenyId(0)),
            Decision::Deny(DenyId(u16::MAX)),
        ] {
            let encoded = encode_decision(decision);
            assert_ne!(encoded, u32::MAX);
            assert_eq!(decode_decision(encoded), decision);
        }
    }

    #[test]
    fn prefix_map_prefers_longest_and_handles_extremes() {
        let map = PrefixMap::build(&[
            (net("0.0.0.0/0"), 0),
            (net("10.0.0.0/8"), 8),
            (net("10.1.0.0/16"), 16),
            (net("10.1.2.3/32"), 32),
            (net("255.255.255.255/32"), 99),
            (net("0.0.0.0/32"), 77),
        ]);
        let lookup = |text: &str| map.longest_match(u32::from(ip(text)));
        assert_eq!(lookup("10.1.2.3"), Some(32));
        assert_eq!(lookup("10.1.2.4"), Some(16));
        assert_eq!(lookup("10.2.0.0"), Some(8));
        assert_eq!(lookup("11.0.0.0"), Some(0));
        assert_eq!(lookup("255.255.255.255"), Some(99));
        assert_eq!(lookup("0.0.0.0"), Some(77));
        assert_eq!(lookup("0.0.0.1"), Some(0));
    }

    #[test]
    fn empty_prefix_map_matches_nothing() {
        let map = PrefixMap::build(&[]);
        assert_eq!(map.longest_match(0), None);
        assert_eq!(map.longest_match(u32::MAX), None);
    }

    #[test]
    fn prefix_map_finds_every_key_of_a_large_dense_level() {
        // Consecutive /32s collide often in the high bits before mixing; all must be found.
        let entries: Vec<(Ipv4Net, u32)> = (0..5_000u32)
            .map(|i| {
                (
                    Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap(),
                    i,
                )
            })
            .collect();
        let map = PrefixMap::build(&entries);
        for i in 0..5_000u32 {
            assert_eq!(map.longest_match(0x0a00_0000 + i), Some(i));
        }
        assert_eq!(map.longest_match(0x0a00_0000 + 5_000), None);
        assert_eq!(map.longest_match(0x0b00_0000), None);
    }

    fn address_strategy() -> impl Strategy<Value = u32> {
        // Mostly inside 10.0.0.0/16 so that random prefixes overlap and nest.
        prop_oneof![
            any::<u32>(),
            (0u32..=0xffff).prop_map(|low| 0x0a00_0000 | low),
            (0u32..=0xff).prop_map(|octet| 0x0a00_0000 | octet << 8),
        ]
    }

    fn prefix_strategy() -> impl Strategy<Value = Ipv4Net> {
        (address_strategy(), 0u8..=32).prop_map(|(address, length)| {
            Ipv4Net::new(Ipv4Addr::from(address), length)
                .unwrap()
                .trunc()
        })
    }

    proptest! {
        #[test]
        fn prefix_map_equals_linear_scan(
            prefixes in proptest::collection::vec(prefix_strategy(), 0..300),
            probes in proptest::collection::vec(address_strategy(), 1..100),
        ) {
            let mut entries: Vec<(Ipv4Net, u32)> = Vec::new();
            for (value, prefix) in prefixes.into_iter().enumerate() {
                if !entries.iter().any(|(existing, _)| *existing == prefix) {
                    entries.push((prefix, value as u32));
                }
            }
            let map = PrefixMap::build(&entries);
            for probe in probes {
                let expected = entries
                    .iter()
                    .filter(|(prefix, _)| prefix.contains(&Ipv4Addr::from(probe)))
                    .max_by_key(|(prefix, _)| prefix.prefix_len())
                    .map(|&(_, value)| value);
                prop_assert_eq!(map.longest_match(probe), expected);
            }
        }
    }
}
