//! The wire conversion (round trip through the engine) and `GatewayPusher` against a real tonic
//! gateway server on a Unix socket.

mod support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use egw_controller::metrics::Metrics;
use egw_controller::push::{GatewayPusher, InstanceState, PushOptions};
use egw_controller::translate::{translate, InstanceKey, InstanceTable};
use egw_policy::{
    ActionSpec, CompiledRouteTable, PolicySpec, PoolSpec, RouteTableSpec, RuleSpec, SourceSpec,
};
use egw_proto::spec::spec_to_wire as table_to_wire;
use support::{compile_wire, spec_from_wire, verdict, wait_until, Call, TestGateway, Verdict};

const POD: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn spec(addresses: &[Ipv4Addr]) -> RouteTableSpec {
    RouteTableSpec {
        public_addresses: Default::default(),
        generation: 0,
        pools: vec![PoolSpec {
            name: "gw-0".into(),
            addresses: addresses.to_vec(),
            pairing: true,
        }],
        policies: vec![PolicySpec {
            name: "via-gw".into(),
            rules: vec![RuleSpec {
                destination: "10.0.0.0/8".parse().unwrap(),
                action: ActionSpec::Bypass,
                description: "cluster".into(),
            }],
            default_action: Some(ActionSpec::Snat {
                pool: "gw-0".into(),
            }),
        }],
        sources: vec![SourceSpec {
            cidr: "10.1.0.1/32".parse().unwrap(),
            policy: "via-gw".into(),
        }],
        default_action: ActionSpec::Deny {
            reason: "not a client".into(),
        },
    }
}

fn probes() -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let sources = [POD, Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 2, 3, 4)];
    let destinations = [
        REMOTE,
        Ipv4Addr::new(10, 9, 9, 9),
        Ipv4Addr::new(0, 0, 0, 0),
        Ipv4Addr::new(255, 255, 255, 255),
        Ipv4Addr::new(192, 0, 2, 1),
    ];
    sources
        .iter()
        .flat_map(|&source| {
            destinations
                .iter()
                .map(move |&destination| (source, destination))
        })
        .collect()
}

fn assert_same_decisions(original: &RouteTableSpec, probes: &[(Ipv4Addr, Ipv4Addr)]) {
    let wire = table_to_wire(original);
    assert_eq!(wire.generation, original.generation);
    let expected = CompiledRouteTable::compile(original.clone()).unwrap();
    let round_tripped = CompiledRouteTable::compile(spec_from_wire(&wire).unwrap()).unwrap();
    for &(source, destination) in probes {
        assert_eq!(
            verdict(&round_tripped, source, destination),
            verdict(&expected, source, destination),
            "{source} -> {destination}"
        );
    }
}

#[test]
fn policy_default_travels_as_a_catch_all_rule() {
    let original = spec(&[Ipv4Addr::new(192, 0, 2, 10)]);
    let wire = table_to_wire(&original);
    let rules = &wire.policies[0].rules;
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[1].destination, "0.0.0.0/0");
    assert_same_decisions(&original, &probes());
    let table = compile_wire(&wire);
    assert_eq!(
        verdict(&table, POD, REMOTE),
        Verdict::Snat(vec![Ipv4Addr::new(192, 0, 2, 10)])
    );
    assert_eq!(
        verdict(&table, POD, Ipv4Addr::new(10, 9, 9, 9)),
        Verdict::Bypass
    );

    // A policy with its own /0 rule never reaches its default: nothing is appended.
    let mut shadowed = original.clone();
    shadowed.policies[0].rules.push(RuleSpec {
        destination: "0.0.0.0/0".parse().unwrap(),
        action: ActionSpec::Deny {
            reason: "explicit".into(),
        },
        description: String::new(),
    });
    assert_eq!(table_to_wire(&shadowed).policies[0].rules.len(), 2);
    assert_same_decisions(&shadowed, &probes());

    // Without a default, unmatched destinations deny with the engine's reason on both sides.
    let mut no_default = original;
    no_default.policies[0].default_action = None;
    assert_eq!(table_to_wire(&no_default).policies[0].rules.len(), 1);
}

#[test]
fn translated_example_tables_round_trip_through_the_engine() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let input = egw_controller::local::load_dir(&dir).unwrap();
    let translation = translate(&input.snapshot);
    assert!(!translation.tables.is_empty());
    let mut probes = probes();
    for pod in &input.snapshot.pods {
        if let Some(ip) = pod.ip {
            for destination in [
                REMOTE,
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(172, 16, 0, 1),
            ] {
                probes.push((ip, destination));
            }
        }
    }
    for table in translation.tables.values() {
        assert_same_decisions(&table.spec, &probes);
    }
}

fn key() -> InstanceKey {
    InstanceKey {
        gateway: "lab".into(),
        instance: "gw-0".into(),
    }
}

fn tables(endpoint: &str, spec: RouteTableSpec) -> BTreeMap<InstanceKey, InstanceTable> {
    BTreeMap::from([(
        key(),
        InstanceTable {
            endpoint: Some(endpoint.to_owned()),
            spec,
        },
    )])
}

fn fast_options() -> PushOptions {
    PushOptions {
        poll_interval: Duration::from_millis(50),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(400),
        tls: None,
    }
}

async fn wait_state(
    pusher: &GatewayPusher,
    what: &str,
    condition: impl Fn(&InstanceState) -> bool,
) -> InstanceState {
    let mut states = pusher.subscribe(&key()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let state = states.borrow_and_update().clone();
            if condition(&state) {
                return state;
            }
            states.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);

#[tokio::test]
async fn pushes_once_per_content_change_with_growing_generations() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start(&dir.path().join("gw.sock"), 7).await;
    let metrics = Metrics::new();
    let mut pusher = GatewayPusher::new(fast_options(), metrics.clone());
    assert!(pusher
        .update(&tables(&gateway.endpoint(), spec(&[A])))
        .is_empty());

    let first = gateway.wait_for_table("first push", |_| true).await;
    assert_eq!(first.generation, 1);
    assert_eq!(
        verdict(&compile_wire(&first), POD, REMOTE),
        Verdict::Snat(vec![A])
    );
    let state = wait_state(&pusher, "in sync", |state| state.in_sync).await;
    assert_eq!(state.epoch, Some(7));

    // The same content again, and several polls: no further push.
    pusher.update(&tables(&gateway.endpoint(), spec(&[A])));
    let gets_before = gateway.calls().len();
    wait_until("three more polls", || {
        (gateway.calls().len() >= gets_before + 3).then_some(())
    })
    .await;
    assert_eq!(gateway.applies().len(), 1);
    assert!(gateway.calls()[gets_before..]
        .iter()
        .all(|call| *call == Call::Get));

    pusher.update(&tables(&gateway.endpoint(), spec(&[B])));
    let second = gateway
        .wait_for_table("second push", |table| table.generation == 2)
        .await;
    assert_eq!(
        verdict(&compile_wire(&second), POD, REMOTE),
        Verdict::Snat(vec![B])
    );
    assert_eq!(gateway.applies().len(), 2);
    assert!(metrics
        .render()
        .contains("egw_controller_tables_pushed_total 2"));
}

#[tokio::test]
async fn continues_above_the_gateways_generation_and_adopts_identical_content() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start(&dir.path().join("gw.sock"), 1).await;
    let mut stale = table_to_wire(&spec(&[B]));
    stale.generation = 41;
    gateway.preload(stale);
    let mut pusher = GatewayPusher::new(fast_options(), Metrics::new());
    pusher.update(&tables(&gateway.endpoint(), spec(&[A])));
    let pushed = gateway
        .wait_for_table("push above 41", |table| table.generation != 41)
        .await;
    assert_eq!(pushed.generation, 42);
    assert_eq!(
        verdict(&compile_wire(&pushed), POD, REMOTE),
        Verdict::Snat(vec![A])
    );
    drop(pusher);

    // A controller restarting against a gateway that already serves its table pushes nothing.
    let other = TestGateway::start(&dir.path().join("gw2.sock"), 2).await;
    let mut current = table_to_wire(&spec(&[A]));
    current.generation = 9;
    other.preload(current);
    let mut pusher = GatewayPusher::new(fast_options(), Metrics::new());
    pusher.update(&tables(&other.endpoint(), spec(&[A])));
    let state = wait_state(&pusher, "adopted", |state| state.in_sync).await;
    assert_eq!(state.served_generation, 9);
    assert_eq!(state.pushes, 0);
    assert!(other.applies().is_empty());
}

#[tokio::test]
async fn gateway_restart_is_detected_and_the_table_pushed_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = TestGateway::start(&dir.path().join("gw.sock"), 100).await;
    let metrics = Metrics::new();
    let mut pusher = GatewayPusher::new(fast_options(), metrics.clone());
    pusher.update(&tables(&gateway.endpoint(), spec(&[A])));
    gateway.wait_for_table("first push", |_| true).await;
    wait_state(&pusher, "in sync", |state| state.in_sync).await;

    gateway.restart(200).await;
    let again = gateway.wait_for_table("push after restart", |_| true).await;
    // Generations keep growing across the gateway's restart.
    assert_eq!(again.generation, 2);
    assert_eq!(
        verdict(&compile_wire(&again), POD, REMOTE),
        Verdict::Snat(vec![A])
    );
    let state = wait_state(&pusher, "restart noticed", |state| {
        state.restarts == 1 && state.in_sync && state.epoch == Some(200)
    })
    .await;
    assert_eq!(state.pushes, 2);
    assert!(metrics
        .render()
        .contains("egw_controller_gateway_restarts_total 1"));

    // A restart that keeps the epoch still shows: the served generation went back.
    gateway.restart(200).await;
    let third = gateway
        .wait_for_table("push after the second restart", |_| true)
        .await;
    assert_eq!(third.generation, 3);
    wait_state(&pusher, "second restart noticed", |state| {
        state.restarts == 2 && state.in_sync
    })
    .await;
}

#[tokio::test]
async fn refused_push_keeps_the_last_good_table_and_is_retried_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start(&dir.path().join("gw.sock"), 5).await;
    let metrics = Metrics::new();
    let mut pusher = GatewayPusher::new(fast_options(), metrics.clone());
    pusher.update(&tables(&gateway.endpoint(), spec(&[A])));
    let good = gateway.wait_for_table("first push", |_| true).await;

    gateway.refuse_applies(Some(tonic::Code::InvalidArgument));
    pusher.update(&tables(&gateway.endpoint(), spec(&[B])));
    wait_until("three refused attempts", || {
        (gateway.applies().len() >= 4).then_some(())
    })
    .await;
    let state = wait_state(&pusher, "error recorded", |state| {
        state.last_error.is_some()
    })
    .await;
    assert!(!state.in_sync);
    assert!(state
        .last_error
        .as_deref()
        .unwrap()
        .contains("InvalidArgument"));
    assert_eq!(
        gateway.table(),
        Some(good),
        "the gateway keeps its last good table"
    );
    assert!(metrics
        .render()
        .contains("egw_controller_errors_total{reason=\"push_refused\"}"));

    // Attempts are spaced by a growing backoff: fewer attempts than polls.
    let attempts_before = gateway.applies().len();
    let polls_before = gateway.calls().len() - attempts_before;
    wait_until("ten more polls", || {
        let polls = gateway.calls().len() - gateway.applies().len();
        (polls >= polls_before + 10).then_some(())
    })
    .await;
    let attempts = gateway.applies().len() - attempts_before;
    assert!(attempts < 10, "{attempts} attempts in 10 polls");

    gateway.refuse_applies(None);
    let accepted = gateway
        .wait_for_table("accepted after refusals", |table| {
            verdict(&compile_wire(table), POD, REMOTE) == Verdict::Snat(vec![B])
        })
        .await;
    // Every attempt used a fresh generation.
    let generations: Vec<u64> = gateway
        .applies()
        .iter()
        .map(|table| table.generation)
        .collect();
    assert!(
        generations.windows(2).all(|pair| pair[0] < pair[1]),
        "{generations:?}"
    );
    assert_eq!(accepted.generation, *generations.last().unwrap());
    wait_state(&pusher, "in sync again", |state| {
        state.in_sync && state.last_error.is_none()
    })
    .await;
}

#[tokio::test]
async fn unreachable_gateway_is_served_once_it_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("late.sock");
    let endpoint = format!("unix://{}", socket.display());
    let mut pusher = GatewayPusher::new(fast_options(), Metrics::new());
    pusher.update(&tables(&endpoint, spec(&[A])));
    let state = wait_state(&pusher, "unreachable", |state| state.last_error.is_some()).await;
    assert!(!state.reachable);

    let gateway = TestGateway::start(&socket, 3).await;
    let table = gateway.wait_for_table("push once up", |_| true).await;
    assert_eq!(table.generation, 1);

    // Removing the instance stops its pusher.
    pusher.update(&BTreeMap::new());
    assert!(pusher.subscribe(&key()).is_none());
}

#[tokio::test]
async fn invalid_endpoints_are_reported_not_pushed() {
    let mut pusher = GatewayPusher::new(fast_options(), Metrics::new());
    let problems = pusher.update(&tables("ftp://gw:21", spec(&[A])));
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].instance, key());
    // No client identity configured for a TLS endpoint.
    let problems = pusher.update(&tables("127.0.0.1:7443", spec(&[A])));
    assert_eq!(problems.len(), 1);
    assert!(pusher.states().is_empty());
}
