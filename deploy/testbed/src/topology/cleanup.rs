//! Removing labs: by prefix, the leftovers of killed runs, and the root check every lab needs.

use std::path::Path;

use egw_netns::namespace;

use crate::error::{LabError, Result};
use crate::topology::config::LAB_PREFIX_ROOT;

/// Fails unless the effective uid is 0. Read from /proc to stay free of unsafe FFI.
pub fn require_root() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|source| LabError::io("reading /proc/self/status", source))?;
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse::<u32>().ok())
        .ok_or_else(|| LabError::BadOutput {
            command: "/proc/self/status".to_owned(),
            output: "no Uid line".to_owned(),
        })?;
    if euid == 0 {
        Ok(())
    } else {
        Err(LabError::NotRoot { euid })
    }
}

/// Names of all network namespaces (`ip netns list`).
pub fn list_namespaces() -> Result<Vec<String>> {
    Ok(namespace::list()?)
}

/// Lab namespaces whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Result<Vec<String>> {
    Ok(namespace::with_prefix(prefix)?)
}

/// Kills every process inside namespace `name` (all of them were started by a lab) and
/// deletes it. A namespace that vanished meanwhile is not an error.
pub(crate) fn remove_namespace(name: &str) -> Result<()> {
    Ok(namespace::remove(name)?)
}

/// Removes lab work directories (logs, gateway config) in the temp dir whose name starts with
/// `prefix` and whose owner `keep` does not veto. Best effort: they are only disk clutter.
fn remove_workdirs(prefix: &str, keep: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && !keep(&name) && entry.path().is_dir() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether the process that created lab `name` (`egwlab-<pid>-...`) is still running.
fn lab_owner_alive(name: &str) -> bool {
    name.strip_prefix(LAB_PREFIX_ROOT)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes every namespace starting with `prefix` (which must start with [`LAB_PREFIX_ROOT`]),
/// killing processes inside first, and the matching work directories. Returns the namespaces
/// removed.
pub fn remove_namespaces_with_prefix(prefix: &str) -> Result<Vec<String>> {
    if !prefix.starts_with(LAB_PREFIX_ROOT) {
        return Err(LabError::Config(format!(
            "refusing to remove namespaces for prefix {prefix:?}: it does not start with {LAB_PREFIX_ROOT:?}"
        )));
    }
    let names = namespaces_with_prefix(prefix)?;
    for name in &names {
        remove_namespace(name)?;
    }
    remove_workdirs(prefix, |_| false);
    Ok(names)
}

/// Removes namespaces of labs whose creating process no longer exists (prefix
/// `egwlab-<pid>-...` with no `/proc/<pid>`): leftovers of a SIGKILLed run. Labs of live
/// processes, e.g. tests running in parallel, are left alone.
pub fn remove_stale_labs() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in namespaces_with_prefix(LAB_PREFIX_ROOT)? {
        if !lab_owner_alive(&name) {
            remove_namespace(&name)?;
            removed.push(name);
        }
    }
    remove_workdirs(LAB_PREFIX_ROOT, lab_owner_alive);
    Ok(removed)
}
