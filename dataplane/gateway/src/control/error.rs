//! Why the control server could not start or stopped serving (a leaf: the configuration and the
//! server both report it).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Errors starting or running the control server.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Neither a Unix socket nor a TCP listener is configured.
    #[error("the control server has no listener: configure a Unix socket, a TCP address, or both")]
    NoListener,
    /// A TLS file could not be read.
    #[error("cannot read TLS file {path}: {source}")]
    ReadTlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS material was rejected.
    #[error("invalid TLS configuration for {addr}: {source}")]
    Tls {
        /// The TCP listener.
        addr: SocketAddr,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The mTLS listener grants no role to anyone.
    #[error("TCP listener {addr} has no admin or reader identities; no client could call it")]
    NoIdentities {
        /// The TCP listener.
        addr: SocketAddr,
    },
    /// Another process serves the socket path.
    #[error("control socket {path} is in use by a running process")]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Binding or preparing the Unix socket failed.
    #[error("cannot listen on control socket {path}: {source}")]
    UnixSocket {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Binding the TCP address failed.
    #[error("cannot listen on {addr}: {source}")]
    TcpBind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The reflection service could not load the descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A server stopped with an error.
    #[error("control server on {listener} failed: {source}")]
    Serve {
        /// Which listener.
        listener: String,
        /// Why.
        source: tonic::transport::Error,
    },
}
