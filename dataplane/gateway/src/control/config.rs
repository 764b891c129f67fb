//! Where and how the control server listens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::error::ControlError;

/// The default Unix socket path.
pub const DEFAULT_SOCKET_PATH: &str = "/run/egw/egw.sock";
/// The default Unix socket mode: owner and group may connect.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// The default bound on a decoded request (4 MiB, enough for route tables with
/// tens of thousands of sources).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Control server settings. [`Default`] listens on [`DEFAULT_SOCKET_PATH`] only.
#[derive(Debug, Clone)]
pub struct ControlServerConfig {
    /// The Unix socket listener; every caller on it is an admin.
    pub unix_socket: Option<UnixSocketConfig>,
    /// The TCP listener, always with mutual TLS.
    pub tcp: Option<TcpListenerConfig>,
    /// Requests larger than this are refused with `OUT_OF_RANGE` before decoding.
    pub max_message_bytes: usize,
}

impl Default for ControlServerConfig {
    fn default() -> Self {
        ControlServerConfig {
            unix_socket: Some(UnixSocketConfig::default()),
            tcp: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// A Unix socket listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocketConfig {
    /// Socket path. Missing parent directories are created with mode 0750
    /// (existing ones are left alone: keep them closed to other users, since
    /// the socket's mode is applied just after it is bound); a stale socket
    /// left by a previous process is replaced, a live one is an error.
    pub path: PathBuf,
    /// Permission bits applied to the socket after binding.
    pub mode: u32,
}

impl Default for UnixSocketConfig {
    fn default() -> Self {
        UnixSocketConfig {
            path: PathBuf::from(DEFAULT_SOCKET_PATH),
            mode: DEFAULT_SOCKET_MODE,
        }
    }
}

/// A TCP listener with mutual TLS.
#[derive(Debug, Clone)]
pub struct TcpListenerConfig {
    /// Address to bind; port 0 picks a free port (see [`super::BoundControlServer::tcp_addr`]).
    pub addr: SocketAddr,
    /// Certificates and client identities.
    pub tls: MtlsConfig,
}

/// Mutual TLS material and the identity → role rule (see the module docs).
#[derive(Clone)]
pub struct MtlsConfig {
    /// PEM certificate chain the server presents.
    pub server_cert_pem: Vec<u8>,
    /// PEM private key of the server certificate.
    pub server_key_pem: Vec<u8>,
    /// PEM CA certificate(s) client certificates must chain to.
    pub client_ca_pem: Vec<u8>,
    /// Client identities (CN, DNS SAN or URI SAN) granted the admin role.
    pub admin_identities: Vec<String>,
    /// Client identities granted the read-only role.
    pub reader_identities: Vec<String>,
}

impl std::fmt::Debug for MtlsConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MtlsConfig")
            .field("server_key_pem", &"<redacted>")
            .field("admin_identities", &self.admin_identities)
            .field("reader_identities", &self.reader_identities)
            .finish_non_exhaustive()
    }
}

impl MtlsConfig {
    /// Reads the PEM files; errors name the file that could not be read.
    pub fn from_files(
        server_cert: &Path,
        server_key: &Path,
        client_ca: &Path,
        admin_identities: Vec<String>,
        reader_identities: Vec<String>,
    ) -> Result<Self, ControlError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| ControlError::ReadTlsFile {
                path: path.to_owned(),
                source,
            })
        };
        Ok(MtlsConfig {
            server_cert_pem: read(server_cert)?,
            server_key_pem: read(server_key)?,
            client_ca_pem: read(client_ca)?,
            admin_identities,
            reader_identities,
        })
    }
}
