//! Gateway control endpoints and the gRPC channels to them.
//!
//! * `unix:///run/egw/control.sock`: the gateway's Unix socket (every caller is an admin there).
//! * `https://host:port`, or a bare `host:port`: TCP with mutual TLS; the controller presents
//!   its client certificate ([`ClientTlsFiles`]), which the gateway must map to the admin role.
//!
//! Channels are lazy: nothing connects until the first call, and a broken connection is
//! re-established by the next call, so the pusher's periodic poll doubles as the reconnect loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How long connecting and each call may take before the attempt counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of one control call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an endpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint {endpoint:?}: {problem}")]
    Invalid { endpoint: String, problem: String },
    #[error("endpoint {endpoint:?} uses TLS but no client certificate is configured (--gateway-tls-cert, --gateway-tls-key, --gateway-ca)")]
    TlsNotConfigured { endpoint: String },
    #[error("cannot read {path}")]
    ReadTlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("endpoint {endpoint:?}: invalid TLS configuration")]
    Tls {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// A parsed gateway control endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayEndpoint {
    Unix(PathBuf),
    /// `host:port` reached over TCP with mutual TLS.
    Tls {
        host: String,
        port: u16,
    },
}

impl GatewayEndpoint {
    pub fn parse(text: &str) -> Result<GatewayEndpoint, EndpointError> {
        let invalid = |problem: &str| EndpointError::Invalid {
            endpoint: text.to_owned(),
            problem: problem.to_owned(),
        };
        let trimmed = text.trim();
        if let Some(path) = trimmed.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(invalid(
                    "a unix endpoint needs an absolute path (unix:///path)",
                ));
            }
            return Ok(GatewayEndpoint::Unix(PathBuf::from(path)));
        }
        let authority = match trimmed.split_once("://") {
            Some(("https", rest)) => rest.trim_end_matches('/'),
            Some((scheme, _)) => {
                return Err(invalid(&format!(
                    "scheme {scheme:?} is not supported (unix:// or https://; gateways require mutual TLS over TCP)"
                )))
            }
            None => trimmed,
        };
        let uri: http::uri::Authority = authority
            .parse()
            .map_err(|_| invalid("expected host:port"))?;
        let port = uri
            .port_u16()
            .ok_or_else(|| invalid("a port is required"))?;
        let host = uri.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("a host is required"));
        }
        Ok(GatewayEndpoint::Tls {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for GatewayEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GatewayEndpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            GatewayEndpoint::Tls { host, port } if host.contains(':') => {
                write!(f, "https://[{host}]:{port}")
            }
            GatewayEndpoint::Tls { host, port } => write!(f, "https://{host}:{port}"),
        }
    }
}

/// PEM files of the controller's client identity and of the CA that signed the gateways'
/// server certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Name the gateway certificates are checked against; the endpoint's host when `None`.
    pub server_name: Option<String>,
}

/// Loaded PEM material, read once and shared by every channel.
#[derive(Debug, Clone)]
pub struct ClientTls {
    ca: Certificate,
    identity: Identity,
    server_name: Option<String>,
}

fn read(path: &Path) -> Result<Vec<u8>, EndpointError> {
    std::fs::read(path).map_err(|source| EndpointError::ReadTlsFile {
        path: path.to_owned(),
        source,
    })
}

impl ClientTls {
    pub fn load(files: &ClientTlsFiles) -> Result<ClientTls, EndpointError> {
        Ok(ClientTls {
            ca: Certificate::from_pem(read(&files.ca)?),
            identity: Identity::from_pem(read(&files.cert)?, read(&files.key)?),
            server_name: files.server_name.clone(),
        })
    }
}

/// Builds a lazy channel to `endpoint`.
pub fn channel(
    endpoint: &GatewayEndpoint,
    tls: Option<&Arc<ClientTls>>,
) -> Result<Channel, EndpointError> {
    match endpoint {
        GatewayEndpoint::Unix(path) => {
            // The URI is required by the API but unused: the connector dials the socket.
            let path = path.clone();
            let channel = Endpoint::from_static("http://gateway.invalid")
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(CALL_TIMEOUT)
                .connect_with_connector_lazy(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                }));
            Ok(channel)
        }
        GatewayEndpoint::Tls { host, .. } => {
            let tls = tls.ok_or_else(|| EndpointError::TlsNotConfigured {
                endpoint: endpoint.to_string(),
            })?;
            let config = ClientTlsConfig::new()
                .ca_certificate(tls.ca.clone())
                .identity(tls.identity.clone())
                .domain_name(tls.server_name.clone().unwrap_or_else(|| host.clone()));
            let uri = endpoint.to_string();
            let tls_error = |source| EndpointError::Tls {
                endpoint: uri.clone(),
                source,
            };
            let builder = Endpoint::from_shared(uri.clone())
                .map_err(|_| EndpointError::Invalid {
                    endpoint: uri.clone(),
                    problem: "not a valid URI".to_owned(),
                })?
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(CALL_TIMEOUT)
                .tls_config(config)
                .map_err(tls_error)?;
            Ok(builder.connect_lazy())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unix_https_and_bare_endpoints() {
        assert_eq!(
            GatewayEndpoint::parse("unix:///run/egw/control.sock").unwrap(),
            GatewayEndpoint::Unix("/run/egw/control.sock".into())
        );
        let tls = GatewayEndpoint::Tls {
            host: "10.0.0.10".into(),
            port: 7443,
        };
        assert_eq!(GatewayEndpoint::parse("10.0.0.10:7443").unwrap(), tls);
        assert_eq!(
            GatewayEndpoint::parse("https://10.0.0.10:7443/").unwrap(),
            tls
        );
        assert_eq!(tls.to_string(), "https://10.0.0.10:7443");
        assert_eq!(
            GatewayEndpoint::parse("https://[fd00::1]:7443")
                .unwrap()
                .to_string(),
            "https://[fd00::1]:7443"
        );
        for bad in [
            "unix://relative.sock",
            "http://10.0.0.1:7443",
            "10.0.0.1",
            "",
        ] {
            assert!(GatewayEndpoint::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tls_endpoint_without_client_certificate_is_refused() {
        let endpoint = GatewayEndpoint::parse("gw.example:7443").unwrap();
        assert!(matches!(
            channel(&endpoint, None),
            Err(EndpointError::TlsNotConfigured { .. })
        ));
    }
}
