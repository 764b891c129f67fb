//! Module cycles inside a crate: `a` uses `crate::b` and `b` uses `crate::a`.
//!
//! A cycle means neither module can be read (or moved to its own crate) without the other; the
//! cure is a leaf module both use. The check works on source text at the granularity of a crate's
//! top-level modules (a file `src/x.rs` or a folder `src/x/`), which is where cycles hurt: code
//! after a `#[cfg(test)]` line is ignored (tests may reach anywhere), and so are comments.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Top-level module name → the top-level modules its non-test code names as `crate::x`.
pub type ModuleGraph = BTreeMap<String, BTreeSet<String>>;

/// The module graph of the crate whose `src/` folder is `src`.
pub fn module_graph(src: &Path) -> std::io::Result<ModuleGraph> {
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in fs::read_dir(src)? {
        let path = entry?.path();
        let name = match path.file_stem().and_then(|s| s.to_str()) {
            Some(name) => name.to_string(),
            None => continue,
        };
        if path.is_dir() {
            modules.entry(name).or_default().extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            modules.entry(name).or_default().push(path);
        }
    }
    // The crate root and binaries are not modules other modules can use.
    for root in ["lib", "main", "bin"] {
        modules.remove(root);
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let mut graph = ModuleGraph::new();
    for (module, files) in &modules {
        let mut used = BTreeSet::new();
        for file in files {
            let text = fs::read_to_string(file)?;
            used.extend(crate_paths(&production_code(&text), &names));
        }
        used.remove(module);
        graph.insert(module.clone(), used);
    }
    Ok(graph)
}

fn rust_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(files)
}

/// The text before the first `#[cfg(test)]`, without `//` comments.
pub fn production_code(text: &str) -> String {
    text.lines()
        .take_while(|line| !line.trim_start().starts_with("#[cfg(test)]"))
        .map(|line| match line.find("//") {
            Some(at) => line.get(..at).unwrap_or(line),
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level modules named as `crate::name` (also inside `use crate::{a, b}` groups).
pub fn crate_paths(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = rest.get(at + "crate::".len()..).unwrap_or("");
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group.get(..end).unwrap_or("").split(',') {
                let head = item.trim().split("::").next().unwrap_or("");
                if modules.contains(head) {
                    used.insert(head.to_string());
                }
            }
        } else {
            let head: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&head) {
                used.insert(head);
            }
        }
        rest = after;
    }
    used
}

/// Every cycle of the graph, each as its modules in order (one per strongly connected set).
pub fn cycles(graph: &ModuleGraph) -> Vec<Vec<String>> {
    let mut found: Vec<Vec<String>> = Vec::new();
    for start in graph.keys() {
        if found.iter().any(|cycle| cycle.contains(start)) {
            continue;
        }
        if let Some(cycle) = path_back(graph, start) {
            found.push(cycle);
        }
    }
    found
}

/// A shortest path from `start` back to itself, if any (breadth-first).
fn path_back(graph: &ModuleGraph, start: &str) -> Option<Vec<String>> {
    let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for next in graph.get(node).into_iter().flatten() {
            if next == start {
                let mut cycle = vec![node.to_string()];
                let mut at = node;
                while at != start {
                    at = previous.get(at).copied().unwrap_or(start);
                    cycle.push(at.to_string());
                }
                cycle.reverse();
                return Some(cycle);
            }
            if !previous.contains_key(next.as_str()) && next != start {
                previous.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn crate_paths_are_found_in_plain_and_grouped_uses() {
        let modules = names(&["args", "natlog", "render"]);
        let code = "use crate::args::Cli;\nuse crate::{natlog::Query, render};\nfn f() { crate::render::x(); }";
        assert_eq!(
            crate_paths(code, &modules),
            names(&["args", "natlog", "render"])
        );
    }

    #[test]
    fn test_code_and_comments_are_not_dependencies() {
        let code = "use a::b; // see crate::args\n#[cfg(test)]\nmod tests { use crate::natlog; }";
        assert_eq!(
            crate_paths(&production_code(code), &names(&["args", "natlog"])),
            names(&[])
        );
    }

    #[test]
    fn a_triangle_is_one_cycle_and_a_chain_none() {
        let mut graph = ModuleGraph::new();
        graph.insert("topology".into(), names(&["controller"]));
        graph.insert("controller".into(), names(&["gateway"]));
        graph.insert("gateway".into(), names(&["topology", "error"]));
        graph.insert("error".into(), names(&[]));
        assert_eq!(
            cycles(&graph),
            vec![vec!["controller", "gateway", "topology"]]
        );
        graph.insert("gateway".into(), names(&["error"]));
        assert!(cycles(&graph).is_empty());
    }
}
