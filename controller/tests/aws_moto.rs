//! The AWS manager with the real `Ec2Provider` (aws-sdk-ec2) for the Elastic IP part, against a
//! moto server on 127.0.0.1: allocation, association to real ENI private IPs, failover by
//! reassociation, and release on cleanup. Instances, ENI bookkeeping and routes come from the
//! in-memory provider, whose ENIs and private IPs are real moto ENIs.
//!
//! moto (5.x) keeps Elastic IP associations per ENI: it ignores `PrivateIpAddress` and reports
//! the ENI's primary IP, so associations are compared by ENI here (the private IP sent is
//! checked by egw-aws's own request-body test).

mod fake_aws;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use egw_aws::testing::{all_allocation_ids, create_subnet, Moto};
use egw_aws::{
    AddressProvider, AssociationTarget, Ec2Provider, GatewayAddressIntent, GatewayInterface,
    GatewayRef, InstanceDescription, InstanceTypeLimits, InterfaceProvider, ManagedAddress,
    PrivateAddressIntent, ProviderError, PrunedInterfaces, RouteIntent, RouteProvider, RouteState,
};
use egw_controller::aws::{AwsGatewayInput, AwsManager, AwsOptions, GatewayPod};
use egw_controller::crd::{AwsPool, ElasticIpSource, EniMode};
use egw_controller::metrics::Metrics;
use fake_aws::FakeAws;
use k8s_openapi::jiff::Timestamp;

/// Elastic IPs from EC2 (moto), everything else from the in-memory provider.
struct MotoEips {
    ec2: Ec2Provider,
    rest: FakeAws,
}

impl AddressProvider for MotoEips {
    async fn ensure_addresses(
        &self,
        intent: &GatewayAddressIntent,
    ) -> Result<Vec<ManagedAddress>, ProviderError> {
        self.ec2.ensure_addresses(intent).await
    }

    async fn associate(
        &self,
        address: &ManagedAddress,
        target: &AssociationTarget,
    ) -> Result<ManagedAddress, ProviderError> {
        self.ec2.associate(address, target).await
    }

    async fn disassociate(&self, address: &ManagedAddress) -> Result<(), ProviderError> {
        self.ec2.disassociate(address).await
    }

    async fn release_owned(&self, gateway: &GatewayRef) -> Result<Vec<String>, ProviderError> {
        self.ec2.release_owned(gateway).await
    }
}

impl InterfaceProvider for MotoEips {
    async fn describe_instance(
        &self,
        instance_id: &str,
    ) -> Result<Option<InstanceDescription>, ProviderError> {
        self.rest.describe_instance(instance_id).await
    }

    async fn instance_type_limits(
        &self,
        instance_type: &str,
    ) -> Result<InstanceTypeLimits, ProviderError> {
        self.rest.instance_type_limits(instance_type).await
    }

    async fn ensure_private_addresses(
        &self,
        intent: &PrivateAddressIntent,
    ) -> Result<GatewayInterface, ProviderError> {
        self.rest.ensure_private_addresses(intent).await
    }

    async fn prune_private_addresses(
        &self,
        gateway: &GatewayRef,
        keep_instance_ids: &[String],
    ) -> Result<PrunedInterfaces, ProviderError> {
        self.rest
            .prune_private_addresses(gateway, keep_instance_ids)
            .await
    }
}

impl RouteProvider for MotoEips {
    async fn ensure_routes(&self, intent: &RouteIntent) -> Result<Vec<RouteState>, ProviderError> {
        self.rest.ensure_routes(intent).await
    }

    async fn release_routes(
        &self,
        gateway: &GatewayRef,
        keep: &[(String, String)],
    ) -> Result<Vec<RouteState>, ProviderError> {
        self.rest.release_routes(gateway, keep).await
    }
}

/// A moto ENI with a primary and two secondary private IPs: (ENI ID, primary, secondaries).
async fn eni(moto: &Moto, subnet_id: &str, primary: &str) -> (String, Ipv4Addr, Vec<Ipv4Addr>) {
    let eni = moto
        .client()
        .create_network_interface()
        .subnet_id(subnet_id)
        .private_ip_address(primary)
        .secondary_private_ip_address_count(2)
        .send()
        .await
        .unwrap()
        .network_interface
        .unwrap();
    let mut secondaries: Vec<Ipv4Addr> = eni
        .private_ip_addresses()
        .iter()
        .filter(|address| address.primary() != Some(true))
        .map(|address| address.private_ip_address().unwrap().parse().unwrap())
        .collect();
    secondaries.sort();
    assert_eq!(secondaries.len(), 2);
    (
        eni.network_interface_id.unwrap(),
        primary.parse().unwrap(),
        secondaries,
    )
}

/// (allocation ID, ENI) of every associated address in moto, sorted.
async fn moto_associations(moto: &Moto) -> Vec<(String, String)> {
    let mut associations: Vec<(String, String)> = moto
        .client()
        .describe_addresses()
        .send()
        .await
        .unwrap()
        .addresses
        .unwrap_or_default()
        .iter()
        .filter_map(|address| {
            Some((
                address.allocation_id()?.to_owned(),
                address.network_interface_id()?.to_owned(),
            ))
        })
        .collect();
    associations.sort();
    associations
}

fn gateway_pod(name: &str, index: u8, ready: bool) -> GatewayPod {
    GatewayPod {
        name: name.to_owned(),
        node: Some(format!("node-{index}")),
        endpoint: Some(format!("10.0.1.{index}:7443")),
        ready,
        terminating: false,
        instance_id: Ok(format!("i-000000000000000{index}a")),
    }
}

#[tokio::test]
async fn elastic_ips_are_allocated_associated_failed_over_and_released_on_ec2() {
    let moto = Moto::start();
    let client = moto.client();
    let subnet = create_subnet(&client).await;
    let (eni_a, primary_a, secondaries_a) = eni(&moto, &subnet, "10.0.1.10").await;
    let (eni_b, primary_b, secondaries_b) = eni(&moto, &subnet, "10.0.1.20").await;
    let fake = FakeAws::new();
    fake.add_instance_on(
        "i-0000000000000001a",
        &eni_a,
        primary_a,
        secondaries_a.clone(),
    );
    fake.add_instance_on(
        "i-0000000000000002a",
        &eni_b,
        primary_b,
        secondaries_b.clone(),
    );
    let mut manager = AwsManager::new(
        MotoEips {
            ec2: moto.provider(),
            rest: fake.clone(),
        },
        AwsOptions::new("moto-cluster".to_owned()),
        Metrics::new(),
    );
    let mut gateway = AwsGatewayInput {
        name: "egress".to_owned(),
        generation: Some(1),
        pool: AwsPool {
            elastic_ips: ElasticIpSource {
                allocation_ids: None,
                tags: None,
                allocate: Some(2),
            },
            eni_mode: EniMode::SecondaryIp,
            subnet_id: None,
            security_group_ids: Vec::new(),
            routes: None,
        },
        pods: vec![gateway_pod("gw-a", 1, true), gateway_pod("gw-b", 2, true)],
        drain: Duration::ZERO,
        stored_routes: Vec::new(),
        stored_failovers: Vec::new(),
    };
    let wall: Timestamp = "2026-11-21T06:00:00Z".parse().unwrap();
    let start = Instant::now();
    let outcome = manager.reconcile_gateway(&gateway, start, wall).await;
    assert_eq!(outcome.problem, None, "{outcome:#?}");
    let allocations = all_allocation_ids(&client).await;
    assert_eq!(allocations.len(), 2);
    // One address per instance, on the first secondary IP of its ENI, as EC2 reports it.
    let expected: Vec<(String, String, Ipv4Addr)> = outcome
        .instances
        .iter()
        .flat_map(|instance| {
            let eni = instance.network_interface_id.clone().unwrap();
            instance.addresses.iter().map(move |address| {
                assert!(address.ready);
                (
                    address.allocation_id.clone().unwrap(),
                    eni.clone(),
                    address.snat_ip,
                )
            })
        })
        .collect();
    let mut expected_sorted: Vec<(String, String)> = expected
        .iter()
        .map(|(id, eni, _)| (id.clone(), eni.clone()))
        .collect();
    expected_sorted.sort();
    assert_eq!(moto_associations(&moto).await, expected_sorted);
    assert_eq!(expected.len(), 2);
    assert_eq!(expected[0].1, eni_a);
    assert_eq!(expected[0].2, secondaries_a[0]);
    assert_eq!(expected[1].1, eni_b);
    assert_eq!(expected[1].2, secondaries_b[0]);

    // gw-a fails: its address is reassociated (egw owns it) to gw-b's second private IP.
    gateway.pods[0].ready = false;
    let outcome = manager
        .reconcile_gateway(&gateway, start + Duration::from_secs(1), wall)
        .await;
    assert_eq!(outcome.problem, None, "{outcome:#?}");
    assert_eq!(outcome.new_failovers.len(), 1);
    assert_eq!(outcome.new_failovers[0].allocation_id, expected[0].0);
    let associations = moto_associations(&moto).await;
    assert_eq!(associations.len(), 2);
    assert!(associations.iter().all(|(_, eni)| *eni == eni_b));
    let b = outcome
        .instances
        .iter()
        .find(|instance| instance.name == "gw-b")
        .unwrap();
    let mut on_b: Vec<Ipv4Addr> = b.addresses.iter().map(|address| address.snat_ip).collect();
    on_b.sort();
    assert_eq!(on_b, secondaries_b);
    assert!(b.addresses.iter().all(|address| address.ready));

    // The gateway is deleted: egw's addresses are released in EC2.
    let released = manager.cleanup("egress", false).await.unwrap();
    assert_eq!(released.released_allocations.len(), 2);
    assert!(all_allocation_ids(&client).await.is_empty());
}
