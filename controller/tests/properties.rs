//! Whole-translation properties: determinism, ECMP spreading and stability, usage reports, and
//! limits on names and reasons.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use egw_controller::annotations;
use egw_controller::crd::{
    EgressGatewayPolicySpec, EgressGatewaySpec, GatewayReference, HealthSpec, PolicyRule,
};
use egw_controller::input::{
    ExternalAddress, GatewayInfo, InstanceInfo, NamespaceInfo, PodInfo, PolicyInfo, Snapshot,
};
use egw_controller::translate::{translate, InstanceKey, PodOutcome, Translation};
use egw_policy::{CompiledRouteTable, Decision};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

fn gateway(name: &str, instances: usize, max_next_hops: u32) -> GatewayInfo {
    GatewayInfo {
        name: name.to_owned(),
        labels: BTreeMap::from([("site".to_owned(), "test".to_owned())]),
        spec: EgressGatewaySpec {
            selector: LabelSelector::default(),
            namespace: "egw-system".to_owned(),
            static_pool: None,
            aws: None,
            max_next_hops,
            paired_addresses: true,
            health: HealthSpec::default(),
        },
        instances: (0..instances)
            .map(|index| InstanceInfo {
                name: format!("{name}-{index}"),
                endpoint: Some(format!("10.9.0.{index}:7443")),
                ready: true,
                addresses: vec![ExternalAddress {
                    snat_ip: Ipv4Addr::new(198, 18, 0, u8::try_from(index + 1).unwrap()),
                    public_ip: None,
                    ready: true,
                }],
            })
            .collect(),
    }
}

fn namespace(name: &str, key: &str, value: &str) -> NamespaceInfo {
    NamespaceInfo {
        name: name.to_owned(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::from([(key.to_owned(), value.to_owned())]),
    }
}

fn pod(namespace: &str, name: &str, ip: Ipv4Addr) -> PodInfo {
    PodInfo {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        ip: Some(ip),
        phase: Some("Running".to_owned()),
        ..PodInfo::default()
    }
}

fn pod_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a01_0000_u32 + u32::try_from(index).unwrap())
}

fn hops_of(translation: &Translation, pod: &str) -> Vec<InstanceKey> {
    match &translation.pods[pod] {
        PodOutcome::Routed { next_hops, .. } => next_hops[0].instances.clone(),
        other => panic!("{pod} not routed: {other:?}"),
    }
}

fn assert_all_tables_compile(translation: &Translation) {
    for (key, table) in &translation.tables {
        if let Err(error) = CompiledRouteTable::compile(table.spec.clone()) {
            panic!("table {key} invalid: {error}");
        }
    }
}

fn spread_snapshot(instances: usize, pods: usize) -> Snapshot {
    Snapshot {
        gateways: vec![gateway("wide", instances, 2)],
        namespaces: vec![namespace("apps", annotations::GATEWAY, "wide")],
        pods: (0..pods)
            .map(|index| pod("apps", &format!("p{index}"), pod_ip(index)))
            .collect(),
        policies: Vec::new(),
    }
}

#[test]
fn equal_snapshots_in_any_order_translate_identically() {
    let mut snapshot = spread_snapshot(4, 50);
    snapshot.gateways.push(gateway("other", 2, 0));
    snapshot.namespaces.push(namespace(
        "second",
        annotations::GATEWAY,
        "selector:site=test",
    ));
    snapshot
        .pods
        .extend((0..20).map(|index| pod("second", &format!("q{index}"), pod_ip(1000 + index))));
    let first = translate(&snapshot);
    assert_all_tables_compile(&first);

    let mut reversed = snapshot.clone();
    reversed.pods.reverse();
    reversed.namespaces.reverse();
    reversed.gateways.reverse();
    for gateway in &mut reversed.gateways {
        gateway.instances.reverse();
    }
    assert_eq!(translate(&reversed), first);
    assert_eq!(
        translate(&snapshot),
        first,
        "translation must be repeatable"
    );
}

#[test]
fn max_next_hops_spreads_pods_over_instances() {
    let translation = translate(&spread_snapshot(5, 400));
    assert_all_tables_compile(&translation);
    for index in 0..400 {
        let hops = hops_of(&translation, &format!("apps/p{index}"));
        assert_eq!(hops.len(), 2, "p{index}: {hops:?}");
        assert_ne!(hops[0], hops[1]);
        // The tables agree with the reported next hops.
        for (key, table) in &translation.tables {
            let compiled = CompiledRouteTable::compile(table.spec.clone()).unwrap();
            let decision = compiled.lookup(pod_ip(index), Ipv4Addr::new(8, 8, 8, 8));
            assert_eq!(
                matches!(decision, Decision::Snat(_)),
                hops.contains(key),
                "p{index} on {key}: {decision:?}"
            );
        }
    }
    let report = &translation.gateways["wide"];
    let counts: Vec<usize> = report
        .instances
        .iter()
        .map(|instance| instance.next_hop_for_pods)
        .collect();
    assert_eq!(counts.iter().sum::<usize>(), 800);
    // 800 assignments over 5 instances: each expects 160; rendezvous hashing keeps every
    // instance well inside [80, 240].
    assert!(
        counts.iter().all(|&count| (80..=240).contains(&count)),
        "{counts:?}"
    );
}

#[test]
fn losing_an_instance_moves_only_the_pods_that_used_it() {
    let before = translate(&spread_snapshot(5, 300));
    let mut shrunk = spread_snapshot(5, 300);
    shrunk.gateways[0].instances[3].ready = false;
    let after = translate(&shrunk);
    assert_all_tables_compile(&after);
    let lost = InstanceKey {
        gateway: "wide".to_owned(),
        instance: "wide-3".to_owned(),
    };
    let mut moved = 0;
    for index in 0..300 {
        let pod = format!("apps/p{index}");
        let old = hops_of(&before, &pod);
        let new = hops_of(&after, &pod);
        assert!(!new.contains(&lost));
        if old.contains(&lost) {
            moved += 1;
            let kept: Vec<&InstanceKey> = old.iter().filter(|hop| **hop != lost).collect();
            assert!(
                kept.iter().all(|hop| new.contains(hop)),
                "{pod}: {old:?} -> {new:?}"
            );
        } else {
            assert_eq!(
                old, new,
                "{pod} did not use the lost instance and must not move"
            );
        }
    }
    assert!(moved > 0, "some pods used the lost instance");
}

#[test]
fn adding_a_pod_leaves_other_entries_unchanged() {
    let before = translate(&spread_snapshot(3, 20));
    let mut grown = spread_snapshot(3, 20);
    grown.pods.push(pod("apps", "newcomer", pod_ip(500)));
    let after = translate(&grown);
    for (key, table) in &before.tables {
        let new_table = &after.tables[key];
        for source in &table.spec.sources {
            let same = new_table
                .spec
                .sources
                .iter()
                .find(|candidate| candidate.cidr == source.cidr)
                .unwrap();
            assert_eq!(same.policy, source.policy);
        }
        assert_eq!(new_table.spec.sources.len(), table.spec.sources.len() + 1);
    }
}

#[test]
fn usage_reports_count_everything_and_sample_a_bounded_sorted_subset() {
    let policy = PolicyInfo {
        name: "shared".to_owned(),
        spec: EgressGatewayPolicySpec {
            rules: vec![PolicyRule {
                destination: None,
                gateway: Some(GatewayReference {
                    name: Some("wide".to_owned()),
                    selector: None,
                    max_next_hops: None,
                }),
                action: None,
                description: None,
            }],
        },
    };
    let namespaces: Vec<NamespaceInfo> = (0..12)
        .map(|index| namespace(&format!("ns{index:02}"), annotations::POLICY, "shared"))
        .collect();
    let mut pods: Vec<PodInfo> = (0..12)
        .map(|index| pod(&format!("ns{index:02}"), "app", pod_ip(index)))
        .collect();
    pods.extend((0..3).map(|index| pod("ns00", &format!("extra{index}"), pod_ip(100 + index))));
    let translation = translate(&Snapshot {
        pods,
        namespaces,
        gateways: vec![gateway("wide", 3, 0)],
        policies: vec![policy],
    });
    let usage = &translation.policies["shared"].usage;
    assert_eq!(usage.pods, 15);
    assert_eq!(usage.namespaces, 12);
    assert_eq!(usage.sample_pods.len(), 10);
    assert_eq!(usage.sample_namespaces.len(), 10);
    assert!(usage.sample_pods.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(usage.sample_namespaces[0], "ns00");
    let gateway_usage = &translation.gateways["wide"].usage;
    assert_eq!(gateway_usage.pods, 15);
    assert_eq!(gateway_usage.namespaces, 12);
}

#[test]
fn long_names_and_reasons_stay_within_engine_limits() {
    let long = |prefix: &str| format!("{prefix}-{}", "x".repeat(240));
    let gateways: Vec<GatewayInfo> = (0..3)
        .map(|index| gateway(&long(&format!("g{index}")), 1, 0))
        .collect();
    let pods = vec![pod("apps", "via-selector", Ipv4Addr::new(10, 1, 0, 1)), {
        let mut missing = pod("apps", "missing-policy", Ipv4Addr::new(10, 1, 0, 2));
        missing
            .annotations
            .insert(annotations::POLICY.to_owned(), long("policy"));
        missing
    }];
    let translation = translate(&Snapshot {
        pods,
        namespaces: vec![namespace(
            "apps",
            annotations::GATEWAY,
            "selector:site=test",
        )],
        gateways,
        policies: Vec::new(),
    });
    assert_all_tables_compile(&translation);
    assert!(matches!(
        translation.pods["apps/via-selector"],
        PodOutcome::Routed { .. }
    ));
    let PodOutcome::Denied { reason, .. } = &translation.pods["apps/missing-policy"] else {
        panic!("missing policy must deny");
    };
    assert!(reason.len() <= egw_policy::MAX_DENY_REASON_LEN);
    assert!(reason.ends_with('…'));
    for table in translation.tables.values() {
        assert!(table
            .spec
            .policies
            .iter()
            .all(|policy| policy.name.len() <= egw_policy::MAX_NAME_LEN));
    }
}
