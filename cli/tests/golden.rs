//! Golden-output tests: every command in every output format against a real
//! gateway control server (egw-gateway's) on a Unix socket, backed by a
//! fixture backend returning fixed values.
//!
//! Expected outputs live in `tests/golden/*.txt`. After an intended output
//! change, regenerate them and review the diff:
//!
//! ```text
//! UPDATE_GOLDEN=1 cargo test -p egwctl --test golden
//! git diff cli/tests/golden
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use clap::Parser;
use egw_gateway::control::{
    BackendError, BoundControlServer, ControlBackend, ControlServerConfig, FlowCursor, FlowPage,
    FlowQuery, UnixSocketConfig,
};
use egw_proto::{v1, yaml};

const FIXTURE_TABLE: &str = r#"
generation: 7
pools:
  - name: pool-a
    addresses: [198.51.100.1, {snat: 10.0.1.5, public: 54.1.2.3}]
  - name: pool-b
    addresses: [198.51.100.9]
    pairing: false
policies:
  - name: via-a
    rules:
      - { destination: 0.0.0.0/0, snat: pool-a, description: "default egress" }
      - { destination: 203.0.113.128/25, bypass: true, description: "peered VPC" }
      - { destination: 192.0.2.0/24, deny: "partner blocked" }
sources:
  - { cidr: 10.244.1.10/32, policy: via-a }
  - { cidr: 10.244.2.0/24, policy: via-a }
default: { deny: "no policy for source" }
"#;

struct FixtureBackend {
    initial: v1::RouteTable,
    flows: Vec<v1::Flow>,
    snapshots: AtomicU64,
}

fn counters(core: u32, scale: u64) -> v1::CoreCounters {
    v1::CoreCounters {
        core,
        rx_packets: 1_000 * scale,
        rx_bytes: 1_500_000 * scale,
        tx_packets: 990 * scale,
        tx_bytes: 1_400_000 * scale,
        drops: [
            ("policy_deny".to_owned(), 4 * scale),
            ("no_port".to_owned(), scale),
        ]
        .into_iter()
        .collect(),
        flows_created: 20 * scale,
        flows_expired: 15 * scale,
        handoffs: 3 * scale,
    }
}

fn sum(cores: &[v1::CoreCounters]) -> v1::CoreCounters {
    let mut total = v1::CoreCounters::default();
    for core in cores {
        total.rx_packets += core.rx_packets;
        total.rx_bytes += core.rx_bytes;
        total.tx_packets += core.tx_packets;
        total.tx_bytes += core.tx_bytes;
        for (reason, count) in &core.drops {
            *total.drops.entry(reason.clone()).or_default() += count;
        }
        total.flows_created += core.flows_created;
        total.flows_expired += core.flows_expired;
        total.handoffs += core.handoffs;
    }
    total
}

fn flow(index: u32, protocol: v1::Protocol, state: v1::FlowState) -> v1::Flow {
    v1::Flow {
        protocol: protocol as i32,
        pod_ip: format!("10.244.1.{}", 10 + index % 2),
        pod_port: if protocol == v1::Protocol::Icmp {
            7
        } else {
            40_000 + index
        },
        external_ip: "198.51.100.1".into(),
        external_port: 1024 + index,
        remote_ip: format!("203.0.113.{}", index + 1),
        remote_port: match protocol {
            v1::Protocol::Udp => 53,
            v1::Protocol::Icmp => 0,
            _ => 443,
        },
        state: state as i32,
        core: index % 2,
        age_seconds: 30 + u64::from(index) * 700,
        idle_seconds: u64::from(index),
        packets_out: 10 + u64::from(index),
        bytes_out: 1_200 + u64::from(index) * 1000,
        packets_in: 12 + u64::from(index),
        bytes_in: 56_000 + u64::from(index) * 10_000,
    }
}

impl FixtureBackend {
    fn new() -> Self {
        let table = yaml::RouteTableDocument::from_yaml_str(FIXTURE_TABLE).unwrap();
        FixtureBackend {
            initial: table.to_proto(),
            flows: vec![
                flow(0, v1::Protocol::Tcp, v1::FlowState::Established),
                flow(1, v1::Protocol::Udp, v1::FlowState::Established),
                flow(2, v1::Protocol::Tcp, v1::FlowState::New),
                flow(3, v1::Protocol::Icmp, v1::FlowState::Established),
                flow(4, v1::Protocol::Tcp, v1::FlowState::Closing),
            ],
            snapshots: AtomicU64::new(0),
        }
    }
}

impl ControlBackend for FixtureBackend {
    fn apply_route_table(&self, table: v1::RouteTable) -> Result<(), BackendError> {
        egw_proto::spec::compile(&table)
            .map(drop)
            .map_err(|message| BackendError::InvalidTable { message })
    }

    fn initial_route_table(&self) -> Option<v1::RouteTable> {
        Some(self.initial.clone())
    }

    fn epoch(&self) -> u64 {
        0x00c0_ffee_1234_5678
    }

    fn status(&self) -> v1::GetStatusResponse {
        let usage = |used, capacity| Some(v1::PortUsage { used, capacity });
        v1::GetStatusResponse {
            version: "0.1.0".into(),
            uptime_seconds: 93_784,
            epoch: 0,
            generation: 0,
            interfaces: vec![
                v1::InterfaceStatus {
                    name: "ens5".into(),
                    ifindex: 2,
                    role: v1::InterfaceRole::Inside as i32,
                    xdp_mode: v1::XdpMode::Native as i32,
                    socket_mode: v1::SocketMode::ZeroCopy as i32,
                    queues: 2,
                },
                v1::InterfaceStatus {
                    name: "ens6".into(),
                    ifindex: 3,
                    role: v1::InterfaceRole::Outside as i32,
                    xdp_mode: v1::XdpMode::Generic as i32,
                    socket_mode: v1::SocketMode::Copy as i32,
                    queues: 2,
                },
            ],
            cores: vec![counters(0, 1), counters(1, 2)],
            conntrack: vec![
                v1::ConntrackOccupancy {
                    core: 0,
                    used: 1_200,
                    capacity: 262_144,
                },
                v1::ConntrackOccupancy {
                    core: 1,
                    used: 2_400,
                    capacity: 262_144,
                },
            ],
            external_ips: vec![
                v1::ExternalIpStatus {
                    ip: "198.51.100.1".into(),
                    pool: "pool-a".into(),
                    tcp: usage(3_000, 64_512),
                    udp: usage(400, 64_512),
                    icmp: usage(2, 65_536),
                    draining: false,
                    flows_remaining: 3_402,
                },
                v1::ExternalIpStatus {
                    ip: "198.51.100.9".into(),
                    pool: "pool-b".into(),
                    tcp: usage(10, 64_512),
                    udp: usage(0, 64_512),
                    icmp: usage(0, 65_536),
                    draining: true,
                    flows_remaining: 10,
                },
            ],
        }
    }

    fn list_flows(&self, query: &FlowQuery) -> FlowPage {
        let start = query.start.map_or(0, |cursor| cursor.position as usize);
        let mut flows = Vec::new();
        let mut position = start;
        while position < self.flows.len() && flows.len() < query.limit {
            if query.matches(&self.flows[position]) {
                flows.push(self.flows[position].clone());
            }
            position += 1;
        }
        let next = (position < self.flows.len()).then_some(FlowCursor {
            shard: 0,
            position: position as u64,
        });
        FlowPage { flows, next }
    }

    fn drain(
        &self,
        external_ip: Ipv4Addr,
        undrain: bool,
    ) -> Result<v1::DrainResponse, BackendError> {
        if external_ip != Ipv4Addr::new(198, 51, 100, 1) {
            return Err(BackendError::UnknownExternalIp { ip: external_ip });
        }
        Ok(v1::DrainResponse {
            external_ip: external_ip.to_string(),
            draining: !undrain,
            flows_remaining: 3_402,
        })
    }

    fn stats_snapshot(&self) -> v1::StatsSnapshot {
        // Each snapshot is one second after the previous one, with counters
        // growing linearly, so rates are exact and output is reproducible.
        let taken = self.snapshots.fetch_add(1, Ordering::SeqCst) + 1;
        let cores = vec![counters(0, taken), counters(1, 2 * taken)];
        v1::StatsSnapshot {
            timestamp_unix_ms: 1_700_000_000_000 + taken * 1000,
            totals: Some(sum(&cores)),
            cores,
        }
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Fixture {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("egw.sock");
        let config = ControlServerConfig {
            unix_socket: Some(UnixSocketConfig {
                path: socket.clone(),
                mode: 0o600,
            }),
            ..ControlServerConfig::default()
        };
        let bound = BoundControlServer::bind(config, Arc::new(FixtureBackend::new())).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            bound
                .serve(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Fixture {
            dir,
            socket,
            stop: Some(stop),
            task,
        }
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Runs egwctl with `args` against this server; output, or the error text.
    async fn egwctl(&self, args: &[&str]) -> Result<String, String> {
        let server = format!("unix://{}", self.socket.display());
        // An empty config file isolates the test from the user's ~/.config/egw.
        let mut argv = vec![
            "egwctl",
            "--config",
            "/dev/null",
            "--server",
            server.as_str(),
        ];
        argv.extend_from_slice(args);
        let cli = egwctl::Cli::try_parse_from(argv).map_err(|error| error.to_string())?;
        let mut out = Vec::new();
        egwctl::run(cli, &mut out)
            .await
            .map_err(|error| error.to_string())?;
        Ok(String::from_utf8(out).unwrap())
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
    }
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.txt"))
}

/// Compares `actual` with the golden file `name`, or rewrites it with UPDATE_GOLDEN=1.
fn check_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|value| value == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {}; run with UPDATE_GOLDEN=1",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "output differs from {}\n--- expected\n{expected}\n--- actual\n{actual}\n\
         (if the change is intended: UPDATE_GOLDEN=1 cargo test -p egwctl --test golden)",
        path.display()
    );
}

const FORMATS: [&str; 3] = ["table", "json", "yaml"];

/// Runs one command in every format, each against a fresh server.
async fn golden_in_every_format(name: &str, args: &[&str]) {
    for format in FORMATS {
        let fixture = Fixture::start();
        let mut all = vec!["-o", format];
        all.extend_from_slice(args);
        let output = fixture
            .egwctl(&all)
            .await
            .unwrap_or_else(|error| panic!("egwctl {all:?}: {error}"));
        check_golden(&format!("{name}.{format}"), &output);
        fixture.stop().await;
    }
}

#[tokio::test]
async fn status() {
    golden_in_every_format("status", &["status"]).await;
}

#[tokio::test]
async fn routes_get() {
    golden_in_every_format("routes-get", &["routes", "get"]).await;
}

#[tokio::test]
async fn routes_get_yaml_can_be_applied_again() {
    let fixture = Fixture::start();
    let exported = fixture
        .egwctl(&["-o", "yaml", "routes", "get"])
        .await
        .unwrap();
    assert_eq!(
        yaml::RouteTableDocument::from_yaml_str(&exported).unwrap(),
        yaml::RouteTableDocument::from_yaml_str(FIXTURE_TABLE).unwrap()
    );
    let path = fixture.write("exported.yaml", &exported);
    let output = fixture
        .egwctl(&["routes", "apply", "-f", path.to_str().unwrap()])
        .await
        .unwrap();
    assert!(output.contains("already applied"), "{output}");
    fixture.stop().await;
}

#[tokio::test]
async fn routes_apply() {
    for format in FORMATS {
        let fixture = Fixture::start();
        let newer = FIXTURE_TABLE.replace("generation: 7", "generation: 8");
        let path = fixture.write("table.yaml", &newer);
        let output = fixture
            .egwctl(&[
                "-o",
                format,
                "routes",
                "apply",
                "-f",
                path.to_str().unwrap(),
            ])
            .await
            .unwrap();
        check_golden(&format!("routes-apply.{format}"), &output);
        let table = fixture
            .egwctl(&["-o", "json", "routes", "get"])
            .await
            .unwrap();
        assert!(table.contains("\"generation\": 8"), "{table}");
        fixture.stop().await;
    }
}

#[tokio::test]
async fn routes_apply_errors_explain_themselves() {
    let fixture = Fixture::start();
    let stale = fixture.write(
        "stale.yaml",
        &FIXTURE_TABLE.replace("generation: 7", "generation: 6"),
    );
    let invalid = fixture.write(
        "invalid.yaml",
        &FIXTURE_TABLE
            .replace("generation: 7", "generation: 9")
            .replace("snat: pool-a", "snat: pool-z"),
    );
    let conflicting = fixture.write(
        "conflict.yaml",
        &FIXTURE_TABLE.replace("pairing: false", "pairing: true"),
    );
    let unknown_field = fixture.write("typo.yaml", "generation: 9\npolices: []\n");

    let mut errors = String::new();
    for (label, path) in [
        ("stale", &stale),
        ("invalid", &invalid),
        ("conflicting", &conflicting),
    ] {
        let error = fixture
            .egwctl(&["routes", "apply", "-f", path.to_str().unwrap()])
            .await
            .unwrap_err();
        errors.push_str(&format!("[{label}]\n{error}\n"));
    }
    let error = fixture
        .egwctl(&["routes", "apply", "-f", unknown_field.to_str().unwrap()])
        .await
        .unwrap_err();
    assert!(
        error.contains("typo.yaml") && error.contains("polices"),
        "{error}"
    );
    check_golden("routes-apply-errors", &errors);

    // The gateway still serves generation 7.
    let current = fixture
        .egwctl(&["-o", "json", "routes", "get"])
        .await
        .unwrap();
    assert!(current.contains("\"generation\": 7"), "{current}");
    fixture.stop().await;
}

#[tokio::test]
async fn flows() {
    golden_in_every_format("flows", &["flows"]).await;
    golden_in_every_format("flows-first-page", &["flows", "--limit", "2"]).await;
    golden_in_every_format(
        "flows-filtered",
        &["flows", "--proto", "tcp", "--pod", "10.244.1.10"],
    )
    .await;
}

#[tokio::test]
async fn flows_all_pages_and_filters() {
    let fixture = Fixture::start();
    let all_pages = fixture
        .egwctl(&["-o", "json", "flows", "--limit", "2", "--all"])
        .await
        .unwrap();
    let one_page = fixture.egwctl(&["-o", "json", "flows"]).await.unwrap();
    assert_eq!(
        all_pages, one_page,
        "--all over pages of 2 lists the same five flows"
    );

    let by_external = fixture
        .egwctl(&["flows", "--external", "198.51.100.1:1027"])
        .await
        .unwrap();
    check_golden("flows-external-port.table", &by_external);
    let by_dst_and_state = fixture
        .egwctl(&["flows", "--dst", "203.0.113.0/30", "--state", "established"])
        .await
        .unwrap();
    check_golden("flows-dst-state.table", &by_dst_and_state);
    let none = fixture
        .egwctl(&["flows", "--proto", "udp", "--state", "closing"])
        .await
        .unwrap();
    assert_eq!(none, "No flows match.\n");

    let error = fixture
        .egwctl(&["flows", "--dst", "203.0.113.0/99"])
        .await
        .unwrap_err();
    assert!(error.contains("destination_cidr"), "{error}");
    let error = fixture
        .egwctl(&["flows", "--external", "198.51.100.1:http"])
        .await
        .unwrap_err();
    assert!(error.contains("--external"), "{error}");
    fixture.stop().await;
}

#[tokio::test]
async fn stats() {
    golden_in_every_format("stats", &["stats"]).await;
    golden_in_every_format(
        "stats-watch",
        &["stats", "--watch", "--interval", "100ms", "--count", "3"],
    )
    .await;
}

#[tokio::test]
async fn drain() {
    golden_in_every_format("drain", &["drain", "198.51.100.1"]).await;
    golden_in_every_format("drain-undo", &["drain", "198.51.100.1", "--undo"]).await;
    let fixture = Fixture::start();
    let error = fixture.egwctl(&["drain", "192.0.2.77"]).await.unwrap_err();
    check_golden("drain-unknown-ip", &format!("{error}\n"));
    fixture.stop().await;
}

#[tokio::test]
async fn connection_errors_name_the_address_and_the_fix() {
    let run = |args: Vec<&'static str>| async move {
        let mut argv = vec!["egwctl", "--config", "/dev/null"];
        argv.extend_from_slice(&args[1..]);
        let cli = egwctl::Cli::try_parse_from(argv).unwrap();
        egwctl::run(cli, &mut Vec::new())
            .await
            .unwrap_err()
            .to_string()
    };
    let mut errors = String::new();
    for args in [
        vec![
            "egwctl",
            "--server",
            "unix:///nonexistent/egw/egw.sock",
            "status",
        ],
        vec!["egwctl", "--server", "tcp://gw:7443", "status"],
        vec![
            "egwctl",
            "--server",
            "https://127.0.0.1:1",
            "--ca",
            "ca.pem",
            "status",
        ],
        vec![
            "egwctl",
            "--server",
            "https://127.0.0.1:1",
            "--ca",
            "/nonexistent/ca.pem",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "status",
        ],
    ] {
        errors.push_str(&format!("[{}]\n{}\n", args[2], run(args.clone()).await));
    }
    check_golden("connection-errors", &errors);
}

#[tokio::test]
async fn completion_scripts_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let cli = egwctl::Cli::try_parse_from(["egwctl", "completion", shell]).unwrap();
        let mut out = Vec::new();
        egwctl::run(cli, &mut out).await.unwrap();
        let script = String::from_utf8(out).unwrap();
        assert!(
            script.contains("egwctl") && script.contains("routes"),
            "{shell}: {script}"
        );
    }
}
