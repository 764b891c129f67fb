//! Running code inside a network namespace: `setns(2)` on the calling thread.
//!
//! Only a thread the caller owns may enter a namespace (the change is per thread and permanent
//! for it), so [`in_netns`] runs the closure on a fresh scoped thread, and [`enter`] is for
//! threads a test spawned for that purpose.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;

use crate::error::{NetnsError, Result};
use crate::namespace::netns_path;

/// Moves the calling thread into network namespace `name` (from `/run/netns`). Call it only
/// on a thread that does nothing else afterwards outside that namespace.
pub fn enter(name: &str) -> Result<()> {
    let path = netns_path(name);
    let file =
        File::open(&path).map_err(|source| NetnsError::io(format!("opening {path}"), source))?;
    // SAFETY: setns(2) takes a file descriptor and a flag; the fd is valid (owned by `file`,
    // open for the whole call) and names a network namespace. It changes only the calling
    // thread's network namespace and touches no memory of ours.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(NetnsError::io(
            format!("setns into {name}"),
            std::io::Error::last_os_error(),
        ))
    }
}

/// Runs `f` on a thread that has entered network namespace `name`, and returns its result.
/// A panic in `f` is resumed on the caller's thread, so test assertions inside work as usual.
pub fn in_netns<R: Send>(name: &str, f: impl FnOnce() -> R + Send) -> Result<R> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| enter(name).map(|()| f()))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
