//! Hand-off between cores: a packet that arrives on a core that does not own its flow is copied
//! into a single-producer single-consumer ring (one per ordered pair of cores) and processed by
//! the owner between its own batches.

use std::sync::Arc;

use crossbeam::queue::ArrayQueue;
use egw_engine::Ingress;

/// Frames one hand-off ring (one per ordered pair of cores) holds.
const HANDOFF_RING: usize = 1024;

/// A frame on its way to the core that owns its flow.
pub(super) struct HandedOff {
    pub(super) ingress: Ingress,
    pub(super) bytes: Vec<u8>,
}

/// One direction between two cores: frames go one way, emptied buffers come back.
pub(super) struct HandoffRing {
    pub(super) frames: ArrayQueue<HandedOff>,
    pub(super) spare: ArrayQueue<Vec<u8>>,
}

impl HandoffRing {
    fn new() -> Self {
        Self {
            frames: ArrayQueue::new(HANDOFF_RING),
            spare: ArrayQueue::new(HANDOFF_RING),
        }
    }
}

/// The rings of every ordered pair among `cores` cores, indexed `from * cores + to`.
pub(super) fn rings(cores: u16) -> Arc<Vec<HandoffRing>> {
    Arc::new(
        (0..usize::from(cores) * usize::from(cores))
            .map(|_| HandoffRing::new())
            .collect(),
    )
}

/// The hand-off rings of all ordered core pairs, seen from one core.
pub(super) struct Handoffs {
    pub(super) core: u16,
    pub(super) cores: u16,
    pub(super) rings: Arc<Vec<HandoffRing>>,
}

impl Handoffs {
    pub(super) fn ring(&self, from: u16, to: u16) -> &HandoffRing {
        &self.rings[usize::from(from) * usize::from(self.cores) + usize::from(to)]
    }

    /// Copies `bytes` into a recycled buffer on the ring to core `to`; `false` when it is full.
    pub(super) fn send(&self, to: u16, bytes: &[u8], ingress: Ingress) -> bool {
        let ring = self.ring(self.core, to);
        let mut buffer = ring.spare.pop().unwrap_or_default();
        buffer.clear();
        buffer.extend_from_slice(bytes);
        ring.frames
            .push(HandedOff {
                ingress,
                bytes: buffer,
            })
            .is_ok()
    }
}
