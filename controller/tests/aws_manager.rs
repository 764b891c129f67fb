//! The AWS address manager against an in-memory implementation of the egw-aws provider traits:
//! placement, failover, instance limits, errors and retries, call economy, routes and cleanup.

mod fake_aws;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use egw_aws::InstanceState;
use egw_controller::aws::{
    AwsGatewayInput, AwsGatewayOutcome, AwsManager, AwsOptions, AwsReason, GatewayPod,
};
use egw_controller::crd::{AwsPool, AwsRoutes, ElasticIpSource, EniMode, InstanceStatus};
use egw_controller::metrics::Metrics;
use fake_aws::{permanent, retryable, FakeAws};
use k8s_openapi::jiff::Timestamp;

fn wall() -> Timestamp {
    "2026-11-21T06:00:00Z".parse().unwrap()
}

fn allocate(count: u32) -> AwsPool {
    AwsPool {
        elastic_ips: ElasticIpSource {
            allocation_ids: None,
            tags: None,
            allocate: Some(count),
        },
        eni_mode: EniMode::SecondaryIp,
        subnet_id: None,
        security_group_ids: Vec::new(),
        routes: None,
    }
}

fn adopt(ids: &[&str]) -> AwsPool {
    AwsPool {
        elastic_ips: ElasticIpSource {
            allocation_ids: Some(ids.iter().map(|id| (*id).to_owned()).collect()),
            tags: None,
            allocate: None,
        },
        ..allocate(0)
    }
}

fn pod(name: &str, index: u8) -> GatewayPod {
    GatewayPod {
        name: name.to_owned(),
        node: Some(format!("node-{index}")),
        endpoint: Some(format!("10.0.{index}.10:7443")),
        ready: true,
        terminating: false,
        instance_id: Ok(format!("i-000000000000000{index}a")),
    }
}

fn input(pool: AwsPool, pods: Vec<GatewayPod>) -> AwsGatewayInput {
    AwsGatewayInput {
        name: "egress".to_owned(),
        generation: Some(1),
        pool,
        pods,
        drain: Duration::ZERO,
        stored_routes: Vec::new(),
        stored_failovers: Vec::new(),
    }
}

/// A fake with instances `i-…1a`, `i-…2a`, `i-…3a`, each holding `limit` egw addresses.
fn fake(limit: u32) -> FakeAws {
    let fake = FakeAws::new();
    for index in 1..=3 {
        fake.add_instance(&format!("i-000000000000000{index}a"), index, limit);
    }
    fake
}

fn manager(fake: &FakeAws) -> AwsManager<FakeAws> {
    AwsManager::new(
        fake.clone(),
        AwsOptions::new("prod-eu".to_owned()),
        Metrics::new(),
    )
}

/// Instance name → (allocation ID, snat IP, ready) of its addresses.
fn carried(outcome: &AwsGatewayOutcome) -> BTreeMap<String, Vec<(String, Ipv4Addr, bool)>> {
    outcome
        .instances
        .iter()
        .map(|instance| {
            (
                instance.name.clone(),
                instance
                    .addresses
                    .iter()
                    .map(|address| {
                        (
                            address.allocation_id.clone().unwrap(),
                            address.snat_ip,
                            address.ready,
                        )
                    })
                    .collect(),
            )
        })
        .collect()
}

fn instance<'a>(outcome: &'a AwsGatewayOutcome, name: &str) -> &'a InstanceStatus {
    outcome
        .instances
        .iter()
        .find(|instance| instance.name == name)
        .unwrap()
}

#[tokio::test]
async fn a_fresh_gateway_gets_its_addresses_spread_and_associated() {
    let fake = fake(8);
    let mut manager = manager(&fake);
    let gateway = input(allocate(3), vec![pod("gw-b", 2), pod("gw-a", 1)]);
    let outcome = manager
        .reconcile_gateway(&gateway, Instant::now(), wall())
        .await;
    assert_eq!(outcome.problem, None);
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    let carried = carried(&outcome);
    assert_eq!(
        carried["gw-a"],
        [
            (
                "eipalloc-0001".to_owned(),
                Ipv4Addr::new(10, 0, 1, 100),
                true
            ),
            (
                "eipalloc-0003".to_owned(),
                Ipv4Addr::new(10, 0, 1, 101),
                true
            ),
        ]
    );
    assert_eq!(
        carried["gw-b"],
        [(
            "eipalloc-0002".to_owned(),
            Ipv4Addr::new(10, 0, 2, 100),
            true
        )]
    );
    let a = instance(&outcome, "gw-a");
    assert!(a.ready);
    assert_eq!(a.instance_id.as_deref(), Some("i-0000000000000001a"));
    assert_eq!(a.network_interface_id.as_deref(), Some("eni-primary-1"));
    assert_eq!(a.endpoint.as_deref(), Some("10.0.1.10:7443"));
    assert_eq!(a.node.as_deref(), Some("node-1"));
    assert_eq!(
        a.addresses[0].public_ip,
        Some(Ipv4Addr::new(198, 51, 100, 1))
    );
    // EC2 holds exactly what the status says.
    assert_eq!(
        fake.associations(),
        BTreeMap::from([
            (
                "eipalloc-0001".to_owned(),
                (
                    "i-0000000000000001a".to_owned(),
                    Ipv4Addr::new(10, 0, 1, 100)
                )
            ),
            (
                "eipalloc-0002".to_owned(),
                (
                    "i-0000000000000002a".to_owned(),
                    Ipv4Addr::new(10, 0, 2, 100)
                )
            ),
            (
                "eipalloc-0003".to_owned(),
                (
                    "i-0000000000000001a".to_owned(),
                    Ipv4Addr::new(10, 0, 1, 101)
                )
            ),
        ])
    );
    assert!(outcome.failovers.is_empty());
    // Gateways without routes never touch route tables (no permissions needed for them).
    assert!(!fake
        .operations_since(0)
        .iter()
        .any(|operation| operation.contains("routes")));
}

#[tokio::test]
async fn unchanged_inputs_make_no_calls_until_the_resync() {
    let fake = fake(8);
    let mut manager = manager(&fake);
    let gateway = input(allocate(2), vec![pod("gw-a", 1), pod("gw-b", 2)]);
    let start = Instant::now();
    let first = manager.reconcile_gateway(&gateway, start, wall()).await;
    let calls = fake.calls().len();
    let again = manager
        .reconcile_gateway(&gateway, start + Duration::from_secs(30), wall())
        .await;
    assert!(first.fresh);
    assert!(!again.fresh);
    assert_eq!(
        again,
        AwsGatewayOutcome {
            fresh: false,
            ..first.clone()
        }
    );
    assert_eq!(
        fake.calls().len(),
        calls,
        "{:?}",
        fake.operations_since(calls)
    );

    // A pass at the resync, with nothing to change: reads and idempotent ensures, no
    // association.
    let resynced = manager
        .reconcile_gateway(&gateway, start + Duration::from_secs(61), wall())
        .await;
    assert_eq!(resynced.instances, first.instances);
    let operations = fake.operations_since(calls);
    assert!(operations.contains(&"ensure_addresses".to_owned()));
    assert!(
        !operations.contains(&"associate".to_owned()),
        "{operations:?}"
    );

    // A changed input (a pod's readiness) runs a pass at once.
    let calls = fake.calls().len();
    let mut changed = gateway.clone();
    changed.pods[1].ready = false;
    manager
        .reconcile_gateway(&changed, start + Duration::from_secs(62), wall())
        .await;
    assert!(fake.calls().len() > calls);
}

#[tokio::test]
async fn an_unready_pod_fails_its_addresses_over() {
    let fake = fake(8);
    let mut manager = manager(&fake);
    let start = Instant::now();
    let gateway = input(allocate(3), vec![pod("gw-a", 1), pod("gw-b", 2)]);
    manager.reconcile_gateway(&gateway, start, wall()).await;

    let mut failing = gateway.clone();
    failing.pods[0].ready = false;
    let later: Timestamp = "2026-11-21T06:05:00Z".parse().unwrap();
    let outcome = manager
        .reconcile_gateway(&failing, start + Duration::from_secs(1), later)
        .await;
    assert_eq!(outcome.problem, None);
    let moved: Vec<(String, String, String, String)> = outcome
        .new_failovers
        .iter()
        .map(|failover| {
            (
                failover.allocation_id.clone(),
                failover.from_instance.clone(),
                failover.to_instance.clone(),
                failover.reason.clone(),
            )
        })
        .collect();
    let moved_from_a = |id: &str| {
        (
            id.to_owned(),
            "gw-a".to_owned(),
            "gw-b".to_owned(),
            "pod not Ready".to_owned(),
        )
    };
    assert_eq!(
        moved,
        [moved_from_a("eipalloc-0001"), moved_from_a("eipalloc-0003")]
    );
    assert!(outcome
        .new_failovers
        .iter()
        .all(|failover| failover.time.0 == later));
    assert_eq!(outcome.failovers, outcome.new_failovers);
    assert!(!instance(&outcome, "gw-a").ready);
    assert!(instance(&outcome, "gw-a").addresses.is_empty());
    let on_b = &carried(&outcome)["gw-b"];
    assert_eq!(on_b.len(), 3);
    assert!(on_b.iter().all(|(_, _, ready)| *ready));
    assert!(fake
        .associations()
        .values()
        .all(|(instance, _)| instance == "i-0000000000000002a"));

    // The failover is reported once; the reused outcome keeps the history only.
    let reused = manager
        .reconcile_gateway(&failing, start + Duration::from_secs(2), later)
        .await;
    assert!(reused.new_failovers.is_empty());
    assert_eq!(reused.failovers.len(), 2);

    // gw-a comes back: nothing moves back (sticky), nothing is a failover.
    let outcome = manager
        .reconcile_gateway(&gateway, start + Duration::from_secs(3), later)
        .await;
    assert!(outcome.new_failovers.is_empty());
    assert!(instance(&outcome, "gw-a").ready);
    assert_eq!(carried(&outcome)["gw-b"].len(), 3);
}

#[tokio::test]
async fn an_unready_pod_drains_before_its_addresses_move() {
    let fake = fake(8);
    let mut manager = manager(&fake);
    let start = Instant::now();
    let mut gateway = input(allocate(2), vec![pod("gw-a", 1), pod("gw-b", 2)]);
    gateway.drain = Duration::from_secs(30);
    manager.reconcile_gateway(&gateway, start, wall()).await;
    let before = fake.associations();

    let mut failing = gateway.clone();
    failing.pods[0].ready = false;
    let draining = manager
        .reconcile_gateway(&failing, start + Duration::from_secs(1), wall())
        .await;
    // No new flows on gw-a, but its address stays for the flows it has.
    assert!(draining.new_failovers.is_empty());
    assert_eq!(fake.associations(), before);
    let a = instance(&draining, "gw-a");
    assert!(!a.ready);
    assert_eq!(a.addresses.len(), 1);
    assert!(!a.addresses[0].ready);
    // The end of the drain is when the gateway is due next.
    assert_eq!(
        egw_controller::aws::AwsBackend::next_due(&manager),
        Some(start + Duration::from_secs(31))
    );
    let still = manager
        .reconcile_gateway(&failing, start + Duration::from_secs(20), wall())
        .await;
    assert!(still.new_failovers.is_empty());

    let drained = manager
        .reconcile_gateway(&failing, start + Duration::from_secs(31), wall())
        .await;
    assert_eq!(drained.new_failovers.len(), 1);
    assert_eq!(drained.new_failovers[0].reason, "pod not Ready");
    assert_eq!(carried(&drained)["gw-b"].len(), 2);
    assert!(carried(&drained)["gw-a"].is_empty());

    // An EC2 instance going away has nothing to drain: its addresses move at once.
    let mut gateway = gateway.clone();
    gateway.generation = Some(2);
    manager
        .reconcile_gateway(&gateway, start + Duration::from_secs(40), wall())
        .await;
    fake.set_instance_state("i-0000000000000002a", InstanceState::ShuttingDown);
    let mut stopping = gateway.clone();
    stopping.pods[1].ready = false;
    let moved = manager
        .reconcile_gateway(&stopping, start + Duration::from_secs(41), wall())
        .await;
    let reasons: Vec<&str> = moved
        .new_failovers
        .iter()
        .map(|failover| failover.reason.as_str())
        .collect();
    assert_eq!(
        reasons,
        ["EC2 instance shutting-down", "EC2 instance shutting-down"]
    );
    assert_eq!(carried(&moved)["gw-a"].len(), 2);
}

#[tokio::test]
async fn a_stopping_instance_and_a_vanished_pod_fail_over_with_their_reasons() {
    let fake = fake(8);
    let mut manager = manager(&fake);
    let start = Instant::now();
    let gateway = input(
        allocate(3),
        vec![pod("gw-a", 1), pod("gw-b", 2), pod("gw-c", 3)],
    );
    manager.reconcile_gateway(&gateway, start, wall()).await;

    fake.set_instance_state("i-0000000000000001a", InstanceState::Stopping);
    let mut changed = gateway.clone();
    changed.pods.remove(1); // gw-b is gone
    let outcome = manager
        .reconcile_gateway(&changed, start + Duration::from_secs(1), wall())
        .await;
    let reasons: BTreeMap<String, String> = outcome
        .new_failovers
        .iter()
        .map(|failover| (failover.from_instance.clone(), failover.reason.clone()))
        .collect();
    assert_eq!(
        reasons,
        BTreeMap::from([
            ("gw-a".to_owned(), "EC2 instance stopping".to_owned()),
            ("gw-b".to_owned(), "instance gone".to_owned()),
        ])
    );
    assert_eq!(carried(&outcome)["gw-c"].len(), 3);
    // The instance without a gateway pod gives its private addresses back.
    let calls = fake.calls();
    let prune = calls
        .iter()
        .rev()
        .find(|call| call.starts_with("prune_private_addresses"))
        .unwrap();
    assert_eq!(
        prune,
        "prune_private_addresses egress [i-0000000000000001a,i-0000000000000003a]"
    );
}

#[tokio::test]
async fn an_instance_over_its_limit_carries_nothing_and_the_others_take_over() {
    let fake = FakeAws::new();
    fake.add_instance("i-0000000000000001a", 1, 1);
    fake.add_instance("i-0000000000000002a", 2, 8);
    let mut manager = manager(&fake);
    let gateway = input(allocate(3), vec![pod("gw-a", 1), pod("gw-b", 2)]);
    let outcome = manager
        .reconcile_gateway(&gateway, Instant::now(), wall())
        .await;
    let problem = outcome.problem.clone().unwrap();
    assert_eq!(problem.reason, AwsReason::EniLimitExceeded);
    assert!(problem.message.contains("gw-a"), "{}", problem.message);
    assert!(
        problem.message.contains("needs 2, the limit is 1"),
        "{}",
        problem.message
    );
    assert!(!instance(&outcome, "gw-a").ready);
    assert_eq!(carried(&outcome)["gw-b"].len(), 3);
    assert!(carried(&outcome)["gw-b"].iter().all(|(_, _, ready)| *ready));
    assert!(carried(&outcome)["gw-a"].is_empty());
}

#[tokio::test]
async fn a_provider_error_is_reported_and_retried_with_backoff() {
    let fake = fake(8);
    let mut manager = manager(&fake);
    let start = Instant::now();
    let gateway = input(allocate(2), vec![pod("gw-a", 1), pod("gw-b", 2)]);
    fake.fail_next("ensure_addresses", retryable("DescribeAddresses"));
    let outcome = manager.reconcile_gateway(&gateway, start, wall()).await;
    let problem = outcome.problem.clone().unwrap();
    assert_eq!(problem.reason, AwsReason::AwsError);
    assert!(problem.retryable);
    assert!(
        problem.message.contains("RequestLimitExceeded"),
        "{}",
        problem.message
    );
    // Nothing is known yet: the instances carry nothing and are not Ready (fail closed).
    assert!(outcome
        .instances
        .iter()
        .all(|instance| !instance.ready && instance.addresses.is_empty()));
    assert_eq!(
        egw_controller::aws::AwsBackend::next_due(&manager),
        Some(start + Duration::from_secs(5))
    );

    // Before the backoff: the failed outcome is reused, no call.
    let calls = fake.calls().len();
    let early = manager
        .reconcile_gateway(&gateway, start + Duration::from_secs(1), wall())
        .await;
    assert_eq!(early.problem, outcome.problem);
    assert!(!early.fresh);
    assert_eq!(fake.calls().len(), calls);

    // After it: retried, and it works.
    let retried = manager
        .reconcile_gateway(&gateway, start + Duration::from_secs(6), wall())
        .await;
    assert_eq!(retried.problem, None);
    assert!(instance(&retried, "gw-a").ready);
    assert_eq!(carried(&retried)["gw-a"].len(), 1);

    // A later failure keeps what the last good pass established (associations do not vanish
    // because a call failed), with readiness re-checked against the pods.
    fake.fail_next(
        "describe_instance",
        permanent("DescribeInstances", "UnauthorizedOperation"),
    );
    let mut changed = gateway.clone();
    changed.pods[1].ready = false;
    let failed = manager
        .reconcile_gateway(&changed, start + Duration::from_secs(7), wall())
        .await;
    let problem = failed.problem.clone().unwrap();
    assert!(!problem.retryable);
    assert!(problem.message.contains("UnauthorizedOperation"));
    assert!(instance(&failed, "gw-a").ready);
    assert_eq!(carried(&failed)["gw-a"].len(), 1);
    assert!(!instance(&failed, "gw-b").ready);
    // Consecutive failures back off further.
    fake.fail_next(
        "describe_instance",
        permanent("DescribeInstances", "UnauthorizedOperation"),
    );
    manager
        .reconcile_gateway(&changed, start + Duration::from_secs(12), wall())
        .await;
    assert_eq!(
        egw_controller::aws::AwsBackend::next_due(&manager),
        Some(start + Duration::from_secs(22))
    );
}

#[tokio::test]
async fn no_healthy_instance_places_nothing_and_says_so() {
    let fake = fake(8);
    let mut manager = manager(&fake);
    let mut unready = pod("gw-a", 1);
    unready.ready = false;
    let mut unknown = pod("gw-b", 2);
    unknown.instance_id = Err("node node-2: providerID \"kind://x\" is not AWS".to_owned());
    let gateway = input(allocate(2), vec![unready, unknown]);
    let outcome = manager
        .reconcile_gateway(&gateway, Instant::now(), wall())
        .await;
    let problem = outcome.problem.clone().unwrap();
    assert_eq!(problem.reason, AwsReason::NoHealthyInstance);
    assert!(fake.associations().is_empty());
    assert!(outcome.instances.iter().all(|instance| !instance.ready));
    assert_eq!(instance(&outcome, "gw-b").instance_id, None);
    // gw-b's instance is unknown: nothing is pruned (it might still hold gw-b's addresses).
    assert!(!fake
        .operations_since(0)
        .contains(&"prune_private_addresses".to_owned()));
}

#[tokio::test]
async fn a_second_pod_on_the_same_instance_carries_nothing() {
    let fake = fake(8);
    let mut manager = manager(&fake);
    let mut twin = pod("gw-b", 1);
    twin.endpoint = Some("10.0.1.11:7443".to_owned());
    let gateway = input(allocate(2), vec![pod("gw-a", 1), twin]);
    let outcome = manager
        .reconcile_gateway(&gateway, Instant::now(), wall())
        .await;
    assert_eq!(outcome.problem, None);
    assert_eq!(carried(&outcome)["gw-a"].len(), 2);
    assert!(!instance(&outcome, "gw-b").ready);
    let ensures: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|call| call.starts_with("ensure_private_addresses"))
        .collect();
    assert_eq!(ensures, ["ensure_private_addresses i-0000000000000001a 2"]);
}

#[tokio::test]
async fn adopted_addresses_are_used_only_when_free_or_already_on_the_gateway() {
    let fake = fake(8);
    fake.add_foreign_address("eipalloc-free", 1);
    fake.add_foreign_address("eipalloc-taken", 2);
    fake.add_foreign_address("eipalloc-on-node", 3);
    // Someone else's instance holds one; another sits on gw-a's node's own primary IP.
    fake.add_instance("i-00000000000000099", 99, 8);
    fake.associate_outside(
        "eipalloc-taken",
        "eni-primary-99",
        Ipv4Addr::new(10, 0, 99, 10),
    );
    fake.associate_outside(
        "eipalloc-on-node",
        "eni-primary-1",
        Ipv4Addr::new(10, 0, 1, 10),
    );
    let mut manager = manager(&fake);
    let gateway = input(
        adopt(&["eipalloc-free", "eipalloc-taken", "eipalloc-on-node"]),
        vec![pod("gw-a", 1), pod("gw-b", 2)],
    );
    let outcome = manager
        .reconcile_gateway(&gateway, Instant::now(), wall())
        .await;
    assert_eq!(outcome.problem, None);
    assert_eq!(outcome.warnings.len(), 1, "{:?}", outcome.warnings);
    assert!(outcome.warnings[0].contains("eipalloc-taken"));
    assert!(outcome.warnings[0].contains("eni-primary-99"));
    let associations = fake.associations();
    // Untouched.
    assert_eq!(
        associations["eipalloc-taken"],
        (
            "i-00000000000000099".to_owned(),
            Ipv4Addr::new(10, 0, 99, 10)
        )
    );
    // Stays on gw-a (sticky), moved from the node's own IP to an egw private IP by
    // disassociating first (adopted addresses are never reassociated).
    assert_eq!(
        associations["eipalloc-on-node"],
        (
            "i-0000000000000001a".to_owned(),
            Ipv4Addr::new(10, 0, 1, 100)
        )
    );
    assert_eq!(
        associations["eipalloc-free"],
        (
            "i-0000000000000002a".to_owned(),
            Ipv4Addr::new(10, 0, 2, 100)
        )
    );
    let calls = fake.calls();
    let disassociate = calls
        .iter()
        .position(|call| call == "disassociate eipalloc-on-node")
        .expect("disassociated first");
    let associate = calls
        .iter()
        .position(|call| call.starts_with("associate eipalloc-on-node"))
        .unwrap();
    assert!(disassociate < associate);
}

fn with_routes(mut pool: AwsPool, tables: &[&str]) -> AwsPool {
    pool.routes = Some(AwsRoutes {
        route_table_ids: tables.iter().map(|table| (*table).to_owned()).collect(),
        destination_cidrs: vec!["0.0.0.0/0".to_owned()],
    });
    pool
}

#[tokio::test]
async fn routes_follow_the_active_instance_and_are_given_back() {
    let fake = fake(8);
    let mut manager = manager(&fake);
    let start = Instant::now();
    let mut pool = with_routes(allocate(2), &["rtb-private-a", "rtb-private-b"]);
    pool.eni_mode = EniMode::EniPerGateway;
    let gateway = input(pool, vec![pod("gw-a", 1), pod("gw-b", 2)]);
    let outcome = manager.reconcile_gateway(&gateway, start, wall()).await;
    assert_eq!(outcome.problem, None);
    let eni_a = "eni-egw-egress-i-0000000000000001a";
    assert_eq!(
        instance(&outcome, "gw-a").network_interface_id.as_deref(),
        Some(eni_a)
    );
    let targets: Vec<(String, String, String)> = outcome
        .routes
        .iter()
        .map(|route| {
            (
                route.route_table_id.clone(),
                route.network_interface_id.clone(),
                route.instance.clone(),
            )
        })
        .collect();
    assert_eq!(
        targets,
        [
            (
                "rtb-private-a".to_owned(),
                eni_a.to_owned(),
                "gw-a".to_owned()
            ),
            (
                "rtb-private-b".to_owned(),
                eni_a.to_owned(),
                "gw-a".to_owned()
            ),
        ]
    );

    // The active instance fails: routes move to the instance its addresses moved to.
    let mut failing = gateway.clone();
    failing.pods[0].terminating = true;
    let outcome = manager
        .reconcile_gateway(&failing, start + Duration::from_secs(1), wall())
        .await;
    assert!(outcome.routes.iter().all(|route| route.instance == "gw-b"
        && route.network_interface_id == "eni-egw-egress-i-0000000000000002a"));
    let routes = fake.state.lock().unwrap().routes.clone();
    assert!(routes
        .values()
        .all(|(_, eni)| eni == "eni-egw-egress-i-0000000000000002a"));

    // One table dropped from the spec: its route is given back, the other kept.
    let mut fewer = failing.clone();
    fewer.pool = with_routes(fewer.pool.clone(), &["rtb-private-b"]);
    fewer.generation = Some(2);
    let outcome = manager
        .reconcile_gateway(&fewer, start + Duration::from_secs(2), wall())
        .await;
    assert_eq!(outcome.routes.len(), 1);
    assert_eq!(fake.state.lock().unwrap().routes.len(), 1);

    // Routes removed from the spec: all given back.
    let mut none = fewer.clone();
    none.pool.routes = None;
    none.generation = Some(3);
    let outcome = manager
        .reconcile_gateway(&none, start + Duration::from_secs(3), wall())
        .await;
    assert!(outcome.routes.is_empty());
    assert!(fake.state.lock().unwrap().routes.is_empty());
}

#[tokio::test]
async fn cleanup_gives_back_routes_then_private_addresses_then_owned_addresses() {
    let fake = fake(8);
    let mut manager = manager(&fake);
    let gateway = input(
        with_routes(allocate(2), &["rtb-private-a"]),
        vec![pod("gw-a", 1), pod("gw-b", 2)],
    );
    manager
        .reconcile_gateway(&gateway, Instant::now(), wall())
        .await;
    assert_eq!(fake.associations().len(), 2);

    // A failure keeps what was not released yet; the retry finishes the job.
    fake.fail_next(
        "prune_private_addresses",
        retryable("UnassignPrivateIpAddresses"),
    );
    let from = fake.calls().len();
    let error = manager.cleanup("egress", true).await.unwrap_err();
    assert!(error.is_retryable());
    assert_eq!(
        fake.operations_since(from),
        ["release_routes", "prune_private_addresses"]
    );
    assert_eq!(fake.state.lock().unwrap().addresses.len(), 2);

    let from = fake.calls().len();
    let released = manager.cleanup("egress", true).await.unwrap();
    assert_eq!(
        fake.operations_since(from),
        ["release_routes", "prune_private_addresses", "release_owned"]
    );
    assert_eq!(
        released.released_allocations,
        ["eipalloc-0001", "eipalloc-0002"]
    );
    assert_eq!(
        released.unassigned_private_ips,
        [Ipv4Addr::new(10, 0, 1, 100), Ipv4Addr::new(10, 0, 2, 100)]
    );
    {
        let state = fake.state.lock().unwrap();
        assert!(state.addresses.is_empty());
        assert!(state.interfaces.is_empty());
        assert!(state.routes.is_empty());
    }

    // A gateway that never had routes needs no route-table call to be cleaned up.
    let from = fake.calls().len();
    manager.cleanup("other", false).await.unwrap();
    assert_eq!(
        fake.operations_since(from),
        ["prune_private_addresses", "release_owned"]
    );
}

#[tokio::test]
async fn metrics_count_calls_by_outcome_and_failovers() {
    let fake = fake(8);
    let metrics = Metrics::new();
    let mut manager = AwsManager::new(
        fake.clone(),
        AwsOptions::new("prod-eu".to_owned()),
        metrics.clone(),
    );
    let start = Instant::now();
    let gateway = input(allocate(1), vec![pod("gw-a", 1), pod("gw-b", 2)]);
    fake.fail_next("ensure_addresses", retryable("DescribeAddresses"));
    manager.reconcile_gateway(&gateway, start, wall()).await;
    manager
        .reconcile_gateway(&gateway, start + Duration::from_secs(6), wall())
        .await;
    let mut failing = gateway.clone();
    failing.pods[0].ready = false;
    manager
        .reconcile_gateway(&failing, start + Duration::from_secs(7), wall())
        .await;
    let text = metrics.render();
    assert!(
        text.contains(
            "egw_controller_aws_calls_total{operation=\"ensure_addresses\",outcome=\"retryable\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "egw_controller_aws_calls_total{operation=\"ensure_addresses\",outcome=\"ok\"} 2"
        ),
        "{text}"
    );
    assert!(
        text.contains("egw_controller_aws_failovers_total 1"),
        "{text}"
    );
}
