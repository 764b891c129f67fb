//! Table-driven translation cases: manifests in, per-instance route tables and diagnostics out.
//!
//! Every case compiles every produced table with `CompiledRouteTable::compile` and checks behaviour by
//! route lookups (`probes`), the exact set of tables, the exact set of diagnostics, and the
//! outcome of every pod with egress intent.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use egw_controller::local::{load_documents, LocalInput};
use egw_controller::translate::{
    translate, Exclusion, InstanceKey, PodOutcome, ProgramRef, Translation, NOT_A_CLIENT_REASON,
};
use egw_policy::{CompiledRouteTable, Decision};

/// Two static gateways: `lab` (two instances, labels site=lab, egress-code=red) and `dmz` (one
/// instance, site=dmz), both in `egw-system`.
const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: egw-system, labels: {tier: infra}}
---
apiVersion: egw.dev/v1alpha1
kind: EgressGateway
metadata: {name: lab, labels: {site: lab, egress-code: red}}
spec:
  selector: {matchLabels: {egw.dev/gateway: lab}}
  static:
    instances:
      - {name: lab-0, endpoint: "10.0.0.10:7443", addresses: [192.0.2.10]}
      - {name: lab-1, endpoint: "10.0.0.11:7443", addresses: [192.0.2.20]}
---
apiVersion: egw.dev/v1alpha1
kind: EgressGateway
metadata: {name: dmz, labels: {site: dmz}}
spec:
  selector: {matchLabels: {egw.dev/gateway: dmz}}
  static:
    instances:
      - {name: dmz-0, endpoint: "10.0.1.10:7443", addresses: [198.51.100.1]}
"#;

const BASE_TABLES: &[&str] = &["dmz/dmz-0", "lab/lab-0", "lab/lab-1"];

struct Case {
    name: &'static str,
    /// Whether [`BASE`] is prepended to `yaml`.
    base: bool,
    yaml: &'static str,
    /// `(instance "gateway/name", source, destination, expected)`; expected is `snat:POOL`,
    /// `bypass` or `deny:REASON`.
    probes: &'static [(&'static str, &'static str, &'static str, &'static str)],
    /// Every instance that must have a table; `None`: [`BASE_TABLES`].
    tables: Option<&'static [&'static str]>,
    /// Exactly the diagnostics expected: `(Reason, object name, message fragment)`.
    diagnostics: &'static [(&'static str, &'static str, &'static str)],
    /// Exactly the pods with intent: `(namespace/name, summary)`; summary is `routed POLICY-OR-GATEWAYS
    /// via HOP,HOP`, `denied REASON` or `excluded WHY`.
    outcomes: &'static [(&'static str, &'static str)],
    /// `false` where the outcome depends on the rendezvous hash; `extra` checks it instead.
    check_outcomes: bool,
    /// Further checks.
    extra: Option<fn(&Translation)>,
}

const CASE_DEFAULTS: Case = Case {
    name: "",
    base: true,
    yaml: "",
    probes: &[],
    tables: None,
    diagnostics: &[],
    outcomes: &[],
    check_outcomes: true,
    extra: None,
};

fn summarize(outcome: &PodOutcome) -> String {
    match outcome {
        PodOutcome::Routed { via, next_hops, .. } => {
            let via = match via {
                ProgramRef::Policy(name) => format!("policy:{name}"),
                ProgramRef::Gateways(names) => format!("gateway:{}", names.join(",")),
            };
            let mut hops: Vec<String> = next_hops
                .iter()
                .flat_map(|hops| hops.instances.iter().map(ToString::to_string))
                .collect();
            hops.sort();
            hops.dedup();
            if hops.is_empty() {
                format!("routed {via} via -")
            } else {
                format!("routed {via} via {}", hops.join(","))
            }
        }
        PodOutcome::Denied { reason, .. } => format!("denied {reason}"),
        PodOutcome::Excluded { why, .. } => format!("excluded {why:?}"),
    }
}

fn run_case(case: &Case) -> Translation {
    let text = if case.base {
        format!("{BASE}\n---\n{}", case.yaml)
    } else {
        case.yaml.to_owned()
    };
    let mut input = LocalInput::default();
    load_documents(Path::new(case.name), &text, &mut input)
        .unwrap_or_else(|error| panic!("{}: bad case YAML: {error:?}", case.name));
    let translation = translate(&input.snapshot);

    let compiled: BTreeMap<String, CompiledRouteTable> = translation
        .tables
        .iter()
        .map(|(key, table)| {
            let compiled = CompiledRouteTable::compile(table.spec.clone())
                .unwrap_or_else(|error| panic!("{}: table {key} invalid: {error}", case.name));
            (key.to_string(), compiled)
        })
        .collect();

    let expected_tables: Vec<&str> = case.tables.unwrap_or(BASE_TABLES).to_vec();
    let actual_tables: Vec<&str> = compiled.keys().map(String::as_str).collect();
    assert_eq!(actual_tables, expected_tables, "{}: tables", case.name);

    for &(instance, source, destination, expected) in case.probes {
        let table = compiled
            .get(instance)
            .unwrap_or_else(|| panic!("{}: no table for {instance}", case.name));
        let source: Ipv4Addr = source.parse().unwrap();
        let destination: Ipv4Addr = destination.parse().unwrap();
        let actual = match table.lookup(source, destination) {
            Decision::Snat(pool) => format!("snat:{}", table.pool(pool).name()),
            Decision::Bypass => "bypass".to_owned(),
            Decision::Deny(id) => format!("deny:{}", table.deny_reason(id)),
        };
        assert_eq!(
            actual, expected,
            "{}: {instance} {source} -> {destination}",
            case.name
        );
    }

    let actual_diagnostics: Vec<(String, String, String)> = translation
        .diagnostics
        .iter()
        .map(|diagnostic| {
            (
                diagnostic.reason.to_string(),
                diagnostic.object.name.clone(),
                diagnostic.message.clone(),
            )
        })
        .collect();
    assert_eq!(
        actual_diagnostics.len(),
        case.diagnostics.len(),
        "{}: diagnostics {actual_diagnostics:#?}",
        case.name
    );
    for &(reason, object, fragment) in case.diagnostics {
        assert!(
            actual_diagnostics
                .iter()
                .any(|(actual_reason, actual_object, message)| {
                    actual_reason == reason && actual_object == object && message.contains(fragment)
                }),
            "{}: missing diagnostic ({reason}, {object}, {fragment:?}) in {actual_diagnostics:#?}",
            case.name
        );
    }

    let actual_outcomes: Vec<(String, String)> = translation
        .pods
        .iter()
        .map(|(pod, outcome)| (pod.clone(), summarize(outcome)))
        .collect();
    let expected_outcomes: Vec<(String, String)> = case
        .outcomes
        .iter()
        .map(|(pod, summary)| (pod.to_string(), summary.to_string()))
        .collect();
    if case.check_outcomes {
        assert_eq!(
            actual_outcomes, expected_outcomes,
            "{}: pod outcomes",
            case.name
        );
    }

    if let Some(extra) = case.extra {
        extra(&translation);
    }
    translation
}

fn table<'a>(
    translation: &'a Translation,
    gateway: &str,
    instance: &str,
) -> &'a egw_policy::RouteTableSpec {
    &translation.tables[&InstanceKey {
        gateway: gateway.to_owned(),
        instance: instance.to_owned(),
    }]
        .spec
}

const WORLD: &str = "8.8.8.8";

static CASES: &[Case] = &[
    Case {
        name: "namespace gateway annotation routes every destination through all instances",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: payments, annotations: {egw.dev/gateway: lab}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: payments}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[
            ("lab/lab-0", "10.1.0.1", WORLD, "snat:lab-0"),
            ("lab/lab-1", "10.1.0.1", "1.1.1.1", "snat:lab-1"),
            ("dmz/dmz-0", "10.1.0.1", WORLD, "deny:destination is routed through `lab`, not gateway `dmz`"),
            ("lab/lab-0", "10.1.0.2", WORLD, "deny:source is not an egress client (no egw annotation)"),
        ],
        outcomes: &[("payments/p1", "routed gateway:lab via lab/lab-0,lab/lab-1")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "pod annotation overrides its namespace",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: payments, annotations: {egw.dev/gateway: lab}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: payments, annotations: {egw.dev/gateway: dmz}}
status: {phase: Running, podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: p2, namespace: payments}
status: {phase: Running, podIP: 10.1.0.2}
"#,
        probes: &[
            ("dmz/dmz-0", "10.1.0.1", WORLD, "snat:dmz-0"),
            ("lab/lab-0", "10.1.0.1", WORLD, "deny:destination is routed through `dmz`, not gateway `lab`"),
            ("lab/lab-0", "10.1.0.2", WORLD, "snat:lab-0"),
        ],
        outcomes: &[
            ("payments/p1", "routed gateway:dmz via dmz/dmz-0"),
            ("payments/p2", "routed gateway:lab via lab/lab-0,lab/lab-1"),
        ],
        ..CASE_DEFAULTS
    },
    Case {
        name: "pods without intent get no source entry",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: plain}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("lab/lab-0", "10.1.0.1", WORLD, "deny:source is not an egress client (no egw annotation)")],
        extra: Some(|translation| {
            assert!(translation.tables.values().all(|table| table.spec.sources.is_empty()));
        }),
        ..CASE_DEFAULTS
    },
    Case {
        name: "missing gateway denies in every instance table",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps, annotations: {egw.dev/gateway: nope}}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[
            ("lab/lab-0", "10.1.0.1", WORLD, "deny:gateway `nope` not found"),
            ("lab/lab-1", "10.1.0.1", WORLD, "deny:gateway `nope` not found"),
            ("dmz/dmz-0", "10.1.0.1", "10.0.0.1", "deny:gateway `nope` not found"),
        ],
        diagnostics: &[("PodDenied", "p1", "gateway `nope` not found")],
        outcomes: &[("apps/p1", "denied gateway `nope` not found")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "missing policy denies in every instance table",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/policy: partner-x}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[
            ("lab/lab-0", "10.1.0.1", WORLD, "deny:policy `partner-x` not found"),
            ("lab/lab-1", "10.1.0.1", WORLD, "deny:policy `partner-x` not found"),
            ("dmz/dmz-0", "10.1.0.1", WORLD, "deny:policy `partner-x` not found"),
        ],
        diagnostics: &[("PodDenied", "p1", "policy `partner-x` not found")],
        outcomes: &[("apps/p1", "denied policy `partner-x` not found")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "gateway whose instances are all unready denies its pods everywhere",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGateway
metadata: {name: down}
spec:
  selector: {}
  static:
    instances:
      - {name: down-0, endpoint: "10.0.2.10:7443", addresses: [203.0.113.1]}
status:
  instances:
    - {name: down-0, ready: false}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/gateway: down}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        tables: Some(&["dmz/dmz-0", "down/down-0", "lab/lab-0", "lab/lab-1"]),
        probes: &[
            ("down/down-0", "10.1.0.1", WORLD, "deny:gateway `down` has no Ready external address"),
            ("lab/lab-0", "10.1.0.1", WORLD, "deny:gateway `down` has no Ready external address"),
        ],
        diagnostics: &[
            ("GatewayNotReady", "down", "no instance has a Ready external address"),
            ("InstanceNotReady", "down", "instance `down-0` is not Ready"),
            ("PodDenied", "p1", "gateway `down` has no Ready external address"),
        ],
        outcomes: &[("apps/p1", "denied gateway `down` has no Ready external address")],
        extra: Some(|translation| {
            assert!(table(translation, "down", "down-0").pools.is_empty());
        }),
        ..CASE_DEFAULTS
    },
    Case {
        name: "aws gateway without observed instances has no table and denies its pods",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGateway
metadata: {name: cloud}
spec:
  selector: {}
  aws: {elasticIps: {allocate: 2}}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/gateway: cloud}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("dmz/dmz-0", "10.1.0.1", WORLD, "deny:gateway `cloud` has no Ready external address")],
        diagnostics: &[
            ("GatewayNotReady", "cloud", "gateway has no instances"),
            ("PodDenied", "p1", "gateway `cloud` has no Ready external address"),
        ],
        outcomes: &[("apps/p1", "denied gateway `cloud` has no Ready external address")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "aws gateway uses the instances and Ready addresses its status reports",
        base: false,
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGateway
metadata: {name: cloud}
spec:
  selector: {}
  aws: {elasticIps: {tags: {team: payments}}, eniMode: EniPerGateway}
status:
  instances:
    - name: cloud-a
      endpoint: "10.2.0.1:7443"
      ready: true
      addresses:
        - {snatIp: 10.2.0.100, publicIp: 54.0.0.1, allocationId: eipalloc-1, ready: true}
        - {snatIp: 10.2.0.101, publicIp: 54.0.0.2, allocationId: eipalloc-2, ready: false}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/gateway: cloud}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        tables: Some(&["cloud/cloud-a"]),
        probes: &[("cloud/cloud-a", "10.1.0.1", WORLD, "snat:cloud-a")],
        outcomes: &[("apps/p1", "routed gateway:cloud via cloud/cloud-a")],
        extra: Some(|translation| {
            let spec = table(translation, "cloud", "cloud-a");
            assert_eq!(spec.pools[0].addresses, vec![Ipv4Addr::new(10, 2, 0, 100)]);
            // The Elastic IP of the usable address goes to the gateway; the unready one's not.
            assert_eq!(
                spec.public_addresses,
                std::collections::BTreeMap::from([(
                    Ipv4Addr::new(10, 2, 0, 100),
                    Ipv4Addr::new(54, 0, 0, 1)
                )])
            );
            let key = translation.tables.keys().next().unwrap();
            assert_eq!(translation.tables[key].endpoint.as_deref(), Some("10.2.0.1:7443"));
        }),
        ..CASE_DEFAULTS
    },
    Case {
        name: "unready instance is never a next hop and has no pool",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGateway
metadata: {name: pair}
spec:
  selector: {}
  static:
    instances:
      - {name: pair-0, endpoint: "10.0.3.10:7443", addresses: [203.0.113.10]}
      - {name: pair-1, endpoint: "10.0.3.11:7443", addresses: [203.0.113.11]}
status:
  instances:
    - {name: pair-1, ready: false}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/gateway: pair}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        tables: Some(&["dmz/dmz-0", "lab/lab-0", "lab/lab-1", "pair/pair-0", "pair/pair-1"]),
        probes: &[
            ("pair/pair-0", "10.1.0.1", WORLD, "snat:pair-0"),
            ("pair/pair-1", "10.1.0.1", WORLD, "deny:instance `pair-1` is not a next hop of this source for gateway `pair`"),
        ],
        diagnostics: &[("InstanceNotReady", "pair", "instance `pair-1` is not Ready")],
        outcomes: &[("apps/p1", "routed gateway:pair via pair/pair-0")],
        extra: Some(|translation| {
            assert!(table(translation, "pair", "pair-1").pools.is_empty());
            assert_eq!(translation.gateways["pair"].ready_instances, 1);
        }),
        ..CASE_DEFAULTS
    },
    Case {
        name: "an endpoint two gateways claim serves only the first gateway",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGateway
metadata: {name: zeta}
spec:
  selector: {}
  static:
    instances:
      - {name: zeta-0, endpoint: "https://10.0.0.10:7443", addresses: [203.0.113.50]}
      - {name: zeta-1, endpoint: "10.0.5.10:7443", addresses: [203.0.113.51]}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/gateway: zeta}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        tables: Some(&["dmz/dmz-0", "lab/lab-0", "lab/lab-1", "zeta/zeta-1"]),
        probes: &[("zeta/zeta-1", "10.1.0.1", WORLD, "snat:zeta-1")],
        diagnostics: &[(
            "SharedEndpoint",
            "zeta",
            "instance `zeta-0` has endpoint https://10.0.0.10:7443, which instance `lab-0` of gateway `lab` already has",
        )],
        outcomes: &[("apps/p1", "routed gateway:zeta via zeta/zeta-1")],
        extra: Some(|translation| {
            // lab-0 keeps its own table; zeta-0 is reported, not Ready, and gets none.
            assert!(table(translation, "lab", "lab-0").pools[0].name == "lab-0");
            let zeta = &translation.gateways["zeta"];
            assert_eq!(zeta.ready_instances, 1);
            let zeta_0 = zeta.instances.iter().find(|i| i.name == "zeta-0").unwrap();
            assert!(!zeta_0.ready && zeta_0.usable_addresses.is_empty());
        }),
        ..CASE_DEFAULTS
    },
    Case {
        name: "unready address is left out of the instance pool",
        base: false,
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGateway
metadata: {name: multi}
spec:
  selector: {}
  pairedAddresses: false
  static:
    instances:
      - {name: multi-0, endpoint: "10.0.3.10:7443", addresses: [203.0.113.12, 203.0.113.10, 203.0.113.11]}
status:
  instances:
    - name: multi-0
      ready: true
      addresses: [{snatIp: 203.0.113.11, ready: false}]
"#,
        tables: Some(&["multi/multi-0"]),
        extra: Some(|translation| {
            let pool = &table(translation, "multi", "multi-0").pools[0];
            assert_eq!(
                pool.addresses,
                vec![Ipv4Addr::new(203, 0, 113, 10), Ipv4Addr::new(203, 0, 113, 12)]
            );
            assert!(!pool.pairing, "pairedAddresses: false must reach the pool");
            assert_eq!(translation.gateways["multi"].ready_addresses, 2);
        }),
        ..CASE_DEFAULTS
    },
    Case {
        name: "terminating pod is excluded",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/gateway: lab}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps, deletionTimestamp: "2026-01-01T00:00:00Z"}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("lab/lab-0", "10.1.0.1", WORLD, "deny:source is not an egress client (no egw annotation)")],
        outcomes: &[("apps/p1", "excluded Terminating")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "pod without an IP is excluded",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/gateway: lab}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Pending}
"#,
        outcomes: &[("apps/p1", "excluded NoIpv4Address")],
        extra: Some(|translation| {
            assert!(translation.tables.values().all(|table| table.spec.sources.is_empty()));
        }),
        ..CASE_DEFAULTS
    },
    Case {
        name: "finished pod is excluded and its reused IP is no conflict",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/gateway: lab}}
---
apiVersion: v1
kind: Pod
metadata: {name: job-1, namespace: apps}
status: {phase: Succeeded, podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: p2, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("lab/lab-0", "10.1.0.1", WORLD, "snat:lab-0")],
        outcomes: &[
            ("apps/job-1", "excluded Finished"),
            ("apps/p2", "routed gateway:lab via lab/lab-0,lab/lab-1"),
        ],
        ..CASE_DEFAULTS
    },
    Case {
        name: "annotated host-network pod is excluded with a warning",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: apps, annotations: {egw.dev/gateway: lab}}
spec: {hostNetwork: true, containers: []}
status: {phase: Running, podIP: 172.16.0.5}
"#,
        probes: &[("lab/lab-0", "172.16.0.5", WORLD, "deny:source is not an egress client (no egw annotation)")],
        diagnostics: &[("HostNetworkPod", "agent", "leaves with the node's IP")],
        outcomes: &[("apps/agent", "excluded HostNetwork")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "host-network pod in an annotated namespace is excluded silently",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/gateway: lab}}
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: apps}
spec: {hostNetwork: true, containers: []}
status: {phase: Running, podIP: 172.16.0.5}
"#,
        outcomes: &[("apps/agent", "excluded HostNetwork")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "IPv6-only pod is excluded",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/gateway: lab}}
---
apiVersion: v1
kind: Pod
metadata: {name: p6, namespace: apps}
status: {phase: Running, podIP: "fd00::1", podIPs: [{ip: "fd00::1"}]}
"#,
        outcomes: &[("apps/p6", "excluded NoIpv4Address")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "dual-stack pod is routed by its IPv4 address",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/gateway: dmz}}
---
apiVersion: v1
kind: Pod
metadata: {name: p46, namespace: apps}
status: {phase: Running, podIP: "fd00::9", podIPs: [{ip: "fd00::9"}, {ip: 10.1.0.9}]}
"#,
        probes: &[("dmz/dmz-0", "10.1.0.9", WORLD, "snat:dmz-0")],
        outcomes: &[("apps/p46", "routed gateway:dmz via dmz/dmz-0")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "Calico selector with namespace selector picks gateways by labels",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata:
  name: legacy
  annotations:
    egress.projectcalico.org/selector: "egress-code == 'red'"
    egress.projectcalico.org/namespaceSelector: "projectcalico.org/name == 'egw-system'"
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: legacy}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[
            ("lab/lab-0", "10.1.0.1", WORLD, "snat:lab-0"),
            ("dmz/dmz-0", "10.1.0.1", WORLD, "deny:destination is routed through `lab`, not gateway `dmz`"),
        ],
        outcomes: &[("legacy/p1", "routed gateway:lab via lab/lab-0,lab/lab-1")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "Calico namespace selector matches the gateway namespace's own labels",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata:
  name: legacy
  annotations:
    egress.projectcalico.org/selector: "has(site)"
    egress.projectcalico.org/namespaceSelector: "tier == 'infra'"
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: legacy}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[
            ("lab/lab-1", "10.1.0.1", WORLD, "snat:lab-1"),
            ("dmz/dmz-0", "10.1.0.1", WORLD, "snat:dmz-0"),
        ],
        outcomes: &[("legacy/p1", "routed gateway:dmz,lab via dmz/dmz-0,lab/lab-0,lab/lab-1")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "Calico selector without namespace selector only matches gateways in the client's namespace",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: legacy, annotations: {egress.projectcalico.org/selector: "egress-code == 'red'"}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: legacy}
status: {phase: Running, podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: p2, namespace: egw-system, annotations: {egress.projectcalico.org/selector: "egress-code == 'red'"}}
status: {phase: Running, podIP: 10.1.0.2}
"#,
        probes: &[
            ("lab/lab-0", "10.1.0.1", WORLD, "deny:no EgressGateway matches Calico selector `egress-code == 'red'` in the selected namespaces"),
            ("lab/lab-0", "10.1.0.2", WORLD, "snat:lab-0"),
        ],
        diagnostics: &[("PodDenied", "p1", "no EgressGateway matches Calico selector")],
        outcomes: &[
            ("egw-system/p2", "routed gateway:lab via lab/lab-0,lab/lab-1"),
            ("legacy/p1", "denied no EgressGateway matches Calico selector `egress-code == 'red'` in the selected namespaces"),
        ],
        ..CASE_DEFAULTS
    },
    Case {
        name: "Calico policy annotation is an alias of egw.dev/policy",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: via-dmz}
spec:
  rules:
    - {gateway: {name: dmz}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy, annotations: {egress.projectcalico.org/egressGatewayPolicy: via-dmz}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: legacy}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("dmz/dmz-0", "10.1.0.1", WORLD, "snat:dmz-0")],
        outcomes: &[("legacy/p1", "routed policy:via-dmz via dmz/dmz-0")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "egw and Calico policy annotations naming different policies deny",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: Pod
metadata:
  name: p1
  namespace: apps
  annotations: {egw.dev/policy: a, egress.projectcalico.org/egressGatewayPolicy: b}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("dmz/dmz-0", "10.1.0.1", WORLD, "deny:annotations `egw.dev/policy` (`a`) and `egress.projectcalico.org/egressGatewayPolicy` (`b`) name different policies")],
        diagnostics: &[("PodDenied", "p1", "name different policies")],
        outcomes: &[("apps/p1", "denied annotations `egw.dev/policy` (`a`) and `egress.projectcalico.org/egressGatewayPolicy` (`b`) name different policies")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "egw and Calico gateway annotations that agree are accepted",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: egw-system-clients}
---
apiVersion: v1
kind: Pod
metadata:
  name: p1
  namespace: egw-system-clients
  annotations:
    egw.dev/gateway: lab
    egress.projectcalico.org/selector: "site == 'lab'"
    egress.projectcalico.org/namespaceSelector: "all()"
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("lab/lab-0", "10.1.0.1", WORLD, "snat:lab-0")],
        outcomes: &[("egw-system-clients/p1", "routed gateway:lab via lab/lab-0,lab/lab-1")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "egw and Calico gateway annotations that disagree deny",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: Pod
metadata:
  name: p1
  namespace: apps
  annotations:
    egw.dev/gateway: lab
    egress.projectcalico.org/selector: "site == 'dmz'"
    egress.projectcalico.org/namespaceSelector: "all()"
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("lab/lab-0", "10.1.0.1", WORLD, "deny:annotations `egw.dev/gateway` and `egress.projectcalico.org/selector` select different gateways (`lab` vs `dmz`)")],
        diagnostics: &[("PodDenied", "p1", "select different gateways")],
        outcomes: &[("apps/p1", "denied annotations `egw.dev/gateway` and `egress.projectcalico.org/selector` select different gateways (`lab` vs `dmz`)")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "policy annotation wins over gateway annotation, which is reported as ignored",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: via-dmz}
spec:
  rules:
    - {gateway: {name: dmz}}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps, annotations: {egw.dev/policy: via-dmz, egw.dev/gateway: lab}}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[
            ("dmz/dmz-0", "10.1.0.1", WORLD, "snat:dmz-0"),
            ("lab/lab-0", "10.1.0.1", WORLD, "deny:destination is routed through `dmz`, not gateway `lab`"),
        ],
        diagnostics: &[("AnnotationIgnored", "p1", "annotation `egw.dev/gateway` is ignored: policy `via-dmz` takes precedence")],
        outcomes: &[("apps/p1", "routed policy:via-dmz via dmz/dmz-0")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "ignored namespace annotation is reported on the namespace",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: via-dmz}
spec:
  rules:
    - {gateway: {name: dmz}}
---
apiVersion: v1
kind: Namespace
metadata:
  name: apps
  annotations: {egw.dev/policy: via-dmz, egress.projectcalico.org/selector: "all()"}
"#,
        diagnostics: &[("AnnotationIgnored", "apps", "annotation `egress.projectcalico.org/selector` is ignored")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "gateway selector annotation picks gateways by label",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/gateway: "selector:site=dmz"}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("dmz/dmz-0", "10.1.0.1", WORLD, "snat:dmz-0")],
        outcomes: &[("apps/p1", "routed gateway:dmz via dmz/dmz-0")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "gateway selector matching several gateways spreads over all their instances",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/gateway: "selector:site in (lab, dmz)"}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[
            ("dmz/dmz-0", "10.1.0.1", WORLD, "snat:dmz-0"),
            ("lab/lab-0", "10.1.0.1", WORLD, "snat:lab-0"),
            ("lab/lab-1", "10.1.0.1", WORLD, "snat:lab-1"),
        ],
        outcomes: &[("apps/p1", "routed gateway:dmz,lab via dmz/dmz-0,lab/lab-0,lab/lab-1")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "gateway selector matching nothing denies",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps, annotations: {egw.dev/gateway: "selector:site=mars"}}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("lab/lab-0", "10.1.0.1", WORLD, "deny:no EgressGateway matches selector `site=mars`")],
        diagnostics: &[("PodDenied", "p1", "no EgressGateway matches selector `site=mars`")],
        outcomes: &[("apps/p1", "denied no EgressGateway matches selector `site=mars`")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "malformed selector on a namespace denies its pods and flags the namespace",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/gateway: "selector:site in lab"}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("lab/lab-0", "10.1.0.1", WORLD, "deny:annotation `egw.dev/gateway`: cannot parse selector term `site in lab`: expected a parenthesised value list")],
        diagnostics: &[
            ("AnnotationInvalid", "apps", "cannot parse selector term"),
            ("PodDenied", "p1", "cannot parse selector term"),
        ],
        outcomes: &[("apps/p1", "denied annotation `egw.dev/gateway`: cannot parse selector term `site in lab`: expected a parenthesised value list")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "Calico selector outside the supported subset denies instead of widening",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: Pod
metadata:
  name: p1
  namespace: apps
  annotations: {egress.projectcalico.org/selector: "site == 'lab' || site == 'dmz'"}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("dmz/dmz-0", "10.1.0.1", WORLD, "deny:annotation `egress.projectcalico.org/selector`: Calico selector `site == 'lab' || site == 'dmz'` uses `||`, which egw does not support; use `&&`-joined terms of `k == 'v'`, `k != 'v'`, `has(k)`, `!has(k)`, `k in {'a', 'b'}`, `k not in {...}` or `all()`")],
        diagnostics: &[("PodDenied", "p1", "uses `||`")],
        outcomes: &[("apps/p1", "denied annotation `egress.projectcalico.org/selector`: Calico selector `site == 'lab' || site == 'dmz'` uses `||`, which egw does not support; use `&&`-joined terms of `k == 'v'`, `k != 'v'`, `has(k)`, `!has(k)`, `k in {'a', 'b'}`, `k not in {...}` or `all()`")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "empty gateway annotation denies",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps, annotations: {egw.dev/gateway: ""}}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("lab/lab-1", "10.1.0.1", WORLD, "deny:annotation `egw.dev/gateway` is empty")],
        diagnostics: &[("PodDenied", "p1", "is empty")],
        outcomes: &[("apps/p1", "denied annotation `egw.dev/gateway` is empty")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "Calico namespace selector without selector denies",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps, annotations: {egress.projectcalico.org/namespaceSelector: "all()"}}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("lab/lab-1", "10.1.0.1", WORLD, "deny:annotation `egress.projectcalico.org/namespaceSelector` needs `egress.projectcalico.org/selector` beside it")],
        diagnostics: &[("PodDenied", "p1", "needs")],
        outcomes: &[("apps/p1", "denied annotation `egress.projectcalico.org/namespaceSelector` needs `egress.projectcalico.org/selector` beside it")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "policy rules: longest prefix wins, bypass, deny and default",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: layered}
spec:
  rules:
    - {destination: {cidr: 10.0.0.0/8}, action: Bypass, description: corporate}
    - {destination: {cidr: 10.20.0.0/16}, gateway: {name: lab}, description: partner range}
    - {destination: {cidr: 10.20.30.0/24}, action: Deny, description: quarantine}
    - {gateway: {name: lab}, description: internet}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/policy: layered}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[
            ("lab/lab-0", "10.1.0.1", "10.9.9.9", "bypass"),
            ("lab/lab-0", "10.1.0.1", "10.20.1.1", "snat:lab-0"),
            ("lab/lab-0", "10.1.0.1", "10.20.30.40", "deny:denied by policy `layered` rule #3: quarantine"),
            ("lab/lab-0", "10.1.0.1", WORLD, "snat:lab-0"),
            ("lab/lab-1", "10.1.0.1", WORLD, "snat:lab-1"),
            ("dmz/dmz-0", "10.1.0.1", WORLD, "deny:destination is routed through `lab`, not gateway `dmz`"),
            ("dmz/dmz-0", "10.1.0.1", "10.9.9.9", "bypass"),
        ],
        outcomes: &[("apps/p1", "routed policy:layered via lab/lab-0,lab/lab-1")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "policy without default rule denies unmatched destinations",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: partner-only}
spec:
  rules:
    - {destination: {cidr: 203.0.113.0/24}, gateway: {name: dmz}}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/policy: partner-only}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[
            ("dmz/dmz-0", "10.1.0.1", "203.0.113.7", "snat:dmz-0"),
            ("dmz/dmz-0", "10.1.0.1", WORLD, "deny:no rule matches destination"),
        ],
        outcomes: &[("apps/p1", "routed policy:partner-only via dmz/dmz-0")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "deny rule without description names the policy and rule",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: block}
spec:
  rules:
    - {destination: {cidr: 0.0.0.0/0}, action: Deny}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/policy: block}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("dmz/dmz-0", "10.1.0.1", WORLD, "deny:denied by policy `block` rule #1")],
        outcomes: &[("apps/p1", "routed policy:block via -")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "rule through a missing gateway denies only its destinations",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: partial}
spec:
  rules:
    - {destination: {cidr: 203.0.113.0/24}, gateway: {name: ghost}}
    - {gateway: {name: lab}}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/policy: partial}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[
            ("lab/lab-0", "10.1.0.1", "203.0.113.1", "deny:policy `partial` rule #1: gateway `ghost` not found"),
            ("lab/lab-0", "10.1.0.1", WORLD, "snat:lab-0"),
        ],
        diagnostics: &[("RuleDenies", "partial", "rule #1 (203.0.113.0/24): gateway `ghost` not found")],
        outcomes: &[("apps/p1", "routed policy:partial via lab/lab-0,lab/lab-1")],
        extra: Some(|translation| {
            let report = &translation.policies["partial"];
            assert_eq!(report.invalid, None);
            assert_eq!(report.problems.len(), 1);
        }),
        ..CASE_DEFAULTS
    },
    Case {
        name: "invalid policy: destination with host bits",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: sloppy}
spec:
  rules:
    - {destination: {cidr: 10.0.0.1/8}, action: Bypass}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/policy: sloppy}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("lab/lab-0", "10.1.0.1", "10.2.2.2", "deny:policy `sloppy` is invalid: rule #1: destination 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?")],
        diagnostics: &[
            ("PolicyInvalid", "sloppy", "did you mean 10.0.0.0/8?"),
            ("PodDenied", "p1", "policy `sloppy` is invalid"),
        ],
        outcomes: &[("apps/p1", "denied policy `sloppy` is invalid: rule #1: destination 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?")],
        extra: Some(|translation| {
            let report = &translation.policies["sloppy"];
            assert!(report.invalid.is_some());
            assert_eq!(report.usage.pods, 1);
        }),
        ..CASE_DEFAULTS
    },
    Case {
        name: "invalid policy: duplicate destination",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: dup}
spec:
  rules:
    - {destination: {cidr: 10.0.0.0/8}, action: Bypass}
    - {destination: {cidr: 10.0.0.0/8}, gateway: {name: lab}}
"#,
        diagnostics: &[("PolicyInvalid", "dup", "rule #2: destination 10.0.0.0/8 duplicates rule #1")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "invalid policy: two default rules",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: two-defaults}
spec:
  rules:
    - {gateway: {name: lab}}
    - {action: Bypass}
"#,
        diagnostics: &[("PolicyInvalid", "two-defaults", "rules #1 and #2 both lack a destination")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "invalid policy: gateway and Bypass in one rule",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: both}
spec:
  rules:
    - {gateway: {name: lab}, action: Bypass}
"#,
        diagnostics: &[("PolicyInvalid", "both", "rule #1 sets a gateway and action Bypass")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "invalid policy: rule without gateway or action",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: empty-rule}
spec:
  rules:
    - {destination: {cidr: 10.0.0.0/8}, description: forgot the action}
"#,
        diagnostics: &[("PolicyInvalid", "empty-rule", "rule #1 has no gateway")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "invalid policy: destination is not a CIDR",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: typo}
spec:
  rules:
    - {destination: {cidr: 10.0.0.0/33}, action: Bypass}
"#,
        diagnostics: &[("PolicyInvalid", "typo", "destination `10.0.0.0/33` is not an IPv4 CIDR")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "invalid policy: gateway reference with name and selector",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: ambiguous}
spec:
  rules:
    - {gateway: {name: lab, selector: {matchLabels: {site: lab}}}}
"#,
        diagnostics: &[("PolicyInvalid", "ambiguous", "exactly one of `name` and `selector`")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "policy with no rules denies everything and says so",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: nothing}
spec: {rules: []}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/policy: nothing}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("lab/lab-0", "10.1.0.1", WORLD, "deny:no rule matches destination")],
        diagnostics: &[("RuleDenies", "nothing", "policy has no rules")],
        outcomes: &[("apps/p1", "routed policy:nothing via -")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "policy routing different destinations through different gateways",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: split}
spec:
  rules:
    - {destination: {cidr: 203.0.113.0/24}, gateway: {name: dmz}}
    - {gateway: {selector: {matchLabels: {site: lab}}}}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/policy: split}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[
            ("dmz/dmz-0", "10.1.0.1", "203.0.113.9", "snat:dmz-0"),
            ("dmz/dmz-0", "10.1.0.1", WORLD, "deny:destination is routed through `lab`, not gateway `dmz`"),
            ("lab/lab-0", "10.1.0.1", "203.0.113.9", "deny:destination is routed through `dmz`, not gateway `lab`"),
            ("lab/lab-0", "10.1.0.1", WORLD, "snat:lab-0"),
            ("lab/lab-1", "10.1.0.1", WORLD, "snat:lab-1"),
        ],
        outcomes: &[("apps/p1", "routed policy:split via dmz/dmz-0,lab/lab-0,lab/lab-1")],
        extra: Some(|translation| {
            let names: Vec<&str> = table(translation, "lab", "lab-0")
                .policies
                .iter()
                .map(|policy| policy.name.as_str())
                .collect();
            assert_eq!(names, ["policy:split[L]"]);
            let names: Vec<&str> = table(translation, "dmz", "dmz-0")
                .policies
                .iter()
                .map(|policy| policy.name.as_str())
                .collect();
            assert_eq!(names, ["policy:split[L]"]);
        }),
        ..CASE_DEFAULTS
    },
    Case {
        name: "rule-level maxNextHops overrides the gateway's",
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: narrow}
spec:
  rules:
    - {gateway: {name: lab, maxNextHops: 1}}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/policy: narrow}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("dmz/dmz-0", "10.1.0.1", WORLD, "deny:destination is routed through `lab`, not gateway `dmz`")],
        check_outcomes: false,
        extra: Some(|translation| {
            let PodOutcome::Routed { next_hops, .. } = &translation.pods["apps/p1"] else {
                panic!("p1 must be routed");
            };
            assert_eq!(next_hops[0].instances.len(), 1, "{next_hops:?}");
            assert_eq!(next_hops[0].instances[0].gateway, "lab");
            let snat_tables = translation
                .tables
                .values()
                .filter(|table| {
                    let compiled = CompiledRouteTable::compile(table.spec.clone()).unwrap();
                    matches!(
                        compiled.lookup(Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(8, 8, 8, 8)),
                        Decision::Snat(_)
                    )
                })
                .count();
            assert_eq!(snat_tables, 1);
        }),
        ..CASE_DEFAULTS
    },
    Case {
        name: "two live pods claiming one IP are both denied",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/gateway: lab}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: apps}
status: {phase: Pending, podIP: 10.1.0.1}
"#,
        probes: &[("lab/lab-0", "10.1.0.1", WORLD, "deny:IP 10.1.0.1 is claimed by 2 pods (apps/a, apps/b)")],
        diagnostics: &[
            ("PodDenied", "a", "claimed by 2 pods"),
            ("PodDenied", "b", "claimed by 2 pods"),
        ],
        outcomes: &[
            ("apps/a", "denied IP 10.1.0.1 is claimed by 2 pods (apps/a, apps/b)"),
            ("apps/b", "denied IP 10.1.0.1 is claimed by 2 pods (apps/a, apps/b)"),
        ],
        ..CASE_DEFAULTS
    },
    Case {
        name: "an IP shared with a pod without intent is still a conflict",
        yaml: r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: apps, annotations: {egw.dev/gateway: dmz}}
status: {phase: Running, podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("dmz/dmz-0", "10.1.0.1", WORLD, "deny:IP 10.1.0.1 is claimed by 2 pods (apps/a, apps/b)")],
        diagnostics: &[("PodDenied", "a", "claimed by 2 pods")],
        outcomes: &[("apps/a", "denied IP 10.1.0.1 is claimed by 2 pods (apps/a, apps/b)")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "maxNextHops limits each pod to that many instances",
        base: false,
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGateway
metadata: {name: wide}
spec:
  selector: {}
  maxNextHops: 1
  static:
    instances:
      - {name: w-0, endpoint: "10.0.4.10:7443", addresses: [203.0.113.20]}
      - {name: w-1, endpoint: "10.0.4.11:7443", addresses: [203.0.113.21]}
      - {name: w-2, endpoint: "10.0.4.12:7443", addresses: [203.0.113.22]}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, annotations: {egw.dev/gateway: wide}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: apps}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        tables: Some(&["wide/w-0", "wide/w-1", "wide/w-2"]),
        check_outcomes: false,
        extra: Some(exactly_one_next_hop),
        ..CASE_DEFAULTS
    },
    Case {
        name: "pod in an unknown namespace is reported and gets no entry",
        yaml: r#"
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: ghost-town}
status: {phase: Running, podIP: 10.1.0.1}
"#,
        probes: &[("lab/lab-0", "10.1.0.1", WORLD, "deny:source is not an egress client (no egw annotation)")],
        diagnostics: &[("NamespaceNotFound", "p1", "namespace `ghost-town` is unknown")],
        ..CASE_DEFAULTS
    },
    Case {
        name: "an instance listed twice is used once and reported",
        base: false,
        yaml: r#"
apiVersion: egw.dev/v1alpha1
kind: EgressGateway
metadata: {name: twice}
spec:
  selector: {}
  static:
    instances:
      - {name: t-0, endpoint: "10.0.5.10:7443", addresses: [203.0.113.30]}
      - {name: t-0, endpoint: "10.0.5.11:7443", addresses: [203.0.113.31]}
"#,
        tables: Some(&["twice/t-0"]),
        diagnostics: &[("DuplicateInstance", "twice", "instance `t-0` is listed more than once")],
        extra: Some(|translation| {
            let spec = table(translation, "twice", "t-0");
            assert_eq!(spec.pools[0].addresses, vec![Ipv4Addr::new(203, 0, 113, 30)]);
        }),
        ..CASE_DEFAULTS
    },
];

#[test]
fn translation_cases() {
    assert!(CASES.len() >= 40, "only {} cases", CASES.len());
    let mut names: Vec<&str> = CASES.iter().map(|case| case.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CASES.len(), "case names must be unique");
    for case in CASES {
        run_case(case);
    }
}

fn exactly_one_next_hop(translation: &Translation) {
    let PodOutcome::Routed { next_hops, .. } = &translation.pods["apps/p1"] else {
        panic!("p1 must be routed: {:?}", translation.pods);
    };
    assert_eq!(next_hops.len(), 1);
    assert_eq!(next_hops[0].instances.len(), 1);
    let chosen = &next_hops[0].instances[0];
    for (key, table) in &translation.tables {
        let compiled = CompiledRouteTable::compile(table.spec.clone()).unwrap();
        let decision = compiled.lookup(Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(8, 8, 8, 8));
        if key == chosen {
            assert!(matches!(decision, Decision::Snat(_)), "{key}: {decision:?}");
        } else {
            let Decision::Deny(id) = decision else {
                panic!("{key} must deny, got {decision:?}");
            };
            assert!(compiled.deny_reason(id).contains("is not a next hop"));
        }
    }
}

#[test]
fn excluded_outcome_names_the_reason() {
    assert_eq!(Exclusion::Terminating.to_string(), "pod is terminating");
    assert_eq!(
        NOT_A_CLIENT_REASON,
        "source is not an egress client (no egw annotation)"
    );
}
