//! Timing bounds of a comparison run.

use std::time::Duration;

/// TCP port of the receiver's listener in the connections-per-second run.
pub const CPS_PORT: u16 = 9100;
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);
pub(crate) const GATEWAY_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time a generator process may take beyond its run (start-up, ARP, drain).
pub(crate) const PROCESS_SLACK: Duration = Duration::from_secs(20);
pub(crate) const BASELINE_WINDOW: Duration = Duration::from_secs(1);
/// Packets a generator may send per second of its run, as its `--count` bound.
pub(crate) const COUNT_PER_SECOND: u64 = 20_000_000;
/// Time for egw-gateway to apply a route table after SIGHUP.
pub(crate) const RELOAD_SETTLE: Duration = Duration::from_secs(1);
/// Bound on one warm-up pass (every flow once).
pub(crate) const WARMUP_MAX_SECONDS: u64 = 60;
