//! What a route table decides for a new flow ([`Decision`]), the ids it hands out, and the
//! compact `u32` form decisions take inside a prefix map.
//!
//! A leaf module: the pool, table and compile modules all use it, it uses none of them.

#[cfg(doc)]
use crate::{CompiledRouteTable, Pool};

/// Index of a [`Pool`] in the [`CompiledRouteTable`] that produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
/// The index is crate-visible so that compilation can mint ids and the lookup can decode them.
pub struct PoolId(pub(crate) u16);

impl PoolId {
    /// Position in [`CompiledRouteTable::pools`], e.g. to index per-pool counters.
    #[inline]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Index of a deny reason in the [`CompiledRouteTable`] that produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DenyId(pub(crate) u16);

impl DenyId {
    /// Dense index (`0..number of distinct reasons`), e.g. to index per-reason counters.
    #[inline]
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
    /// Drop; [`CompiledRouteTable::deny_reason`] says why.
    Deny(DenyId),
}

const DECISION_TAG_SHIFT: u32 = 16;
const DECISION_TAG_BYPASS: u32 = 0;
const DECISION_TAG_SNAT: u32 = 1;
const DECISION_TAG_DENY: u32 = 2;

/// Packs a decision into a `PrefixMap` value: tag in bits 16.., id in bits 0..16.
pub(crate) fn encode_decision(decision: Decision) -> u32 {
    match decision {
        Decision::Bypass => DECISION_TAG_BYPASS << DECISION_TAG_SHIFT,
        Decision::Snat(PoolId(id)) => DECISION_TAG_SNAT << DECISION_TAG_SHIFT | u32::from(id),
        Decision::Deny(DenyId(id)) => DECISION_TAG_DENY << DECISION_TAG_SHIFT | u32::from(id),
    }
}

#[inline]
pub(crate) fn decode_decision(encoded: u32) -> Decision {
    let id = (encoded & 0xffff) as u16;
    match encoded >> DECISION_TAG_SHIFT {
        DECISION_TAG_BYPASS => Decision::Bypass,
        DECISION_TAG_SNAT => Decision::Snat(PoolId(id)),
        _ => Decision::Deny(DenyId(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
