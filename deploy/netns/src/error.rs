//! The one error type of the crate: every failure names the command or namespace involved.

use std::io;
use std::time::Duration;

/// What can go wrong creating, using or deleting a test network.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// An external command ran but exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },
    /// An external command could not be started at all (usually: not installed).
    #[error("`{command}` could not be started: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// An external command exceeded its bound.
    #[error("`{command}` did not finish within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    /// A file, socket or system-call operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// A command printed something we cannot interpret.
    #[error("unexpected output from `{command}`: {output:?}")]
    BadOutput { command: String, output: String },
}

impl NetnsError {
    /// An [`NetnsError::Io`] with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        NetnsError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = NetnsError> = std::result::Result<T, E>;
