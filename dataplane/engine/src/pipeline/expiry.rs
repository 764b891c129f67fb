//! Housekeeping: idle flows expire a bounded amount of work at a time, between batches
//! ([`Engine::maintain`]) or from the packet path when expiry is due.

use std::time::Duration;

use super::introspection::flow_info;
use super::{millis, secs, Engine, FlowEvent};
use crate::counters::DropReason;

impl Engine {
    /// Housekeeping between batches or when idle: expires flows and stale fragments.
    pub fn maintain(&mut self, now: Duration, budget: u32) {
        self.expire(secs(now), budget);
        let stale = self.fragments.expire_stash(millis(now));
        for _ in 0..stale {
            self.counters.drops.record(DropReason::FragmentTimeout);
        }
    }

    pub(super) fn expire(&mut self, now_s: u32, budget: u32) {
        let mut expired = 0u64;
        let core = self.config.core;
        let events = &mut self.events;
        let (cap, dropped) = (self.event_capacity, &mut self.events_dropped);
        self.flows.expire(now_s, budget, |flow| {
            expired += 1;
            if let Some(events) = events.as_mut() {
                if events.len() < cap {
                    events.push(FlowEvent::Removed {
                        flow: flow_info(core, &flow, now_s),
                        reason: "idle_timeout",
                    });
                } else {
                    *dropped += 1;
                }
            }
        });
        self.counters.flows_expired += expired;
    }
}
