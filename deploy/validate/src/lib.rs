//! Offline validation of egw's deployment files (no cluster, no kustomize binary).
//!
//! - Every YAML document is parsed into its typed API object (`k8s_openapi` for core
//!   kinds, the `apiextensions` type for CRDs, `egw-crd`'s types for egw
//!   resources, a strict local type for the Prometheus Operator ServiceMonitor).
//!   `k8s_openapi` ignores unknown fields, so each object is serialised again and
//!   every field of the file that did not survive the round trip is reported: a typo
//!   such as `hostNetwrok` fails instead of being silently dropped.
//! - `kustomization.yaml` files are parsed strictly; every referenced file exists and
//!   every manifest in the directory is referenced.
//! - Cross-references within a rendered set: service accounts, config maps, role
//!   references, binding subjects, Service/PodDisruptionBudget/ServiceMonitor
//!   selectors and named ports, images.
//! - The Grafana dashboard's queries use only the metrics egw exports.
//! - The Dockerfile's stages exist where they are copied from.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use egw_crd::{EgressGateway, EgressGatewayPolicy};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PodTemplateSpec, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A file could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not YAML: {source}")]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{path} document #{index}: {problem}")]
    Document {
        path: PathBuf,
        index: usize,
        problem: String,
    },
}

/// The Prometheus Operator's ServiceMonitor, limited to the fields egw uses and
/// strict about the rest.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitor {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ServiceMonitorSpec,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    pub selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<NamespaceSelector>,
    pub endpoints: Vec<ServiceMonitorEndpoint>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceSelector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitorEndpoint {
    pub port: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_timeout: Option<String>,
}

/// A parsed API object.
#[derive(Clone, Debug)]
pub enum Object {
    Namespace(Box<Namespace>),
    ServiceAccount(Box<ServiceAccount>),
    ConfigMap(Box<ConfigMap>),
    Service(Box<Service>),
    Deployment(Box<Deployment>),
    DaemonSet(Box<DaemonSet>),
    ClusterRole(Box<ClusterRole>),
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    Role(Box<Role>),
    RoleBinding(Box<RoleBinding>),
    PodDisruptionBudget(Box<PodDisruptionBudget>),
    CustomResourceDefinition(Box<CustomResourceDefinition>),
    EgressGateway(Box<EgressGateway>),
    EgressGatewayPolicy(Box<EgressGatewayPolicy>),
    ServiceMonitor(Box<ServiceMonitor>),
}

/// One document of a manifest file.
#[derive(Clone, Debug)]
pub struct Document {
    pub file: PathBuf,
    pub index: usize,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub object: Object,
}

/// Reads every document of a YAML file into typed objects.
pub fn load_file(path: &Path) -> Result<Vec<Document>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut documents = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let yaml =
            serde_yaml::Value::deserialize(document).map_err(|source| ManifestError::Yaml {
                path: path.to_owned(),
                source,
            })?;
        if yaml.is_null() {
            continue;
        }
        let problem = |problem: String| ManifestError::Document {
            path: path.to_owned(),
            index,
            problem,
        };
        let value = serde_json::to_value(&yaml).map_err(|error| problem(error.to_string()))?;
        let object = parse_object(&value).map_err(problem)?;
        let text_at = |pointer: &str| {
            value
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        documents.push(Document {
            file: path.to_owned(),
            index,
            kind: text_at("/kind").unwrap_or_default(),
            name: text_at("/metadata/name").unwrap_or_default(),
            namespace: text_at("/metadata/namespace"),
            object,
        });
    }
    Ok(documents)
}

/// Parses one document by its `apiVersion` and `kind`.
pub fn parse_object(value: &Value) -> Result<Object, String> {
    let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    Ok(match (api_version, kind) {
        ("v1", "Namespace") => Object::Namespace(strict(value)?),
        ("v1", "ServiceAccount") => Object::ServiceAccount(strict(value)?),
        ("v1", "ConfigMap") => Object::ConfigMap(strict(value)?),
        ("v1", "Service") => Object::Service(strict(value)?),
        ("apps/v1", "Deployment") => Object::Deployment(strict(value)?),
        ("apps/v1", "DaemonSet") => Object::DaemonSet(strict(value)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => Object::ClusterRole(strict(value)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Object::ClusterRoleBinding(strict(value)?)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => Object::Role(strict(value)?),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => Object::RoleBinding(strict(value)?),
        ("policy/v1", "PodDisruptionBudget") => Object::PodDisruptionBudget(strict(value)?),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            Object::CustomResourceDefinition(strict(value)?)
        }
        ("egw.dev/v1alpha1", "EgressGateway") => {
            let gateway: Box<EgressGateway> = strict(value)?;
            if gateway.spec.static_pool.is_some() == gateway.spec.aws.is_some() {
                return Err("EgressGateway: set exactly one of `static` and `aws`".to_owned());
            }
            Object::EgressGateway(gateway)
        }
        ("egw.dev/v1alpha1", "EgressGatewayPolicy") => Object::EgressGatewayPolicy(strict(value)?),
        ("monitoring.coreos.com/v1", "ServiceMonitor") => Object::ServiceMonitor(strict(value)?),
        _ => {
            return Err(format!(
                "unexpected apiVersion {api_version:?} kind {kind:?}"
            ))
        }
    })
}

/// Deserialises `value` as `T` and fails on fields `T` does not know.
fn strict<T: DeserializeOwned + Serialize>(value: &Value) -> Result<Box<T>, String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|error| error.to_string())?;
    let round_trip = serde_json::to_value(&typed).map_err(|error| error.to_string())?;
    let unknown = unknown_fields(value, &round_trip);
    if unknown.is_empty() {
        Ok(Box::new(typed))
    } else {
        Err(format!("unknown (or empty) fields: {}", unknown.join(", ")))
    }
}

/// Paths of `original` (e.g. `.spec.template.spec.hostNetwrok`) missing from `parsed`.
pub fn unknown_fields(original: &Value, parsed: &Value) -> Vec<String> {
    let mut missing = Vec::new();
    collect_unknown(original, parsed, String::new(), &mut missing);
    missing
}

fn collect_unknown(original: &Value, parsed: &Value, path: String, missing: &mut Vec<String>) {
    match (original, parsed) {
        (Value::Object(original), Value::Object(parsed)) => {
            for (key, value) in original {
                let child = format!("{path}.{key}");
                match parsed.get(key) {
                    Some(parsed_value) => collect_unknown(value, parsed_value, child, missing),
                    None => missing.push(child),
                }
            }
        }
        (Value::Array(original), Value::Array(parsed)) => {
            for (index, (value, parsed_value)) in original.iter().zip(parsed).enumerate() {
                collect_unknown(value, parsed_value, format!("{path}[{index}]"), missing);
            }
        }
        _ => {}
    }
}

/// `kustomization.yaml`, strictly (only the fields egw uses).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kustomization {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: Vec<KustomizeLabels>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub patches: Vec<KustomizePatch>,
    #[serde(default)]
    pub images: Vec<KustomizeImage>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KustomizeLabels {
    pub pairs: BTreeMap<String, String>,
    #[serde(default)]
    pub include_selectors: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KustomizePatch {
    pub path: String,
    #[serde(default)]
    pub target: Option<KustomizeTarget>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KustomizeTarget {
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KustomizeImage {
    pub name: String,
    pub new_name: String,
    pub new_tag: String,
}

/// A kustomization rendered the way kustomize would select files: the documents of
/// its resources (recursively through directories), its patches, and problems found.
#[derive(Debug, Default)]
pub struct Rendered {
    pub documents: Vec<Document>,
    pub patches: Vec<(Document, Option<KustomizeTarget>)>,
    /// Image names the kustomizations rewrite.
    pub images: BTreeSet<String>,
    pub namespace: Option<String>,
    pub problems: Vec<String>,
}

/// Loads the kustomization in `directory` and everything it references.
pub fn render(directory: &Path) -> Rendered {
    let mut rendered = Rendered::default();
    render_into(directory, &mut rendered, 0);
    rendered
}

fn render_into(directory: &Path, rendered: &mut Rendered, depth: usize) {
    let file = directory.join("kustomization.yaml");
    if depth > 8 {
        rendered
            .problems
            .push(format!("{}: kustomizations nest too deep", file.display()));
        return;
    }
    let kustomization: Kustomization = match std::fs::read_to_string(&file)
        .map_err(|error| error.to_string())
        .and_then(|text| serde_yaml::from_str(&text).map_err(|error| error.to_string()))
    {
        Ok(kustomization) => kustomization,
        Err(error) => {
            rendered
                .problems
                .push(format!("{}: {error}", file.display()));
            return;
        }
    };
    if kustomization.api_version != "kustomize.config.k8s.io/v1beta1"
        || kustomization.kind != "Kustomization"
    {
        rendered.problems.push(format!(
            "{}: not a kustomize.config.k8s.io/v1beta1 Kustomization",
            file.display()
        ));
    }
    if kustomization.namespace.is_some() {
        rendered.namespace = kustomization.namespace.clone();
    }
    rendered
        .images
        .extend(kustomization.images.iter().map(|image| image.name.clone()));
    let mut referenced = BTreeSet::new();
    for resource in &kustomization.resources {
        let path = directory.join(resource);
        if path.is_dir() {
            render_into(&path, rendered, depth + 1);
        } else if path.is_file() {
            referenced.insert(normalise(&path));
            match load_file(&path) {
                Ok(documents) => rendered.documents.extend(documents),
                Err(error) => rendered.problems.push(error.to_string()),
            }
        } else {
            rendered.problems.push(format!(
                "{}: resource {resource} does not exist",
                file.display()
            ));
        }
    }
    for patch in &kustomization.patches {
        let path = directory.join(&patch.path);
        referenced.insert(normalise(&path));
        match load_file(&path) {
            Ok(documents) if documents.len() == 1 => {
                for document in documents {
                    rendered.patches.push((document, patch.target.clone()));
                }
            }
            Ok(_) => rendered
                .problems
                .push(format!("{}: a patch must be one document", path.display())),
            Err(error) => rendered.problems.push(error.to_string()),
        }
    }
    // A manifest nobody references is a manifest nobody deploys.
    if let Ok(entries) = std::fs::read_dir(directory) {
        for entry in entries.flatten() {
            let path = entry.path();
            let is_yaml = path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml");
            if is_yaml
                && path
                    .file_name()
                    .is_some_and(|name| name != "kustomization.yaml")
                && !referenced.contains(&normalise(&path))
            {
                rendered.problems.push(format!(
                    "{}: not referenced by {}",
                    path.display(),
                    file.display()
                ));
            }
        }
    }
}

fn normalise(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_owned())
}

/// Cross-reference problems in a rendered set: RBAC references and workload selectors, each
/// workload's pod (service account, volumes, images), the selectors and ports of Services,
/// PodDisruptionBudgets and ServiceMonitors, and patch targets.
pub fn cross_check(rendered: &Rendered) -> Vec<String> {
    let mut problems = Vec::new();
    let names = Names::of(rendered);
    let workloads = check_references(rendered, &names, &mut problems);
    check_pods(rendered, &names, &workloads, &mut problems);
    check_selectors(rendered, &workloads, &mut problems);
    check_patch_targets(rendered, &mut problems);
    problems
}

/// A workload: where it is (for messages), its namespace and its pod template.
type Workload<'a> = (String, Option<String>, &'a PodTemplateSpec);

/// `(namespace, name)` of the objects others refer to, by kind.
struct Names {
    service_accounts: BTreeSet<(Option<String>, String)>,
    config_maps: BTreeSet<(Option<String>, String)>,
    roles: BTreeSet<(Option<String>, String)>,
    cluster_roles: BTreeSet<(Option<String>, String)>,
}

impl Names {
    fn of(rendered: &Rendered) -> Names {
        let names = |kind: &str| -> BTreeSet<(Option<String>, String)> {
            rendered
                .documents
                .iter()
                .filter(|document| document.kind == kind)
                .map(|document| (namespace_of(document, rendered), document.name.clone()))
                .collect()
        };
        Names {
            service_accounts: names("ServiceAccount"),
            config_maps: names("ConfigMap"),
            roles: names("Role"),
            cluster_roles: names("ClusterRole"),
        }
    }
}

/// Where a document is, for messages.
fn location(document: &Document) -> String {
    format!(
        "{} {}/{}",
        document.file.display(),
        document.kind,
        document.name
    )
}

/// Workload selectors and role bindings (role references, subjects); returns the workloads.
fn check_references<'a>(
    rendered: &'a Rendered,
    names: &Names,
    problems: &mut Vec<String>,
) -> Vec<Workload<'a>> {
    let Names {
        service_accounts,
        roles,
        cluster_roles,
        ..
    } = names;
    let mut workloads: Vec<Workload<'a>> = Vec::new();
    for document in &rendered.documents {
        let here = location(document);
        let namespace = namespace_of(document, rendered);
        match &document.object {
            Object::Deployment(deployment) => {
                if let Some(spec) = &deployment.spec {
                    check_selector(&spec.selector, &spec.template, &here, problems);
                    workloads.push((here.clone(), namespace.clone(), &spec.template));
                }
            }
            Object::DaemonSet(daemon_set) => {
                if let Some(spec) = &daemon_set.spec {
                    check_selector(&spec.selector, &spec.template, &here, problems);
                    workloads.push((here.clone(), namespace.clone(), &spec.template));
                }
            }
            Object::RoleBinding(binding) => {
                let reference = (namespace.clone(), binding.role_ref.name.clone());
                let found = match binding.role_ref.kind.as_str() {
                    "Role" => roles.contains(&reference),
                    "ClusterRole" => cluster_roles.contains(&(None, binding.role_ref.name.clone())),
                    _ => false,
                };
                if !found {
                    problems.push(format!(
                        "{here}: roleRef {} {} not found",
                        binding.role_ref.kind, binding.role_ref.name
                    ));
                }
                check_subjects(
                    binding.subjects.as_deref(),
                    service_accounts,
                    &here,
                    problems,
                );
            }
            Object::ClusterRoleBinding(binding) => {
                if binding.role_ref.kind != "ClusterRole"
                    || !cluster_roles.contains(&(None, binding.role_ref.name.clone()))
                {
                    problems.push(format!(
                        "{here}: roleRef {} {} not found",
                        binding.role_ref.kind, binding.role_ref.name
                    ));
                }
                check_subjects(
                    binding.subjects.as_deref(),
                    service_accounts,
                    &here,
                    problems,
                );
            }
            _ => {}
        }
    }
    workloads
}

/// Each workload's pod: its service account and config maps exist, its volumes are mounted
/// and its mounts name volumes, its images are set by the kustomization.
fn check_pods(
    rendered: &Rendered,
    names: &Names,
    workloads: &[Workload<'_>],
    problems: &mut Vec<String>,
) {
    let Names {
        service_accounts,
        config_maps,
        ..
    } = names;
    for (here, namespace, template) in workloads {
        let Some(pod) = &template.spec else {
            problems.push(format!("{here}: no pod spec"));
            continue;
        };
        let account = pod
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        if !service_accounts.contains(&(namespace.clone(), account.clone())) {
            problems.push(format!("{here}: service account {account} not found"));
        }
        for volume in pod.volumes.iter().flatten() {
            if let Some(config_map) = &volume.config_map {
                if !config_maps.contains(&(namespace.clone(), config_map.name.clone())) {
                    problems.push(format!("{here}: config map {} not found", config_map.name));
                }
            }
            let mounted = pod.containers.iter().any(|container| {
                container
                    .volume_mounts
                    .iter()
                    .flatten()
                    .any(|mount| mount.name == volume.name)
            });
            if !mounted {
                problems.push(format!("{here}: volume {} is never mounted", volume.name));
            }
        }
        for container in &pod.containers {
            for mount in container.volume_mounts.iter().flatten() {
                if !pod
                    .volumes
                    .iter()
                    .flatten()
                    .any(|volume| volume.name == mount.name)
                {
                    problems.push(format!("{here}: mount of unknown volume {}", mount.name));
                }
            }
            let image = container.image.clone().unwrap_or_default();
            if !rendered.images.contains(&image) {
                problems.push(format!(
                    "{here}: image {image:?} is not set by the kustomization's images"
                ));
            }
        }
    }
}

/// Services, PodDisruptionBudgets and ServiceMonitors select something, on ports it has.
fn check_selectors(rendered: &Rendered, workloads: &[Workload<'_>], problems: &mut Vec<String>) {
    let documents = &rendered.documents;
    let matching = |namespace: &Option<String>, selector: &BTreeMap<String, String>| {
        workloads
            .iter()
            .filter(|(_, workload_namespace, template)| {
                workload_namespace == namespace && labels_match(selector, template)
            })
            .collect::<Vec<_>>()
    };
    for document in documents {
        let here = location(document);
        let namespace = namespace_of(document, rendered);
        match &document.object {
            Object::Service(service) => {
                let spec = service.spec.clone().unwrap_or_default();
                let selector = spec.selector.unwrap_or_default();
                let targets = matching(&namespace, &selector);
                if targets.is_empty() {
                    problems.push(format!("{here}: selector matches no workload"));
                }
                for port in spec.ports.iter().flatten() {
                    if let Some(
                        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name),
                    ) = &port.target_port
                    {
                        for (workload, _, template) in &targets {
                            if !container_ports(template).contains(name) {
                                problems.push(format!(
                                    "{here}: targetPort {name} is not a port of {workload}"
                                ));
                            }
                        }
                    }
                }
            }
            Object::PodDisruptionBudget(budget) => {
                let selector = budget
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.selector.clone())
                    .unwrap_or_default();
                if selector.match_expressions.is_some()
                    || matching(&namespace, &selector.match_labels.unwrap_or_default()).is_empty()
                {
                    problems.push(format!("{here}: selector matches no workload"));
                }
            }
            Object::ServiceMonitor(monitor) => {
                let selector = monitor
                    .spec
                    .selector
                    .match_labels
                    .clone()
                    .unwrap_or_default();
                let services: Vec<&Service> = documents
                    .iter()
                    .filter_map(|document| match &document.object {
                        Object::Service(service) => Some(service.as_ref()),
                        _ => None,
                    })
                    .filter(|service| {
                        let labels = service.metadata.labels.clone().unwrap_or_default();
                        selector
                            .iter()
                            .all(|(key, value)| labels.get(key) == Some(value))
                    })
                    .collect();
                if services.is_empty() {
                    problems.push(format!("{here}: selector matches no Service"));
                }
                for endpoint in &monitor.spec.endpoints {
                    for service in &services {
                        let has_port = service
                            .spec
                            .iter()
                            .flat_map(|spec| spec.ports.iter().flatten())
                            .any(|port| port.name.as_deref() == Some(endpoint.port.as_str()));
                        if !has_port {
                            problems.push(format!(
                                "{here}: Service {} has no port {}",
                                service.metadata.name.clone().unwrap_or_default(),
                                endpoint.port
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// Every patch's target exists.
fn check_patch_targets(rendered: &Rendered, problems: &mut Vec<String>) {
    let documents = &rendered.documents;
    for (patch, target) in &rendered.patches {
        let (kind, name) = match target {
            Some(target) => (target.kind.clone(), target.name.clone()),
            None => (patch.kind.clone(), patch.name.clone()),
        };
        if !documents
            .iter()
            .any(|document| document.kind == kind && document.name == name)
        {
            problems.push(format!(
                "{}: patch target {kind}/{name} not found",
                patch.file.display()
            ));
        }
    }
}

/// The namespace an object ends up in: the kustomization's for namespaced kinds.
fn namespace_of(document: &Document, rendered: &Rendered) -> Option<String> {
    let cluster_scoped = matches!(
        document.object,
        Object::Namespace(_)
            | Object::ClusterRole(_)
            | Object::ClusterRoleBinding(_)
            | Object::CustomResourceDefinition(_)
            | Object::EgressGateway(_)
            | Object::EgressGatewayPolicy(_)
    );
    if cluster_scoped {
        None
    } else {
        rendered
            .namespace
            .clone()
            .or_else(|| document.namespace.clone())
    }
}

fn labels_match(selector: &BTreeMap<String, String>, template: &PodTemplateSpec) -> bool {
    let labels = template
        .metadata
        .as_ref()
        .and_then(|meta| meta.labels.clone())
        .unwrap_or_default();
    !selector.is_empty()
        && selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
}

fn check_selector(
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    here: &str,
    problems: &mut Vec<String>,
) {
    let labels = selector.match_labels.clone().unwrap_or_default();
    if selector.match_expressions.is_some() || !labels_match(&labels, template) {
        problems.push(format!(
            "{here}: selector does not match the pod template's labels"
        ));
    }
}

fn check_subjects(
    subjects: Option<&[Subject]>,
    service_accounts: &BTreeSet<(Option<String>, String)>,
    here: &str,
    problems: &mut Vec<String>,
) {
    for subject in subjects.unwrap_or_default() {
        if subject.kind == "ServiceAccount"
            && !service_accounts.contains(&(subject.namespace.clone(), subject.name.clone()))
        {
            problems.push(format!(
                "{here}: subject service account {:?}/{} not found",
                subject.namespace, subject.name
            ));
        }
    }
}

fn container_ports(template: &PodTemplateSpec) -> BTreeSet<String> {
    template
        .spec
        .iter()
        .flat_map(|pod| &pod.containers)
        .flat_map(|container| container.ports.iter().flatten())
        .filter_map(|port| port.name.clone())
        .collect()
}

/// Metric names the dashboard may query: everything egw exports (histograms with
/// their `_bucket`/`_sum`/`_count` series).
pub const EGW_METRICS: &[&str] = &[
    "egw_rx_packets_total",
    "egw_tx_packets_total",
    "egw_drops_total",
    "egw_flows_created_total",
    "egw_flows_expired_total",
    "egw_ports_in_use",
    "egw_port_exhaustion",
    "egw_xdp_info",
    "egw_natlog_events_written_total",
    "egw_conntrack_flows",
    "egw_conntrack_capacity",
    "egw_port_utilization_ratio",
    "egw_route_table_generation",
    "egw_natlog_events_dropped_total",
    "egw_controller_reconciles_total",
    "egw_controller_push_duration_seconds",
    "egw_controller_aws_calls_total",
    "egw_controller_aws_failovers_total",
];

/// Problems in a Grafana dashboard: unparsable, duplicate panel ids, queries of
/// unknown metrics, exported metrics no panel shows.
pub fn check_dashboard(path: &Path) -> Vec<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => return vec![format!("{}: {error}", path.display())],
    };
    let dashboard: Value = match serde_json::from_str(&text) {
        Ok(dashboard) => dashboard,
        Err(error) => return vec![format!("{}: not JSON: {error}", path.display())],
    };
    let mut problems = Vec::new();
    let panels = dashboard
        .get("panels")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if panels.is_empty() {
        problems.push(format!("{}: no panels", path.display()));
    }
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for panel in &panels {
        let title = panel.get("title").and_then(Value::as_str).unwrap_or("?");
        match panel.get("id").and_then(Value::as_u64) {
            Some(id) if ids.insert(id) => {}
            _ => problems.push(format!(
                "{}: panel {title:?} has a missing or duplicate id",
                path.display()
            )),
        }
        if panel.get("gridPos").is_none() {
            problems.push(format!(
                "{}: panel {title:?} has no gridPos",
                path.display()
            ));
        }
        for target in panel
            .get("targets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let expr = target
                .get("expr")
                .and_then(Value::as_str)
                .unwrap_or_default();
            for metric in metric_names(expr) {
                let known = EGW_METRICS.iter().find(|known| {
                    metric == **known
                        || ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|suffix| metric.strip_suffix(suffix) == Some(**known))
                });
                match known {
                    Some(known) => {
                        used.insert(*known);
                    }
                    None => problems.push(format!(
                        "{}: panel {title:?} queries unknown metric {metric}",
                        path.display()
                    )),
                }
            }
        }
    }
    for metric in EGW_METRICS {
        if !used.contains(metric) {
            problems.push(format!("{}: no panel shows {metric}", path.display()));
        }
    }
    problems
}

/// The `egw_*` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("egw_"))
        .map(str::to_owned)
        .collect()
}

/// Problems in a Dockerfile: `COPY --from` of a stage that is not defined before it,
/// or a missing expected target.
pub fn check_dockerfile(path: &Path, targets: &[&str]) -> Vec<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => return vec![format!("{}: {error}", path.display())],
    };
    let mut problems = Vec::new();
    let mut stages = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["FROM", _, "AS", stage] | ["FROM", _, "as", stage] => {
                stages.insert(stage.to_string());
            }
            ["COPY", from, ..] if from.starts_with("--from=") => {
                let stage = &from["--from=".len()..];
                if !stages.contains(stage) {
                    problems.push(format!(
                        "{}: COPY from undefined stage {stage}",
                        path.display()
                    ));
                }
            }
            _ => {}
        }
    }
    for target in targets {
        if !stages.contains(*target) {
            problems.push(format!("{}: no stage {target}", path.display()));
        }
    }
    problems
}
