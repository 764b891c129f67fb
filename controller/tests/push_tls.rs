//! Pushing over TCP with mutual TLS (`https://` endpoints): certificates made with rcgen, a real
//! tonic gateway on 127.0.0.1 that requires a client certificate from its CA.

mod support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use egw_controller::endpoint::{ClientTls, ClientTlsFiles};
use egw_controller::metrics::Metrics;
use egw_controller::push::{GatewayPusher, PushOptions};
use egw_controller::translate::{InstanceKey, InstanceTable};
use egw_policy::{ActionSpec, PoolSpec, RouteTableSpec};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use support::{wait_until, TestGateway};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A leaf certificate and key (PEM) for `names`, signed by `ca`.
fn leaf(ca: &Ca, names: &[&str]) -> (String, String) {
    let params = CertificateParams::new(
        names
            .iter()
            .map(|name| (*name).to_owned())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn client_tls(dir: &Path, ca_pem: &str, client: &(String, String)) -> Arc<ClientTls> {
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
    std::fs::write(dir.join("client.pem"), &client.0).unwrap();
    std::fs::write(dir.join("client.key"), &client.1).unwrap();
    Arc::new(
        ClientTls::load(&ClientTlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("client.pem"),
            key: dir.join("client.key"),
            server_name: None,
        })
        .unwrap(),
    )
}

fn tables(endpoint: String) -> BTreeMap<InstanceKey, InstanceTable> {
    let spec = RouteTableSpec {
        public_addresses: Default::default(),
        generation: 0,
        pools: vec![PoolSpec {
            name: "gw-0".into(),
            addresses: vec![Ipv4Addr::new(192, 0, 2, 10)],
            pairing: true,
        }],
        policies: Vec::new(),
        sources: Vec::new(),
        default_action: ActionSpec::Deny {
            reason: "no clients yet".into(),
        },
    };
    BTreeMap::from([(
        InstanceKey {
            gateway: "lab".into(),
            instance: "gw-0".into(),
        },
        InstanceTable {
            endpoint: Some(endpoint),
            spec,
        },
    )])
}

fn options(tls: Arc<ClientTls>) -> PushOptions {
    PushOptions {
        poll_interval: Duration::from_millis(50),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        tls: Some(tls),
    }
}

#[tokio::test]
async fn pushes_over_mutual_tls_and_is_refused_with_a_foreign_client_certificate() {
    let gateway_ca = ca("gateway CA");
    let server = leaf(&gateway_ca, &["127.0.0.1", "localhost"]);
    let server_tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&server.0, &server.1))
        .client_ca_root(Certificate::from_pem(&gateway_ca.pem));
    let gateway = TestGateway::start_tls(server_tls, 1).await;
    let dir = tempfile::tempdir().unwrap();

    // A client certificate from another CA: the handshake fails, nothing is applied.
    let stranger = ca("someone else");
    let foreign = client_tls(
        dir.path(),
        &gateway_ca.pem,
        &leaf(&stranger, &["controller"]),
    );
    let mut pusher = GatewayPusher::new(options(foreign), Metrics::new());
    pusher.update(&tables(gateway.https_endpoint()));
    let key = tables(String::new()).into_keys().next().unwrap();
    let mut states = pusher.subscribe(&key).unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while states.borrow_and_update().last_error.is_none() {
            states.changed().await.unwrap();
        }
    })
    .await
    .expect("the refused handshake is reported");
    assert!(!states.borrow().reachable);
    assert!(gateway.calls().is_empty());
    drop(pusher);

    // The controller's certificate from the gateway CA: pushed.
    let trusted = client_tls(
        dir.path(),
        &gateway_ca.pem,
        &leaf(&gateway_ca, &["controller"]),
    );
    let mut pusher = GatewayPusher::new(options(trusted), Metrics::new());
    pusher.update(&tables(gateway.https_endpoint()));
    let table = gateway.wait_for_table("push over mTLS", |_| true).await;
    assert_eq!(table.generation, 1);
    assert_eq!(table.pools[0].addresses[0].snat_ip, "192.0.2.10");
    wait_until("in sync", || {
        pusher
            .states()
            .values()
            .next()
            .filter(|state| state.in_sync)
            .cloned()
    })
    .await;
}
