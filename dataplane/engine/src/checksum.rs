//! Internet checksum arithmetic: full computation (RFC 1071) for tests and for packets the engine
//! builds itself, and incremental update (RFC 1624) for packets it translates.
//!
//! All sums are kept as one's-complement sums in a `u32` accumulator and folded to 16 bits at the
//! end. Checksum fields are read and written as big-endian `u16`, the order they have on the wire.
#![expect(
    clippy::indexing_slicing,
    reason = "fixed-size chunks and arrays (`chunks_exact`, `&[u8; 20]`), and `read_u16`/`write_u16` at header offsets the parser checked"
)]

use std::net::Ipv4Addr;

/// Adds `bytes` to a running one's-complement sum, as big-endian 16-bit words. An odd trailing byte
/// is padded with zero, as RFC 1071 specifies.
pub fn sum_bytes(acc: u32, bytes: &[u8]) -> u32 {
    // Sum 32-bit big-endian words into a 64-bit accumulator and fold once at the end: the
    // one's-complement sum is associative, so wider words give the same result with fewer steps.
    let mut wide = u64::from(acc);
    let mut quads = bytes.chunks_exact(4);
    for q in &mut quads {
        wide += u64::from(u32::from_be_bytes([q[0], q[1], q[2], q[3]]));
    }
    let rest = quads.remainder();
    let mut pairs = rest.chunks_exact(2);
    for pair in &mut pairs {
        wide += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = pairs.remainder() {
        wide += u64::from(u16::from_be_bytes([*last, 0]));
    }
    // Fold 64 → 32 → 17 bits; callers may keep adding with `add`.
    wide = (wide & 0xffff_ffff) + (wide >> 32);
    wide = (wide & 0xffff_ffff) + (wide >> 32);
    let mut folded = (wide & 0xffff) + (wide >> 16);
    folded = (folded & 0xffff) + (folded >> 16);
    folded as u32
}

/// One's-complement addition with end-around carry, kept below 2^17 so it can never overflow.
#[cfg(test)]
#[inline]
fn add(acc: u32, value: u32) -> u32 {
    let sum = acc + value;
    (sum & 0xffff) + (sum >> 16)
}

/// Folds a running sum to 16 bits and complements it: the value to store in a checksum field.
#[inline]
pub fn finish(acc: u32) -> u16 {
    let mut sum = acc;
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The checksum of `bytes` alone (e.g. an IPv4 header with its checksum field zeroed).
pub fn checksum(bytes: &[u8]) -> u16 {
    finish(sum_bytes(0, bytes))
}

/// Whether a 20-byte IPv4 header (no options) carries a correct checksum: the same verdict as
/// `checksum(header) == 0`, in a handful of instructions.
///
/// The one's-complement sum does not depend on byte order (RFC 1071 section 2 (B)), and a correct
/// header sums to 0xffff, which reads the same in either order: so the words are summed as they
/// lie in memory, without swapping bytes.
#[inline(always)]
pub fn header_checksum_valid(header: &[u8; 20]) -> bool {
    let word = |i: usize| {
        u64::from(u32::from_ne_bytes([
            header[i],
            header[i + 1],
            header[i + 2],
            header[i + 3],
        ]))
    };
    let mut sum = word(0) + word(4) + word(8) + word(12) + word(16);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum == 0xffff
}

#[cfg(test)]
/// The running sum of the IPv4 pseudo-header that TCP and UDP checksums cover (RFC 793, RFC 768).
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4_len: u16) -> u32 {
    let mut acc = sum_bytes(0, &src.octets());
    acc = sum_bytes(acc, &dst.octets());
    acc = add(acc, u32::from(protocol));
    add(acc, u32::from(l4_len))
}

/// An incremental checksum update (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`).
///
/// Collects the old and new values of every 16-bit word a translation rewrites, then applies the
/// whole difference to each checksum that covers those words. One delta usually serves several
/// checksums: an address rewrite touches the IPv4 header checksum and the TCP/UDP pseudo-header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChecksumDelta {
    /// Unfolded one's-complement sum: 16-bit terms are added plainly and folded once, in
    /// [`apply`](Self::apply). A u64 cannot overflow from any realistic number of terms.
    acc: u64,
}

impl ChecksumDelta {
    pub const fn new() -> Self {
        Self { acc: 0 }
    }

    /// Records that a 16-bit word changed from `old` to `new`.
    #[inline]
    pub fn word(mut self, old: u16, new: u16) -> Self {
        self.acc += u64::from(!old) + u64::from(new);
        self
    }

    /// Records that an IPv4 address changed (two 16-bit words).
    #[inline]
    pub fn address(self, old: Ipv4Addr, new: Ipv4Addr) -> Self {
        let (o, n) = (old.octets(), new.octets());
        self.word(
            u16::from_be_bytes([o[0], o[1]]),
            u16::from_be_bytes([n[0], n[1]]),
        )
        .word(
            u16::from_be_bytes([o[2], o[3]]),
            u16::from_be_bytes([n[2], n[3]]),
        )
    }

    /// Merges another delta into this one (e.g. address change + port change for TCP).
    #[inline]
    pub fn merge(mut self, other: ChecksumDelta) -> Self {
        self.acc += other.acc;
        self
    }

    /// Returns `checksum` updated for every recorded change.
    #[inline]
    pub fn apply(self, checksum: u16) -> u16 {
        let mut sum = self.acc + u64::from(!checksum);
        sum = (sum & 0xffff_ffff) + (sum >> 32);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        !(sum as u16)
    }

    /// Like [`apply`](Self::apply) for a UDP checksum: zero means "no checksum" and stays zero
    /// (RFC 768), and a computed zero is sent as 0xffff.
    #[inline]
    pub fn apply_udp(self, checksum: u16) -> u16 {
        if checksum == 0 {
            return 0;
        }
        match self.apply(checksum) {
            0 => 0xffff,
            other => other,
        }
    }
}

/// Reads a big-endian u16 at `offset`. Callers have bounds-checked the header already; this only
/// exists to keep the byte shuffling in one place.
#[inline]
pub(crate) fn read_u16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_be_bytes([bytes[offset], bytes[offset + 1]])
}

#[inline]
pub(crate) fn write_u16(bytes: &mut [u8], offset: usize, value: u16) {
    bytes[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 section 3 worked example.
    #[test]
    fn rfc1071_example_sum() {
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum_bytes(0, &bytes)), !0xddf2);
    }

    #[test]
    fn odd_length_is_zero_padded() {
        assert_eq!(checksum(&[0xab]), checksum(&[0xab, 0x00]));
    }

    #[test]
    fn udp_zero_checksum_is_preserved() {
        let delta =
            ChecksumDelta::new().address(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(1, 2, 3, 4));
        assert_eq!(delta.apply_udp(0), 0);
    }

    proptest! {
        /// The byte-order-free header check agrees with a full checksum computation, for valid
        /// headers (checksum filled in) and corrupted ones alike.
        #[test]
        fn header_check_agrees_with_full_checksum(mut header in any::<[u8; 20]>(),
                                                  fill_in in any::<bool>(),
                                                  flip in any::<prop::sample::Index>()) {
            if fill_in {
                write_u16(&mut header, 10, 0);
                let sum = checksum(&header);
                write_u16(&mut header, 10, sum);
                prop_assert!(header_checksum_valid(&header));
                let i = flip.index(20);
                header[i] ^= 0x10;
            }
            prop_assert_eq!(header_checksum_valid(&header), checksum(&header) == 0);
        }

        /// Incremental update of any word in any buffer equals a full recomputation (RFC 1624).
        #[test]
        fn incremental_equals_full(mut data in proptest::collection::vec(any::<u8>(), 2..200),
                                   word_index in any::<prop::sample::Index>(),
                                   new_value in any::<u16>()) {
            let words = data.len() / 2;
            let i = word_index.index(words) * 2;
            let before = checksum(&data);
            let old = read_u16(&data, i);
            write_u16(&mut data, i, new_value);
            let updated = ChecksumDelta::new().word(old, new_value).apply(before);
            let full = checksum(&data);
            // 0x0000 and 0xffff are the same value in one's complement; RFC 1624 eqn. 3 avoids
            // producing -0 except when the data itself sums to zero.
            prop_assert!(updated == full || (updated ^ full) == 0xffff && (updated == 0 || full == 0),
                "updated {updated:#06x} full {full:#06x}");
        }
    }
}
