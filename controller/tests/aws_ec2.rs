//! The AWS manager on the real `Ec2Provider` (aws-sdk-ec2) for everything — Elastic IPs, ENIs,
//! secondary addresses, instance facts and VPC routes — against a moto server on 127.0.0.1.
//!
//! What EC2 holds is asserted by describing it, never by asking egw: after every scenario the
//! set of egw-tagged Elastic IPs and ENIs, the secondary-address records and the route tables
//! are exactly what the scenario expects.
//!
//! moto gaps these tests live with (see controller/aws/README.md): moto 5 records an Elastic IP
//! association per ENI and reports the ENI's primary address instead of the private address
//! asked for, so associations are compared by ENI; it ignores `DeleteOnTermination`; and it
//! enforces no Elastic IP quota.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egw_aws::testing::aws_sdk_ec2::types::Filter;
use egw_aws::testing::aws_sdk_ec2::Client;
use egw_aws::testing::{
    allocate_foreign, create_network, egw_enis, eni_tag, instance_enis, public_route_table,
    route_table_snapshot, run_instance, LoseResponsesAfter, Moto, RecordRequests,
};
use egw_aws::{secondary_ips_tag_key, Ec2Provider, GatewayRef, TAG_GATEWAY};
use egw_controller::aws::{AwsGatewayInput, AwsManager, AwsOptions, AwsReason, GatewayPod};
use egw_controller::crd::{AwsPool, AwsRoutes, ElasticIpSource, EniMode};
use egw_controller::metrics::Metrics;
use k8s_openapi::jiff::Timestamp;

const CLUSTER: &str = "moto-cluster";

fn wall() -> Timestamp {
    "2026-11-21T06:00:00Z".parse().unwrap()
}

fn manager(provider: Ec2Provider) -> AwsManager<Ec2Provider> {
    AwsManager::new(
        provider,
        AwsOptions::new(CLUSTER.to_owned()),
        Metrics::new(),
    )
}

fn pod(name: &str, instance_id: &str, ready: bool) -> GatewayPod {
    GatewayPod {
        name: name.to_owned(),
        node: Some(format!("node-{name}")),
        endpoint: Some(format!("10.0.1.{}:7443", name.len())),
        ready,
        terminating: false,
        instance_id: Ok(instance_id.to_owned()),
    }
}

fn pool(source: ElasticIpSource, mode: EniMode, routes: Option<&str>) -> AwsPool {
    AwsPool {
        elastic_ips: source,
        eni_mode: mode,
        subnet_id: None,
        security_group_ids: Vec::new(),
        routes: routes.map(|table| AwsRoutes {
            route_table_ids: vec![table.to_owned()],
            destination_cidrs: vec!["0.0.0.0/0".to_owned()],
        }),
    }
}

fn allocate(count: u32) -> ElasticIpSource {
    ElasticIpSource {
        allocation_ids: None,
        tags: None,
        allocate: Some(count),
    }
}

fn input(name: &str, pool: AwsPool, pods: Vec<GatewayPod>) -> AwsGatewayInput {
    AwsGatewayInput {
        name: name.to_owned(),
        generation: Some(1),
        pool,
        pods,
        drain: Duration::ZERO,
        stored_routes: Vec::new(),
        stored_failovers: Vec::new(),
    }
}

/// What EC2 holds for one gateway, found only by egw's tags.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    /// Allocation IDs of egw-owned Elastic IPs of the gateway.
    addresses: BTreeSet<String>,
    /// Allocation ID → ENI it is associated with, for every address of `watched`.
    associations: BTreeMap<String, String>,
    /// egw ENIs of the gateway → the instance each is attached to.
    enis: BTreeMap<String, Option<String>>,
    /// ENI → its secondary-address record for the gateway (SecondaryIp mode).
    records: BTreeMap<String, String>,
}

async fn held(client: &Client, gateway: &str, watched: &[String]) -> Held {
    let owned = client
        .describe_addresses()
        .filters(
            Filter::builder()
                .name(format!("tag:{TAG_GATEWAY}"))
                .values(gateway)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .addresses
        .unwrap_or_default();
    let addresses: BTreeSet<String> = owned
        .iter()
        .map(|address| address.allocation_id().unwrap().to_owned())
        .collect();
    let all = client
        .describe_addresses()
        .send()
        .await
        .unwrap()
        .addresses
        .unwrap_or_default();
    let associations = all
        .iter()
        .filter(|address| {
            let id = address.allocation_id().unwrap();
            addresses.contains(id) || watched.iter().any(|watched| watched == id)
        })
        .filter_map(|address| {
            // moto answers an unassociated address with an empty ENI ID.
            let eni = address
                .network_interface_id()
                .filter(|eni| !eni.is_empty())?;
            Some((address.allocation_id()?.to_owned(), eni.to_owned()))
        })
        .collect();
    let enis = egw_enis(client)
        .await
        .into_iter()
        .filter(|eni| eni_tag(eni, TAG_GATEWAY).as_deref() == Some(gateway))
        .map(|eni| {
            (
                eni.network_interface_id().unwrap().to_owned(),
                eni.attachment()
                    .and_then(|attachment| attachment.instance_id())
                    .map(str::to_owned),
            )
        })
        .collect();
    let record_key = secondary_ips_tag_key(&GatewayRef {
        cluster: CLUSTER.to_owned(),
        gateway: gateway.to_owned(),
    });
    let records = client
        .describe_network_interfaces()
        .send()
        .await
        .unwrap()
        .network_interfaces
        .unwrap_or_default()
        .iter()
        .filter_map(|eni| {
            Some((
                eni.network_interface_id()?.to_owned(),
                eni_tag(eni, &record_key)?,
            ))
        })
        .collect();
    Held {
        addresses,
        associations,
        enis,
        records,
    }
}

async fn primary_eni(client: &Client, instance: &str) -> String {
    instance_enis(client, instance).await[0]
        .network_interface_id()
        .unwrap()
        .to_owned()
}

async fn source_dest_check(client: &Client, eni: &str) -> Option<bool> {
    client
        .describe_network_interfaces()
        .network_interface_ids(eni)
        .send()
        .await
        .unwrap()
        .network_interfaces
        .unwrap()
        .remove(0)
        .source_dest_check
}

/// SecondaryIp mode with VPC routes: addresses land on both nodes' primary ENIs, the pod
/// subnet's default route moves to the active node; when that node's instance stops, its
/// Elastic IP and the route move to the other node; deletion gives everything back exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_ip_gateway_fails_over_addresses_and_routes_and_cleans_up_on_ec2() {
    let moto = Moto::start();
    let client = moto.client();
    let network = create_network(&client).await;
    let (table, internet_gateway) = public_route_table(&client, &network.vpc_id).await;
    let table_before = route_table_snapshot(&client, &table).await;
    let instance_a = run_instance(&client, &network, "c5.large").await;
    let instance_b = run_instance(&client, &network, "c5.large").await;
    let (eni_a, eni_b) = (
        primary_eni(&client, &instance_a).await,
        primary_eni(&client, &instance_b).await,
    );
    let mut manager = manager(moto.provider());
    let gateway = input(
        "egress",
        pool(allocate(2), EniMode::SecondaryIp, Some(&table)),
        vec![
            pod("gw-a", &instance_a, true),
            pod("gw-b", &instance_b, true),
        ],
    );
    let start = Instant::now();

    let outcome = manager.reconcile_gateway(&gateway, start, wall()).await;
    assert_eq!(outcome.problem, None, "{outcome:#?}");
    let state = held(&client, "egress", &[]).await;
    assert_eq!(state.addresses.len(), 2, "{state:#?}");
    assert!(
        state.enis.is_empty(),
        "SecondaryIp creates no ENI: {state:#?}"
    );
    // One Elastic IP per node, on an address egw recorded on that node's primary ENI.
    assert_eq!(
        state
            .associations
            .values()
            .cloned()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([eni_a.clone(), eni_b.clone()]),
        "{state:#?}"
    );
    assert_eq!(
        state.records.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([eni_a.clone(), eni_b.clone()])
    );
    for instance in &outcome.instances {
        assert!(instance.ready, "{instance:#?}");
        assert_eq!(instance.addresses.len(), 1, "{instance:#?}");
        let address = &instance.addresses[0];
        let eni = instance.network_interface_id.clone().unwrap();
        assert_eq!(
            state.records[&eni],
            address.snat_ip.to_string(),
            "the status's private address is the recorded one"
        );
        assert!(address.public_ip.is_some() && address.ready);
    }
    // The pod subnet's default route points at the active node, which forwards.
    let active = outcome.routes[0].network_interface_id.clone();
    assert_eq!(
        route_table_snapshot(&client, &table)
            .await
            .target("0.0.0.0/0"),
        Some(active.as_str())
    );
    assert_eq!(source_dest_check(&client, &active).await, Some(false));

    // The active node's instance stops: its Elastic IP and the route fail over.
    let (stopped, survivor, survivor_eni) = if active == eni_a {
        (&instance_a, "gw-b", &eni_b)
    } else {
        (&instance_b, "gw-a", &eni_a)
    };
    client
        .stop_instances()
        .instance_ids(stopped)
        .send()
        .await
        .unwrap();
    let outcome = manager
        .reconcile_gateway(&gateway, start + Duration::from_secs(61), wall())
        .await;
    assert_eq!(outcome.problem, None, "{outcome:#?}");
    assert_eq!(outcome.new_failovers.len(), 1, "{outcome:#?}");
    assert_eq!(outcome.new_failovers[0].to_instance, survivor);
    let state = held(&client, "egress", &[]).await;
    assert!(
        state.associations.values().all(|eni| eni == survivor_eni),
        "both Elastic IPs on the surviving node: {state:#?}"
    );
    assert_eq!(state.addresses.len(), 2, "failover allocates nothing");
    assert_eq!(
        route_table_snapshot(&client, &table)
            .await
            .target("0.0.0.0/0"),
        Some(survivor_eni.as_str())
    );

    // Deleted: addresses released, records and secondaries gone, the route back to the
    // internet gateway exactly as it was.
    let report = manager.cleanup("egress", true).await.unwrap();
    assert_eq!(report.released_allocations.len(), 2);
    assert_eq!(
        held(&client, "egress", &[]).await,
        Held {
            addresses: BTreeSet::new(),
            associations: BTreeMap::new(),
            enis: BTreeMap::new(),
            records: BTreeMap::new(),
        }
    );
    assert_eq!(route_table_snapshot(&client, &table).await, table_before);
    assert_eq!(
        table_before.target("0.0.0.0/0"),
        Some(internet_gateway.as_str())
    );
}

/// EniPerGateway with an adopted Elastic IP: the controller crashes after every k-th EC2 call of
/// its first pass; a restarted controller converges to one ENI per node and the addresses,
/// with nothing leaked or duplicated; deletion removes egw's ENIs and leaves the adopted
/// address allocated.
#[allow(
    clippy::too_many_lines,
    reason = "one crash-at-every-call scenario read top to bottom"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eni_per_gateway_converges_after_a_crash_at_every_call_and_never_leaks() {
    let moto = Moto::start();
    let client = moto.client();
    let network = create_network(&client).await;
    let instance_a = run_instance(&client, &network, "c5.large").await;
    let instance_b = run_instance(&client, &network, "c5.large").await;
    let pods = vec![
        pod("gw-a", &instance_a, true),
        pod("gw-b", &instance_b, true),
    ];

    // How many EC2 calls a clean first pass makes.
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let mut counting = manager(moto.provider_with(RecordRequests {
        bodies: bodies.clone(),
    }));
    let adopted = allocate_foreign(&client, &[("team", "payments")]).await;
    let source = allocate;
    let probe = input(
        "probe",
        pool(source(2), EniMode::EniPerGateway, None),
        pods.clone(),
    );
    let outcome = counting
        .reconcile_gateway(&probe, Instant::now(), wall())
        .await;
    assert_eq!(outcome.problem, None, "{outcome:#?}");
    let calls = bodies.lock().unwrap().len();
    counting.cleanup("probe", false).await.unwrap();
    assert!(calls > 10, "a first pass makes many calls: {calls}");

    for crash_after in 1..calls {
        let name = format!("crash-{crash_after}");
        let gateway = input(
            &name,
            pool(source(2), EniMode::EniPerGateway, None),
            pods.clone(),
        );
        let mut crashing = manager(moto.provider_with(LoseResponsesAfter {
            delivered: crash_after,
            seen: Arc::new(AtomicUsize::new(0)),
        }));
        let crashed = crashing
            .reconcile_gateway(&gateway, Instant::now(), wall())
            .await;
        assert!(
            crashed.problem.is_some(),
            "k={crash_after}: lost responses must surface: {crashed:#?}"
        );
        drop(crashing);

        let mut restarted = manager(moto.provider());
        let outcome = restarted
            .reconcile_gateway(&gateway, Instant::now(), wall())
            .await;
        assert_eq!(outcome.problem, None, "k={crash_after}: {outcome:#?}");
        let state = held(&client, &name, &[]).await;
        assert_eq!(state.addresses.len(), 2, "k={crash_after}: {state:#?}");
        assert_eq!(
            {
                let mut attached: Vec<Option<String>> = state.enis.values().cloned().collect();
                attached.sort();
                attached
            },
            {
                let mut attached = vec![Some(instance_a.clone()), Some(instance_b.clone())];
                attached.sort();
                attached
            },
            "k={crash_after}: exactly one attached ENI per node: {state:#?}"
        );
        let eni_ids: BTreeSet<&String> = state.enis.keys().collect();
        assert!(
            state.associations.values().all(|eni| eni_ids.contains(eni)),
            "k={crash_after}: addresses sit on egw's ENIs: {state:#?}"
        );
        assert!(state.records.is_empty(), "k={crash_after}: {state:#?}");

        restarted.cleanup(&name, false).await.unwrap();
        let after = held(&client, &name, &[]).await;
        assert!(
            after.addresses.is_empty() && after.enis.is_empty(),
            "k={crash_after}: cleanup leaves nothing: {after:#?}"
        );
    }

    // Nothing of any crashed gateway survives anywhere in EC2: only the adopted address is
    // allocated, and only the instances' own ENIs exist.
    let remaining: Vec<String> = client
        .describe_addresses()
        .send()
        .await
        .unwrap()
        .addresses
        .unwrap_or_default()
        .iter()
        .map(|address| address.allocation_id().unwrap().to_owned())
        .collect();
    assert_eq!(remaining, vec![adopted.clone()]);
    assert!(egw_enis(&client).await.is_empty());
    for instance in [&instance_a, &instance_b] {
        assert_eq!(instance_enis(&client, instance).await.len(), 1);
    }

    // Adoption: the operator's address is used, and deletion leaves it allocated.
    let gateway = input(
        "adopting",
        pool(
            ElasticIpSource {
                allocation_ids: Some(vec![adopted.clone()]),
                tags: None,
                allocate: None,
            },
            EniMode::EniPerGateway,
            None,
        ),
        pods.clone(),
    );
    let mut adopting = manager(moto.provider());
    let outcome = adopting
        .reconcile_gateway(&gateway, Instant::now(), wall())
        .await;
    assert_eq!(outcome.problem, None, "{outcome:#?}");
    let state = held(&client, "adopting", std::slice::from_ref(&adopted)).await;
    assert!(
        state.addresses.is_empty(),
        "adopted addresses are not egw's"
    );
    assert!(
        state.enis.contains_key(&state.associations[&adopted]),
        "{state:#?}"
    );
    let report = adopting.cleanup("adopting", false).await.unwrap();
    assert!(report.released_allocations.is_empty());
    // One address, so only the node carrying it got an ENI.
    assert_eq!(
        report.deleted_network_interfaces,
        state.enis.keys().cloned().collect::<Vec<_>>()
    );
    assert_eq!(state.enis.len(), 1, "{state:#?}");
    let remaining = client
        .describe_addresses()
        .allocation_ids(&adopted)
        .send()
        .await
        .unwrap()
        .addresses
        .unwrap_or_default();
    assert_eq!(remaining.len(), 1, "the adopted address stays allocated");
    assert!(egw_enis(&client).await.is_empty());
}

/// An instance type too small for the addresses: the gateway reports EniLimitExceeded and
/// nothing is assigned or associated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_small_instance_type_reports_the_eni_limit_and_changes_nothing() {
    let moto = Moto::start();
    let client = moto.client();
    let network = create_network(&client).await;
    // t3.nano: 2 IPv4 addresses per ENI (moto's DescribeInstanceTypes), so 3 secondaries
    // cannot fit next to the primary.
    let instance = run_instance(&client, &network, "t3.nano").await;
    let mut manager = manager(moto.provider());
    let gateway = input(
        "tiny",
        pool(allocate(3), EniMode::SecondaryIp, None),
        vec![pod("gw-a", &instance, true)],
    );
    let outcome = manager
        .reconcile_gateway(&gateway, Instant::now(), wall())
        .await;
    let problem = outcome.problem.clone().expect("a limit problem");
    assert_eq!(problem.reason, AwsReason::EniLimitExceeded, "{problem:#?}");
    assert!(problem.message.contains("gw-a"), "{problem:#?}");
    let state = held(&client, "tiny", &[]).await;
    assert!(state.associations.is_empty(), "{state:#?}");
    assert!(state.records.is_empty(), "{state:#?}");
    let eni = &instance_enis(&client, &instance).await[0];
    assert!(
        egw_aws::testing::secondary_ips(eni).is_empty(),
        "no secondary address was assigned"
    );
    assert!(outcome
        .instances
        .iter()
        .all(|instance| instance.addresses.is_empty()));
    manager.cleanup("tiny", false).await.unwrap();
    assert!(held(&client, "tiny", &[]).await.addresses.is_empty());
}
