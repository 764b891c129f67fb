//! Binding the listeners and running the gRPC servers.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use egw_proto::v1;
use egw_proto::v1::gateway_server::GatewayServer;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use super::api::ControlBackend;
use super::auth::{Authenticator, IdentityRules};
use super::config::{ControlServerConfig, MtlsConfig, UnixSocketConfig};
use super::error::ControlError;
use super::service::GatewayService;

/// The most concurrent requests per connection; bounds what one client can
/// make the gateway do at once.
const CONCURRENCY_PER_CONNECTION: usize = 32;
/// Mode of socket parent directories the server creates: owner and group only.
const PARENT_DIR_MODE: u32 = 0o750;
/// The most concurrent HTTP/2 streams per connection (WatchStats streams included).
const MAX_CONCURRENT_STREAMS: u32 = 64;

struct BoundTcp {
    incoming: TcpIncoming,
    addr: SocketAddr,
    /// Already holds the TLS acceptor, so bad certificates fail `bind`.
    server: Server,
    rules: Arc<IdentityRules>,
}

/// Listeners bound and ready; [`BoundControlServer::serve`] starts answering.
/// Binding first lets a caller learn the actual TCP port when it asked for port 0.
pub struct BoundControlServer<B> {
    service: GatewayService<B>,
    stop_sender: watch::Sender<bool>,
    unix: Option<(UnixListener, PathBuf)>,
    tcp: Option<BoundTcp>,
    max_message_bytes: usize,
}

impl<B> std::fmt::Debug for BoundControlServer<B> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BoundControlServer")
            .field("unix_socket", &self.unix_socket_path())
            .field("tcp_addr", &self.tcp_addr())
            .finish_non_exhaustive()
    }
}

/// Binds the configured listeners and serves until `shutdown` completes, then
/// lets in-flight requests finish and removes the Unix socket.
pub async fn serve<B: ControlBackend>(
    config: ControlServerConfig,
    backend: Arc<B>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ControlError> {
    BoundControlServer::bind(config, backend)?
        .serve(shutdown)
        .await
}

impl<B> BoundControlServer<B> {
    /// The bound TCP address, if a TCP listener is configured.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(|tcp| tcp.addr)
    }

    /// The Unix socket path, if a Unix listener is configured.
    pub fn unix_socket_path(&self) -> Option<&Path> {
        self.unix.as_ref().map(|(_, path)| path.as_path())
    }
}

impl<B: ControlBackend> BoundControlServer<B> {
    /// Binds the listeners of `config`. Must be called inside a Tokio runtime.
    pub fn bind(config: ControlServerConfig, backend: Arc<B>) -> Result<Self, ControlError> {
        if config.unix_socket.is_none() && config.tcp.is_none() {
            return Err(ControlError::NoListener);
        }
        let tcp = config
            .tcp
            .map(|tcp| bind_tcp(tcp.addr, tcp.tls))
            .transpose()?;
        let unix = config
            .unix_socket
            .map(|unix| bind_unix(&unix))
            .transpose()?;
        let (stop_sender, stop_receiver) = watch::channel(false);
        Ok(BoundControlServer {
            service: GatewayService::new(backend, stop_receiver),
            stop_sender,
            unix,
            tcp,
            max_message_bytes: config.max_message_bytes,
        })
    }

    /// Serves until `shutdown` completes or a listener fails.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ControlError> {
        let stop_sender = self.stop_sender;
        let stop_receiver = stop_sender.subscribe();
        let stop_signal = |mut receiver: watch::Receiver<bool>| async move {
            // An error means the sender is gone, which also means stop.
            let _ = receiver.wait_for(|stop| *stop).await;
        };
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<GatewayServer<GatewayService<B>>>()
            .await;
        let max_message_bytes = self.max_message_bytes;
        let service = self.service;
        let socket_path = self.unix.as_ref().map(|(_, path)| path.clone());

        let unix_server = async {
            let Some((listener, path)) = self.unix else {
                return Ok(());
            };
            let result = async {
                router(
                    Server::builder(),
                    &service,
                    &health_service,
                    Authenticator::Unix,
                    max_message_bytes,
                )?
                .serve_with_incoming_shutdown(
                    UnixListenerStream::new(listener),
                    stop_signal(stop_receiver.clone()),
                )
                .await
                .map_err(|source| ControlError::Serve {
                    listener: path.display().to_string(),
                    source,
                })
            }
            .await;
            // Whatever ended this server ends the other one too.
            let _ = stop_sender.send(true);
            result
        };
        let tcp_server = async {
            let Some(tcp) = self.tcp else {
                return Ok(());
            };
            let result = async {
                router(
                    tcp.server,
                    &service,
                    &health_service,
                    Authenticator::Mtls(tcp.rules),
                    max_message_bytes,
                )?
                .serve_with_incoming_shutdown(tcp.incoming, stop_signal(stop_receiver.clone()))
                .await
                .map_err(|source| ControlError::Serve {
                    listener: tcp.addr.to_string(),
                    source,
                })
            }
            .await;
            let _ = stop_sender.send(true);
            result
        };
        let servers = async {
            let (unix_result, tcp_result) = tokio::join!(unix_server, tcp_server);
            unix_result.and(tcp_result)
        };
        tokio::pin!(servers);
        let result = tokio::select! {
            result = &mut servers => result,
            () = shutdown => {
                health_reporter.set_not_serving::<GatewayServer<GatewayService<B>>>().await;
                let _ = stop_sender.send(true);
                servers.await
            }
        };
        if let Some(path) = socket_path {
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "could not remove control socket");
            }
        }
        result
    }
}

/// The services of one listener, each behind the listener's authenticator.
fn router<B: ControlBackend, L>(
    builder: Server<L>,
    service: &GatewayService<B>,
    health: &tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    authenticator: Authenticator,
    max_message_bytes: usize,
) -> Result<tonic::transport::server::Router<L>, ControlError>
where
    L: Clone,
{
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;
    let gateway = GatewayServer::new(service.clone()).max_decoding_message_size(max_message_bytes);
    Ok(builder
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .add_service(InterceptedService::new(gateway, authenticator.clone()))
        .add_service(InterceptedService::new(
            health.clone(),
            authenticator.clone(),
        ))
        .add_service(InterceptedService::new(
            reflection_v1,
            authenticator.clone(),
        ))
        .add_service(InterceptedService::new(reflection_v1alpha, authenticator)))
}

fn bind_tcp(addr: SocketAddr, tls: MtlsConfig) -> Result<BoundTcp, ControlError> {
    if tls.admin_identities.is_empty() && tls.reader_identities.is_empty() {
        return Err(ControlError::NoIdentities { addr });
    }
    let server_tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            &tls.server_cert_pem,
            &tls.server_key_pem,
        ))
        .client_ca_root(Certificate::from_pem(&tls.client_ca_pem))
        .client_auth_optional(false);
    let server = Server::builder()
        .tls_config(server_tls)
        .map_err(|source| ControlError::Tls { addr, source })?;
    let incoming =
        TcpIncoming::bind(addr).map_err(|source| ControlError::TcpBind { addr, source })?;
    let bound_addr = incoming
        .local_addr()
        .map_err(|source| ControlError::TcpBind { addr, source })?;
    Ok(BoundTcp {
        incoming,
        addr: bound_addr,
        server,
        rules: Arc::new(IdentityRules {
            admins: tls.admin_identities,
            readers: tls.reader_identities,
        }),
    })
}

fn bind_unix(config: &UnixSocketConfig) -> Result<(UnixListener, PathBuf), ControlError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    let path = config.path.clone();
    let io_error = |source| ControlError::UnixSocket {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        // The socket is briefly accessible under the umask between bind and
        // chmod; a directory closed to others removes that window.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PARENT_DIR_MODE)
            .create(parent)
            .map_err(io_error)?;
    }
    match std::fs::symlink_metadata(&path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(ControlError::SocketInUse { path });
            }
            // Left behind by a process that did not shut down cleanly.
            std::fs::remove_file(&path).map_err(io_error)?;
        }
        Ok(_) => {
            return Err(io_error(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket; refusing to replace it",
            )))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(error)),
    }
    let listener = UnixListener::bind(&path).map_err(io_error)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(config.mode))
        .map_err(io_error)?;
    Ok((listener, path))
}
