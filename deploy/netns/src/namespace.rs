//! Network namespaces as RAII guards: [`Netns`] creates a namespace and deletes it when dropped
//! (processes left inside are killed first), so nothing outlives a test, even one that panics.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::cmd;
use crate::error::Result;

/// Distinguishes the namespaces of one process; with the pid it makes names unique across
/// parallel tests and concurrently running suites.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Where iproute2 keeps the handle of a named namespace.
pub(crate) fn netns_path(name: &str) -> String {
    format!("/run/netns/{name}")
}

/// A unique name `<tag>-<pid>-<n>` for a group of namespaces of this process.
pub fn unique_name(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace we created; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up. The guard exists as soon as `ip netns add`
    /// succeeded, so a failure bringing `lo` up still deletes the namespace.
    pub fn create(name: impl Into<String>) -> Result<Netns> {
        let namespace = Netns { name: name.into() };
        cmd::run_args("ip", ["netns", "add", namespace.name.as_str()])?;
        bring_up_loopback(&namespace.name)?;
        Ok(namespace)
    }

    /// Creates namespace `<tag>-<pid>-<n>` (see [`unique_name`]).
    pub fn unique(tag: &str) -> Result<Netns> {
        Netns::create(unique_name(tag))
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <name> <args...>`; returns its standard output.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        ip_in(&self.name, args)
    }

    /// Kills the processes inside and deletes the namespace, reporting failure (drop only
    /// logs nothing and moves on).
    pub fn delete(self) -> Result<()> {
        let name = std::mem::take(&mut std::mem::ManuallyDrop::new(self).name);
        remove(&name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Best effort: a destructor cannot report, and a namespace that is already gone is fine.
        let _ = remove(&self.name);
    }
}

/// Creates namespace `name` with its loopback up, without a guard: for callers that track and
/// remove their namespaces themselves (the lab removes its namespaces by prefix, also those of
/// killed runs). If bringing `lo` up fails, the namespace exists and the caller must remove it.
pub fn add(name: &str) -> Result<()> {
    cmd::run_args("ip", ["netns", "add", name])?;
    bring_up_loopback(name)
}

fn bring_up_loopback(name: &str) -> Result<()> {
    ip_in(name, &["link", "set", "lo", "up"]).map(drop)
}

/// `ip -n <namespace> <args...>`; returns its standard output.
pub fn ip_in(namespace: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["-n", namespace];
    full.extend_from_slice(args);
    Ok(cmd::run_args("ip", full)?.stdout)
}

/// Names of all network namespaces (`ip netns list`).
pub fn list() -> Result<Vec<String>> {
    let output = cmd::run_args("ip", ["netns", "list"])?;
    Ok(output
        .stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Namespaces whose name starts with `prefix`.
pub fn with_prefix(prefix: &str) -> Result<Vec<String>> {
    Ok(list()?
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .collect())
}

/// Kills every process inside namespace `name` (callers only remove namespaces they created,
/// so every such process is theirs) and deletes it. A namespace that vanished meanwhile is not
/// an error.
pub fn remove(name: &str) -> Result<()> {
    let own_pid = std::process::id().to_string();
    if let Ok(output) = cmd::run_args("ip", ["netns", "pids", name]) {
        let pids: Vec<&str> = output
            .stdout
            .split_whitespace()
            .filter(|pid| *pid != own_pid)
            .collect();
        if !pids.is_empty() {
            let mut args = vec!["-KILL"];
            args.extend(pids);
            // A pid may exit between listing and killing; that is the goal anyway.
            let _ = cmd::run_args("kill", args);
        }
    }
    match cmd::run_args("ip", ["netns", "delete", name]) {
        Ok(_) => Ok(()),
        Err(error) => {
            if list()?.iter().any(|existing| existing == name) {
                Err(error)
            } else {
                Ok(())
            }
        }
    }
}
