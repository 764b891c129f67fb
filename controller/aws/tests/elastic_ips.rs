//! Elastic IP lifecycle against moto server (a real EC2 API emulator) with the real SDK.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{
    all_allocation_ids, allocate_foreign, create_eni, create_subnet, describe_egw_owned,
    AllocationQuotaReached, FailFirstSends, LoseResponsesAfter, Moto, RecordRequests,
};
use egw_aws::{
    AddressProvider, AddressSource, AssociationTarget, GatewayAddressIntent, GatewayRef,
    ProviderError, OWNER_TAG_VALUE, TAG_CLUSTER, TAG_GATEWAY, TAG_OWNER, TAG_SLOT,
};

fn gateway(name: &str) -> GatewayRef {
    GatewayRef {
        cluster: "prod-eu".into(),
        gateway: name.into(),
    }
}

fn allocate(name: &str, count: u32) -> GatewayAddressIntent {
    GatewayAddressIntent {
        gateway: gateway(name),
        source: AddressSource::Allocate { count },
    }
}

fn tags_of(address: &aws_sdk_ec2::types::Address) -> BTreeMap<String, String> {
    address
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocates_exactly_n_tagged_addresses_idempotently() {
    let moto = Moto::start();
    let provider = moto.provider();
    let first = provider
        .ensure_addresses(&allocate("web", 3))
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    assert!(first
        .iter()
        .all(|a| a.owned_by_egw && a.association.is_none()));
    assert_eq!(
        first.iter().map(|a| a.slot.unwrap()).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(
        first
            .iter()
            .map(|a| a.public_ip)
            .collect::<BTreeSet<_>>()
            .len(),
        3
    );

    let on_ec2 = describe_egw_owned(&moto.client()).await;
    assert_eq!(on_ec2.len(), 3);
    for address in &on_ec2 {
        let tags = tags_of(address);
        assert_eq!(tags[TAG_CLUSTER], "prod-eu");
        assert_eq!(tags[TAG_GATEWAY], "web");
        assert_eq!(tags[TAG_OWNER], OWNER_TAG_VALUE);
        assert!(tags.contains_key(TAG_SLOT));
    }

    let second = moto
        .provider()
        .ensure_addresses(&allocate("web", 3))
        .await
        .unwrap();
    assert_eq!(
        second, first,
        "a second ensure must return the same addresses"
    );
    assert_eq!(
        all_allocation_ids(&moto.client()).await.len(),
        3,
        "nothing new allocated"
    );

    // Growing allocates only the new slot; shrinking releases the highest slots.
    let grown = provider
        .ensure_addresses(&allocate("web", 4))
        .await
        .unwrap();
    assert_eq!(&grown[..3], &first[..]);
    assert_eq!(all_allocation_ids(&moto.client()).await.len(), 4);
    let shrunk = provider
        .ensure_addresses(&allocate("web", 2))
        .await
        .unwrap();
    assert_eq!(&shrunk[..], &first[..2]);
    let mut kept: Vec<String> = first[..2].iter().map(|a| a.allocation_id.clone()).collect();
    kept.sort();
    assert_eq!(all_allocation_ids(&moto.client()).await, kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_by_allocation_id_and_by_tag_without_owning() {
    let moto = Moto::start();
    let client = moto.client();
    let by_id = allocate_foreign(&client, &[]).await;
    let tagged_a = allocate_foreign(&client, &[("team", "payments")]).await;
    let tagged_b = allocate_foreign(&client, &[("team", "payments"), ("env", "prod")]).await;
    let _other = allocate_foreign(&client, &[("team", "search")]).await;
    let provider = moto.provider();

    let adopted = provider
        .ensure_addresses(&GatewayAddressIntent {
            gateway: gateway("pay"),
            source: AddressSource::AllocationIds(vec![by_id.clone()]),
        })
        .await
        .unwrap();
    assert_eq!(adopted.len(), 1);
    assert_eq!(adopted[0].allocation_id, by_id);
    assert!(!adopted[0].owned_by_egw);

    let adopted = provider
        .ensure_addresses(&GatewayAddressIntent {
            gateway: gateway("pay"),
            source: AddressSource::Tags(BTreeMap::from([("team".into(), "payments".into())])),
        })
        .await
        .unwrap();
    let mut expected = vec![tagged_a, tagged_b];
    expected.sort();
    assert_eq!(
        adopted
            .iter()
            .map(|a| a.allocation_id.clone())
            .collect::<Vec<_>>(),
        expected
    );
    assert!(adopted.iter().all(|a| !a.owned_by_egw));

    let missing = provider
        .ensure_addresses(&GatewayAddressIntent {
            gateway: gateway("pay"),
            source: AddressSource::AllocationIds(vec![by_id, "eipalloc-0123456789abcdef0".into()]),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ProviderError::NotFound { .. }),
        "{missing}"
    );

    let none = provider
        .ensure_addresses(&GatewayAddressIntent {
            gateway: gateway("pay"),
            source: AddressSource::Tags(BTreeMap::from([("team".into(), "nobody".into())])),
        })
        .await
        .unwrap_err();
    assert!(matches!(none, ProviderError::NotFound { .. }), "{none}");

    let everything = provider
        .ensure_addresses(&GatewayAddressIntent {
            gateway: gateway("pay"),
            source: AddressSource::Tags(BTreeMap::new()),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(everything, ProviderError::InvalidIntent(_)),
        "{everything}"
    );
    assert_eq!(
        all_allocation_ids(&client).await.len(),
        4,
        "adoption allocates nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn associates_with_a_private_ip_of_an_eni() {
    let moto = Moto::start();
    let client = moto.client();
    let subnet = create_subnet(&client).await;
    let (eni_a, primary_a, _) = create_eni(&client, &subnet, "10.0.1.10").await;
    let (eni_b, primary_b, _) = create_eni(&client, &subnet, "10.0.1.11").await;
    let provider = moto.provider();
    let owned = provider
        .ensure_addresses(&allocate("web", 1))
        .await
        .unwrap()
        .remove(0);
    let on_a = AssociationTarget {
        network_interface_id: eni_a.clone(),
        private_ip: primary_a,
    };

    let associated = provider.associate(&owned, &on_a).await.unwrap();
    let association = associated.association.clone().unwrap();
    assert_eq!(
        association.network_interface_id.as_deref(),
        Some(eni_a.as_str())
    );
    assert_eq!(association.private_ip, Some(primary_a));

    let described = provider
        .ensure_addresses(&allocate("web", 1))
        .await
        .unwrap()
        .remove(0);
    let seen = described.association.clone().unwrap();
    assert_eq!(seen.association_id, association.association_id);
    assert_eq!(seen.network_interface_id.as_deref(), Some(eni_a.as_str()));
    assert_eq!(seen.private_ip, Some(primary_a));
    assert_eq!(seen.instance_id, None, "an ENI without an instance");

    let again = provider.associate(&described, &on_a).await.unwrap();
    assert_eq!(
        again.association.unwrap().association_id,
        association.association_id,
        "associating where it already is changes nothing"
    );

    // egw moves its own address (AllowReassociation).
    let on_b = AssociationTarget {
        network_interface_id: eni_b.clone(),
        private_ip: primary_b,
    };
    let moved = provider.associate(&described, &on_b).await.unwrap();
    assert_eq!(
        moved.association.unwrap().network_interface_id.as_deref(),
        Some(eni_b.as_str())
    );

    // An adopted address in use elsewhere is never taken.
    let foreign = allocate_foreign(&client, &[]).await;
    let adopted = provider
        .ensure_addresses(&GatewayAddressIntent {
            gateway: gateway("web"),
            source: AddressSource::AllocationIds(vec![foreign.clone()]),
        })
        .await
        .unwrap()
        .remove(0);
    provider.associate(&adopted, &on_a).await.unwrap();
    let refused = provider.associate(&adopted, &on_b).await.unwrap_err();
    match &refused {
        ProviderError::Permanent { code, .. } => assert_eq!(code, "Resource.AlreadyAssociated"),
        other => panic!("expected a permanent error, got {other}"),
    }

    let current = provider
        .ensure_addresses(&allocate("web", 1))
        .await
        .unwrap()
        .remove(0);
    provider.disassociate(&current).await.unwrap();
    let after = provider
        .ensure_addresses(&allocate("web", 1))
        .await
        .unwrap()
        .remove(0);
    assert!(after.association.is_none());
    provider.disassociate(&after).await.unwrap();
}

/// moto gap: AssociateAddress with a secondary PrivateIpAddress is recorded against the ENI's
/// primary IP, so DescribeAddresses cannot show it. The request egw sends is checked instead,
/// recorded by an interceptor on the real client as it goes out to moto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn associating_with_a_secondary_ip_sends_it() {
    let moto = Moto::start();
    let client = moto.client();
    let subnet = create_subnet(&client).await;
    let (eni, _, secondary) = create_eni(&client, &subnet, "10.0.1.30").await;
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let provider = moto.provider_with(RecordRequests {
        bodies: recorded.clone(),
    });
    let owned = provider
        .ensure_addresses(&allocate("web", 1))
        .await
        .unwrap()
        .remove(0);
    provider
        .associate(
            &owned,
            &AssociationTarget {
                network_interface_id: eni.clone(),
                private_ip: secondary,
            },
        )
        .await
        .unwrap();
    let bodies = recorded.lock().unwrap();
    let associate = bodies
        .iter()
        .find(|body| body.contains("Action=AssociateAddress"))
        .expect("an AssociateAddress request");
    assert!(
        associate.contains(&format!("AllocationId={}", owned.allocation_id)),
        "{associate}"
    );
    assert!(
        associate.contains(&format!("NetworkInterfaceId={eni}")),
        "{associate}"
    );
    assert!(
        associate.contains(&format!("PrivateIpAddress={secondary}")),
        "{associate}"
    );
    assert!(associate.contains("AllowReassociation=true"), "{associate}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried() {
    let moto = Moto::start();
    let seen = Arc::new(AtomicUsize::new(0));
    let provider = moto.provider_with(FailFirstSends {
        failures: 2,
        seen: seen.clone(),
    });
    let addresses = provider
        .ensure_addresses(&allocate("web", 2))
        .await
        .unwrap();
    assert_eq!(addresses.len(), 2);
    assert!(
        seen.load(Ordering::SeqCst) >= 2 + 3,
        "two failed sends then describe + 2 allocations"
    );
    assert_eq!(describe_egw_owned(&moto.client()).await.len(), 2);

    let always_failing = moto.provider_with(FailFirstSends {
        failures: usize::MAX,
        seen: Arc::new(AtomicUsize::new(0)),
    });
    let err = always_failing
        .ensure_addresses(&allocate("web", 2))
        .await
        .unwrap_err();
    match err {
        ProviderError::Retryable { attempts, .. } => {
            assert_eq!(attempts, common::fast_retries().max_attempts)
        }
        other => panic!("expected a retryable error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_in_the_middle_converges_without_leaks_or_duplicates() {
    let moto = Moto::start();
    let client = moto.client();
    const N: u32 = 3;
    // k responses arrive, then every response is lost after EC2 acted on the request: for k = 2
    // the second AllocateAddress happened but the controller never learnt its ID.
    for delivered in 1..=N as usize {
        let name = format!("crash-{delivered}");
        let crashing = moto.provider_with(LoseResponsesAfter {
            delivered,
            seen: Arc::new(AtomicUsize::new(0)),
        });
        let err = crashing
            .ensure_addresses(&allocate(&name, N))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");

        let fresh = moto
            .provider()
            .ensure_addresses(&allocate(&name, N))
            .await
            .unwrap();
        assert_eq!(fresh.len(), N as usize);
        let on_ec2: Vec<_> = describe_egw_owned(&client)
            .await
            .into_iter()
            .filter(|a| tags_of(a)[TAG_GATEWAY] == name)
            .collect();
        assert_eq!(
            on_ec2.len(),
            N as usize,
            "exactly N tagged addresses after k = {delivered}"
        );
        let slots: BTreeSet<String> = on_ec2
            .iter()
            .map(|a| tags_of(a)[TAG_SLOT].clone())
            .collect();
        assert_eq!(slots.len(), N as usize, "no duplicate slots");
        let ids: BTreeSet<&str> = on_ec2.iter().map(|a| a.allocation_id().unwrap()).collect();
        assert_eq!(
            ids,
            fresh.iter().map(|a| a.allocation_id.as_str()).collect()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_slot_is_released() {
    let moto = Moto::start();
    let client = moto.client();
    let provider = moto.provider();
    let first = provider
        .ensure_addresses(&allocate("web", 2))
        .await
        .unwrap();
    // A second controller replica racing this one allocated slot 1 again.
    let duplicate = allocate_foreign(
        &client,
        &[
            (TAG_CLUSTER, "prod-eu"),
            (TAG_GATEWAY, "web"),
            (TAG_OWNER, OWNER_TAG_VALUE),
            (TAG_SLOT, "1"),
        ],
    )
    .await;
    let keep = std::cmp::min(first[1].allocation_id.clone(), duplicate.clone());
    let converged = provider
        .ensure_addresses(&allocate("web", 2))
        .await
        .unwrap();
    assert_eq!(converged[0], first[0]);
    assert_eq!(
        converged[1].allocation_id, keep,
        "the lowest allocation ID of a slot is kept"
    );
    assert_eq!(describe_egw_owned(&client).await.len(), 2);

    // Of duplicates, the associated one is kept even when its ID is not the lowest.
    let subnet = create_subnet(&client).await;
    let (eni, private_ip, _) = create_eni(&client, &subnet, "10.0.1.40").await;
    let racing = allocate_foreign(
        &client,
        &[
            (TAG_CLUSTER, "prod-eu"),
            (TAG_GATEWAY, "web"),
            (TAG_OWNER, OWNER_TAG_VALUE),
            (TAG_SLOT, "0"),
        ],
    )
    .await;
    let in_use = std::cmp::max(first[0].allocation_id.clone(), racing.clone());
    let in_use_address = egw_aws::ManagedAddress {
        allocation_id: in_use.clone(),
        ..first[0].clone()
    };
    provider
        .associate(
            &in_use_address,
            &AssociationTarget {
                network_interface_id: eni,
                private_ip,
            },
        )
        .await
        .unwrap();
    let converged = provider
        .ensure_addresses(&allocate("web", 2))
        .await
        .unwrap();
    assert_eq!(converged[0].allocation_id, in_use);
    assert!(converged[0].association.is_some());
    assert_eq!(describe_egw_owned(&client).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_deletes_only_what_egw_allocated() {
    let moto = Moto::start();
    let client = moto.client();
    let subnet = create_subnet(&client).await;
    let (eni, private_ip, _) = create_eni(&client, &subnet, "10.0.1.20").await;
    let provider = moto.provider();

    let adopted_by_id = allocate_foreign(&client, &[]).await;
    // Tagged like egw but for another cluster: not ours.
    let other_cluster = allocate_foreign(
        &client,
        &[
            (TAG_CLUSTER, "prod-us"),
            (TAG_GATEWAY, "web"),
            (TAG_OWNER, OWNER_TAG_VALUE),
            (TAG_SLOT, "0"),
        ],
    )
    .await;
    let other_gateway = provider
        .ensure_addresses(&allocate("batch", 1))
        .await
        .unwrap();
    let owned = provider
        .ensure_addresses(&allocate("web", 2))
        .await
        .unwrap();
    let adopted = provider
        .ensure_addresses(&GatewayAddressIntent {
            gateway: gateway("web"),
            source: AddressSource::AllocationIds(vec![adopted_by_id.clone()]),
        })
        .await
        .unwrap();
    provider
        .associate(
            &owned[0],
            &AssociationTarget {
                network_interface_id: eni.clone(),
                private_ip,
            },
        )
        .await
        .unwrap();
    let (other_eni, other_ip, _) = create_eni(&client, &subnet, "10.0.1.21").await;
    let adopted_association = provider
        .associate(
            &adopted[0],
            &AssociationTarget {
                network_interface_id: other_eni.clone(),
                private_ip: other_ip,
            },
        )
        .await
        .unwrap()
        .association
        .unwrap();

    let mut released = provider.release_owned(&gateway("web")).await.unwrap();
    released.sort();
    let mut expected: Vec<String> = owned.iter().map(|a| a.allocation_id.clone()).collect();
    expected.sort();
    assert_eq!(released, expected);

    let mut left = vec![
        adopted_by_id,
        other_cluster,
        other_gateway[0].allocation_id.clone(),
    ];
    left.sort();
    assert_eq!(all_allocation_ids(&client).await, left);
    assert!(!adopted[0].owned_by_egw);
    let still = client
        .describe_addresses()
        .allocation_ids(&adopted[0].allocation_id)
        .send()
        .await
        .unwrap()
        .addresses
        .unwrap();
    assert_eq!(
        still[0].association_id(),
        Some(adopted_association.association_id.as_str()),
        "an adopted address keeps its association"
    );

    assert_eq!(
        provider.release_owned(&gateway("web")).await.unwrap(),
        Vec::<String>::new(),
        "releasing again is a no-op"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_quota_is_reported_as_limit_exceeded() {
    let moto = Moto::start();
    let provider = moto.provider_with(AllocationQuotaReached::default());
    let err = provider
        .ensure_addresses(&allocate("web", 1))
        .await
        .unwrap_err();
    match &err {
        ProviderError::LimitExceeded {
            operation,
            code,
            message,
        } => {
            assert_eq!(*operation, "AllocateAddress");
            assert_eq!(code, "AddressLimitExceeded");
            assert_eq!(message, "The maximum number of addresses has been reached.");
        }
        other => panic!("expected LimitExceeded, got {other}"),
    }
    assert!(!err.is_retryable());
}
