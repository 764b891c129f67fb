//! Validates the real files under deploy/, and that the validator catches mistakes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use egw_deploy_validate::{
    check_dashboard, check_dockerfile, cross_check, load_file, parse_object, render, Object,
    Rendered,
};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("deploy/validate has a parent")
        .to_owned()
}

fn yaml_files(directory: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "yaml") {
            files.push(path);
        }
    }
}

fn rendered_clean(directory: &str) -> Rendered {
    let rendered = render(&deploy_dir().join(directory));
    assert!(
        rendered.problems.is_empty(),
        "{directory}: {:#?}",
        rendered.problems
    );
    let problems = cross_check(&rendered);
    assert!(problems.is_empty(), "{directory}: {problems:#?}");
    rendered
}

#[test]
fn every_manifest_parses_into_its_typed_object() {
    let mut files = Vec::new();
    yaml_files(&deploy_dir().join("kubernetes"), &mut files);
    yaml_files(&deploy_dir().join("crds"), &mut files);
    let mut kinds = std::collections::BTreeSet::new();
    let mut documents = 0;
    for file in files
        .iter()
        .filter(|file| !file.ends_with("kustomization.yaml"))
    {
        for document in load_file(file).unwrap_or_else(|error| panic!("{error}")) {
            kinds.insert(document.kind);
            documents += 1;
        }
    }
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "DaemonSet",
        "Deployment",
        "EgressGateway",
        "Namespace",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ];
    assert_eq!(
        kinds.iter().map(String::as_str).collect::<Vec<_>>(),
        expected
    );
    assert!(documents >= 19, "{documents}");
}

#[test]
fn base_and_overlays_render_and_cross_reference() {
    let base = rendered_clean("kubernetes/base");
    assert_eq!(base.namespace.as_deref(), Some("egw-system"));
    let crds: Vec<_> = base
        .documents
        .iter()
        .filter(|document| document.kind == "CustomResourceDefinition")
        .map(|document| document.name.as_str())
        .collect();
    assert_eq!(
        crds,
        ["egressgateways.egw.dev", "egressgatewaypolicies.egw.dev"]
    );

    let monitoring = rendered_clean("kubernetes/overlays/monitoring");
    assert_eq!(monitoring.documents.len(), base.documents.len() + 1);
    assert!(monitoring
        .documents
        .iter()
        .any(|document| matches!(document.object, Object::ServiceMonitor(_))));

    let aws = rendered_clean("kubernetes/overlays/aws");
    let gateway = aws
        .documents
        .iter()
        .find_map(|document| match &document.object {
            Object::EgressGateway(gateway) => Some(gateway),
            _ => None,
        })
        .expect("the aws overlay has an EgressGateway");
    assert!(gateway.spec.aws.is_some());
    let (patch, _) = &aws.patches[0];
    let Object::ServiceAccount(account) = &patch.object else {
        panic!("the IRSA patch is a ServiceAccount");
    };
    let annotations = account.metadata.annotations.clone().unwrap_or_default();
    assert!(annotations["eks.amazonaws.com/role-arn"].starts_with("arn:aws:iam::"));
    // The controller patch turns the AWS manager on with a cluster name (the tag every EC2
    // object egw creates carries); the flags read these variables.
    let controller_env: BTreeMap<String, String> = aws
        .patches
        .iter()
        .find_map(|(patch, _)| match &patch.object {
            Object::Deployment(deployment) => Some(deployment),
            _ => None,
        })
        .and_then(|deployment| deployment.spec.as_ref()?.template.spec.as_ref())
        .map(|pod| {
            pod.containers
                .iter()
                .flat_map(|container| container.env.clone().unwrap_or_default())
                .map(|variable| (variable.name, variable.value.unwrap_or_default()))
                .collect()
        })
        .expect("the aws overlay patches the controller Deployment");
    assert_eq!(
        controller_env.get("EGW_AWS").map(String::as_str),
        Some("true")
    );
    assert!(controller_env
        .get("EGW_CLUSTER_NAME")
        .is_some_and(|name| !name.is_empty()));
}

#[test]
fn the_controller_is_redundant_unprivileged_and_least_privileged() {
    let base = rendered_clean("kubernetes/base");
    let deployment = base
        .documents
        .iter()
        .find_map(|document| match &document.object {
            Object::Deployment(deployment) => Some(deployment),
            _ => None,
        })
        .unwrap();
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    let container = &pod.containers[0];
    // Cluster mode always elects a leader; each replica needs its identity (POD_NAME).
    assert!(container
        .env
        .iter()
        .flatten()
        .any(|env| env.name == "POD_NAME"));
    assert!(container
        .args
        .iter()
        .flatten()
        .any(|arg| arg == "--metrics-address=0.0.0.0:9090"));
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );

    let mut cluster_rules = Vec::new();
    let mut lease_rules = Vec::new();
    for document in &base.documents {
        match &document.object {
            Object::ClusterRole(role) => {
                cluster_rules.extend(role.rules.clone().unwrap_or_default())
            }
            Object::Role(role) => lease_rules.extend(role.rules.clone().unwrap_or_default()),
            _ => {}
        }
    }
    let mut granted = std::collections::BTreeSet::new();
    for rule in &cluster_rules {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    assert_ne!(verb, "*");
                    assert_ne!(resource, "*");
                    assert_ne!(resource, "secrets");
                    granted.insert(format!("{group}/{resource}:{verb}"));
                }
            }
        }
    }
    for expected in [
        "/pods:watch",
        "/namespaces:list",
        "egw.dev/egressgateways:watch",
        "egw.dev/egressgateways/status:patch",
        "egw.dev/egressgatewaypolicies/status:update",
        "/events:create",
        "events.k8s.io/events:patch",
        // The finalizer that keeps an AWS gateway until egw gave back what it holds.
        "egw.dev/egressgateways:patch",
        // AWS gateways: the EC2 instance of a gateway pod's node (spec.providerID).
        "/nodes:get",
    ] {
        assert!(
            granted.contains(expected),
            "missing {expected}: {granted:?}"
        );
    }
    // Writes only to status, events and (for the finalizer) egw's own gateways, cluster-wide;
    // nodes are only read one by one.
    assert!(
        granted.iter().all(|grant| {
            grant.ends_with(":get")
                || grant.ends_with(":list")
                || grant.ends_with(":watch")
                || grant.contains("/status:")
                || grant.contains("/events:")
                || grant == "egw.dev/egressgateways:patch"
        }),
        "{granted:?}"
    );
    assert!(!granted.contains("/nodes:list") && !granted.contains("/nodes:watch"));
    assert_eq!(lease_rules.len(), 1);
    assert_eq!(
        lease_rules[0].resources.as_deref(),
        Some(&["leases".to_owned()][..])
    );
}

#[test]
fn the_gateway_runs_on_gateway_nodes_with_exactly_its_capabilities() {
    let base = rendered_clean("kubernetes/base");
    let daemon_set = base
        .documents
        .iter()
        .find_map(|document| match &document.object {
            Object::DaemonSet(daemon_set) => Some(daemon_set),
            _ => None,
        })
        .unwrap();
    let pod = daemon_set
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(
        pod.node_selector
            .as_ref()
            .unwrap()
            .get("egw.dev/gateway")
            .map(String::as_str),
        Some("true")
    );
    let container = &pod.containers[0];
    let capabilities = container
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    let mut added = capabilities.add.clone().unwrap();
    added.sort();
    assert_eq!(added, ["BPF", "IPC_LOCK", "NET_ADMIN", "NET_RAW"]);
    assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    let volumes = pod.volumes.as_ref().unwrap();
    assert!(volumes.iter().any(|volume| volume
        .secret
        .as_ref()
        .is_some_and(|secret| secret.secret_name.as_deref() == Some("egw-gateway-tls"))));
    assert!(volumes.iter().any(|volume| volume.config_map.is_some()));
}

#[test]
fn the_dashboard_and_dockerfile_are_consistent() {
    let problems = check_dashboard(&deploy_dir().join("grafana/egw.json"));
    assert!(problems.is_empty(), "{problems:#?}");
    let problems = check_dockerfile(
        &deploy_dir().join("Dockerfile"),
        &["build", "gateway", "controller", "egwctl"],
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

// The validator itself: each check fails on a broken input.

#[test]
fn unknown_fields_and_wrong_kinds_are_caught() {
    let typo: serde_json::Value = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "x"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"hostNetwrok": true, "containers": [{"name": "c", "image": "i"}]}}}
    });
    let error = parse_object(&typo).unwrap_err();
    assert!(error.contains(".spec.template.spec.hostNetwrok"), "{error}");

    let mut fixed = typo.clone();
    let spec = fixed.pointer_mut("/spec/template/spec").unwrap();
    spec.as_object_mut().unwrap().remove("hostNetwrok");
    spec["hostNetwork"] = serde_json::json!(true);
    assert!(parse_object(&fixed).is_ok());

    let nested = serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80, "targetPrt": "http"}]}
    });
    assert!(parse_object(&nested)
        .unwrap_err()
        .contains(".spec.ports[0].targetPrt"));
    let unknown_kind =
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
    assert!(parse_object(&unknown_kind).is_err());
    let both_modes = serde_json::json!({
        "apiVersion": "egw.dev/v1alpha1", "kind": "EgressGateway", "metadata": {"name": "g"},
        "spec": {"selector": {}, "static": {"instances": []},
                 "aws": {"elasticIps": {"allocate": 1}}}
    });
    assert!(parse_object(&both_modes)
        .unwrap_err()
        .contains("exactly one"));
}

#[test]
fn broken_kustomizations_and_references_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: ns\n\
         resources: [missing.yaml, sa.yaml, svc.yaml]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sa.yaml"),
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {selector: {app: none}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("orphan.yaml"),
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: b}\n",
    )
    .unwrap();
    let rendered = render(dir.path());
    let text = rendered.problems.join("\n");
    assert!(text.contains("missing.yaml does not exist"), "{text}");
    assert!(text.contains("orphan.yaml: not referenced"), "{text}");
    let problems = cross_check(&rendered).join("\n");
    assert!(
        problems.contains("Service/s: selector matches no workload"),
        "{problems}"
    );

    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresource: [sa.yaml]\n",
    )
    .unwrap();
    assert!(render(dir.path())
        .problems
        .iter()
        .any(|problem| problem.contains("unknown field `resource`")));
}

#[test]
fn dashboards_with_unknown_or_missing_metrics_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.json");
    std::fs::write(
        &path,
        r#"{"panels":[{"id":1,"title":"t","gridPos":{},"targets":[{"expr":"rate(egw_rx_packet_total[1m])"}]}]}"#,
    )
    .unwrap();
    let problems = check_dashboard(&path).join("\n");
    assert!(
        problems.contains("unknown metric egw_rx_packet_total"),
        "{problems}"
    );
    assert!(
        problems.contains("no panel shows egw_drops_total"),
        "{problems}"
    );

    let dockerfile = dir.path().join("Dockerfile");
    std::fs::write(
        &dockerfile,
        "FROM a AS build\nFROM b AS run\nCOPY --from=bulid /x /x\n",
    )
    .unwrap();
    let problems = check_dockerfile(&dockerfile, &["run", "egwctl"]).join("\n");
    assert!(
        problems.contains("undefined stage bulid") && problems.contains("no stage egwctl"),
        "{problems}"
    );
}
