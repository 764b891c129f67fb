//! AF_XDP sockets for one dataplane worker: a thin wrapper over `libc`.
//!
//! A [`Worker`] owns one rx queue on the inside interface and the same queue
//! on the outside interface (or one queue of a single interface in one-armed
//! mode). Both sockets share one UMEM when the kernel allows it, so a frame
//! received on one side is transmitted on the other without a copy.
//!
//! The worker loop:
//! ```no_run
//! # use egw_xdp::xsk::{Worker, Side, FrameDesc, TxStatus};
//! # fn run(worker: &mut Worker) {
//! let mut batch: Vec<FrameDesc> = Vec::with_capacity(64);
//! loop {
//!     worker.rx_batch(Side::Inside, &mut batch, 64);
//!     for desc in batch.drain(..) {
//!         let _packet = worker.packet_mut(&desc);
//!         // NAT engine rewrites the packet here, then either:
//!         let _status: TxStatus = worker.transmit(Side::Outside, desc);
//!         // ... or worker.recycle(desc) to drop it.
//!     }
//!     worker.flush();
//!     # break;
//! }
//! # }
//! ```
//! No step allocates per packet.

mod ring;
mod socket;
mod worker;

pub use worker::{
    FrameBoundsError, FrameDesc, FrameSize, Side, SocketInfo, SocketStatistics, TxStatus, Worker,
    WorkerConfig, WorkerCounters, XskError, XDP_PACKET_HEADROOM,
};
