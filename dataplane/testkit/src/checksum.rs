//! The kit's own Internet checksum (RFC 1071), kept apart from the engine's on purpose.
//!
//! The engine sums wide words and updates checksums incrementally (RFC 1624); this is the plain
//! textbook form, one 16-bit word at a time, so that a frame the decoder calls correct was checked
//! by arithmetic that shares no code with the engine under test.

use std::net::Ipv4Addr;

/// Adds `bytes` to a running one's-complement sum as big-endian 16-bit words; an odd trailing byte
/// is padded with zero (RFC 1071). The result stays below 2^17, so callers may keep adding.
pub(crate) fn sum_bytes(acc: u32, bytes: &[u8]) -> u32 {
    let mut sum = acc;
    let mut words = bytes.chunks_exact(2);
    for word in &mut words {
        if let [high, low] = *word {
            sum = fold(sum + u32::from(u16::from_be_bytes([high, low])));
        }
    }
    if let [last] = *words.remainder() {
        sum = fold(sum + u32::from(u16::from_be_bytes([last, 0])));
    }
    sum
}

/// One end-around carry: keeps a sum below 2^17 so that adding a 16-bit word never overflows.
fn fold(sum: u32) -> u32 {
    (sum & 0xffff) + (sum >> 16)
}

/// Folds a running sum to 16 bits and complements it: the value a checksum field holds.
pub(crate) fn finish(acc: u32) -> u16 {
    let mut sum = acc;
    while sum > 0xffff {
        sum = fold(sum);
    }
    // Lossless: the loop leaves `sum` at most 0xffff.
    !(sum as u16)
}

/// The checksum of `bytes` alone (e.g. an IPv4 header with its checksum field zeroed; over a
/// header with a correct checksum in place, it is 0).
pub(crate) fn checksum(bytes: &[u8]) -> u16 {
    finish(sum_bytes(0, bytes))
}

/// The running sum of the IPv4 pseudo-header that TCP and UDP checksums cover (RFC 793, RFC 768).
pub(crate) fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4_len: u16) -> u32 {
    let mut sum = sum_bytes(0, &src.octets());
    sum = sum_bytes(sum, &dst.octets());
    sum = fold(sum + u32::from(protocol));
    fold(sum + u32::from(l4_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_sums_to_ddf2() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (checksum 220d).
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum_bytes(0, &bytes), 0xddf2);
        assert_eq!(checksum(&bytes), 0x220d);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum_bytes(0, &[0xab]), 0xab00);
        assert_eq!(sum_bytes(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn a_correct_header_checksums_to_zero() {
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let sum = checksum(&header);
        header[10..12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(sum, 0xb861);
        assert_eq!(checksum(&header), 0);
    }
}
