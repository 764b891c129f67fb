//! egw's layering rules, checked against the real dependency graph.
//!
//! docs/architecture.md draws the crate graph; this crate holds the edges that must never come
//! back (the API crate linking the NAT engine, `egwctl` linking io_uring, and so on). The rules
//! live here as data, `tests/crate_graph.rs` asks `cargo tree` for each crate's normal
//! (non-dev, non-build) dependencies, resolved with that crate's own features, and fails on any
//! forbidden one, naming the path that brought it in. [`modules`] finds module cycles inside each
//! crate (`tests/module_cycles.rs`).

pub mod modules;

/// A crate and the crates it must not depend on, directly or transitively, as a normal
/// dependency (dev-dependencies are free: tests may link anything).
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The package that must stay lean.
    pub package: &'static str,
    /// Packages that must not appear in its normal dependency tree.
    pub forbidden: &'static [&'static str],
    /// Why: what the edge would cost.
    pub why: &'static str,
}

/// The layering rules. A crate name ending in `*` forbids every crate with that prefix; a rule
/// applies below its package (a pattern that matches the package itself, like `egw-*`, is fine).
pub const RULES: &[Rule] = &[
    Rule {
        package: "egw-policy",
        forbidden: &["egw-*", "tokio", "tonic", "prost", "kube*", "serde_yaml"],
        why: "the route-table spec and compiler are shared by the engine, proto, controller and lab: no I/O, no API, no egw crate below it",
    },
    Rule {
        package: "egw-engine",
        forbidden: &["tokio", "tonic", "prost", "kube*", "aws-*", "io-uring", "egw-proto", "egw-testkit", "egw-natlog*", "egw-xdp"],
        why: "the NAT engine is pure: no I/O, no API types, no test tooling",
    },
    Rule {
        package: "egw-proto",
        forbidden: &["egw-engine", "egw-xdp", "egw-natlog*", "io-uring", "kube*", "aws-*"],
        why: "the API crate is linked by egwctl, the controller and the lab: it converts wire <-> spec without the engine",
    },
    Rule {
        package: "egwctl",
        forbidden: &["egw-engine", "egw-natlog", "egw-xdp", "io-uring", "aya*", "kube*", "aws-*", "egw-controller", "egw-gateway"],
        why: "the operator CLI reads NAT-log files through egw-natlog-format and talks gRPC: it links no dataplane",
    },
    Rule {
        package: "egw-natlog-format",
        forbidden: &["egw-engine", "io-uring", "egw-natlog"],
        why: "the NAT log's record format and query are read by egwctl: no io_uring writer, no engine",
    },
    Rule {
        package: "egw-crd",
        forbidden: &["kube-runtime", "kube-client", "tokio", "tonic", "aws-*", "egw-*"],
        why: "the CRD types are used by offline manifest validation: no API client, no runtime",
    },
    Rule {
        package: "egw-deploy-validate",
        forbidden: &["egw-controller", "kube-runtime", "kube-client", "tokio", "tonic", "aws-*"],
        why: "offline validation of manifests needs the CRD types, not the controller's runtime",
    },
    Rule {
        package: "egw-bench",
        forbidden: &["egw-lab", "egw-controller", "kube*", "aws-*"],
        why: "the benchmark measures the engine and the dataplane side by side with the kernel; the lab is a consumer, not a layer below",
    },
    Rule {
        package: "egw-testkit",
        forbidden: &["egw-*"],
        why: "the packet builder and decoder are an independent check of the engine: they share no code with it",
    },
    Rule {
        package: "egw-netns",
        forbidden: &["egw-*", "tokio", "tonic"],
        why: "the namespace helper is the bottom of every real-packet test: std, libc and nothing of ours",
    },
    Rule {
        package: "egw-testbed",
        forbidden: &["egw-lab", "egw-bench", "egw-controller", "egw-engine", "kube*", "aws-*"],
        why: "the test bed is the layer the lab and the bench share: it runs a gateway, it does not link one",
    },
    Rule {
        package: "egw-controller",
        forbidden: &["egw-engine", "egw-xdp", "egw-natlog*", "io-uring", "aya*", "egw-testkit"],
        why: "the controller computes and pushes tables: it links no dataplane",
    },
    Rule {
        package: "egw-gateway",
        forbidden: &["egw-testkit", "egw-controller", "kube*", "aws-*"],
        why: "the gateway links no test tooling and no cluster client",
    },
];

/// Whether `name` is matched by `pattern` (`*` at the end matches any suffix).
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_names_and_prefixes() {
        assert!(matches("egw-engine", "egw-engine"));
        assert!(!matches("egw-engine", "egw-engine-x"));
        assert!(matches("aws-*", "aws-sdk-ec2"));
        assert!(!matches("aws-*", "egw-aws"));
        assert!(matches("egw-natlog*", "egw-natlog-format"));
    }

    #[test]
    fn each_package_has_one_rule() {
        let mut packages: Vec<&str> = RULES.iter().map(|rule| rule.package).collect();
        packages.sort_unstable();
        let before = packages.len();
        packages.dedup();
        assert_eq!(
            before,
            packages.len(),
            "a package has two rules: merge them"
        );
    }
}
