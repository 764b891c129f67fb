//! Fails when two top-level modules of a workspace crate use each other (directly or round a
//! longer loop): `egw_layering::modules` has the rules of the check.

use std::path::{Path, PathBuf};

use egw_layering::modules::{cycles, module_graph};

/// The `src/` folders of every workspace member, read from the root Cargo.toml's `members`.
fn member_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("root Cargo.toml");
    let members = manifest
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("a members list");
    members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .map(|m| root.join(m).join("src"))
        .collect()
}

#[test]
fn no_module_cycles_in_any_crate() {
    let sources = member_sources();
    assert!(sources.len() >= 10, "found only {} members", sources.len());
    let mut failures = Vec::new();
    for src in sources {
        let graph = module_graph(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        for cycle in cycles(&graph) {
            failures.push(format!(
                "{}: {} → {}",
                src.display(),
                cycle.join(" → "),
                cycle[0]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "module cycles:\n{}",
        failures.join("\n")
    );
}
