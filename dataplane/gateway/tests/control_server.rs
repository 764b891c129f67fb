//! The control server against real tonic clients, on a Unix socket in a
//! temporary directory and on 127.0.0.1 with mutual TLS.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egw_gateway::control::{
    BackendError, BoundControlServer, ControlBackend, ControlError, ControlServerConfig,
    FlowCursor, FlowPage, FlowQuery, MtlsConfig, TcpListenerConfig, UnixSocketConfig,
};
use egw_proto::v1;
use egw_proto::v1::gateway_client::GatewayClient;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};
use tonic::Code;

// ---------------------------------------------------------------------------
// Test backend
// ---------------------------------------------------------------------------

const EPOCH: u64 = 0x5eed_0001;
const DRAINABLE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// A small in-memory gateway: validates tables the way a real one must
/// (pool and policy references), lists a fixed set of flows by index.
struct TestBackend {
    applied: Mutex<Vec<v1::RouteTable>>,
    flows: Vec<v1::Flow>,
    draining: Mutex<bool>,
    snapshots_taken: AtomicU64,
    initial: Option<v1::RouteTable>,
}

impl TestBackend {
    fn new(flow_count: usize) -> Self {
        TestBackend {
            applied: Mutex::new(Vec::new()),
            flows: (0..flow_count).map(test_flow).collect(),
            draining: Mutex::new(false),
            snapshots_taken: AtomicU64::new(0),
            initial: None,
        }
    }

    fn applied_generations(&self) -> Vec<u64> {
        self.applied
            .lock()
            .unwrap()
            .iter()
            .map(|table| table.generation)
            .collect()
    }
}

fn test_flow(index: usize) -> v1::Flow {
    let index = u32::try_from(index).unwrap();
    v1::Flow {
        protocol: if index % 3 == 0 {
            v1::Protocol::Udp
        } else {
            v1::Protocol::Tcp
        } as i32,
        pod_ip: Ipv4Addr::from(0x0af4_0000 + index % 50).to_string(),
        pod_port: 40_000 + index % 1000,
        external_ip: DRAINABLE_IP.to_string(),
        external_port: 1024 + index,
        remote_ip: Ipv4Addr::from(0xcb00_7100 + index % 256).to_string(),
        remote_port: 443,
        state: v1::FlowState::Established as i32,
        core: index % 4,
        age_seconds: u64::from(index),
        idle_seconds: 1,
        packets_out: 10,
        bytes_out: 1000,
        packets_in: 12,
        bytes_in: 9000,
    }
}

/// The checks a real gateway runs.
fn validate(table: &v1::RouteTable) -> Result<(), BackendError> {
    egw_proto::spec::compile(table)
        .map(drop)
        .map_err(|message| BackendError::InvalidTable { message })
}

impl ControlBackend for TestBackend {
    fn apply_route_table(&self, table: v1::RouteTable) -> Result<(), BackendError> {
        validate(&table)?;
        self.applied.lock().unwrap().push(table);
        Ok(())
    }

    fn initial_route_table(&self) -> Option<v1::RouteTable> {
        self.initial.clone()
    }

    fn epoch(&self) -> u64 {
        EPOCH
    }

    fn status(&self) -> v1::GetStatusResponse {
        v1::GetStatusResponse {
            version: "test".into(),
            uptime_seconds: 7,
            epoch: 1,      // overwritten by the server
            generation: 1, // overwritten by the server
            interfaces: vec![v1::InterfaceStatus {
                name: "eth0".into(),
                ifindex: 2,
                role: v1::InterfaceRole::OneArmed as i32,
                xdp_mode: v1::XdpMode::Native as i32,
                socket_mode: v1::SocketMode::ZeroCopy as i32,
                queues: 4,
            }],
            cores: vec![v1::CoreCounters {
                core: 0,
                rx_packets: 5,
                drops: BTreeMap::from([("policy_deny".to_owned(), 3)])
                    .into_iter()
                    .collect(),
                ..Default::default()
            }],
            conntrack: vec![v1::ConntrackOccupancy {
                core: 0,
                used: 10,
                capacity: 100,
            }],
            external_ips: vec![],
        }
    }

    fn list_flows(&self, query: &FlowQuery) -> FlowPage {
        let start = query
            .start
            .map_or(0, |cursor| usize::try_from(cursor.position).unwrap());
        let mut flows = Vec::new();
        let mut position = start;
        while position < self.flows.len() && flows.len() < query.limit {
            if query.matches(&self.flows[position]) {
                flows.push(self.flows[position].clone());
            }
            position += 1;
        }
        let next = (position < self.flows.len()).then(|| FlowCursor {
            shard: 0,
            position: u64::try_from(position).unwrap(),
        });
        FlowPage { flows, next }
    }

    fn drain(
        &self,
        external_ip: Ipv4Addr,
        undrain: bool,
    ) -> Result<v1::DrainResponse, BackendError> {
        if external_ip != DRAINABLE_IP {
            return Err(BackendError::UnknownExternalIp { ip: external_ip });
        }
        *self.draining.lock().unwrap() = !undrain;
        Ok(v1::DrainResponse {
            external_ip: external_ip.to_string(),
            draining: !undrain,
            flows_remaining: 42,
        })
    }

    fn stats_snapshot(&self) -> v1::StatsSnapshot {
        let taken = self.snapshots_taken.fetch_add(1, Ordering::SeqCst);
        v1::StatsSnapshot {
            timestamp_unix_ms: taken,
            cores: vec![],
            totals: Some(v1::CoreCounters {
                rx_packets: taken,
                ..Default::default()
            }),
        }
    }
}

// ---------------------------------------------------------------------------
// Certificates (generated per test run; no keys are committed)
// ---------------------------------------------------------------------------

struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

struct CertAndKey {
    cert_pem: String,
    key_pem: String,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
    ) -> CertAndKey {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn client(&self, common_name: &str) -> CertAndKey {
        self.issue(common_name, vec![], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

// ---------------------------------------------------------------------------
// Server and client plumbing
// ---------------------------------------------------------------------------

struct RunningServer {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    tcp: Option<SocketAddr>,
    ca: Option<TestCa>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ControlError>>,
}

impl RunningServer {
    async fn stop(mut self) -> Result<(), ControlError> {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap()
    }
}

fn start(
    backend: Arc<TestBackend>,
    config: ControlServerConfig,
    dir: tempfile::TempDir,
    ca: Option<TestCa>,
) -> RunningServer {
    let socket = config
        .unix_socket
        .as_ref()
        .map(|unix| unix.path.clone())
        .unwrap_or_default();
    let bound = BoundControlServer::bind(config, backend).unwrap();
    let tcp = bound.tcp_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));
    RunningServer {
        _dir: dir,
        socket,
        tcp,
        ca,
        stop: Some(stop),
        task,
    }
}

fn unix_config(dir: &Path) -> ControlServerConfig {
    ControlServerConfig {
        unix_socket: Some(UnixSocketConfig {
            path: dir.join("run/egw.sock"),
            mode: 0o660,
        }),
        ..ControlServerConfig::default()
    }
}

fn start_unix(backend: Arc<TestBackend>) -> RunningServer {
    let dir = tempfile::tempdir().unwrap();
    let config = unix_config(dir.path());
    start(backend, config, dir, None)
}

/// A server with only an mTLS listener: "ops-admin" is an admin, CN
/// "dashboard" and URI SAN "spiffe://egw/reader" are readers.
fn start_tls(backend: Arc<TestBackend>) -> RunningServer {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("egw test CA");
    let server = ca.issue(
        "egw-gateway",
        vec![SanType::DnsName("localhost".try_into().unwrap())],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let config = ControlServerConfig {
        unix_socket: None,
        tcp: Some(TcpListenerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: MtlsConfig {
                server_cert_pem: server.cert_pem.into_bytes(),
                server_key_pem: server.key_pem.into_bytes(),
                client_ca_pem: ca.pem().into_bytes(),
                admin_identities: vec!["ops-admin".into()],
                reader_identities: vec!["dashboard".into(), "spiffe://egw/reader".into()],
            },
        }),
        ..ControlServerConfig::default()
    };
    start(backend, config, dir, Some(ca))
}

async fn unix_channel(path: &Path) -> Channel {
    let path = path.to_owned();
    Endpoint::try_from("http://egw.invalid")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .unwrap()
}

async fn unix_client(server: &RunningServer) -> GatewayClient<Channel> {
    GatewayClient::new(unix_channel(&server.socket).await)
}

async fn tls_channel(
    server: &RunningServer,
    client: Option<&CertAndKey>,
    trusted_ca: &str,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(trusted_ca))
        .domain_name("localhost");
    if let Some(client) = client {
        tls = tls.identity(Identity::from_pem(&client.cert_pem, &client.key_pem));
    }
    Endpoint::from_shared(format!("https://{}", server.tcp.unwrap()))?
        .tls_config(tls)?
        .connect()
        .await
}

async fn tls_client(server: &RunningServer, client: &CertAndKey) -> GatewayClient<Channel> {
    let ca = server.ca.as_ref().unwrap().pem();
    GatewayClient::new(tls_channel(server, Some(client), &ca).await.unwrap())
}

fn table(generation: u64, pool_ip: &str) -> v1::RouteTable {
    let text = format!(
        "generation: {generation}\n\
         pools: [{{name: pool-a, addresses: [{pool_ip}]}}]\n\
         policies: [{{name: via-a, rules: [{{destination: 0.0.0.0/0, snat: pool-a}}]}}]\n\
         sources: [{{cidr: 10.244.1.10/32, policy: via-a}}]\n"
    );
    egw_proto::yaml::RouteTableDocument::from_yaml_str(&text)
        .unwrap()
        .to_proto()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn route_table_generations_are_enforced_by_the_server() {
    let backend = Arc::new(TestBackend::new(0));
    let server = start_unix(Arc::clone(&backend));
    let mut client = unix_client(&server).await;

    let empty = client
        .get_route_table(v1::GetRouteTableRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (empty.table, empty.generation, empty.epoch),
        (None, 0, EPOCH)
    );

    let first = table(5, "198.51.100.1");
    let reply = client
        .apply_route_table(first.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reply.generation, reply.unchanged), (5, false));

    // Same generation, same content: idempotent.
    let reply = client
        .apply_route_table(first.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reply.generation, reply.unchanged), (5, true));

    // Same generation, different content: refused.
    let status = client
        .apply_route_table(table(5, "198.51.100.2"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("generation 5"),
        "{}",
        status.message()
    );

    // Older generation: refused, naming the current one.
    let status = client
        .apply_route_table(table(4, "198.51.100.1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("current generation 5"),
        "{}",
        status.message()
    );

    // Invalid table: the backend's message, and the old table keeps serving.
    let mut invalid = table(6, "198.51.100.1");
    invalid.sources[0].policy = "nope".into();
    let status = client.apply_route_table(invalid).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("policy `nope` does not exist"),
        "{}",
        status.message()
    );

    let current = client
        .get_route_table(v1::GetRouteTableRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(current.table, Some(first));
    assert_eq!(current.generation, 5);
    assert_eq!(
        backend.applied_generations(),
        vec![5],
        "the backend saw only the valid new table"
    );

    // A newer valid table replaces it.
    let second = table(6, "198.51.100.2");
    client.apply_route_table(second.clone()).await.unwrap();
    let current = client
        .get_route_table(v1::GetRouteTableRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((current.table, current.generation), (Some(second), 6));

    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_initial_table_of_the_backend_seeds_the_generation() {
    let mut backend = TestBackend::new(0);
    backend.initial = Some(table(3, "198.51.100.1"));
    let server = start_unix(Arc::new(backend));
    let mut client = unix_client(&server).await;
    let current = client
        .get_route_table(v1::GetRouteTableRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(current.generation, 3);
    let status = client
        .apply_route_table(table(2, "198.51.100.1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn status_drain_and_stats_over_the_unix_socket() {
    let backend = Arc::new(TestBackend::new(0));
    let server = start_unix(Arc::clone(&backend));
    let mut client = unix_client(&server).await;
    client
        .apply_route_table(table(9, "198.51.100.1"))
        .await
        .unwrap();

    let status = client
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.epoch, EPOCH,
        "epoch comes from ControlBackend::epoch"
    );
    assert_eq!(
        status.generation, 9,
        "generation comes from the served table"
    );
    assert_eq!(status.interfaces[0].name, "eth0");
    assert_eq!(status.cores[0].drops.get("policy_deny"), Some(&3));

    let drained = client
        .drain(v1::DrainRequest {
            external_ip: DRAINABLE_IP.to_string(),
            undrain: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(drained.draining);
    assert_eq!(drained.flows_remaining, 42);
    assert!(*backend.draining.lock().unwrap());
    let undrained = client
        .drain(v1::DrainRequest {
            external_ip: DRAINABLE_IP.to_string(),
            undrain: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!undrained.draining);

    let status = client
        .drain(v1::DrainRequest {
            external_ip: "192.0.2.1".into(),
            undrain: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .drain(v1::DrainRequest {
            external_ip: "not-an-ip".into(),
            undrain: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let mut stream = client
        .watch_stats(v1::WatchStatsRequest { interval_ms: 100 })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    let second = stream.next().await.unwrap().unwrap();
    assert!(second.totals.unwrap().rx_packets > first.totals.unwrap().rx_packets);

    // Shutdown ends the open WatchStats stream instead of waiting for it forever.
    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("graceful shutdown waited on an open WatchStats stream")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while stream.next().await.is_some() {}
    })
    .await
    .expect("the WatchStats stream ends when the server shuts down");
}

#[tokio::test]
async fn the_unix_socket_is_created_with_its_mode_and_removed_on_shutdown() {
    use std::os::unix::fs::PermissionsExt;
    let server = start_unix(Arc::new(TestBackend::new(0)));
    let socket = server.socket.clone();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let parent_mode = std::fs::metadata(socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        parent_mode & 0o007,
        0,
        "the created parent directory is closed to others"
    );

    // A second server on the same live socket is refused.
    let error = BoundControlServer::bind(
        ControlServerConfig {
            unix_socket: Some(UnixSocketConfig {
                path: socket.clone(),
                mode: 0o660,
            }),
            ..ControlServerConfig::default()
        },
        Arc::new(TestBackend::new(0)),
    )
    .unwrap_err();
    assert!(matches!(error, ControlError::SocketInUse { .. }), "{error}");

    server.stop().await.unwrap();
    assert!(!socket.exists(), "socket removed on shutdown");
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let config = unix_config(dir.path());
    let path = config.unix_socket.as_ref().unwrap().path.clone();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // leaves the file, nobody listening
    assert!(path.exists());
    let server = start(Arc::new(TestBackend::new(0)), config, dir, None);
    let mut client = unix_client(&server).await;
    client.get_status(v1::GetStatusRequest {}).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn paging_returns_every_flow_exactly_once() {
    let backend = Arc::new(TestBackend::new(2500));
    let server = start_unix(Arc::clone(&backend));
    let mut client = unix_client(&server).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_flows(v1::ListFlowsRequest {
                page_size: 100,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.flows.len() <= 100);
        seen.extend(page.flows.iter().map(|flow| flow.external_port));
        pages += 1;
        assert!(pages <= 26, "paging does not terminate");
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 25);
    let expected: Vec<u32> = (0..2500).map(|index| 1024 + index).collect();
    assert_eq!(seen, expected, "no duplicates, no gaps, in order");

    // Filters page too, and a token is bound to its filters.
    let udp = v1::ListFlowsRequest {
        protocol: v1::Protocol::Udp as i32,
        page_size: 500,
        ..Default::default()
    };
    let first = client.list_flows(udp.clone()).await.unwrap().into_inner();
    assert_eq!(first.flows.len(), 500);
    assert!(first
        .flows
        .iter()
        .all(|flow| flow.protocol == v1::Protocol::Udp as i32));
    assert!(!first.next_page_token.is_empty());
    let rest = client
        .list_flows(v1::ListFlowsRequest {
            page_token: first.next_page_token.clone(),
            ..udp.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.flows.len(),
        334,
        "indices divisible by 3 in 0..2500, minus the first page"
    );
    assert!(rest.next_page_token.is_empty());
    let status = client
        .list_flows(v1::ListFlowsRequest {
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // Default and maximum page sizes.
    let default_page = client
        .list_flows(v1::ListFlowsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(default_page.flows.len(), 100);
    let capped = client
        .list_flows(v1::ListFlowsRequest {
            page_size: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(capped.flows.len(), 1000);

    let filtered = client
        .list_flows(v1::ListFlowsRequest {
            pod_ip: Some("10.244.0.7".into()),
            destination_cidr: Some("203.0.113.0/24".into()),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.flows.len(), 50);
    assert!(filtered
        .flows
        .iter()
        .all(|flow| flow.pod_ip == "10.244.0.7"));

    let status = client
        .list_flows(v1::ListFlowsRequest {
            destination_cidr: Some("nonsense".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("destination_cidr"));

    server.stop().await.unwrap();
}

#[tokio::test]
async fn dropping_a_watch_client_ends_the_server_stream() {
    let backend = Arc::new(TestBackend::new(0));
    let server = start_unix(Arc::clone(&backend));
    let mut client = unix_client(&server).await;
    client.get_status(v1::GetStatusRequest {}).await.unwrap();
    let idle_references = Arc::strong_count(&backend);

    let mut stream = client
        .watch_stats(v1::WatchStatsRequest { interval_ms: 100 })
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();
    assert_eq!(
        Arc::strong_count(&backend),
        idle_references + 1,
        "the open stream holds the backend"
    );

    drop(stream);
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Arc::strong_count(&backend) != idle_references {
        assert!(
            Instant::now() < deadline,
            "the server kept the stream after the client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let taken = backend.snapshots_taken.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        backend.snapshots_taken.load(Ordering::SeqCst),
        taken,
        "no snapshots after cancellation"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_requests_are_refused_and_the_server_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = unix_config(dir.path());
    config.max_message_bytes = 16 * 1024;
    let backend = Arc::new(TestBackend::new(0));
    let server = start(Arc::clone(&backend), config, dir, None);
    let mut client = unix_client(&server).await;

    let mut huge = table(1, "198.51.100.1");
    for index in 0..2000u32 {
        huge.sources.push(v1::Source {
            cidr: format!("{}/32", Ipv4Addr::from(0x0a00_0000 + index)),
            policy: "via-a".into(),
        });
    }
    let status = client.apply_route_table(huge).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(backend.applied_generations().is_empty());

    // A malformed (wrong action) but small table is an ordinary INVALID_ARGUMENT.
    let mut missing_pool = table(1, "198.51.100.1");
    missing_pool.pools.clear();
    let status = client.apply_route_table(missing_pool).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("pool `pool-a` does not exist"),
        "{}",
        status.message()
    );

    client.get_status(v1::GetStatusRequest {}).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let server = start_unix(Arc::new(TestBackend::new(0)));
    let channel = unix_channel(&server.socket).await;
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "egw.v1.Gateway".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    assert!(names.contains(&"egw.v1.Gateway".to_owned()), "{names:?}");
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn mtls_roles_decide_what_a_client_may_call() {
    let backend = Arc::new(TestBackend::new(10));
    let server = start_tls(Arc::clone(&backend));
    let ca = server.ca.as_ref().unwrap();
    let admin = ca.client("ops-admin");
    let reader_by_cn = ca.client("dashboard");
    let reader_by_uri = ca.issue(
        "some-workload",
        vec![SanType::URI("spiffe://egw/reader".try_into().unwrap())],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let stranger = ca.client("stranger");

    let mut admin_client = tls_client(&server, &admin).await;
    admin_client
        .apply_route_table(table(1, "198.51.100.1"))
        .await
        .unwrap();
    admin_client
        .drain(v1::DrainRequest {
            external_ip: DRAINABLE_IP.to_string(),
            undrain: false,
        })
        .await
        .unwrap();

    for reader in [&reader_by_cn, &reader_by_uri] {
        let mut client = tls_client(&server, reader).await;
        let status = client
            .get_status(v1::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.generation, 1);
        client
            .get_route_table(v1::GetRouteTableRequest {})
            .await
            .unwrap();
        let flows = client
            .list_flows(v1::ListFlowsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(flows.flows.len(), 10);
        let mut stream = client
            .watch_stats(v1::WatchStatsRequest { interval_ms: 100 })
            .await
            .unwrap()
            .into_inner();
        stream.next().await.unwrap().unwrap();

        let status = client
            .apply_route_table(table(2, "198.51.100.1"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = client
            .drain(v1::DrainRequest {
                external_ip: DRAINABLE_IP.to_string(),
                undrain: true,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    assert_eq!(backend.applied_generations(), vec![1]);
    assert!(
        *backend.draining.lock().unwrap(),
        "the reader's undrain was refused"
    );

    // Signed by the right CA but listed nowhere: refused everything.
    let mut client = tls_client(&server, &stranger).await;
    let status = client
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("stranger"),
        "{}",
        status.message()
    );

    server.stop().await.unwrap();
}

/// Calls GetStatus with the given client TLS settings; the server must refuse
/// the connection either at connect or at the first call.
async fn status_over_tls(
    server: &RunningServer,
    client: Option<&CertAndKey>,
) -> Result<(), String> {
    let ca = server.ca.as_ref().unwrap().pem();
    let channel = tls_channel(server, client, &ca)
        .await
        .map_err(|error| format!("connect: {error}"))?;
    GatewayClient::new(channel)
        .get_status(v1::GetStatusRequest {})
        .await
        .map(drop)
        .map_err(|status| format!("call: {status}"))
}

#[tokio::test]
async fn mtls_refuses_unknown_ca_and_missing_client_certificates() {
    let server = start_tls(Arc::new(TestBackend::new(0)));
    let trusted = server.ca.as_ref().unwrap().client("ops-admin");
    status_over_tls(&server, Some(&trusted)).await.unwrap();

    let other_ca = TestCa::new("someone else's CA");
    let impostor = other_ca.client("ops-admin");
    let error = status_over_tls(&server, Some(&impostor)).await.unwrap_err();
    assert!(
        error.contains("UnknownCA"),
        "unknown CA refused with: {error}"
    );

    let error = status_over_tls(&server, None).await.unwrap_err();
    assert!(
        error.contains("CertificateRequired"),
        "no client certificate refused with: {error}"
    );

    // The server is still healthy after the refusals.
    status_over_tls(&server, Some(&trusted)).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_server_needs_a_listener_and_tls_identities() {
    let no_listener = ControlServerConfig {
        unix_socket: None,
        tcp: None,
        ..ControlServerConfig::default()
    };
    assert!(matches!(
        BoundControlServer::bind(no_listener, Arc::new(TestBackend::new(0))),
        Err(ControlError::NoListener)
    ));
    let nobody = ControlServerConfig {
        unix_socket: None,
        tcp: Some(TcpListenerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: MtlsConfig {
                server_cert_pem: vec![],
                server_key_pem: vec![],
                client_ca_pem: vec![],
                admin_identities: vec![],
                reader_identities: vec![],
            },
        }),
        ..ControlServerConfig::default()
    };
    assert!(matches!(
        BoundControlServer::bind(nobody, Arc::new(TestBackend::new(0))),
        Err(ControlError::NoIdentities { .. })
    ));

    let garbage_tls = ControlServerConfig {
        unix_socket: None,
        tcp: Some(TcpListenerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: MtlsConfig {
                server_cert_pem: b"not a certificate".to_vec(),
                server_key_pem: b"not a key".to_vec(),
                client_ca_pem: b"not a CA".to_vec(),
                admin_identities: vec!["ops-admin".into()],
                reader_identities: vec![],
            },
        }),
        ..ControlServerConfig::default()
    };
    let error = BoundControlServer::bind(garbage_tls, Arc::new(TestBackend::new(0))).unwrap_err();
    assert!(matches!(error, ControlError::Tls { .. }), "{error}");
}

#[tokio::test]
async fn undecodable_requests_are_errors_not_crashes() {
    let backend = Arc::new(TestBackend::new(0));
    let server = start_unix(Arc::clone(&backend));
    let channel = unix_channel(&server.socket).await;

    // A DrainRequest's field 1 is a string; ApplyRouteTable's field 1 is a
    // varint, so the server cannot decode these bytes as a CompiledRouteTable.
    let mut raw = tonic::client::Grpc::new(channel.clone());
    raw.ready().await.unwrap();
    let status = raw
        .unary(
            tonic::Request::new(v1::DrainRequest {
                external_ip: "garbage".into(),
                undrain: true,
            }),
            "/egw.v1.Gateway/ApplyRouteTable".parse().unwrap(),
            tonic_prost::ProstCodec::<v1::DrainRequest, v1::ApplyRouteTableResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status}");
    assert!(backend.applied_generations().is_empty());

    // An unknown method is UNIMPLEMENTED.
    raw.ready().await.unwrap();
    let status = raw
        .unary(
            tonic::Request::new(v1::GetStatusRequest {}),
            "/egw.v1.Gateway/Reboot".parse().unwrap(),
            tonic_prost::ProstCodec::<v1::GetStatusRequest, v1::GetStatusResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);

    // A table whose action is empty is refused with the offending path, and
    // the server keeps answering.
    let mut client = GatewayClient::new(channel);
    let mut odd = table(1, "198.51.100.1");
    odd.policies[0].rules[0].action = Some(v1::Action { kind: None });
    let status = client.apply_route_table(odd).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("policies[via-a].rules[0].action"),
        "{}",
        status.message()
    );
    let status = client
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.generation, 0);
    server.stop().await.unwrap();
}
