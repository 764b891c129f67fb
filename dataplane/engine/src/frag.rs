//! IPv4 fragments (RFC 4787 REQ-14): every fragment of a datagram gets the same translation, in
//! order or not.
//!
//! Only the first fragment carries ports, so it alone can be matched against the flow table. When
//! it is translated, the engine records the translation under the datagram's identity
//! (source, destination, protocol, IP id); later fragments apply the recorded translation. A later
//! fragment that arrives before its first fragment is copied into a small, pre-allocated stash
//! and released once the first fragment has been seen, or dropped (counted) when it times out.
//!
//! Both structures are bounded; neither allocates after construction.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

/// Identity of one IPv4 datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DatagramId {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub id: u16,
}

/// What to do with the datagram's later fragments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragmentAction {
    /// Rewrite the source address (pod → external), as the first fragment was.
    TranslateSource(Ipv4Addr),
    /// Rewrite the destination address (external → pod), as the first fragment was.
    TranslateDestination(Ipv4Addr),
    /// Pass unchanged (a `Bypass` route).
    Forward,
    /// Another core owns the flow: hand the fragment over.
    HandOff(u16),
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    action: FragmentAction,
    expires_ms: u64,
}

/// Sizes of the fragment structures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentConfig {
    /// Datagrams whose translation is remembered at once.
    pub datagrams: u32,
    /// Out-of-order fragments held while waiting for their first fragment.
    pub stash_slots: u16,
    /// Largest fragment the stash holds, in bytes (frame included).
    pub stash_slot_bytes: u16,
    /// How long a datagram's fragments are tracked, in milliseconds (RFC 791 suggests 15 s; Linux
    /// uses 30 s).
    pub timeout_ms: u32,
}

impl Default for FragmentConfig {
    fn default() -> Self {
        Self {
            datagrams: 4096,
            stash_slots: 64,
            stash_slot_bytes: 2048,
            timeout_ms: 30_000,
        }
    }
}

struct StashSlot {
    datagram: DatagramId,
    bytes: Vec<u8>,
    len: usize,
    expires_ms: u64,
    in_use: bool,
    /// The first fragment has been seen: the slot is waiting to be released.
    ready: bool,
}

/// Per-core fragment state.
pub struct Fragments {
    config: FragmentConfig,
    entries: HashMap<DatagramId, Entry>,
    /// Insertion order, for expiry and for evicting the oldest entry when full.
    order: VecDeque<(DatagramId, u64)>,
    stash: Vec<StashSlot>,
    ready: u16,
}

/// Result of offering a later fragment to the stash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StashResult {
    Stashed,
    Full,
    TooLarge,
}

impl Fragments {
    pub fn new(config: FragmentConfig) -> Self {
        let unused = DatagramId {
            src: Ipv4Addr::UNSPECIFIED,
            dst: Ipv4Addr::UNSPECIFIED,
            protocol: 0,
            id: 0,
        };
        let stash = (0..config.stash_slots)
            .map(|_| StashSlot {
                datagram: unused,
                bytes: vec![0; usize::from(config.stash_slot_bytes)],
                len: 0,
                expires_ms: 0,
                in_use: false,
                ready: false,
            })
            .collect();
        Self {
            config,
            entries: HashMap::with_capacity(config.datagrams as usize),
            order: VecDeque::with_capacity(config.datagrams as usize),
            stash,
            ready: 0,
        }
    }

    /// The recorded action for a datagram's later fragments, if its first fragment was seen.
    pub fn lookup(&self, datagram: &DatagramId, now_ms: u64) -> Option<FragmentAction> {
        self.entries
            .get(datagram)
            .filter(|e| e.expires_ms > now_ms)
            .map(|e| e.action)
    }

    /// Records the action for a datagram (called when its first fragment is processed) and marks
    /// any stashed fragments of it ready for release.
    ///
    /// Each tracked datagram has exactly one entry in `order`, with the same deadline as its map
    /// entry: a repeated first fragment (a retransmission, or the IP id reused while the datagram
    /// is still tracked) updates the action but keeps the first deadline, so the map entry can
    /// never outlive its place in the expiry order (an orphan would hold a slot for good).
    pub fn record(&mut self, datagram: DatagramId, action: FragmentAction, now_ms: u64) {
        self.expire_entries(now_ms);
        if let Some(entry) = self.entries.get_mut(&datagram) {
            entry.action = action;
        } else {
            if self.entries.len() >= self.config.datagrams as usize {
                // Evict the oldest datagram: fragments are short-lived, and a stale entry is
                // worth less than a live one.
                if let Some((oldest, _)) = self.order.pop_front() {
                    self.entries.remove(&oldest);
                }
            }
            let expires_ms = now_ms + u64::from(self.config.timeout_ms);
            self.order.push_back((datagram, expires_ms));
            self.entries.insert(datagram, Entry { action, expires_ms });
        }
        for slot in self
            .stash
            .iter_mut()
            .filter(|s| s.in_use && !s.ready && s.datagram == datagram)
        {
            slot.ready = true;
            self.ready += 1;
        }
    }

    fn expire_entries(&mut self, now_ms: u64) {
        while let Some(&(datagram, expires_ms)) = self.order.front() {
            if expires_ms > now_ms {
                break;
            }
            self.order.pop_front();
            if self
                .entries
                .get(&datagram)
                .is_some_and(|e| e.expires_ms <= now_ms)
            {
                self.entries.remove(&datagram);
            }
        }
    }

    /// Copies an out-of-order fragment into the stash.
    pub fn stash(&mut self, datagram: DatagramId, frame: &[u8], now_ms: u64) -> StashResult {
        if frame.len() > usize::from(self.config.stash_slot_bytes) {
            return StashResult::TooLarge;
        }
        let Some(slot) = self.stash.iter_mut().find(|s| !s.in_use) else {
            return StashResult::Full;
        };
        // Frames longer than a stash buffer were turned away above as `TooLarge`.
        let Some(bytes) = slot.bytes.get_mut(..frame.len()) else {
            return StashResult::TooLarge;
        };
        bytes.copy_from_slice(frame);
        slot.len = frame.len();
        slot.datagram = datagram;
        slot.expires_ms = now_ms + u64::from(self.config.timeout_ms);
        slot.in_use = true;
        slot.ready = false;
        StashResult::Stashed
    }

    /// Whether any stashed fragment is ready to be released.
    #[cfg(test)]
    pub fn has_ready(&self) -> bool {
        self.ready > 0
    }

    /// Takes the buffer of one ready stashed fragment: `(slot, buffer, len)`. The caller processes
    /// it and gives the buffer back with [`restore`](Self::restore), so no allocation happens.
    pub fn take_ready(&mut self) -> Option<(usize, Vec<u8>, usize)> {
        let (index, slot) = self
            .stash
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.in_use && s.ready)?;
        slot.in_use = false;
        slot.ready = false;
        self.ready -= 1;
        Some((index, std::mem::take(&mut slot.bytes), slot.len))
    }

    pub fn restore(&mut self, index: usize, bytes: Vec<u8>) {
        if let Some(slot) = self.stash.get_mut(index) {
            slot.bytes = bytes;
        }
    }

    /// Drops stashed fragments whose first fragment never came; returns how many.
    pub fn expire_stash(&mut self, now_ms: u64) -> u32 {
        let mut expired = 0;
        for slot in self
            .stash
            .iter_mut()
            .filter(|s| s.in_use && !s.ready && s.expires_ms <= now_ms)
        {
            slot.in_use = false;
            expired += 1;
        }
        expired
    }

    #[cfg(test)]
    pub fn stashed(&self) -> usize {
        self.stash.iter().filter(|s| s.in_use).count()
    }

    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dgram(id: u16) -> DatagramId {
        DatagramId {
            src: Ipv4Addr::new(10, 244, 1, 10),
            dst: Ipv4Addr::new(203, 0, 113, 10),
            protocol: 17,
            id,
        }
    }

    #[test]
    fn stashed_fragment_is_released_when_first_fragment_is_recorded() {
        let mut f = Fragments::new(FragmentConfig::default());
        assert_eq!(f.stash(dgram(1), &[1, 2, 3], 0), StashResult::Stashed);
        assert!(!f.has_ready());
        f.record(dgram(2), FragmentAction::Forward, 0);
        assert!(!f.has_ready(), "another datagram does not release it");
        f.record(
            dgram(1),
            FragmentAction::TranslateSource(Ipv4Addr::new(198, 51, 100, 1)),
            0,
        );
        let (index, bytes, len) = f.take_ready().expect("ready");
        assert_eq!(&bytes[..len], &[1, 2, 3]);
        f.restore(index, bytes);
        assert_eq!(f.stashed(), 0);
    }

    #[test]
    fn a_repeated_first_fragment_never_orphans_its_entry() {
        // Two datagrams fit. A's first fragment comes twice; once its deadline passes it must
        // leave the table, or it holds one of the two slots for good.
        let mut f = Fragments::new(FragmentConfig {
            datagrams: 2,
            ..FragmentConfig::default()
        });
        let action = FragmentAction::TranslateSource(Ipv4Addr::new(198, 51, 100, 1));
        f.record(dgram(1), action, 0);
        f.record(dgram(1), action, 20_000);
        f.record(dgram(2), action, 31_000);
        assert_eq!(
            f.lookup(&dgram(1), 31_000),
            None,
            "A keeps its first deadline"
        );
        f.record(dgram(3), action, 100_000);
        f.record(dgram(4), action, 100_000);
        assert!(f.lookup(&dgram(3), 100_000).is_some());
        assert!(f.lookup(&dgram(4), 100_000).is_some());
        assert_eq!(f.tracked(), 2);
        assert_eq!(
            f.order.len(),
            f.entries.len(),
            "one expiry-order entry per datagram"
        );
    }

    #[test]
    fn a_reused_ip_id_after_expiry_is_tracked_afresh() {
        let mut f = Fragments::new(FragmentConfig::default());
        let first = FragmentAction::TranslateSource(Ipv4Addr::new(198, 51, 100, 1));
        let second = FragmentAction::TranslateSource(Ipv4Addr::new(198, 51, 100, 2));
        f.record(dgram(7), first, 0);
        assert_eq!(f.lookup(&dgram(7), 31_000), None);
        f.record(dgram(7), second, 40_000);
        assert_eq!(f.lookup(&dgram(7), 69_000), Some(second));
        assert_eq!(f.lookup(&dgram(7), 70_000), None);
        assert_eq!((f.order.len(), f.entries.len()), (1, 1));
        // Many repeats inside the window add nothing to either structure.
        for t in 0..1000 {
            f.record(dgram(7), second, 41_000 + t);
        }
        assert_eq!((f.order.len(), f.entries.len()), (1, 1));
    }

    #[test]
    fn entries_and_stash_expire() {
        let config = FragmentConfig {
            datagrams: 2,
            stash_slots: 1,
            stash_slot_bytes: 16,
            timeout_ms: 1000,
        };
        let mut f = Fragments::new(config);
        f.record(dgram(1), FragmentAction::Forward, 0);
        assert!(f.lookup(&dgram(1), 999).is_some());
        assert!(f.lookup(&dgram(1), 1000).is_none());
        assert_eq!(f.stash(dgram(5), &[0; 8], 0), StashResult::Stashed);
        assert_eq!(f.stash(dgram(6), &[0; 8], 0), StashResult::Full);
        assert_eq!(f.stash(dgram(6), &[0; 17], 0), StashResult::TooLarge);
        assert_eq!(f.expire_stash(1000), 1);
        // Bounded: a third datagram evicts the oldest.
        f.record(dgram(2), FragmentAction::Forward, 0);
        f.record(dgram(3), FragmentAction::Forward, 0);
        assert!(f.tracked() <= 2);
    }
}
