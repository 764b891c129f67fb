//! Local mode: a translation snapshot from a directory of YAML manifests, without an API server.
//!
//! Every `*.yaml` / `*.yml` file directly in the directory is read (in name order) as a stream of
//! documents. Documents of kind `EgressGateway`, `EgressGatewayPolicy` (`egw.dev/v1alpha1`),
//! `Namespace` and `Pod` (`v1`) are loaded, and `List` documents are unpacked; other kinds are
//! skipped and reported. Static gateways take their instances from `spec.static.instances`, each
//! Ready unless the manifest's `status` says otherwise (local mode runs no health checks).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use serde::Deserialize;

use crate::crd::{EgressGateway, EgressGatewayPolicy, GROUP, VERSION};
use crate::input::{GatewayInfo, NamespaceInfo, PodInfo, PolicyInfo, Snapshot};

/// Why a manifest directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot read directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: document #{document} is not valid YAML")]
    Yaml {
        path: PathBuf,
        document: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{path}: document #{document} ({kind} `{name}`) does not match the {kind} schema")]
    Object {
        path: PathBuf,
        document: usize,
        kind: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A manifest that was not loaded because the translation has no use for its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub document: usize,
    pub api_version: String,
    pub kind: String,
}

/// What [`load_dir`] found.
#[derive(Debug, Clone, Default)]
pub struct LocalInput {
    pub snapshot: Snapshot,
    pub skipped: Vec<Skipped>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// Loads every manifest of `dir` (not recursive) into a snapshot.
pub fn load_dir(dir: &Path) -> Result<LocalInput, LocalError> {
    let read_dir_error = |source| LocalError::ReadDir {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir_error)? {
        let path = entry.map_err(read_dir_error)?.path();
        let is_yaml = matches!(
            path.extension().and_then(|extension| extension.to_str()),
            Some("yaml" | "yml")
        );
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut input = LocalInput::default();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| LocalError::ReadFile {
            path: path.clone(),
            source,
        })?;
        load_documents(&path, &text, &mut input)?;
    }
    Ok(input)
}

/// Loads a multi-document YAML text; `path` only labels errors and skipped documents.
pub fn load_documents(path: &Path, text: &str, input: &mut LocalInput) -> Result<(), LocalError> {
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let value =
            serde_json::Value::deserialize(document).map_err(|source| LocalError::Yaml {
                path: path.to_owned(),
                document: number,
                source,
            })?;
        add_object(path, number, value, input)?;
    }
    Ok(())
}

fn add_object(
    path: &Path,
    document: usize,
    value: serde_json::Value,
    input: &mut LocalInput,
) -> Result<(), LocalError> {
    if value.is_null() {
        return Ok(());
    }
    let meta = TypeMeta::deserialize(&value).unwrap_or(TypeMeta {
        api_version: String::new(),
        kind: String::new(),
    });
    let name = value
        .pointer("/metadata/name")
        .and_then(|name| name.as_str())
        .unwrap_or_default()
        .to_owned();
    let object_error = |source| LocalError::Object {
        path: path.to_owned(),
        document,
        kind: meta.kind.clone(),
        name: name.clone(),
        source,
    };
    let egw_version = format!("{GROUP}/{VERSION}");
    match (meta.api_version.as_str(), meta.kind.as_str()) {
        (version, "EgressGateway") if version == egw_version => {
            let gateway: EgressGateway = serde_json::from_value(value).map_err(object_error)?;
            input
                .snapshot
                .gateways
                .push(GatewayInfo::from_resource(&gateway));
        }
        (version, "EgressGatewayPolicy") if version == egw_version => {
            let policy: EgressGatewayPolicy =
                serde_json::from_value(value).map_err(object_error)?;
            input
                .snapshot
                .policies
                .push(PolicyInfo::from_resource(&policy));
        }
        ("v1", "Namespace") => {
            let namespace: Namespace = serde_json::from_value(value).map_err(object_error)?;
            input
                .snapshot
                .namespaces
                .push(NamespaceInfo::from_namespace(&namespace));
        }
        ("v1", "Pod") => {
            let pod: Pod = serde_json::from_value(value).map_err(object_error)?;
            let mut pod = PodInfo::from_pod(&pod);
            if pod.namespace.is_empty() {
                // As `kubectl apply` would place it.
                pod.namespace = "default".to_owned();
            }
            input.snapshot.pods.push(pod);
        }
        (_, "List") => {
            let items = match value {
                serde_json::Value::Object(mut object) => object.remove("items"),
                _ => None,
            };
            if let Some(serde_json::Value::Array(items)) = items {
                for item in items {
                    add_object(path, document, item, input)?;
                }
            }
        }
        (api_version, kind) => input.skipped.push(Skipped {
            path: path.to_owned(),
            document,
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        }),
    }
    Ok(())
}
