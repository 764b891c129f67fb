//! Errors of reading the log back: a time that is not RFC 3339, a file or directory that cannot
//! be read. Each names the value or path involved.

use std::io;
use std::path::PathBuf;

/// A time that is not RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an RFC 3339 time like 2026-11-21T05:40:19.123Z: {reason}")]
pub struct TimeError {
    pub text: String,
    pub reason: String,
}

/// Reading NAT log files for a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The directory could not be listed.
    #[error("cannot list NAT log directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A log file could not be read.
    #[error("cannot read NAT log file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
