//! The longest-prefix-match map behind both route-table lookups (source → policy, destination →
//! decision): one open-addressing hash level per prefix length present.

use ipnet::Ipv4Net;

/// Immutable longest-prefix-match map from IPv4 prefixes to `u32` values (below `u32::MAX`).
///
/// One open-addressing hash table (linear probing, load factor at most 1/2) per prefix length
/// present, probed longest first: a lookup costs at most one probe sequence per distinct length,
/// and tables with /32 pods or a handful of wide CIDRs probe one or two levels. Each slot packs
/// `value << 32 | network` in a `u64`, so a probe touches one word; [`EMPTY_SLOT`] cannot be a
/// real entry because values stay below `u32::MAX`.
#[derive(Debug, Clone)]
pub(crate) struct PrefixMap {
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
    #[inline]
    fn home_slot(&self, network: u32) -> usize {
        (u64::from(network).wrapping_mul(FIBONACCI_MULTIPLIER) >> self.hash_shift) as usize
    }

    #[inline]
    fn get(&self, network: u32) -> Option<u32> {
        let index_mask = self.slots.len() - 1;
        let mut index = self.home_slot(network);
        // Terminates: at least half the slots are empty. `index` is masked to the slot count (a
        // power of two), so `get` never misses; it costs the same bounds check indexing would.
        loop {
            let slot = *self.slots.get(index)?;
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
        // `index` is masked to the slot count (a power of two): the loop only ends by returning.
        while let Some(slot) = self.slots.get_mut(index) {
            if *slot == EMPTY_SLOT || *slot as u32 == network {
                *slot = u64::from(value) << 32 | u64::from(network);
                return;
            }
            index = (index + 1) & index_mask;
        }
    }
}

impl PrefixMap {
    /// Builds from `(prefix, value)` pairs whose prefixes have no host bits set. A later duplicate
    /// prefix replaces an earlier one (validation rejects duplicates before this point).
    pub(crate) fn build(entries: &[(Ipv4Net, u32)]) -> PrefixMap {
        let mut by_length: Vec<Vec<(u32, u32)>> = vec![Vec::new(); 33];
        for &(prefix, value) in entries {
            // A prefix length is at most 32: every one has its level.
            if let Some(level) = by_length.get_mut(usize::from(prefix.prefix_len())) {
                level.push((u32::from(prefix.network()), value));
            }
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

    #[inline]
    pub(crate) fn longest_match(&self, address: u32) -> Option<u32> {
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
    use std::net::Ipv4Addr;

    use super::*;
    use proptest::prelude::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
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
