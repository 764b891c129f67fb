//! Deterministic pseudo-random byte streams, so upload/download integrity can be checked by
//! regenerating the same bytes on the other side instead of storing 200 MB anywhere.

/// SplitMix64: tiny, fast, and fully determined by its seed — exactly what a test pattern needs
/// (it is not, and need not be, cryptographically secure).
#[derive(Debug, Clone)]
pub struct PatternStream {
    state: u64,
    pending: [u8; 8],
    pending_len: usize,
}

impl PatternStream {
    pub fn new(seed: u64) -> Self {
        PatternStream {
            state: seed,
            pending: [0; 8],
            pending_len: 0,
        }
    }

    fn next_word(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fills `buf` with the next bytes of the stream. Successive calls continue the stream
    /// regardless of how the caller chunks it, so sender and receiver may use different buffers.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut written = 0;
        while written < buf.len() {
            if self.pending_len == 0 {
                self.pending = self.next_word().to_le_bytes();
                self.pending_len = 8;
            }
            let start = 8 - self.pending_len;
            let take = self.pending_len.min(buf.len() - written);
            buf[written..written + take].copy_from_slice(&self.pending[start..start + take]);
            self.pending_len -= take;
            written += take;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_does_not_change_the_stream() {
        let mut whole = vec![0u8; 1000];
        PatternStream::new(7).fill(&mut whole);
        let mut pieces = vec![0u8; 1000];
        let mut stream = PatternStream::new(7);
        let mut offset = 0;
        for size in [1usize, 3, 8, 13, 100, 875] {
            stream.fill(&mut pieces[offset..offset + size]);
            offset += size;
        }
        assert_eq!(offset, 1000);
        assert_eq!(whole, pieces);
    }

    #[test]
    fn different_seeds_differ() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        PatternStream::new(1).fill(&mut a);
        PatternStream::new(2).fill(&mut b);
        assert_ne!(a, b);
    }
}
