//! ENI modes and instance facts against moto server (a real EC2 API emulator) with the real SDK.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use aws_sdk_ec2::config::SharedInterceptor;
use common::{
    assign_as_cni, create_network, egw_enis, eni_tag, instance_enis, query_param, run_instance,
    secondary_ips, AssignRacesWithCni, FailFirstSends, LoseResponsesAfter, Moto,
    MotoDeleteOnTermination, Network, RecordRequests,
};
use egw_aws::{
    secondary_ips_tag_key, GatewayRef, InstanceState, InstanceTypeLimits, InterfaceMode,
    InterfaceProvider, PrivateAddressIntent, ProviderError, OWNER_TAG_VALUE, TAG_CLUSTER,
    TAG_GATEWAY, TAG_INSTANCE, TAG_OWNER,
};

/// 4 ENIs, 15 IPv4 addresses per ENI (moto's DescribeInstanceTypes, as on EC2).
const ROOMY: &str = "c6in.xlarge";
/// 2 ENIs, 2 IPv4 addresses per ENI.
const TINY: &str = "t3.nano";
/// A pod address the VPC CNI holds on the node's primary ENI.
const CNI_POD_IP: &str = "10.0.1.200";

fn gateway(name: &str) -> GatewayRef {
    GatewayRef {
        cluster: "prod-eu".into(),
        gateway: name.into(),
    }
}

fn secondary(name: &str, instance_id: &str, count: u32) -> PrivateAddressIntent {
    PrivateAddressIntent {
        gateway: gateway(name),
        instance_id: instance_id.into(),
        mode: InterfaceMode::SecondaryIp,
        count,
    }
}

fn dedicated(name: &str, instance_id: &str, count: u32) -> PrivateAddressIntent {
    PrivateAddressIntent {
        gateway: gateway(name),
        instance_id: instance_id.into(),
        mode: InterfaceMode::EniPerGateway {
            subnet_id: None,
            security_group_ids: Vec::new(),
        },
        count,
    }
}

fn recorder() -> (RecordRequests, Arc<Mutex<Vec<String>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    (
        RecordRequests {
            bodies: bodies.clone(),
        },
        bodies,
    )
}

/// The EC2 actions in `bodies` that change something (everything but Describe*).
fn writes(bodies: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    bodies
        .lock()
        .unwrap()
        .iter()
        .filter_map(|body| query_param(body, "Action"))
        .filter(|action| !action.starts_with("Describe"))
        .collect()
}

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn record_value(ips: &[Ipv4Addr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A running instance whose primary ENI also holds a VPC CNI pod address; returns (instance,
/// primary ENI, primary IP).
async fn node_with_cni_pod(
    client: &aws_sdk_ec2::Client,
    network: &Network,
    instance_type: &str,
) -> (String, String, Ipv4Addr) {
    let instance = run_instance(client, network, instance_type).await;
    let primary = instance_enis(client, &instance).await.remove(0);
    let primary_id = primary.network_interface_id().unwrap().to_string();
    let primary_ip = ip(primary.private_ip_address().unwrap());
    // Pods on other nodes use addresses too; egw must pick around all of them.
    assign_as_cni(client, &primary_id, CNI_POD_IP).await;
    (instance, primary_id, primary_ip)
}

/// Everything on the primary ENI: (secondaries, egw's record for `name`, source/dest check).
async fn primary_eni_state(
    client: &aws_sdk_ec2::Client,
    instance: &str,
    name: &str,
) -> (Vec<Ipv4Addr>, Option<String>, Option<bool>) {
    let primary = instance_enis(client, instance).await.remove(0);
    (
        secondary_ips(&primary),
        eni_tag(&primary, &secondary_ips_tag_key(&gateway(name))),
        primary.source_dest_check(),
    )
}

fn with_cni(egw: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let mut all: Vec<Ipv4Addr> = egw.to_vec();
    all.push(ip(CNI_POD_IP));
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_ips_are_recorded_assigned_and_idempotent() {
    let moto = Moto::start();
    let client = moto.client();
    let network = create_network(&client).await;
    let (instance, primary_id, primary_ip) = node_with_cni_pod(&client, &network, ROOMY).await;
    let (record, bodies) = recorder();
    let provider = moto.provider_with(record);

    let first = provider
        .ensure_private_addresses(&secondary("web", &instance, 3))
        .await
        .unwrap();
    assert_eq!(first.network_interface_id, primary_id);
    assert_eq!(first.device_index, 0);
    assert_eq!(first.private_ips.len(), 3);
    assert!(first.private_ips.windows(2).all(|w| w[0] < w[1]), "sorted");
    assert!(!first.private_ips.contains(&primary_ip));
    assert!(!first.private_ips.contains(&ip(CNI_POD_IP)));
    for address in &first.private_ips {
        let last_octet = address.octets()[3];
        assert_eq!(address.octets()[..3], [10, 0, 1], "in the node's subnet");
        assert!((4..255).contains(&last_octet), "{address} is AWS-reserved");
    }
    let (secondaries, recorded, source_dest_check) =
        primary_eni_state(&client, &instance, "web").await;
    assert_eq!(secondaries, with_cni(&first.private_ips));
    assert_eq!(recorded, Some(record_value(&first.private_ips)));
    assert_eq!(source_dest_check, Some(false));
    let first_writes = writes(&bodies);
    assert_eq!(
        first_writes.first().map(String::as_str),
        Some("CreateTags"),
        "the record is written before any address is assigned: {first_writes:?}"
    );
    for action in &first_writes[1..] {
        assert_ne!(action, "CreateTags", "one record write: {first_writes:?}");
    }
    for body in bodies.lock().unwrap().iter() {
        if query_param(body, "Action").as_deref() == Some("AssignPrivateIpAddresses") {
            assert_eq!(
                query_param(body, "AllowReassignment").as_deref(),
                Some("false"),
                "{body}"
            );
        }
    }

    bodies.lock().unwrap().clear();
    let again = provider
        .ensure_private_addresses(&secondary("web", &instance, 3))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(
        writes(&bodies),
        Vec::<String>::new(),
        "no write when in place"
    );
    let fresh = moto
        .provider()
        .ensure_private_addresses(&secondary("web", &instance, 3))
        .await
        .unwrap();
    assert_eq!(
        fresh, first,
        "a restarted controller sees the same addresses"
    );

    // Growing keeps the three and adds two.
    let grown = provider
        .ensure_private_addresses(&secondary("web", &instance, 5))
        .await
        .unwrap();
    assert_eq!(grown.private_ips.len(), 5);
    assert!(first
        .private_ips
        .iter()
        .all(|a| grown.private_ips.contains(a)));
    let (secondaries, recorded, _) = primary_eni_state(&client, &instance, "web").await;
    assert_eq!(secondaries, with_cni(&grown.private_ips));
    assert_eq!(recorded, Some(record_value(&grown.private_ips)));

    // Shrinking keeps the lowest and unassigns only egw's own surplus.
    let shrunk = provider
        .ensure_private_addresses(&secondary("web", &instance, 2))
        .await
        .unwrap();
    assert_eq!(shrunk.private_ips, grown.private_ips[..2].to_vec());
    let (secondaries, recorded, _) = primary_eni_state(&client, &instance, "web").await;
    assert_eq!(secondaries, with_cni(&shrunk.private_ips));
    assert_eq!(recorded, Some(record_value(&shrunk.private_ips)));

    // An address egw recorded but someone unassigned is assigned again.
    client
        .unassign_private_ip_addresses()
        .network_interface_id(&primary_id)
        .private_ip_addresses(shrunk.private_ips[1].to_string())
        .send()
        .await
        .unwrap();
    let repaired = provider
        .ensure_private_addresses(&secondary("web", &instance, 2))
        .await
        .unwrap();
    assert_eq!(repaired, shrunk);
    let (secondaries, _, _) = primary_eni_state(&client, &instance, "web").await;
    assert_eq!(secondaries, with_cni(&shrunk.private_ips));

    // Zero: everything egw assigned goes, the record too; the CNI's address stays.
    let none = provider
        .ensure_private_addresses(&secondary("web", &instance, 0))
        .await
        .unwrap();
    assert!(none.private_ips.is_empty());
    let (secondaries, recorded, _) = primary_eni_state(&client, &instance, "web").await;
    assert_eq!(secondaries, vec![ip(CNI_POD_IP)]);
    assert_eq!(recorded, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_node_keep_separate_records() {
    let moto = Moto::start();
    let client = moto.client();
    let network = create_network(&client).await;
    let (instance, _, _) = node_with_cni_pod(&client, &network, ROOMY).await;
    let provider = moto.provider();
    let web = provider
        .ensure_private_addresses(&secondary("web", &instance, 2))
        .await
        .unwrap();
    let api = provider
        .ensure_private_addresses(&secondary("api", &instance, 2))
        .await
        .unwrap();
    let web_set: BTreeSet<_> = web.private_ips.iter().collect();
    assert!(api.private_ips.iter().all(|a| !web_set.contains(a)));
    let (secondaries, web_record, _) = primary_eni_state(&client, &instance, "web").await;
    let (_, api_record, _) = primary_eni_state(&client, &instance, "api").await;
    let mut all = web.private_ips.clone();
    all.extend(&api.private_ips);
    assert_eq!(secondaries, with_cni(&all));
    assert_eq!(web_record, Some(record_value(&web.private_ips)));
    assert_eq!(api_record, Some(record_value(&api.private_ips)));
}

/// The VPC CNI took an address between egw's read of the subnet and its assignment (injected:
/// moto never reports an address in use, see `AssignRacesWithCni`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_the_cni_took_meanwhile_is_replaced() {
    let moto = Moto::start();
    let client = moto.client();
    let network = create_network(&client).await;
    let (instance, _, _) = node_with_cni_pod(&client, &network, ROOMY).await;
    let rejected = Arc::new(Mutex::new(Vec::new()));
    let provider = moto.provider_with(AssignRacesWithCni::new(1, rejected.clone()));
    let assigned = provider
        .ensure_private_addresses(&secondary("web", &instance, 2))
        .await
        .unwrap();
    let rejected = rejected.lock().unwrap().clone();
    assert_eq!(rejected.len(), 1, "one assignment was refused");
    assert_eq!(assigned.private_ips.len(), 2);
    assert!(!assigned.private_ips.contains(&rejected[0]));
    let (secondaries, recorded, _) = primary_eni_state(&client, &instance, "web").await;
    assert_eq!(secondaries, with_cni(&assigned.private_ips));
    assert_eq!(
        recorded,
        Some(record_value(&assigned.private_ips)),
        "the refused address is dropped from the record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_ips_converge_after_a_crash_at_every_call() {
    let moto = Moto::start();
    let client = moto.client();
    let network = create_network(&client).await;
    const COUNT: u32 = 3;

    let (instance, _, _) = node_with_cni_pod(&client, &network, ROOMY).await;
    let (record, bodies) = recorder();
    moto.provider_with(record)
        .ensure_private_addresses(&secondary("web", &instance, COUNT))
        .await
        .unwrap();
    let calls = bodies.lock().unwrap().len();
    assert_eq!(
        writes(&bodies),
        [
            "CreateTags",
            "AssignPrivateIpAddresses",
            "AssignPrivateIpAddresses",
            "AssignPrivateIpAddresses",
            "ModifyNetworkInterfaceAttribute",
        ],
        "record, assign each, source/dest check off"
    );

    // k responses arrive, then every response is lost after EC2 acted: a crash after call k.
    for delivered in 1..calls {
        let (instance, _, _) = node_with_cni_pod(&client, &network, ROOMY).await;
        let crashing = moto.provider_with(LoseResponsesAfter {
            delivered,
            seen: Arc::new(AtomicUsize::new(0)),
        });
        let err = crashing
            .ensure_private_addresses(&secondary("web", &instance, COUNT))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "k = {delivered}: {err}");

        let converged = moto
            .provider()
            .ensure_private_addresses(&secondary("web", &instance, COUNT))
            .await
            .unwrap();
        assert_eq!(
            converged.private_ips.len(),
            COUNT as usize,
            "k = {delivered}"
        );
        let (secondaries, recorded, source_dest_check) =
            primary_eni_state(&client, &instance, "web").await;
        assert_eq!(
            secondaries,
            with_cni(&converged.private_ips),
            "k = {delivered}: exactly the CNI's address and egw's {COUNT}"
        );
        assert_eq!(
            recorded,
            Some(record_value(&converged.private_ips)),
            "k = {delivered}"
        );
        assert_eq!(source_dest_check, Some(false), "k = {delivered}");
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "one ENI lifecycle scenario (create, tag, attach, repeat) read top to bottom"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_eni_is_created_tagged_attached_and_idempotent() {
    let moto = Moto::start();
    let client = moto.client();
    let network = create_network(&client).await;
    let instance = run_instance(&client, &network, ROOMY).await;
    let delete_on_termination = MotoDeleteOnTermination::default();
    let (record, bodies) = recorder();
    let provider = moto.provider_with_all([
        SharedInterceptor::new(record),
        SharedInterceptor::new(delete_on_termination.clone()),
    ]);
    let observer = moto.client_with_all([SharedInterceptor::new(delete_on_termination.clone())]);

    let first = provider
        .ensure_private_addresses(&dedicated("web", &instance, 3))
        .await
        .unwrap();
    assert_eq!(first.device_index, 1, "the lowest free device index");
    assert_eq!(first.private_ips.len(), 3);
    let enis = egw_enis(&observer).await;
    assert_eq!(enis.len(), 1);
    let eni = &enis[0];
    assert_eq!(
        eni.network_interface_id(),
        Some(first.network_interface_id.as_str())
    );
    assert_eq!(eni_tag(eni, TAG_OWNER).as_deref(), Some(OWNER_TAG_VALUE));
    assert_eq!(eni_tag(eni, TAG_CLUSTER).as_deref(), Some("prod-eu"));
    assert_eq!(eni_tag(eni, TAG_GATEWAY).as_deref(), Some("web"));
    assert_eq!(
        eni_tag(eni, TAG_INSTANCE).as_deref(),
        Some(instance.as_str())
    );
    assert_eq!(
        eni.subnet_id(),
        Some(network.subnet_id.as_str()),
        "the node's subnet"
    );
    let groups: Vec<&str> = eni.groups().iter().filter_map(|g| g.group_id()).collect();
    assert_eq!(
        groups,
        vec![network.security_group_id.as_str()],
        "the node's groups"
    );
    assert_eq!(eni.source_dest_check(), Some(false));
    let attachment = eni.attachment().unwrap();
    assert_eq!(attachment.instance_id(), Some(instance.as_str()));
    assert_eq!(attachment.device_index(), Some(1));
    assert_eq!(attachment.delete_on_termination(), Some(true));
    assert_eq!(
        delete_on_termination.modified_attachments(),
        vec![attachment.attachment_id().unwrap().to_string()]
    );
    assert_eq!(
        first.private_ips[0],
        ip(eni.private_ip_address().unwrap()),
        "primary first"
    );
    assert_eq!(first.private_ips[1..].to_vec(), secondary_ips(eni));
    let created = bodies
        .lock()
        .unwrap()
        .iter()
        .find(|body| query_param(body, "Action").as_deref() == Some("CreateNetworkInterface"))
        .cloned()
        .unwrap();
    assert_eq!(
        query_param(&created, "TagSpecification.1.ResourceType").as_deref(),
        Some("network-interface"),
        "tagged on create: {created}"
    );
    // moto adds the instance's groups on attach anyway (see the test below), so the request
    // shows that egw asked for the node's groups.
    assert_eq!(
        common::query_list(&created, "SecurityGroupId"),
        vec![network.security_group_id.clone()],
        "{created}"
    );
    assert_eq!(
        query_param(&created, "SubnetId").as_deref(),
        Some(network.subnet_id.as_str())
    );

    bodies.lock().unwrap().clear();
    let again = provider
        .ensure_private_addresses(&dedicated("web", &instance, 3))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(
        writes(&bodies),
        Vec::<String>::new(),
        "no write when in place"
    );

    // Grow, then shrink: the primary and the lowest secondaries stay.
    let grown = provider
        .ensure_private_addresses(&dedicated("web", &instance, 5))
        .await
        .unwrap();
    assert_eq!(grown.private_ips.len(), 5);
    assert_eq!(grown.network_interface_id, first.network_interface_id);
    assert!(first
        .private_ips
        .iter()
        .all(|a| grown.private_ips.contains(a)));
    let shrunk = provider
        .ensure_private_addresses(&dedicated("web", &instance, 2))
        .await
        .unwrap();
    assert_eq!(shrunk.private_ips, grown.private_ips[..2].to_vec());
    let eni = egw_enis(&observer).await.remove(0);
    assert_eq!(secondary_ips(&eni), shrunk.private_ips[1..].to_vec());

    // The instance as the controller sees it.
    let described = provider
        .describe_instance(&instance)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(described.state, InstanceState::Running);
    assert_eq!(described.instance_type, ROOMY);
    assert_eq!(described.interfaces.len(), 2);
    let primary = described.primary_interface().unwrap();
    assert!(!primary.owned_by_egw);
    assert!(
        primary.source_dest_check,
        "the node's own ENI is left alone"
    );
    let egw = &described.interfaces[1];
    assert_eq!(egw.network_interface_id, first.network_interface_id);
    assert_eq!(egw.device_index, Some(1));
    assert!(egw.owned_by_egw);
    assert!(!egw.source_dest_check);
    assert_eq!(egw.primary_private_ip, shrunk.private_ips[0]);
    assert_eq!(egw.secondary_private_ips, shrunk.private_ips[1..].to_vec());
    assert_eq!(
        provider
            .describe_instance("i-0123456789abcdef0")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_eni_goes_where_the_intent_says_next_to_other_gateways() {
    let moto = Moto::start();
    let client = moto.client();
    let network = create_network(&client).await;
    let instance = run_instance(&client, &network, ROOMY).await;
    let (record, bodies) = recorder();
    let provider = moto.provider_with_all([
        SharedInterceptor::new(record),
        SharedInterceptor::new(MotoDeleteOnTermination::default()),
    ]);
    let web = provider
        .ensure_private_addresses(&dedicated("web", &instance, 1))
        .await
        .unwrap();
    assert_eq!(web.private_ips.len(), 1, "the primary alone");
    bodies.lock().unwrap().clear();
    let api = provider
        .ensure_private_addresses(&PrivateAddressIntent {
            mode: InterfaceMode::EniPerGateway {
                subnet_id: Some(network.other_subnet_id.clone()),
                security_group_ids: vec![network.other_security_group_id.clone()],
            },
            ..dedicated("api", &instance, 2)
        })
        .await
        .unwrap();
    assert_eq!(api.device_index, 2);
    let enis = instance_enis(&client, &instance).await;
    assert_eq!(enis.len(), 3);
    let api_eni = &enis[2];
    assert_eq!(
        api_eni.network_interface_id(),
        Some(api.network_interface_id.as_str())
    );
    assert_eq!(api_eni.subnet_id(), Some(network.other_subnet_id.as_str()));
    // moto gap: AttachNetworkInterface adds the instance's security groups to the ENI (EC2
    // leaves an ENI's groups alone), so the groups egw asked for are checked in the request.
    let created = bodies
        .lock()
        .unwrap()
        .iter()
        .find(|body| query_param(body, "Action").as_deref() == Some("CreateNetworkInterface"))
        .cloned()
        .unwrap();
    assert_eq!(
        common::query_list(&created, "SecurityGroupId"),
        vec![network.other_security_group_id.clone()],
        "{created}"
    );
    let groups: Vec<&str> = api_eni
        .groups()
        .iter()
        .filter_map(|g| g.group_id())
        .collect();
    assert!(groups.contains(&network.other_security_group_id.as_str()));
    assert!(
        api.private_ips.iter().all(|a| a.octets()[2] == 2),
        "{api:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_eni_converges_after_a_crash_at_every_call() {
    let moto = Moto::start();
    let client = moto.client();
    let network = create_network(&client).await;
    const COUNT: u32 = 3;
    let delete_on_termination = MotoDeleteOnTermination::default();
    let observer = moto.client_with_all([SharedInterceptor::new(delete_on_termination.clone())]);

    let instance = run_instance(&client, &network, ROOMY).await;
    let (record, bodies) = recorder();
    moto.provider_with_all([
        SharedInterceptor::new(record),
        SharedInterceptor::new(delete_on_termination.clone()),
    ])
    .ensure_private_addresses(&dedicated("web", &instance, COUNT))
    .await
    .unwrap();
    let calls = bodies.lock().unwrap().len();
    assert_eq!(
        writes(&bodies),
        [
            "CreateNetworkInterface",
            "AttachNetworkInterface",
            "ModifyNetworkInterfaceAttribute",
            "ModifyNetworkInterfaceAttribute",
        ],
        "create (tagged, with its secondaries), attach, DeleteOnTermination, source/dest check"
    );

    for delivered in 1..calls {
        let instance = run_instance(&client, &network, ROOMY).await;
        let crashing = moto.provider_with_all([
            SharedInterceptor::new(LoseResponsesAfter {
                delivered,
                seen: Arc::new(AtomicUsize::new(0)),
            }),
            SharedInterceptor::new(delete_on_termination.clone()),
        ]);
        let err = crashing
            .ensure_private_addresses(&dedicated("web", &instance, COUNT))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "k = {delivered}: {err}");

        let converged = moto
            .provider_with(delete_on_termination.clone())
            .ensure_private_addresses(&dedicated("web", &instance, COUNT))
            .await
            .unwrap();
        let for_instance: Vec<_> = egw_enis(&observer)
            .await
            .into_iter()
            .filter(|eni| eni_tag(eni, TAG_INSTANCE).as_deref() == Some(instance.as_str()))
            .collect();
        assert_eq!(for_instance.len(), 1, "k = {delivered}: exactly one ENI");
        let eni = &for_instance[0];
        assert_eq!(
            eni.network_interface_id(),
            Some(converged.network_interface_id.as_str())
        );
        let attachment = eni.attachment().unwrap();
        assert_eq!(
            attachment.instance_id(),
            Some(instance.as_str()),
            "k = {delivered}"
        );
        assert_eq!(attachment.device_index(), Some(1), "k = {delivered}");
        assert_eq!(
            attachment.delete_on_termination(),
            Some(true),
            "k = {delivered}"
        );
        assert_eq!(eni.source_dest_check(), Some(false), "k = {delivered}");
        assert_eq!(
            secondary_ips(eni).len(),
            COUNT as usize - 1,
            "k = {delivered}"
        );
        let mut expected = vec![ip(eni.private_ip_address().unwrap())];
        expected.extend(secondary_ips(eni));
        assert_eq!(converged.private_ips, expected, "k = {delivered}");
        let on_instance = instance_enis(&client, &instance).await;
        assert_eq!(
            on_instance.len(),
            2,
            "k = {delivered}: node ENI and egw's: {on_instance:#?}"
        );
        assert!(secondary_ips(&on_instance[0]).is_empty(), "k = {delivered}");
    }
    let all: Vec<_> = egw_enis(&client).await;
    assert_eq!(all.len(), calls, "one ENI per instance, none leaked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_gateway_eni_is_deleted() {
    let moto = Moto::start();
    let client = moto.client();
    let network = create_network(&client).await;
    let instance = run_instance(&client, &network, ROOMY).await;
    let provider = moto.provider_with(MotoDeleteOnTermination::default());
    let first = provider
        .ensure_private_addresses(&dedicated("web", &instance, 1))
        .await
        .unwrap();
    // A racing replica created a second ENI for the same gateway and instance.
    let mut tags = aws_sdk_ec2::types::TagSpecification::builder()
        .resource_type(aws_sdk_ec2::types::ResourceType::NetworkInterface);
    for (key, value) in [
        (TAG_OWNER, OWNER_TAG_VALUE),
        (TAG_CLUSTER, "prod-eu"),
        (TAG_GATEWAY, "web"),
        (TAG_INSTANCE, instance.as_str()),
    ] {
        tags = tags.tags(
            aws_sdk_ec2::types::Tag::builder()
                .key(key)
                .value(value)
                .build(),
        );
    }
    client
        .create_network_interface()
        .subnet_id(&network.subnet_id)
        .tag_specifications(tags.build())
        .send()
        .await
        .unwrap();
    assert_eq!(egw_enis(&client).await.len(), 2);
    let converged = provider
        .ensure_private_addresses(&dedicated("web", &instance, 1))
        .await
        .unwrap();
    assert_eq!(converged, first, "the attached one is kept");
    let left = egw_enis(&client).await;
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].network_interface_id(),
        Some(first.network_interface_id.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_only_this_gateways_leftovers() {
    let moto = Moto::start();
    let client = moto.client();
    let network = create_network(&client).await;
    let provider = moto.provider_with(MotoDeleteOnTermination::default());
    let (kept, _, _) = node_with_cni_pod(&client, &network, ROOMY).await;
    let (dropped, _, _) = node_with_cni_pod(&client, &network, ROOMY).await;
    let mut web = Vec::new();
    for instance in [&kept, &dropped] {
        web.push(
            provider
                .ensure_private_addresses(&dedicated("web", instance, 2))
                .await
                .unwrap(),
        );
        provider
            .ensure_private_addresses(&secondary("api", instance, 2))
            .await
            .unwrap();
        provider
            .ensure_private_addresses(&dedicated("batch", instance, 1))
            .await
            .unwrap();
        provider
            .ensure_private_addresses(&secondary("search", instance, 1))
            .await
            .unwrap();
    }
    // Not egw's: an ENI attached to the dropped node and one lying around.
    let (foreign_attached, _, _) =
        common::create_eni(&client, &network.subnet_id, "10.0.1.240").await;
    client
        .attach_network_interface()
        .network_interface_id(&foreign_attached)
        .instance_id(&dropped)
        .device_index(3)
        .send()
        .await
        .unwrap();
    let (foreign_loose, _, _) = common::create_eni(&client, &network.subnet_id, "10.0.1.241").await;
    let dropped_api = primary_eni_state(&client, &dropped, "api").await;
    let kept_before = primary_eni_state(&client, &kept, "api").await;

    let pruned = provider
        .prune_private_addresses(&gateway("web"), std::slice::from_ref(&kept))
        .await
        .unwrap();
    assert_eq!(
        pruned.deleted_network_interface_ids,
        vec![web[1].network_interface_id.clone()]
    );
    assert!(pruned.unassigned_private_ips.is_empty());

    let pruned = provider
        .prune_private_addresses(&gateway("api"), std::slice::from_ref(&kept))
        .await
        .unwrap();
    assert!(pruned.deleted_network_interface_ids.is_empty());
    let api_on_dropped: Vec<Ipv4Addr> = dropped_api.1.unwrap().split(',').map(ip).collect();
    assert_eq!(pruned.unassigned_private_ips, api_on_dropped);

    // The dropped node: egw's web ENI and api addresses gone; batch, search, the CNI and the
    // foreign ENI untouched.
    let (secondaries, api_record, _) = primary_eni_state(&client, &dropped, "api").await;
    assert_eq!(api_record, None);
    let expected: Vec<Ipv4Addr> = dropped_api
        .0
        .iter()
        .copied()
        .filter(|a| !api_on_dropped.contains(a))
        .collect();
    assert_eq!(secondaries, expected);
    assert!(secondaries.contains(&ip(CNI_POD_IP)));
    assert!(primary_eni_state(&client, &dropped, "search")
        .await
        .1
        .is_some());
    let dropped_enis: Vec<String> = instance_enis(&client, &dropped)
        .await
        .iter()
        .map(|eni| eni.network_interface_id().unwrap().to_string())
        .collect();
    assert_eq!(
        dropped_enis.len(),
        3,
        "primary, batch, foreign: {dropped_enis:?}"
    );
    assert!(dropped_enis.contains(&foreign_attached));
    // The kept node is untouched.
    assert_eq!(primary_eni_state(&client, &kept, "api").await, kept_before);
    assert_eq!(instance_enis(&client, &kept).await.len(), 3);

    // Idempotent.
    for name in ["web", "api"] {
        assert_eq!(
            provider
                .prune_private_addresses(&gateway(name), std::slice::from_ref(&kept))
                .await
                .unwrap(),
            Default::default()
        );
    }

    // Dropping every node removes the rest of web, and still nothing of the others.
    let pruned = provider
        .prune_private_addresses(&gateway("web"), &[])
        .await
        .unwrap();
    assert_eq!(
        pruned.deleted_network_interface_ids,
        vec![web[0].network_interface_id.clone()]
    );
    let gateways_left: BTreeSet<String> = egw_enis(&client)
        .await
        .iter()
        .map(|eni| eni_tag(eni, TAG_GATEWAY).unwrap())
        .collect();
    assert_eq!(gateways_left, BTreeSet::from(["batch".to_string()]));
    let all: Vec<String> = client
        .describe_network_interfaces()
        .send()
        .await
        .unwrap()
        .network_interfaces()
        .iter()
        .map(|eni| eni.network_interface_id().unwrap().to_string())
        .collect();
    assert!(all.contains(&foreign_attached) && all.contains(&foreign_loose));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_type_limits_are_read_once_and_enforced_before_any_change() {
    let moto = Moto::start();
    let client = moto.client();
    let network = create_network(&client).await;
    let (record, bodies) = recorder();
    let provider = moto.provider_with(record);

    let limits = provider.instance_type_limits(TINY).await.unwrap();
    assert_eq!(
        limits,
        InstanceTypeLimits {
            max_network_interfaces: 2,
            ipv4_addresses_per_interface: 2,
        }
    );
    bodies.lock().unwrap().clear();
    assert_eq!(provider.instance_type_limits(TINY).await.unwrap(), limits);
    assert!(bodies.lock().unwrap().is_empty(), "cached");
    let unknown = provider.instance_type_limits("x9.bogus").await.unwrap_err();
    assert_eq!(unknown.aws_code(), Some("InvalidInstanceType"), "{unknown}");

    // SecondaryIp: the primary address and two more do not fit two per ENI.
    let instance = run_instance(&client, &network, TINY).await;
    let before = instance_enis(&client, &instance).await;
    bodies.lock().unwrap().clear();
    let err = provider
        .ensure_private_addresses(&secondary("web", &instance, 2))
        .await
        .unwrap_err();
    match &err {
        ProviderError::InstanceLimitExceeded {
            instance_id,
            instance_type,
            what,
            wanted,
            limit,
        } => {
            assert_eq!(instance_id, &instance);
            assert_eq!(instance_type, TINY);
            assert_eq!(*what, "IPv4 addresses per network interface");
            assert_eq!((*wanted, *limit), (3, 2));
        }
        other => panic!("expected InstanceLimitExceeded, got {other}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(writes(&bodies), Vec::<String>::new());
    assert_eq!(instance_enis(&client, &instance).await, before);
    // One does fit.
    let one = provider
        .ensure_private_addresses(&secondary("web", &instance, 1))
        .await
        .unwrap();
    assert_eq!(one.private_ips.len(), 1);

    // EniPerGateway: three addresses do not fit one ENI.
    bodies.lock().unwrap().clear();
    let err = provider
        .ensure_private_addresses(&dedicated("big", &instance, 3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::InstanceLimitExceeded {
                what: "IPv4 addresses per network interface",
                wanted: 3,
                limit: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(writes(&bodies), Vec::<String>::new());

    // EniPerGateway: the second (last) ENI slot is taken.
    let (other, _, _) = common::create_eni(&client, &network.subnet_id, "10.0.1.250").await;
    client
        .attach_network_interface()
        .network_interface_id(&other)
        .instance_id(&instance)
        .device_index(1)
        .send()
        .await
        .unwrap();
    bodies.lock().unwrap().clear();
    let err = provider
        .ensure_private_addresses(&dedicated("web", &instance, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::InstanceLimitExceeded {
                what: "network interfaces",
                wanted: 3,
                limit: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(writes(&bodies), Vec::<String>::new());
    assert!(egw_enis(&client).await.is_empty(), "nothing created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_unknown_instances_reported() {
    let moto = Moto::start();
    let client = moto.client();
    let network = create_network(&client).await;
    let instance = run_instance(&client, &network, ROOMY).await;
    let provider = moto.provider_with(FailFirstSends {
        failures: 2,
        seen: Arc::new(AtomicUsize::new(0)),
    });
    let gateway_eni = provider
        .ensure_private_addresses(&dedicated("web", &instance, 2))
        .await
        .unwrap();
    assert_eq!(gateway_eni.private_ips.len(), 2);
    assert_eq!(egw_enis(&client).await.len(), 1);

    let err = moto
        .provider()
        .ensure_private_addresses(&secondary("web", "i-0123456789abcdef0", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_modes_removes_what_the_other_mode_held() {
    let moto = Moto::start();
    let client = moto.client();
    let network = create_network(&client).await;
    let (instance, _, _) = node_with_cni_pod(&client, &network, ROOMY).await;
    let provider = moto.provider_with(MotoDeleteOnTermination::default());
    provider
        .ensure_private_addresses(&secondary("web", &instance, 2))
        .await
        .unwrap();
    provider
        .ensure_private_addresses(&secondary("api", &instance, 1))
        .await
        .unwrap();
    let api_before = primary_eni_state(&client, &instance, "api").await;

    provider
        .ensure_private_addresses(&dedicated("web", &instance, 2))
        .await
        .unwrap();
    let (secondaries, web_record, _) = primary_eni_state(&client, &instance, "web").await;
    assert_eq!(web_record, None, "web's secondary IPs are released");
    let api_ips: Vec<Ipv4Addr> = api_before.1.clone().unwrap().split(',').map(ip).collect();
    assert_eq!(secondaries, with_cni(&api_ips), "api's and the CNI's stay");
    assert_eq!(egw_enis(&client).await.len(), 1);

    let back = provider
        .ensure_private_addresses(&secondary("web", &instance, 1))
        .await
        .unwrap();
    assert!(egw_enis(&client).await.is_empty(), "web's ENI is deleted");
    let (secondaries, web_record, _) = primary_eni_state(&client, &instance, "web").await;
    assert_eq!(web_record, Some(record_value(&back.private_ips)));
    let mut expected = api_ips.clone();
    expected.extend(&back.private_ips);
    assert_eq!(secondaries, with_cni(&expected));
    assert_eq!(instance_enis(&client, &instance).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_converges_after_a_crash_at_every_call() {
    let moto = Moto::start();
    let client = moto.client();
    let network = create_network(&client).await;
    let provider = moto.provider_with(MotoDeleteOnTermination::default());
    // A node holding both what web's SecondaryIp intents left (recorded secondary IPs) and what
    // its EniPerGateway intents left (an ENI). An EniPerGateway ensure releases the record, so
    // the record and its addresses are put back by hand.
    async fn leftover_node(
        client: &aws_sdk_ec2::Client,
        network: &Network,
        provider: &egw_aws::Ec2Provider,
    ) -> String {
        let (instance, primary_id, _) = node_with_cni_pod(client, network, ROOMY).await;
        provider
            .ensure_private_addresses(&secondary("web", &instance, 2))
            .await
            .unwrap();
        let record = instance_enis(client, &instance).await.remove(0);
        let record = eni_tag(&record, &secondary_ips_tag_key(&gateway("web"))).unwrap();
        provider
            .ensure_private_addresses(&dedicated("web", &instance, 2))
            .await
            .unwrap();
        // ensure in EniPerGateway mode released the record; put it (and the addresses) back.
        for address in record.split(',') {
            assign_as_cni(client, &primary_id, address).await;
        }
        client
            .create_tags()
            .resources(&primary_id)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key(secondary_ips_tag_key(&gateway("web")))
                    .value(record)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        instance
    }

    let instance = leftover_node(&client, &network, &provider).await;
    let (record, bodies) = recorder();
    let pruned = moto
        .provider_with_all([
            SharedInterceptor::new(record),
            SharedInterceptor::new(MotoDeleteOnTermination::default()),
        ])
        .prune_private_addresses(&gateway("web"), &[])
        .await
        .unwrap();
    assert_eq!(pruned.deleted_network_interface_ids.len(), 1);
    assert_eq!(pruned.unassigned_private_ips.len(), 2);
    assert_eq!(
        writes(&bodies),
        [
            "DetachNetworkInterface",
            "DeleteNetworkInterface",
            "UnassignPrivateIpAddresses",
            "DeleteTags",
        ]
    );
    let calls = bodies.lock().unwrap().len();
    let (secondaries, recorded, _) = primary_eni_state(&client, &instance, "web").await;
    assert_eq!((secondaries, recorded), (vec![ip(CNI_POD_IP)], None));

    for delivered in 1..calls {
        let instance = leftover_node(&client, &network, &provider).await;
        let crashing = moto.provider_with(LoseResponsesAfter {
            delivered,
            seen: Arc::new(AtomicUsize::new(0)),
        });
        let err = crashing
            .prune_private_addresses(&gateway("web"), &[])
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "k = {delivered}: {err}");
        moto.provider()
            .prune_private_addresses(&gateway("web"), &[])
            .await
            .unwrap();
        assert!(egw_enis(&client).await.is_empty(), "k = {delivered}");
        let (secondaries, recorded, _) = primary_eni_state(&client, &instance, "web").await;
        assert_eq!(
            (secondaries, recorded),
            (vec![ip(CNI_POD_IP)], None),
            "k = {delivered}: only the CNI's address is left"
        );
        assert_eq!(instance_enis(&client, &instance).await.len(), 1);
    }
}
