//! The controller's Deployment manifest parses as Kubernetes objects and grants every API call
//! the controller makes.

use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use serde::Deserialize;

const EXAMPLE: &str = "../deploy/examples/controller/egw-controller.yaml";
const BASE_RBAC: &str = "../deploy/kubernetes/base/controller-rbac.yaml";

fn documents_of(file: &str) -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde_json::Value::deserialize(document).unwrap())
        .collect()
}

fn of_kind<T: serde::de::DeserializeOwned>(kind: &str) -> Vec<T> {
    of_kind_in(EXAMPLE, kind)
}

fn of_kind_in<T: serde::de::DeserializeOwned>(file: &str, kind: &str) -> Vec<T> {
    documents_of(file)
        .into_iter()
        .filter(|document| document["kind"] == kind)
        .map(|document| serde_json::from_value(document).unwrap())
        .collect()
}

fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|rule| {
        rule.api_groups
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|g| g == group)
            && rule
                .resources
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|r| r == resource)
            && rule.verbs.iter().any(|v| v == verb)
    })
}

#[test]
fn rbac_grants_every_call_the_controller_makes() {
    let cluster_roles: Vec<ClusterRole> = of_kind("ClusterRole");
    let rules = cluster_roles[0].rules.clone().unwrap_or_default();
    let needed = [
        ("", "pods", &["list", "watch"][..]),
        ("", "namespaces", &["list", "watch"]),
        ("", "nodes", &["get"]),
        ("egw.dev", "egressgateways", &["list", "watch", "patch"]),
        ("egw.dev", "egressgatewaypolicies", &["list", "watch"]),
        ("egw.dev", "egressgateways/status", &["patch"]),
        ("egw.dev", "egressgatewaypolicies/status", &["patch"]),
        ("events.k8s.io", "events", &["create", "patch"]),
    ];
    for (group, resource, verbs) in needed {
        for verb in verbs {
            assert!(
                allows(&rules, group, resource, verb),
                "{verb} {group}/{resource}"
            );
        }
    }
    let roles: Vec<Role> = of_kind("Role");
    let lease_rules = roles[0].rules.clone().unwrap_or_default();
    for verb in ["get", "create", "update"] {
        assert!(
            allows(&lease_rules, "coordination.k8s.io", "leases", verb),
            "{verb} leases"
        );
    }
    assert_eq!(roles[0].metadata.namespace.as_deref(), Some("egw-system"));
}

/// The kustomize base grants every call of cluster mode, including the AWS manager's node reads
/// (EC2 instance IDs from `spec.providerID`) and the finalizer patch.
#[test]
fn base_rbac_grants_every_call_the_controller_makes_with_aws() {
    let cluster_roles: Vec<ClusterRole> = of_kind_in(BASE_RBAC, "ClusterRole");
    let rules = cluster_roles[0].rules.clone().unwrap_or_default();
    let needed = [
        ("", "pods", &["list", "watch"][..]),
        ("", "namespaces", &["list", "watch"]),
        ("", "nodes", &["get"]),
        ("egw.dev", "egressgateways", &["list", "watch", "patch"]),
        ("egw.dev", "egressgatewaypolicies", &["list", "watch"]),
        ("egw.dev", "egressgateways/status", &["patch"]),
        ("egw.dev", "egressgatewaypolicies/status", &["patch"]),
        ("events.k8s.io", "events", &["create", "patch"]),
    ];
    for (group, resource, verbs) in needed {
        for verb in verbs {
            assert!(
                allows(&rules, group, resource, verb),
                "{verb} {group}/{resource}"
            );
        }
    }
    // Nodes are read, never listed, watched or written.
    for verb in ["list", "watch", "patch", "update"] {
        assert!(!allows(&rules, "", "nodes", verb), "{verb} nodes");
    }
    assert!(!allows(&rules, "egw.dev", "egressgatewaypolicies", "patch"));
}

#[test]
fn deployment_passes_identity_and_probes_the_health_endpoint() {
    let deployments: Vec<Deployment> = of_kind("Deployment");
    let spec = deployments[0].spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("egw-controller"));
    let container = &pod.containers[0];
    let env: Vec<&str> = container
        .env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|variable| variable.name.as_str())
        .collect();
    for name in [
        "POD_NAME",
        "POD_NAMESPACE",
        "EGW_GATEWAY_CA",
        "EGW_GATEWAY_TLS_CERT",
        "EGW_GATEWAY_TLS_KEY",
    ] {
        assert!(env.contains(&name), "{name} missing");
    }
    let port = &container.ports.as_deref().unwrap()[0];
    // The controller's default --metrics-address port.
    assert_eq!(port.container_port, 8080);
    let probe = container
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.path.as_deref(), Some("/healthz"));
}
