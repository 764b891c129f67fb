//! The gateway's control plane endpoint: the `egw.v1.Gateway` gRPC server.
//!
//! The dataplane implements [`ControlBackend`]; [`serve`] exposes it over gRPC
//! together with `grpc.health.v1` and server reflection.
//!
//! # Who may call what
//!
//! - **Unix socket** (default, `/run/egw/egw.sock`, mode `0660`): every caller
//!   is an admin. The socket's file permissions are the access control.
//! - **TCP** (only when configured) always requires mutual TLS: the client
//!   certificate must chain to the configured client CA, or the handshake
//!   fails. The certificate's *identities* are its subject common name (CN),
//!   each DNS subject alternative name and each URI subject alternative name
//!   (e.g. a SPIFFE ID). A caller is an admin when any identity is listed in
//!   [`MtlsConfig::admin_identities`], otherwise a reader when any identity is
//!   listed in [`MtlsConfig::reader_identities`]; a certificate matching
//!   neither list is refused (`PERMISSION_DENIED`) for every RPC. Matching is
//!   exact and case-sensitive.
//! - Readers may call `GetStatus`, `GetRouteTable`, `ListFlows`, `WatchStats`,
//!   health and reflection. Admins may also call `ApplyRouteTable` and `Drain`.
//!
//! # Wiring
//!
//! ```text
//! let backend = Arc::new(Dataplane::new(...));          // implements ControlBackend
//! let config = ControlServerConfig {
//!     unix_socket: Some(UnixSocketConfig::default()),    // /run/egw/egw.sock, 0660
//!     tcp: Some(TcpListenerConfig {
//!         addr: "0.0.0.0:7443".parse()?,
//!         tls: MtlsConfig::from_files(cert, key, client_ca, admins, readers)?,
//!     }),
//!     max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
//! };
//! control::serve(config, backend, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! ```
//!
//! Use [`BoundControlServer::bind`] then [`BoundControlServer::serve`] to
//! learn the bound port first, or to fail startup before spawning.
//!
//! # Route table generations
//!
//! The server, not the backend, owns generation semantics (see
//! [`ControlBackend::apply_route_table`]): the backend only sees tables that
//! are newer than the one it serves.

#![forbid(unsafe_code)]

mod api;
mod auth;
mod config;
mod error;
mod paging;
mod server;
mod service;

pub use api::{new_epoch, BackendError, ControlBackend, FlowCursor, FlowPage, FlowQuery};
pub use auth::Role;
pub use config::{
    ControlServerConfig, MtlsConfig, TcpListenerConfig, UnixSocketConfig,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_SOCKET_MODE, DEFAULT_SOCKET_PATH,
};
pub use error::ControlError;
pub use paging::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
pub use server::{serve, BoundControlServer};
