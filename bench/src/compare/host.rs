//! The host's conntrack limits, raised for a kernel run that needs more flows than they allow
//! and put back afterwards (also after a run that died).

use std::fs;
use std::path::Path;

pub(crate) fn sysctl_read(name: &str) -> Option<u64> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn sysctl_write(name: &str, value: u64) -> std::io::Result<()> {
    fs::write(
        format!("/proc/sys/{}", name.replace('.', "/")),
        value.to_string(),
    )
}

/// The host's conntrack limit and hash size, raised for the run and put back when dropped.
/// A namespace's `nf_conntrack_max` cannot exceed the initial namespace's, and the hash size
/// is global, so sizing conntrack for 1 M flows needs the host values.
pub(crate) struct HostConntrack {
    previous_max: u64,
    previous_buckets: u64,
}

/// Where the host's original conntrack values wait while raised, so a run killed by a signal
/// (destructors do not run) is repaired by the next `compare`.
const HOST_CONNTRACK_STATE: &str = "/run/egw-bench-host-conntrack";

/// Puts back host values left raised by a `compare` that died; returns a note when it did.
pub(crate) fn restore_stale_host_conntrack() -> Option<String> {
    let text = fs::read_to_string(HOST_CONNTRACK_STATE).ok()?;
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(pid)), Some(Ok(max)), Some(Ok(buckets))) =
        (fields.next(), fields.next(), fields.next())
    else {
        let _ = fs::remove_file(HOST_CONNTRACK_STATE);
        return None;
    };
    if Path::new(&format!("/proc/{pid}")).exists() {
        // Another compare is running and owns the raised values.
        return None;
    }
    let _ = sysctl_write("net.netfilter.nf_conntrack_buckets", buckets);
    let _ = sysctl_write("net.netfilter.nf_conntrack_max", max);
    let _ = fs::remove_file(HOST_CONNTRACK_STATE);
    Some(format!(
        "restored host conntrack max {max} / buckets {buckets} left raised by dead run {pid}"
    ))
}

impl HostConntrack {
    pub(crate) fn raise(needed: u64, notes: &mut Vec<String>) -> Option<Self> {
        if let Some(note) = restore_stale_host_conntrack() {
            notes.push(note);
        }
        if Path::new(HOST_CONNTRACK_STATE).exists() {
            notes.push(
                "kernel: another compare holds the host conntrack limits; not tuned".to_owned(),
            );
            return None;
        }
        let (Some(previous_max), Some(previous_buckets)) = (
            sysctl_read("net.netfilter.nf_conntrack_max"),
            sysctl_read("net.netfilter.nf_conntrack_buckets"),
        ) else {
            notes.push(
                "kernel: host conntrack sysctls unreadable (nf_conntrack not loaded?); not tuned"
                    .to_owned(),
            );
            return None;
        };
        if previous_max >= needed {
            notes.push(format!(
                "kernel: host nf_conntrack_max {previous_max} already >= {needed}"
            ));
            return None;
        }
        let buckets = (needed / 2).next_power_of_two().max(previous_buckets);
        let state = format!("{} {previous_max} {previous_buckets}\n", std::process::id());
        if let Err(error) = fs::write(HOST_CONNTRACK_STATE, state) {
            notes.push(format!("kernel: cannot record host conntrack values in {HOST_CONNTRACK_STATE} ({error}); not tuned"));
            return None;
        }
        let result = sysctl_write("net.netfilter.nf_conntrack_max", needed)
            .and_then(|()| sysctl_write("net.netfilter.nf_conntrack_buckets", buckets));
        match result {
            Ok(()) => {
                notes.push(format!(
                    "kernel: host nf_conntrack_max {previous_max} -> {needed}, buckets {previous_buckets} -> {buckets} for the run (restored after)"
                ));
                Some(HostConntrack {
                    previous_max,
                    previous_buckets,
                })
            }
            Err(error) => {
                let _ = sysctl_write("net.netfilter.nf_conntrack_max", previous_max);
                let _ = fs::remove_file(HOST_CONNTRACK_STATE);
                notes.push(format!("kernel: raising host conntrack limits failed ({error}); kernel capped at {previous_max} entries"));
                None
            }
        }
    }
}

impl Drop for HostConntrack {
    fn drop(&mut self) {
        let _ = sysctl_write("net.netfilter.nf_conntrack_buckets", self.previous_buckets);
        let _ = sysctl_write("net.netfilter.nf_conntrack_max", self.previous_max);
        let _ = fs::remove_file(HOST_CONNTRACK_STATE);
    }
}
