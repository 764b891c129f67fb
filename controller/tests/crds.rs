//! The committed CRD manifests match the Rust types, and the examples fit the types and the
//! generated OpenAPI schemas.

use std::path::{Path, PathBuf};

use egw_controller::crd::{EgressGateway, EgressGatewayPolicy};
use egw_controller::crdgen::crd_manifests;
use egw_controller::local::load_dir;
use egw_controller::translate::{translate, PodOutcome};
use kube::CustomResourceExt;
use serde::Deserialize;
use serde_json::Value;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

#[test]
fn committed_crds_match_the_rust_types() {
    for (file, generated) in crd_manifests().unwrap() {
        let path = repo_path("deploy/crds").join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is out of date with the Rust types in controller/crd/src/lib.rs; regenerate it with \
             `cargo run -p egw-controller --bin crdgen` and commit the result",
            path.display()
        );
    }
}

#[test]
fn crds_carry_names_columns_status_and_descriptions() {
    let gateway = EgressGateway::crd();
    assert_eq!(gateway.spec.scope, "Cluster");
    assert_eq!(gateway.spec.names.short_names, Some(vec!["egw".to_owned()]));
    let policy = EgressGatewayPolicy::crd();
    assert_eq!(policy.spec.scope, "Cluster");
    assert_eq!(policy.spec.names.short_names, Some(vec!["egwp".to_owned()]));
    for crd in [gateway, policy] {
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns = version.additional_printer_columns.as_ref().unwrap();
        assert!(columns.iter().any(|column| column.name == "Ready"));
        let schema = serde_json::to_value(version.schema.as_ref().unwrap()).unwrap();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        assert!(spec["description"]
            .as_str()
            .is_some_and(|text| !text.is_empty()));
        for (field, property) in spec["properties"].as_object().unwrap() {
            assert!(
                property["description"]
                    .as_str()
                    .is_some_and(|text| !text.is_empty()),
                "{}: spec.{field} has no description for kubectl explain",
                crd.spec.names.kind
            );
        }
    }
}

/// A small validator for Kubernetes structural schemas: types, required fields, enums, maps
/// (`additionalProperties`), lists, and unknown fields (which the API server would prune; here
/// they are errors so that typos in examples are caught).
fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            errors.push(format!("{path}: null is not allowed"));
        }
        return;
    }
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            errors.push(format!("{path}: expected an integer or a string"));
        }
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            errors.push(format!("{path}: {value} is not one of {allowed:?}"));
        }
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(object) = value.as_object() else {
                errors.push(format!("{path}: expected an object"));
                return;
            };
            for required in schema["required"].as_array().into_iter().flatten() {
                let key = required.as_str().unwrap();
                if !object.contains_key(key) {
                    errors.push(format!("{path}: missing required field `{key}`"));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, item) in object {
                let item_path = format!("{path}.{key}");
                match (
                    properties.and_then(|properties| properties.get(key)),
                    additional,
                ) {
                    (Some(property), _) => validate(property, item, &item_path, errors),
                    (None, Some(additional)) if additional.is_object() => {
                        validate(additional, item, &item_path, errors)
                    }
                    _ => errors.push(format!("{item_path}: unknown field")),
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                errors.push(format!("{path}: expected a list"));
                return;
            };
            for (index, item) in items.iter().enumerate() {
                validate(&schema["items"], item, &format!("{path}[{index}]"), errors);
            }
        }
        Some("string") => {
            if !value.is_string() {
                errors.push(format!("{path}: expected a string"));
            } else if schema["format"] == "ipv4" {
                let text = value.as_str().unwrap();
                if text.parse::<std::net::Ipv4Addr>().is_err() {
                    errors.push(format!("{path}: `{text}` is not an IPv4 address"));
                }
            }
        }
        Some("integer") => {
            if !(value.is_i64() || value.is_u64()) {
                errors.push(format!("{path}: expected an integer"));
            } else if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64) {
                if value.as_f64().unwrap() < minimum {
                    errors.push(format!("{path}: below the minimum {minimum}"));
                }
            }
        }
        Some("boolean") if !value.is_boolean() => {
            errors.push(format!("{path}: expected a boolean"))
        }
        Some("number") if !value.is_number() => errors.push(format!("{path}: expected a number")),
        _ => {}
    }
}

fn schema_errors(kind: &str, object: &Value) -> Vec<String> {
    let crd = match kind {
        "EgressGateway" => EgressGateway::crd(),
        "EgressGatewayPolicy" => EgressGatewayPolicy::crd(),
        other => panic!("no CRD for {other}"),
    };
    let schema = serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap()).unwrap();
    let root = &schema["openAPIV3Schema"];
    let mut errors = Vec::new();
    for part in ["spec", "status"] {
        if let Some(value) = object.get(part) {
            validate(&root["properties"][part], value, part, &mut errors);
        }
    }
    if object.get("spec").is_none() {
        errors.push("missing spec".to_owned());
    }
    errors
}

fn example_documents() -> Vec<(PathBuf, Value)> {
    let mut documents = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(repo_path("deploy/examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            documents.push((path.clone(), Value::deserialize(document).unwrap()));
        }
    }
    documents
}

#[test]
fn examples_validate_against_the_generated_schemas() {
    let mut checked = 0;
    for (path, document) in example_documents() {
        let kind = document["kind"].as_str().unwrap_or_default().to_owned();
        if !kind.starts_with("EgressGateway") {
            continue;
        }
        let errors = schema_errors(&kind, &document);
        assert!(errors.is_empty(), "{}: {kind}: {errors:#?}", path.display());
        checked += 1;
    }
    assert!(
        checked >= 3,
        "only {checked} egw objects among the examples"
    );
}

#[test]
fn schema_validation_rejects_typos_and_wrong_types() {
    let bad_gateway = serde_json::json!({
        "spec": {
            "selector": {},
            "static": {"instances": [{"name": "a", "endpoint": "x:1", "addresses": ["not-an-ip"]}]},
            "maxNextHop": 2,
            "pairedAddresses": "yes"
        }
    });
    let errors = schema_errors("EgressGateway", &bad_gateway);
    assert!(
        errors.iter().any(|error| error.contains("not-an-ip")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|error| error.contains("spec.maxNextHop: unknown field")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|error| error.contains("pairedAddresses: expected a boolean")),
        "{errors:?}"
    );

    let bad_policy = serde_json::json!({"spec": {"rules": [{"action": "Drop"}]}});
    let errors = schema_errors("EgressGatewayPolicy", &bad_policy);
    assert!(
        errors
            .iter()
            .any(|error| error.contains("\"Drop\" is not one of")),
        "{errors:?}"
    );
    let errors = schema_errors("EgressGatewayPolicy", &serde_json::json!({"spec": {}}));
    assert_eq!(errors, vec!["spec: missing required field `rules`"]);
}

#[test]
fn examples_deserialize_and_translate() {
    let input = load_dir(&repo_path("deploy/examples")).unwrap();
    assert!(input.skipped.is_empty(), "{:?}", input.skipped);
    let snapshot = &input.snapshot;
    assert_eq!(snapshot.gateways.len(), 2);
    assert_eq!(snapshot.policies.len(), 1);
    assert_eq!(snapshot.namespaces.len(), 4);
    assert_eq!(snapshot.pods.len(), 5);

    let translation = translate(snapshot);
    let keys: Vec<String> = translation.tables.keys().map(ToString::to_string).collect();
    assert_eq!(keys, ["lab/lab-gw-0", "lab/lab-gw-1"]);
    assert!(matches!(
        &translation.pods["partners/canary-0"],
        PodOutcome::Denied { reason, .. } if reason == "policy `partner-y` not found"
    ));
    assert!(matches!(
        translation.pods["partners/sync-0"],
        PodOutcome::Routed { .. }
    ));
    assert!(matches!(
        translation.pods["legacy/report-0"],
        PodOutcome::Routed { .. }
    ));
    assert_eq!(translation.gateways["aws-prod"].ready_instances, 0);
}
