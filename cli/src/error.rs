//! Errors, each saying what to do about it.

use std::path::PathBuf;

use tonic::Code;

/// Everything egwctl can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `--server` is neither unix:// nor https://.
    #[error(
        "invalid server address {value:?}: use unix:///PATH (e.g. unix:///run/egw/egw.sock) \
         or https://HOST:PORT (set with --server or EGW_SERVER)"
    )]
    InvalidServer {
        /// The address given.
        value: String,
    },
    /// Could not connect.
    #[error(
        "cannot reach the gateway at {server}: {reason}\n\
         hint: point egwctl at another gateway with --server or EGW_SERVER \
         (unix:///PATH or https://HOST:PORT)"
    )]
    Unreachable {
        /// The address tried.
        server: String,
        /// Why, with the underlying causes.
        reason: String,
    },
    /// An https server without the client TLS files.
    #[error(
        "{server} needs mutual TLS: missing {missing}\n\
         hint: pass --ca, --cert and --key (or set EGW_CA, EGW_CERT, EGW_KEY)"
    )]
    TlsFilesMissing {
        /// The address.
        server: String,
        /// Which of ca/cert/key are missing.
        missing: String,
    },
    /// A TLS file could not be read or is not PEM.
    #[error("{what} file {path}: {problem}\nhint: check --{flag} / EGW_{env}")]
    TlsFile {
        /// "CA certificate", "client certificate" or "client key".
        what: &'static str,
        /// The flag name (ca, cert, key).
        flag: &'static str,
        /// The environment variable suffix (CA, CERT, KEY).
        env: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The TLS handshake or configuration failed.
    #[error("TLS with {server} failed: {reason}\nhint: {hint}")]
    Tls {
        /// The address.
        server: String,
        /// Why.
        reason: String,
        /// Which file to check, and why.
        hint: String,
    },
    /// The configuration file is unreadable or invalid.
    #[error("configuration file {path}: {problem}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The route table file is unreadable or invalid.
    #[error("route table file {path}: {problem}")]
    TableFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A command-line value is invalid.
    #[error("{0}")]
    Usage(String),
    /// The gateway refused or failed the call.
    #[error("{}", describe_status(.0))]
    Rpc(#[from] tonic::Status),
    /// The gateway sent something egwctl cannot display.
    #[error("unexpected reply from the gateway: {0}")]
    Reply(String),
    /// NAT log files could not be read.
    #[error(transparent)]
    NatLog(#[from] egw_natlog_format::QueryError),
    /// Writing output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

fn describe_status(status: &tonic::Status) -> String {
    let message = status.message();
    match status.code() {
        Code::InvalidArgument => format!("the gateway rejected the request: {message}"),
        Code::FailedPrecondition => format!("the gateway refused the change: {message}"),
        Code::PermissionDenied => format!(
            "permission denied: {message}\nhint: this needs a client certificate with the admin role, \
             or the Unix socket"
        ),
        Code::Unauthenticated => format!("not authenticated: {message}\nhint: pass --cert and --key"),
        Code::NotFound => format!("not found: {message}"),
        Code::Unavailable => format!(
            "the gateway is unavailable: {message}\n\
             hint: point egwctl at another gateway with --server or EGW_SERVER"
        ),
        code => format!("the gateway answered {code:?}: {message}"),
    }
}

/// The hint for a TLS failure: which side refused, and which file to check.
pub(crate) fn tls_hint(reason: &str, ca: &std::path::Path, cert: &std::path::Path) -> String {
    if reason.contains("invalid peer certificate") {
        format!(
            "the gateway's certificate is not trusted: check that --ca / EGW_CA ({}) is the CA that \
             signed it and that the address matches its names",
            ca.display()
        )
    } else if reason.contains("alert") {
        format!(
            "the gateway refused the client certificate: check that --cert / EGW_CERT ({}) was \
             issued by the gateway's client CA and is not expired",
            cert.display()
        )
    } else {
        format!(
            "check --ca / EGW_CA ({}) and --cert / EGW_CERT ({})",
            ca.display(),
            cert.display()
        )
    }
}

/// The message of a failed call and all its causes, joined by ": ".
pub(crate) fn status_chain(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The message of an error and all its causes, joined by ": ".
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
