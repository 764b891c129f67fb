//! `deploy/aws/iam-policy.json` grants exactly the EC2 actions egw-aws calls, and the README
//! justifies each one: adding an EC2 call without its permission (or leaving a permission nobody
//! needs) fails here instead of in a customer's account.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn crate_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// `describe_addresses` → `DescribeAddresses`.
fn action_name(method: &str) -> String {
    method
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Every `….client.<operation>(` call in the crate's sources, as EC2 action names.
fn called_actions() -> BTreeSet<String> {
    let mut actions = BTreeSet::new();
    let sources = std::fs::read_dir(crate_path("src")).expect("controller/aws/src");
    for entry in sources {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|extension| extension != "rs")
            || path.file_name().is_some_and(|name| name == "testing.rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source file");
        let compact: String = text.split_whitespace().collect();
        for (index, _) in compact.match_indices(".client.") {
            let rest = &compact[index + ".client.".len()..];
            let method: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !method.is_empty() && rest[method.len()..].starts_with("()") && method != "config" {
                actions.insert(action_name(&method));
            }
        }
    }
    actions
}

fn granted_actions() -> BTreeSet<String> {
    let text = std::fs::read_to_string(crate_path("../../deploy/aws/iam-policy.json"))
        .expect("deploy/aws/iam-policy.json");
    let policy: serde_json::Value = serde_json::from_str(&text).expect("policy is JSON");
    let mut actions = BTreeSet::new();
    for statement in policy["Statement"].as_array().expect("Statement list") {
        assert_eq!(statement["Effect"], "Allow", "{statement}");
        let listed = match &statement["Action"] {
            serde_json::Value::String(action) => vec![action.clone()],
            serde_json::Value::Array(list) => list
                .iter()
                .map(|action| action.as_str().expect("action is a string").to_owned())
                .collect(),
            other => panic!("Action must be a string or a list: {other}"),
        };
        for action in listed {
            let name = action
                .strip_prefix("ec2:")
                .unwrap_or_else(|| panic!("only EC2 actions are needed, found {action}"));
            assert!(!name.contains('*'), "no wildcard actions: {action}");
            actions.insert(name.to_owned());
        }
    }
    actions
}

#[test]
fn the_policy_grants_exactly_the_actions_the_code_calls() {
    let called = called_actions();
    assert!(
        called.contains("AllocateAddress") && called.contains("DescribeAddresses"),
        "the source scan found too little: {called:?}"
    );
    let granted = granted_actions();
    let missing: Vec<_> = called.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&called).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "deploy/aws/iam-policy.json is out of date:\n  called but not granted: {missing:?}\n  granted but never called: {unused:?}"
    );
}

#[test]
fn the_readme_justifies_every_granted_action() {
    let readme =
        std::fs::read_to_string(crate_path("README.md")).expect("controller/aws/README.md");
    let table: Vec<&str> = readme
        .lines()
        .filter(|line| line.starts_with("| `ec2:"))
        .collect();
    for action in granted_actions() {
        let cell = format!("`ec2:{action}`");
        assert!(
            table.iter().any(|row| row.contains(&cell)),
            "controller/aws/README.md has no IAM table row for {cell}"
        );
    }
}
