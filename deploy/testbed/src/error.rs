//! One error type for the whole lab, so every failure names the command or resource involved.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while building, driving or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
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
    /// An external command or a wait exceeded its bound.
    #[error("`{command}` did not finish within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// A helper process the lab started (mirror, gateway, iperf3) died or never became ready.
    #[error("{process} is not ready after {waited:?}: {detail}")]
    NotReady {
        process: String,
        waited: Duration,
        detail: String,
    },
    /// A command printed something the lab cannot interpret.
    #[error("unexpected output from `{command}`: {output:?}")]
    BadOutput { command: String, output: String },
    /// A probe ran but observed the wrong thing (e.g. hash mismatch).
    #[error("probe failed: {0}")]
    ProbeFailed(String),
    /// The lab needs CAP_NET_ADMIN/CAP_SYS_ADMIN; we check for root up front.
    #[error(
        "egw-lab must run as root (network namespaces, veths, nftables); effective uid is {euid}"
    )]
    NotRoot { euid: u32 },
    /// The lab configuration is inconsistent.
    #[error("invalid lab configuration: {0}")]
    Config(String),
    /// No egw-gateway binary could be located.
    #[error("egw-gateway binary not found (looked at: {looked_at:?}); pass --gateway-bin or set EGW_GATEWAY_BIN")]
    GatewayBinaryNotFound { looked_at: Vec<PathBuf> },
    /// Serialising the gateway configuration failed.
    #[error("serialising {what}: {source}")]
    Yaml {
        what: &'static str,
        #[source]
        source: serde_yaml::Error,
    },
    /// Rendering the route table (egw_proto's YAML form) failed.
    #[error("serialising route table: {source}")]
    TableYaml {
        #[source]
        source: egw_proto::yaml::YamlError,
    },
    /// Creating, entering or deleting a namespace, or a bounded command, failed (egw-netns).
    #[error(transparent)]
    Netns(#[from] egw_netns::NetnsError),
    /// An HTTP exchange with the mirror went wrong.
    #[error("http {context}: {detail}")]
    Http { context: String, detail: String },
}

impl LabError {
    /// A [`LabError::Io`] with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        LabError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
