//! State shared by the workers and the control side: written by one side with an atomic store,
//! read by the other with an atomic load, never locked.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use arc_swap::ArcSwap;
use egw_engine::CompiledRouteTable;

use super::snapshot::CoreSnapshot;
use crate::nexthop::NextHops;

/// State shared by the workers and the control side.
pub(super) struct Shared {
    pub(super) table: ArcSwap<CompiledRouteTable>,
    /// Bumped after each new `table`, so a worker notices it with one load per batch.
    pub(super) table_version: AtomicU64,
    pub(super) stop: AtomicBool,
    pub(super) snapshots: Vec<ArcSwap<CoreSnapshot>>,
    pub(super) next_hops: Arc<ArcSwap<NextHops>>,
}

impl Shared {
    /// The state of `cores` workers before any has run: `table` served, empty snapshots.
    pub(super) fn new(
        table: CompiledRouteTable,
        cores: u16,
        next_hops: Arc<ArcSwap<NextHops>>,
    ) -> Self {
        Self {
            table_version: AtomicU64::new(1),
            table: ArcSwap::from_pointee(table),
            stop: AtomicBool::new(false),
            snapshots: (0..cores)
                .map(|core| {
                    ArcSwap::from_pointee(CoreSnapshot {
                        core,
                        ..CoreSnapshot::default()
                    })
                })
                .collect(),
            next_hops,
        }
    }
}
