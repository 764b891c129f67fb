//! Errors of the writer, each naming the file or value involved (those of queries are
//! `egw-natlog-format`'s).

use std::io;
use std::path::PathBuf;

/// Starting or stopping the NAT log writer failed.
#[derive(Debug, thiserror::Error)]
pub enum NatLogError {
    /// The configuration cannot work.
    #[error("invalid NAT log configuration: {0}")]
    Config(String),
    /// The log directory could not be created or listed.
    #[error("NAT log directory {path}: {source}")]
    Directory {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A log file could not be created.
    #[error("NAT log file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// io_uring was required (`IoBackend::Uring`) but could not be set up.
    #[error("io_uring for NAT log file {path}: {source} (use the plain or auto backend where io_uring is not allowed, e.g. under seccomp)")]
    Uring {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The IPFIX exporter's socket could not be set up.
    #[error("IPFIX collector {collector}: {source}")]
    Ipfix {
        collector: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the NAT log writer thread: {0}")]
    Spawn(#[source] io::Error),
    /// The writer thread panicked; events still queued are lost.
    #[error("the NAT log writer thread panicked")]
    WriterPanicked,
}
