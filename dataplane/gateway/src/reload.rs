//! SIGHUP: re-read `route_table_file` and apply it like `egwctl routes apply` would, over the
//! gateway's own control socket, so the control server's generation rules (refuse older tables,
//! `unchanged` for an identical one) and its record of the served table stay authoritative.

use std::path::{Path, PathBuf};

use egw_proto::v1;
use egw_proto::v1::gateway_client::GatewayClient;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no route_table_file is configured")]
    NoFile,
    #[error("no control unix_socket is configured to apply the table through")]
    NoSocket,
    #[error("reading route table file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("route table file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: egw_proto::yaml::YamlError,
    },
    #[error("connecting to the control socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the control server refused the table: {}", .0.message())]
    Refused(tonic::Status),
}

/// Reads a route table file (the `egw_proto::yaml` format) into its wire form.
pub fn read_table_file(path: &Path) -> Result<v1::RouteTable, ReloadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReloadError::Read {
        path: path.to_owned(),
        source,
    })?;
    egw_proto::yaml::RouteTableDocument::from_yaml_str(&text)
        .map(|table| table.to_proto())
        .map_err(|source| ReloadError::Parse {
            path: path.to_owned(),
            source,
        })
}

/// Applies `table` through the control server listening on `socket`.
pub async fn apply_over_socket(
    socket: &Path,
    table: v1::RouteTable,
) -> Result<v1::ApplyRouteTableResponse, ReloadError> {
    let path = socket.to_owned();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .map_err(|source| ReloadError::Connect {
            path: socket.to_owned(),
            source,
        })?;
    GatewayClient::new(channel)
        .apply_route_table(table)
        .await
        .map(tonic::Response::into_inner)
        .map_err(ReloadError::Refused)
}

/// Re-reads `file` and applies it through `socket`.
pub async fn reload(
    file: Option<&Path>,
    socket: Option<&Path>,
) -> Result<v1::ApplyRouteTableResponse, ReloadError> {
    let file = file.ok_or(ReloadError::NoFile)?;
    let socket = socket.ok_or(ReloadError::NoSocket)?;
    let table = read_table_file(file)?;
    apply_over_socket(socket, table).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_table_file_and_names_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("table.yaml");
        std::fs::write(
            &good,
            "generation: 3\npools: [{name: a, addresses: [198.51.100.1]}]\n",
        )
        .unwrap();
        let table = read_table_file(&good).unwrap();
        assert_eq!(table.generation, 3);
        assert_eq!(table.pools[0].addresses[0].snat_ip, "198.51.100.1");

        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "generation: 3\npoolz: []\n").unwrap();
        let error = read_table_file(&bad).unwrap_err();
        assert!(
            matches!(&error, ReloadError::Parse { path, .. } if *path == bad),
            "{error}"
        );
        let missing = read_table_file(&dir.path().join("missing.yaml")).unwrap_err();
        assert!(matches!(missing, ReloadError::Read { .. }), "{missing}");
    }

    #[test]
    fn reload_needs_a_file_and_a_socket() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let socket = Path::new("/nonexistent/egw.sock");
        assert!(matches!(
            runtime.block_on(reload(None, Some(socket))),
            Err(ReloadError::NoFile)
        ));
        assert!(matches!(
            runtime.block_on(reload(Some(Path::new("t.yaml")), None)),
            Err(ReloadError::NoSocket)
        ));
    }
}
