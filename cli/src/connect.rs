//! Where the gateway is and how to reach it: flags, then environment, then
//! the configuration file, then the default socket.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use crate::args::Cli;
use crate::error::{error_chain, tls_hint, CliError};

/// The gateway's default control socket.
pub const DEFAULT_SERVER: &str = "unix:///run/egw/egw.sock";

/// The optional configuration file (`~/.config/egw/egwctl.yaml`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Default for --server.
    pub server: Option<String>,
    /// Default for --ca.
    pub ca: Option<PathBuf>,
    /// Default for --cert.
    pub cert: Option<PathBuf>,
    /// Default for --key.
    pub key: Option<PathBuf>,
}

impl ConfigFile {
    /// The default location: `$XDG_CONFIG_HOME/egw/egwctl.yaml` or
    /// `$HOME/.config/egw/egwctl.yaml`.
    pub fn default_path() -> Option<PathBuf> {
        std::env::var_os("XDG_CONFIG_HOME")
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
            .map(|base| base.join("egw").join("egwctl.yaml"))
    }

    /// Reads `explicit` (an error when missing) or the default file (skipped when missing).
    pub fn load(explicit: Option<&Path>) -> Result<Self, CliError> {
        let (path, required) = match explicit {
            Some(path) => (path.to_owned(), true),
            None => match Self::default_path() {
                Some(path) => (path, false),
                None => return Ok(ConfigFile::default()),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if !required && error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ConfigFile::default())
            }
            Err(error) => {
                return Err(CliError::ConfigFile {
                    path,
                    problem: error.to_string(),
                })
            }
        };
        if text.trim().is_empty() {
            return Ok(ConfigFile::default());
        }
        serde_yaml::from_str(&text).map_err(|error| CliError::ConfigFile {
            path,
            problem: error.to_string(),
        })
    }
}

/// The resolved gateway address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Unix socket path.
    Unix(PathBuf),
    /// An https URL with the client TLS files.
    Https {
        /// The URL as given.
        url: String,
        /// CA certificate file.
        ca: PathBuf,
        /// Client certificate file.
        cert: PathBuf,
        /// Client key file.
        key: PathBuf,
    },
}

impl Target {
    /// Resolves the target from flags/environment (already merged by clap) and the config file.
    pub fn resolve(cli: &Cli, file: ConfigFile) -> Result<Self, CliError> {
        let server = cli
            .server
            .clone()
            .or(file.server)
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        if let Some(path) = server.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(CliError::InvalidServer { value: server });
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if server.starts_with("https://") {
            let ca = cli.ca.clone().or(file.ca);
            let cert = cli.cert.clone().or(file.cert);
            let key = cli.key.clone().or(file.key);
            return match (ca, cert, key) {
                (Some(ca), Some(cert), Some(key)) => Ok(Target::Https {
                    url: server,
                    ca,
                    cert,
                    key,
                }),
                (ca, cert, key) => {
                    let missing: Vec<&str> = [
                        ("--ca", ca.is_none()),
                        ("--cert", cert.is_none()),
                        ("--key", key.is_none()),
                    ]
                    .into_iter()
                    .filter_map(|(flag, absent)| absent.then_some(flag))
                    .collect();
                    Err(CliError::TlsFilesMissing {
                        server,
                        missing: missing.join(", "),
                    })
                }
            };
        }
        Err(CliError::InvalidServer { value: server })
    }

    /// The address as shown in messages.
    pub fn display(&self) -> String {
        match self {
            Target::Unix(path) => format!("unix://{}", path.display()),
            Target::Https { url, .. } => url.clone(),
        }
    }

    /// Opens a channel to the gateway.
    pub async fn connect(&self) -> Result<Channel, CliError> {
        match self {
            Target::Unix(path) => {
                let path = path.clone();
                // The URI is required by tonic but unused: the connector picks the socket.
                Endpoint::from_static("http://egw.invalid")
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    }))
                    .await
                    .map_err(|error| CliError::Unreachable {
                        server: self.display(),
                        reason: error_chain(&error),
                    })
            }
            Target::Https { url, ca, cert, key } => {
                let ca_pem = read_pem(ca, "CA certificate", "ca", "CA", "CERTIFICATE")?;
                let cert_pem = read_pem(cert, "client certificate", "cert", "CERT", "CERTIFICATE")?;
                let key_pem = read_pem(key, "client key", "key", "KEY", "PRIVATE KEY")?;
                let tls_error = |error: tonic::transport::Error| {
                    let reason = error_chain(&error);
                    CliError::Tls {
                        server: url.clone(),
                        hint: tls_hint(&reason, ca, cert),
                        reason,
                    }
                };
                let tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca_pem))
                    .identity(Identity::from_pem(cert_pem, key_pem));
                let endpoint = Endpoint::from_shared(url.clone())
                    .map_err(|_| CliError::InvalidServer { value: url.clone() })?
                    .tls_config(tls)
                    .map_err(tls_error)?;
                endpoint.connect().await.map_err(|error| {
                    let reason = error_chain(&error);
                    let looks_like_tls = ["certificate", "tls", "handshake", "UnknownIssuer"]
                        .iter()
                        .any(|word| reason.to_lowercase().contains(&word.to_lowercase()));
                    if looks_like_tls {
                        tls_error(error)
                    } else {
                        CliError::Unreachable {
                            server: url.clone(),
                            reason,
                        }
                    }
                })
            }
        }
    }
}

fn read_pem(
    path: &Path,
    what: &'static str,
    flag: &'static str,
    env: &'static str,
    label: &str,
) -> Result<Vec<u8>, CliError> {
    let file_error = |problem: String| CliError::TlsFile {
        what,
        flag,
        env,
        path: path.to_owned(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|error| file_error(error.to_string()))?;
    let marker = format!("-----BEGIN {label}");
    let marker_any = "PRIVATE KEY-----";
    let is_pem = if label == "PRIVATE KEY" {
        String::from_utf8_lossy(&bytes).contains(marker_any)
    } else {
        String::from_utf8_lossy(&bytes).contains(&marker)
    };
    if !is_pem {
        return Err(file_error(format!("no PEM \"{label}\" block found")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["egwctl"];
        all.extend_from_slice(args);
        all.push("status");
        Cli::try_parse_from(all).unwrap()
    }

    #[test]
    fn flags_beat_the_config_file_which_beats_the_default() {
        let file = ConfigFile {
            server: Some("unix:///from/file.sock".into()),
            ..Default::default()
        };
        assert_eq!(
            Target::resolve(&cli(&["--server", "unix:///flag.sock"]), file).unwrap(),
            Target::Unix("/flag.sock".into())
        );
        let file = ConfigFile {
            server: Some("unix:///from/file.sock".into()),
            ..Default::default()
        };
        assert_eq!(
            Target::resolve(&cli(&[]), file).unwrap(),
            Target::Unix("/from/file.sock".into())
        );
    }

    #[test]
    fn https_requires_all_tls_files_and_names_the_missing_ones() {
        let error = Target::resolve(
            &cli(&["--server", "https://gw:7443", "--ca", "ca.pem"]),
            ConfigFile::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("missing --cert, --key"), "{error}");
        assert!(matches!(
            Target::resolve(&cli(&["--server", "http://gw:7443"]), ConfigFile::default()),
            Err(CliError::InvalidServer { .. })
        ));
    }

    #[test]
    fn unreadable_and_non_pem_tls_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("ca.pem");
        std::fs::write(&garbage, "hello").unwrap();
        let error = read_pem(&garbage, "CA certificate", "ca", "CA", "CERTIFICATE")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("ca.pem") && error.contains("--ca"),
            "{error}"
        );
        let missing = dir.path().join("nope.pem");
        let error = read_pem(&missing, "client key", "key", "KEY", "PRIVATE KEY")
            .unwrap_err()
            .to_string();
        assert!(error.contains("nope.pem"), "{error}");
    }

    #[test]
    fn config_files_reject_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egwctl.yaml");
        std::fs::write(&path, "server: unix:///x\nsevrer: y\n").unwrap();
        assert!(ConfigFile::load(Some(&path)).is_err());
        std::fs::write(&path, "server: unix:///x\n").unwrap();
        assert_eq!(
            ConfigFile::load(Some(&path)).unwrap().server.as_deref(),
            Some("unix:///x")
        );
        assert!(ConfigFile::load(Some(&dir.path().join("missing.yaml"))).is_err());
    }
}
