//! Fails when a forbidden dependency edge comes back (rules in `egw_layering::RULES`).
//!
//! Asks `cargo tree` for each ruled crate's normal dependencies, resolved with that crate's own
//! features (as `cargo build -p` would), so a feature another crate turns on does not hide or
//! invent an edge.

use std::path::{Path, PathBuf};
use std::process::Command;

use egw_layering::{matches, Rule, RULES};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One line of `cargo tree --prefix depth`: depth and package name.
fn parse_line(line: &str) -> Option<(usize, String)> {
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    let depth = line.get(..digits)?.parse().ok()?;
    let name = line.get(digits..)?.split_whitespace().next()?.to_string();
    Some((depth, name))
}

/// The normal dependency tree of `package`, as (depth, name) in `cargo tree` order.
fn tree(package: &str) -> Vec<(usize, String)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "tree", "--locked", "-e", "normal", "--prefix", "depth", "-p", package,
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(parse_line)
        .collect()
}

/// Every forbidden crate reached from the rule's package, with the path that reaches it.
fn violations(rule: &Rule, tree: &[(usize, String)]) -> Vec<String> {
    let mut path: Vec<&str> = Vec::new();
    let mut found = Vec::new();
    for (depth, name) in tree {
        path.truncate(*depth);
        path.push(name);
        if *depth > 0 && rule.forbidden.iter().any(|pattern| matches(pattern, name)) {
            found.push(path.join(" → "));
        }
    }
    found
}

#[test]
fn no_forbidden_dependency_edges() {
    let mut failures = Vec::new();
    for rule in RULES {
        let tree = tree(rule.package);
        assert_eq!(
            tree.first().map(|(_, name)| name.as_str()),
            Some(rule.package),
            "cargo tree did not start at {}",
            rule.package
        );
        for path in violations(rule, &tree) {
            failures.push(format!("{path}\n    ({}: {})", rule.package, rule.why));
        }
    }
    assert!(
        failures.is_empty(),
        "forbidden dependency edges:\n{}",
        failures.join("\n")
    );
}

#[test]
fn a_forbidden_edge_is_reported_with_its_path() {
    // The checker itself must be able to fail: a synthetic tree with egw-proto → egw-engine.
    let rule = RULES
        .iter()
        .find(|r| r.package == "egw-proto")
        .expect("rule for egw-proto");
    let tree = vec![
        (0, "egw-proto".to_string()),
        (1, "ipnet".to_string()),
        (1, "egw-engine".to_string()),
        (2, "egw-policy".to_string()),
    ];
    assert_eq!(
        violations(rule, &tree),
        vec!["egw-proto → egw-engine".to_string()]
    );
}

#[test]
fn depth_prefixed_lines_parse() {
    assert_eq!(
        parse_line("0egw-proto v0.1.0 (/x/proto)"),
        Some((0, "egw-proto".into()))
    );
    assert_eq!(
        parse_line("12io-uring v0.7.11"),
        Some((12, "io-uring".into()))
    );
    assert_eq!(parse_line(""), None);
}
