//! VPC routes (NAT-instance pattern) against moto server with the real SDK.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_ec2::Client;
use common::{
    create_eni, create_nat_gateway, create_route_lab, create_route_table, route_table_snapshot,
    FailFirstSends, LoseResponsesAfter, Moto, RecordRequests, RouteLab, RoutesAreBlackholes,
};
use egw_aws::{
    route_record_key, Ec2Provider, GatewayRef, ProviderError, RouteIntent, RouteProvider,
    RouteState,
};

fn gateway(name: &str) -> GatewayRef {
    GatewayRef {
        cluster: "prod-eu".into(),
        gateway: name.into(),
    }
}

fn record_key(name: &str, cidr: &str) -> String {
    route_record_key(&gateway(name), &cidr.parse().unwrap()).unwrap()
}

fn intent(name: &str, tables: &[&str], cidrs: &[&str], eni: &str) -> RouteIntent {
    RouteIntent {
        gateway: gateway(name),
        route_table_ids: tables.iter().map(|t| t.to_string()).collect(),
        destination_cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
        target_network_interface_id: eni.into(),
    }
}

fn state(table: &str, cidr: &str, eni: &str, previous: Option<&str>) -> RouteState {
    RouteState {
        route_table_id: table.into(),
        destination_cidr: cidr.into(),
        target_network_interface_id: eni.into(),
        previous_target: previous.map(str::to_string),
    }
}

fn sorted(mut states: Vec<RouteState>) -> Vec<RouteState> {
    states.sort_by(|a, b| {
        (&a.route_table_id, &a.destination_cidr).cmp(&(&b.route_table_id, &b.destination_cidr))
    });
    states
}

/// The EC2 actions a recorded set of request bodies made.
fn actions(bodies: &Mutex<Vec<String>>) -> Vec<String> {
    bodies
        .lock()
        .unwrap()
        .iter()
        .map(|body| {
            body.split('&')
                .find_map(|pair| pair.strip_prefix("Action="))
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

fn recording(moto: &Moto) -> (Ec2Provider, Arc<Mutex<Vec<String>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let provider = moto.provider_with(RecordRequests {
        bodies: bodies.clone(),
    });
    (provider, bodies)
}

/// Two gateway ENIs (primary IPs 10.0.1.10 and .11) in the lab's subnet.
async fn two_enis(client: &Client, lab: &RouteLab) -> (String, String) {
    let (a, _, _) = create_eni(client, &lab.subnet_id, "10.0.1.10").await;
    let (b, _, _) = create_eni(client, &lab.subnet_id, "10.0.1.11").await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_a_missing_route_and_deletes_it_on_release() {
    let moto = Moto::start();
    let client = moto.client();
    let lab = create_route_lab(&client).await;
    let (eni, _) = two_enis(&client, &lab).await;
    let before = route_table_snapshot(&client, &lab.route_table_id).await;
    assert_eq!(before.target("192.168.0.0/16"), None);
    let provider = moto.provider();

    let states = provider
        .ensure_routes(&intent(
            "web",
            &[&lab.route_table_id],
            &["192.168.0.0/16"],
            &eni,
        ))
        .await
        .unwrap();
    assert_eq!(
        states,
        vec![state(&lab.route_table_id, "192.168.0.0/16", &eni, None)]
    );
    let during = route_table_snapshot(&client, &lab.route_table_id).await;
    assert_eq!(during.target("192.168.0.0/16"), Some(eni.as_str()));
    assert_eq!(
        during.target("0.0.0.0/0"),
        Some(lab.internet_gateway_id.as_str()),
        "routes not in the intent are untouched"
    );
    let target = client
        .describe_network_interfaces()
        .network_interface_ids(&eni)
        .send()
        .await
        .unwrap()
        .network_interfaces
        .unwrap()
        .remove(0);
    assert_eq!(
        target.source_dest_check,
        Some(false),
        "an ENI that routes point at must forward"
    );
    assert_eq!(
        during.tags,
        BTreeMap::from([(record_key("web", "192.168.0.0/16"), "none".to_string())])
    );

    let released = provider.release_routes(&gateway("web"), &[]).await.unwrap();
    assert_eq!(released, states);
    assert_eq!(
        route_table_snapshot(&client, &lab.route_table_id).await,
        before
    );

    let (recorded, bodies) = recording(&moto);
    assert!(recorded
        .release_routes(&gateway("web"), &[])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(actions(&bodies), vec!["DescribeRouteTables"]);
}

/// Every kind of target a route can have before egw takes it over comes back on release, each
/// through its own ReplaceRoute parameter.
#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario (every route target kind, taken over and restored) read top to bottom"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_over_and_restores_routes_to_every_kind_of_target() {
    let moto = Moto::start();
    let client = moto.client();
    let lab = create_route_lab(&client).await;
    let (eni, _) = two_enis(&client, &lab).await;
    let (old_nat_instance_eni, _, _) = create_eni(&client, &lab.subnet_id, "10.0.1.20").await;
    let nat = create_nat_gateway(&client, &lab.subnet_id).await;
    let peer_vpc = client
        .create_vpc()
        .cidr_block("10.50.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc
        .unwrap()
        .vpc_id
        .unwrap();
    let peering = client
        .create_vpc_peering_connection()
        .vpc_id(&lab.vpc_id)
        .peer_vpc_id(&peer_vpc)
        .send()
        .await
        .unwrap()
        .vpc_peering_connection
        .unwrap()
        .vpc_peering_connection_id
        .unwrap();
    let transit = client
        .create_transit_gateway()
        .send()
        .await
        .unwrap()
        .transit_gateway
        .unwrap()
        .transit_gateway_id
        .unwrap();
    let private_table = create_route_table(&client, &lab.vpc_id).await;
    let routes: [(&str, &str, &str); 5] = [
        (&private_table, "0.0.0.0/0", &nat),
        (&lab.route_table_id, "10.50.0.0/16", &peering),
        (&lab.route_table_id, "10.60.0.0/16", &transit),
        (&lab.route_table_id, "10.70.0.0/16", &old_nat_instance_eni),
        (&private_table, "10.70.0.0/16", &lab.internet_gateway_id),
    ];
    for (table, cidr, target) in routes {
        let request = client
            .create_route()
            .route_table_id(table)
            .destination_cidr_block(cidr);
        let request = match target.split('-').next().unwrap() {
            "nat" => request.nat_gateway_id(target),
            "pcx" => request.vpc_peering_connection_id(target),
            "tgw" => request.transit_gateway_id(target),
            "eni" => request.network_interface_id(target),
            _ => request.gateway_id(target),
        };
        request.send().await.unwrap();
    }
    let public_before = route_table_snapshot(&client, &lab.route_table_id).await;
    let private_before = route_table_snapshot(&client, &private_table).await;
    let tables = [lab.route_table_id.as_str(), private_table.as_str()];
    let cidrs = ["0.0.0.0/0", "10.50.0.0/16", "10.60.0.0/16", "10.70.0.0/16"];

    let states = moto
        .provider()
        .ensure_routes(&intent("web", &tables, &cidrs, &eni))
        .await
        .unwrap();
    let expected = vec![
        state(
            &lab.route_table_id,
            "0.0.0.0/0",
            &eni,
            Some(&lab.internet_gateway_id),
        ),
        state(&lab.route_table_id, "10.50.0.0/16", &eni, Some(&peering)),
        state(&lab.route_table_id, "10.60.0.0/16", &eni, Some(&transit)),
        state(
            &lab.route_table_id,
            "10.70.0.0/16",
            &eni,
            Some(&old_nat_instance_eni),
        ),
        state(&private_table, "0.0.0.0/0", &eni, Some(&nat)),
        state(&private_table, "10.50.0.0/16", &eni, None),
        state(&private_table, "10.60.0.0/16", &eni, None),
        state(
            &private_table,
            "10.70.0.0/16",
            &eni,
            Some(&lab.internet_gateway_id),
        ),
    ];
    assert_eq!(states, expected);
    for table in tables {
        let snapshot = route_table_snapshot(&client, table).await;
        for cidr in cidrs {
            assert_eq!(snapshot.target(cidr), Some(eni.as_str()), "{table} {cidr}");
        }
        assert_eq!(snapshot.target("10.0.0.0/16"), Some("local"));
    }
    let private_tags = route_table_snapshot(&client, &private_table).await.tags;
    assert_eq!(private_tags[&record_key("web", "0.0.0.0/0")], nat);
    assert_eq!(private_tags[&record_key("web", "10.50.0.0/16")], "none");

    // Converged: a second ensure only reads.
    let (recorded, bodies) = recording(&moto);
    let again = recorded
        .ensure_routes(&intent("web", &tables, &cidrs, &eni))
        .await
        .unwrap();
    assert_eq!(again, expected);
    assert_eq!(
        actions(&bodies),
        vec![
            "DescribeNetworkInterfaces",
            "DescribeRouteTables",
            "DescribeRouteTables"
        ]
    );

    let released = moto
        .provider()
        .release_routes(&gateway("web"), &[])
        .await
        .unwrap();
    assert_eq!(sorted(released), sorted(expected));
    assert_eq!(
        route_table_snapshot(&client, &lab.route_table_id).await,
        public_before
    );
    assert_eq!(
        route_table_snapshot(&client, &private_table).await,
        private_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_keeps_the_original_previous_target() {
    let moto = Moto::start();
    let client = moto.client();
    let lab = create_route_lab(&client).await;
    let (eni_a, eni_b) = two_enis(&client, &lab).await;
    let before = route_table_snapshot(&client, &lab.route_table_id).await;
    let provider = moto.provider();
    let tables = [lab.route_table_id.as_str()];

    provider
        .ensure_routes(&intent("web", &tables, &["0.0.0.0/0"], &eni_a))
        .await
        .unwrap();
    let (recorded, bodies) = recording(&moto);
    let failed_over = recorded
        .ensure_routes(&intent("web", &tables, &["0.0.0.0/0"], &eni_b))
        .await
        .unwrap();
    assert_eq!(
        failed_over,
        vec![state(
            &lab.route_table_id,
            "0.0.0.0/0",
            &eni_b,
            Some(&lab.internet_gateway_id)
        )]
    );
    assert_eq!(
        actions(&bodies),
        vec![
            "DescribeNetworkInterfaces",
            "ModifyNetworkInterfaceAttribute",
            "DescribeRouteTables",
            "ReplaceRoute"
        ],
        "the record is not rewritten; the new target is made to forward"
    );
    let during = route_table_snapshot(&client, &lab.route_table_id).await;
    assert_eq!(during.target("0.0.0.0/0"), Some(eni_b.as_str()));
    assert_eq!(
        during.tags[&record_key("web", "0.0.0.0/0")],
        lab.internet_gateway_id
    );

    let released = provider.release_routes(&gateway("web"), &[]).await.unwrap();
    assert_eq!(released, failed_over, "released from the ENI that held it");
    assert_eq!(
        route_table_snapshot(&client, &lab.route_table_id).await,
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_leaves_a_route_someone_repointed_meanwhile() {
    let moto = Moto::start();
    let client = moto.client();
    let lab = create_route_lab(&client).await;
    let (eni, _) = two_enis(&client, &lab).await;
    let nat = create_nat_gateway(&client, &lab.subnet_id).await;
    let provider = moto.provider();
    let tables = [lab.route_table_id.as_str()];
    provider
        .ensure_routes(&intent(
            "web",
            &tables,
            &["0.0.0.0/0", "172.16.0.0/12"],
            &eni,
        ))
        .await
        .unwrap();
    // An operator moves the default route to a NAT gateway and deletes the other one.
    client
        .replace_route()
        .route_table_id(&lab.route_table_id)
        .destination_cidr_block("0.0.0.0/0")
        .nat_gateway_id(&nat)
        .send()
        .await
        .unwrap();
    client
        .delete_route()
        .route_table_id(&lab.route_table_id)
        .destination_cidr_block("172.16.0.0/12")
        .send()
        .await
        .unwrap();

    let (recorded, bodies) = recording(&moto);
    let released = recorded.release_routes(&gateway("web"), &[]).await.unwrap();
    assert_eq!(
        released,
        vec![
            state(
                &lab.route_table_id,
                "0.0.0.0/0",
                "",
                Some(&lab.internet_gateway_id)
            ),
            state(&lab.route_table_id, "172.16.0.0/12", "", None),
        ]
    );
    assert_eq!(
        actions(&bodies),
        vec!["DescribeRouteTables", "DeleteTags"],
        "no route is changed"
    );
    let after = route_table_snapshot(&client, &lab.route_table_id).await;
    assert_eq!(after.target("0.0.0.0/0"), Some(nat.as_str()));
    assert_eq!(after.target("172.16.0.0/12"), None);
    assert!(after.tags.is_empty(), "{:?}", after.tags);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_keeps_the_listed_routes_and_other_gateways_records() {
    let moto = Moto::start();
    let client = moto.client();
    let lab = create_route_lab(&client).await;
    let (eni_web, eni_api) = two_enis(&client, &lab).await;
    let second_table = create_route_table(&client, &lab.vpc_id).await;
    let before = route_table_snapshot(&client, &lab.route_table_id).await;
    let provider = moto.provider();
    let tables = [lab.route_table_id.as_str(), second_table.as_str()];
    provider
        .ensure_routes(&intent("web", &tables, &["0.0.0.0/0"], &eni_web))
        .await
        .unwrap();
    provider
        .ensure_routes(&intent("api", &tables, &["10.99.0.0/16"], &eni_api))
        .await
        .unwrap();

    let released = provider
        .release_routes(
            &gateway("web"),
            &[(lab.route_table_id.clone(), "0.0.0.0/0".into())],
        )
        .await
        .unwrap();
    assert_eq!(
        released,
        vec![state(&second_table, "0.0.0.0/0", &eni_web, None)]
    );
    let first = route_table_snapshot(&client, &lab.route_table_id).await;
    assert_eq!(first.target("0.0.0.0/0"), Some(eni_web.as_str()));
    assert!(first.tags.contains_key(&record_key("web", "0.0.0.0/0")));
    let second = route_table_snapshot(&client, &second_table).await;
    assert_eq!(second.target("0.0.0.0/0"), None);
    assert_eq!(second.target("10.99.0.0/16"), Some(eni_api.as_str()));
    assert_eq!(
        second.tags.keys().collect::<Vec<_>>(),
        vec![&record_key("api", "10.99.0.0/16")],
        "another gateway's records are not touched"
    );

    provider.release_routes(&gateway("web"), &[]).await.unwrap();
    provider.release_routes(&gateway("api"), &[]).await.unwrap();
    assert_eq!(
        route_table_snapshot(&client, &lab.route_table_id).await,
        before
    );
    let second = route_table_snapshot(&client, &second_table).await;
    assert_eq!(second.target("10.99.0.0/16"), None);
    assert!(second.tags.is_empty());
}

/// A controller crash after any number of EC2 calls (the last one acted on by EC2, its answer
/// lost) during take-over, failover or release: the next call converges, and release puts the
/// original routes back exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_from_a_crash_at_any_point_and_restores_exactly() {
    let moto = Moto::start();
    let client = moto.client();
    // ensure: DescribeRouteTables, CreateTags, and 3 route writes per table; past 10 nothing
    // is lost any more.
    for delivered in 0..=10 {
        let lab = create_route_lab(&client).await;
        let (eni_a, eni_b) = two_enis(&client, &lab).await;
        let nat = create_nat_gateway(&client, &lab.subnet_id).await;
        let private_table = create_route_table(&client, &lab.vpc_id).await;
        client
            .create_route()
            .route_table_id(&private_table)
            .destination_cidr_block("0.0.0.0/0")
            .nat_gateway_id(&nat)
            .send()
            .await
            .unwrap();
        let tables = [lab.route_table_id.as_str(), private_table.as_str()];
        let before = [
            route_table_snapshot(&client, tables[0]).await,
            route_table_snapshot(&client, tables[1]).await,
        ];
        let cidrs = ["0.0.0.0/0", "10.80.0.0/16", "100.64.0.0/10"];
        let crashing = || {
            moto.provider_with(LoseResponsesAfter {
                delivered,
                seen: Arc::new(AtomicUsize::new(0)),
            })
        };

        for eni in [&eni_a, &eni_b] {
            let routes = intent("web", &tables, &cidrs, eni);
            if let Err(err) = crashing().ensure_routes(&routes).await {
                assert!(err.is_retryable(), "k={delivered}: {err}");
            }
            let states = moto.provider().ensure_routes(&routes).await.unwrap();
            assert_eq!(states.len(), 6);
            for table in tables {
                let snapshot = route_table_snapshot(&client, table).await;
                for cidr in cidrs {
                    assert_eq!(snapshot.target(cidr), Some(eni.as_str()), "k={delivered}");
                }
            }
            let private = route_table_snapshot(&client, &private_table).await;
            assert_eq!(
                private.tags[&record_key("web", "0.0.0.0/0")],
                nat,
                "k={delivered}: the original target survives crashes and failover"
            );
            let public = route_table_snapshot(&client, &lab.route_table_id).await;
            assert_eq!(
                public.tags[&record_key("web", "0.0.0.0/0")],
                lab.internet_gateway_id,
                "k={delivered}"
            );
            assert_eq!(public.tags[&record_key("web", "10.80.0.0/16")], "none");
        }

        if let Err(err) = crashing().release_routes(&gateway("web"), &[]).await {
            assert!(err.is_retryable(), "k={delivered}: {err}");
        }
        moto.provider()
            .release_routes(&gateway("web"), &[])
            .await
            .unwrap();
        for (table, before) in tables.iter().zip(&before) {
            assert_eq!(
                &route_table_snapshot(&client, table).await,
                before,
                "k={delivered}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried() {
    let moto = Moto::start();
    let client = moto.client();
    let lab = create_route_lab(&client).await;
    let (eni, _) = two_enis(&client, &lab).await;
    let provider = moto.provider_with(FailFirstSends {
        failures: 2,
        seen: Arc::new(AtomicUsize::new(0)),
    });
    provider
        .ensure_routes(&intent("web", &[&lab.route_table_id], &["0.0.0.0/0"], &eni))
        .await
        .unwrap();
    assert_eq!(
        route_table_snapshot(&client, &lab.route_table_id)
            .await
            .target("0.0.0.0/0"),
        Some(eni.as_str())
    );

    let seen = Arc::new(AtomicUsize::new(0));
    let always_failing = moto.provider_with(FailFirstSends {
        failures: usize::MAX,
        seen: seen.clone(),
    });
    let err = always_failing
        .release_routes(&gateway("web"), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Retryable { attempts: 4, .. }),
        "{err}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 4, "bounded retries");
}

/// moto gap: moto reports every route as `active`; EC2 reports a route whose ENI's instance is
/// stopped as a `blackhole`. A blackhole counts as pointing elsewhere, so it is re-pointed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackhole_route_to_the_eni_is_replaced() {
    let moto = Moto::start();
    let client = moto.client();
    let lab = create_route_lab(&client).await;
    let (eni, _) = two_enis(&client, &lab).await;
    let routes = intent("web", &[&lab.route_table_id], &["0.0.0.0/0"], &eni);
    moto.provider().ensure_routes(&routes).await.unwrap();

    let bodies = Arc::new(Mutex::new(Vec::new()));
    let client_with_blackholes = Client::from_conf(
        moto.config()
            .interceptor(RoutesAreBlackholes)
            .interceptor(RecordRequests {
                bodies: bodies.clone(),
            })
            .build(),
    );
    let provider = Ec2Provider::from_client(client_with_blackholes, common::fast_retries());
    let states = provider.ensure_routes(&routes).await.unwrap();
    assert_eq!(
        states[0].previous_target.as_deref(),
        Some(lab.internet_gateway_id.as_str())
    );
    assert_eq!(
        actions(&bodies),
        vec![
            "DescribeNetworkInterfaces",
            "DescribeRouteTables",
            "ReplaceRoute"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_invalid_intents_and_reports_missing_resources() {
    let moto = Moto::start();
    let client = moto.client();
    let lab = create_route_lab(&client).await;
    let (eni, _) = two_enis(&client, &lab).await;
    let before = route_table_snapshot(&client, &lab.route_table_id).await;
    let (provider, bodies) = recording(&moto);
    let table = [lab.route_table_id.as_str()];

    for bad_cidr in ["10.0.0.1/8", "10.0.0.0", "::/0", "0.0.0.0/40"] {
        let err = provider
            .ensure_routes(&intent("web", &table, &[bad_cidr], &eni))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::InvalidIntent(_)),
            "{bad_cidr}: {err}"
        );
    }
    let err = provider
        .ensure_routes(&intent("web", &table, &["0.0.0.0/0"], "igw-0123"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidIntent(_)), "{err}");
    let err = provider
        .ensure_routes(&intent("web/x", &table, &["0.0.0.0/0"], &eni))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidIntent(_)), "{err}");
    let err = provider
        .release_routes(
            &gateway("web"),
            &[(lab.route_table_id.clone(), "nope".into())],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidIntent(_)), "{err}");
    assert!(
        actions(&bodies).is_empty(),
        "invalid intents are refused before any EC2 call"
    );

    let err = provider
        .ensure_routes(&intent(
            "web",
            &["rtb-0123456789abcdef0"],
            &["0.0.0.0/0"],
            &eni,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err}");
    assert_eq!(err.aws_code(), Some("InvalidRouteTableID.NotFound"));

    // The VPC's local route is never taken over.
    let err = provider
        .ensure_routes(&intent("web", &table, &["10.0.0.0/16"], &eni))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidIntent(_)), "{err}");

    // A missing ENI is EC2's NotFound, with its code; the record made first is given back.
    let err = provider
        .ensure_routes(&intent(
            "web",
            &table,
            &["192.168.0.0/16"],
            "eni-0123456789abcdef0",
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err}");
    assert_eq!(err.aws_code(), Some("InvalidNetworkInterfaceID.NotFound"));
    provider.release_routes(&gateway("web"), &[]).await.unwrap();
    assert_eq!(
        route_table_snapshot(&client, &lab.route_table_id).await,
        before
    );

    // A route another gateway manages is not taken.
    provider
        .ensure_routes(&intent("api", &table, &["0.0.0.0/0"], &eni))
        .await
        .unwrap();
    let err = provider
        .ensure_routes(&intent("web", &table, &["0.0.0.0/0"], &eni))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidIntent(_)), "{err}");
    assert!(err.to_string().contains("prod-eu/api"), "{err}");
}
