//! Requests the control side sends a worker, served between batches so the packet path never
//! waits on a lock.

use std::net::Ipv4Addr;

use crossbeam::channel::{Sender, TrySendError};
use egw_engine::{Engine, FlowFilter, FlowInfo};

/// Commands queued per worker.
pub(super) const COMMAND_QUEUE: usize = 64;
/// Slots a flow listing scans per worker request, bounding the time a worker spends on it.
pub const LIST_SCAN_BUDGET: u32 = 1 << 16;

/// A request a worker serves between batches.
pub(super) enum Command {
    Drain {
        address: Ipv4Addr,
        draining: bool,
    },
    ListFlows {
        filter: FlowFilter,
        cursor: u32,
        limit: usize,
        reply: Sender<(Vec<FlowInfo>, Option<u32>)>,
    },
}

pub(super) fn serve_command(engine: &mut Engine, command: Command, now: std::time::Duration) {
    match command {
        Command::Drain { address, draining } => engine.set_draining(address, draining),
        Command::ListFlows {
            filter,
            cursor,
            limit,
            reply,
        } => {
            let mut flows = Vec::with_capacity(limit.min(1024));
            let next = engine.list_flows(&filter, cursor, limit, LIST_SCAN_BUDGET, now, &mut flows);
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                reply.try_send((flows, next))
            {
                // The caller gave up waiting.
            }
        }
    }
}
