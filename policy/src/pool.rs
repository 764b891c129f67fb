//! A compiled pool of external addresses and the rendezvous hash that picks one per new flow.

use std::net::Ipv4Addr;

use crate::decision::PoolId;

/// A compiled pool of external addresses.
#[derive(Debug, Clone)]
pub struct Pool {
    pub(crate) id: PoolId,
    pub(crate) name: String,
    pub(crate) addresses: Box<[Ipv4Addr]>,
    /// `mix64(address)` per address, precomputed so that [`Pool::select`] mixes once per address.
    pub(crate) address_hashes: Box<[u64]>,
    pub(crate) pairing: bool,
}

impl Pool {
    #[inline]
    pub fn id(&self) -> PoolId {
        self.id
    }

    #[inline]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool's addresses, in spec order (never empty).
    #[inline]
    pub fn addresses(&self) -> &[Ipv4Addr] {
        &self.addresses
    }

    #[inline]
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
    #[inline]
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
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix64_is_the_splitmix64_finalizer() {
        // First output of the reference splitmix64 generator seeded with 0.
        assert_eq!(mix64(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
        assert_eq!(mix64(0), 0);
    }
}
