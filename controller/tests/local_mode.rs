//! Local mode: loading a manifest directory, and `egw-controller --local DIR --print`.

use std::path::Path;
use std::process::Command;

use egw_controller::local::{load_dir, LocalError};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const GATEWAY: &str = r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGateway
metadata: {name: lab}
spec:
  selector: {}
  static:
    instances:
      - {name: lab-0, endpoint: "127.0.0.1:7443", addresses: [192.0.2.10]}
"#;

#[test]
fn loads_multi_document_files_lists_and_skips_other_kinds() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "10-gateway.yaml",
        &format!(
            "{GATEWAY}\n---\n# a comment-only document\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\n"
        ),
    );
    write(
        dir.path(),
        "20-workloads.yml",
        r#"
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Namespace
    metadata: {name: apps, annotations: {egw.dev/gateway: lab}}
  - apiVersion: v1
    kind: Pod
    metadata: {name: p1, namespace: apps}
    status: {phase: Running, podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: loose}
status: {phase: Running, podIP: 10.1.0.2}
"#,
    );
    write(dir.path(), "notes.txt", "kind: Pod\nnot: loaded\n");
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    write(&dir.path().join("nested"), "ignored.yaml", "kind: Pod\n");

    let input = load_dir(dir.path()).unwrap();
    let snapshot = &input.snapshot;
    assert_eq!(snapshot.gateways.len(), 1);
    assert_eq!(snapshot.gateways[0].instances.len(), 1);
    assert!(snapshot.gateways[0].instances[0].ready);
    assert_eq!(snapshot.namespaces.len(), 1);
    let pods: Vec<String> = snapshot.pods.iter().map(|pod| pod.key()).collect();
    assert_eq!(pods, ["apps/p1", "default/loose"]);
    assert_eq!(input.skipped.len(), 1);
    assert_eq!(input.skipped[0].kind, "Deployment");
    assert_eq!(input.skipped[0].document, 3);
}

#[test]
fn reports_the_file_and_document_of_bad_manifests() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "bad.yaml",
        &format!("{GATEWAY}\n---\nkey: [unclosed\n"),
    );
    match load_dir(dir.path()) {
        Err(LocalError::Yaml { path, document, .. }) => {
            assert!(path.ends_with("bad.yaml"));
            assert_eq!(document, 2);
        }
        other => panic!("expected a YAML error, got {other:?}"),
    }

    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "wrong.yaml",
        "apiVersion: egw.dev/v1alpha1\nkind: EgressGatewayPolicy\nmetadata: {name: p}\nspec: {rules: [{action: Drop}]}\n",
    );
    match load_dir(dir.path()) {
        Err(error @ LocalError::Object { .. }) => {
            let text = error.to_string();
            assert!(text.contains("EgressGatewayPolicy `p`"), "{text}");
        }
        other => panic!("expected a schema error, got {other:?}"),
    }

    let missing = dir.path().join("does-not-exist");
    assert!(matches!(
        load_dir(&missing),
        Err(LocalError::ReadDir { .. })
    ));
}

#[test]
fn print_writes_one_yaml_table_per_instance() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "all.yaml",
        &format!(
            "{GATEWAY}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: apps, annotations: {{egw.dev/policy: absent}}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p1, namespace: apps}}\nstatus: {{phase: Running, podIP: 10.1.0.1}}\n"
        ),
    );
    let output = Command::new(env!("CARGO_BIN_EXE_egw-controller"))
        .arg("--local")
        .arg(dir.path())
        .arg("--print")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("PodDenied: policy `absent` not found"),
        "{stderr}"
    );
    let documents: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&stdout)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .collect();
    assert_eq!(documents.len(), 1);
    let table = &documents[0];
    assert_eq!(table["gateway"].as_str(), Some("lab"));
    assert_eq!(table["instance"].as_str(), Some("lab-0"));
    assert_eq!(table["endpoint"].as_str(), Some("127.0.0.1:7443"));
    assert_eq!(table["sources"][0]["cidr"].as_str(), Some("10.1.0.1/32"));
    let policy = &table["policies"][0];
    assert_eq!(
        policy["defaultAction"]["deny"].as_str(),
        Some("policy `absent` not found")
    );
}

#[test]
fn print_without_a_directory_fails_with_a_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_egw-controller"))
        .args(["--local", "/nonexistent/egw-manifests", "--print"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("cannot read directory /nonexistent/egw-manifests"),
        "{stderr}"
    );
}
