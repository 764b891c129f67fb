//! Tearing labs down when the process is told to stop (SIGINT/SIGTERM), when destructors will
//! not run: every live lab registers its prefix here.

use std::sync::Mutex;
use std::thread;

use crate::error::{LabError, Result};
use crate::topology::cleanup::remove_namespaces_with_prefix;

/// Prefixes of labs alive in this process, for the signal handler.
static ACTIVE_PREFIXES: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub(crate) fn register_prefix(prefix: &str) {
    if let Ok(mut active) = ACTIVE_PREFIXES.lock() {
        active.push(prefix.to_owned());
    }
}

pub(crate) fn unregister_prefix(prefix: &str) {
    if let Ok(mut active) = ACTIVE_PREFIXES.lock() {
        active.retain(|candidate| candidate != prefix);
    }
}

/// Removes the namespaces of every lab alive in this process (used on SIGINT/SIGTERM, when
/// destructors will not run). Returns the namespaces removed.
pub fn teardown_active_labs() -> Vec<String> {
    let prefixes = ACTIVE_PREFIXES
        .lock()
        .map(|active| active.clone())
        .unwrap_or_default();
    prefixes
        .iter()
        .flat_map(|prefix| remove_namespaces_with_prefix(prefix).unwrap_or_default())
        .collect()
}

/// Spawns a thread that, on SIGINT or SIGTERM, tears down every active lab and exits with
/// 128 + signal number.
pub fn install_signal_teardown() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|source| LabError::io("installing signal handlers", source))?;
    thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let removed = teardown_active_labs();
            eprintln!(
                "egw-lab: signal {signal}: removed {} namespaces",
                removed.len()
            );
            std::process::exit(128 + signal);
        }
    });
    Ok(())
}
