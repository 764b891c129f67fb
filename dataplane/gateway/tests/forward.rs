//! End to end: the `egw-gateway` binary SNATs a pod's UDP traffic between two veth pairs.
//!
//! ```text
//! ns pod  (pod0 10.244.1.10/16, default via 10.244.0.1)
//!   ── veth ──  ns gw (gw-in 10.244.0.1/16; gw-out 203.0.113.1/24 + 198.51.100.1/32)
//!   ── veth ──  ns inet (inet0 203.0.113.10/24, 198.51.100.0/24 via 203.0.113.1)
//! ```
//!
//! Needs root (namespaces, XDP). All traffic stays inside the test's own namespaces, which an RAII
//! guard deletes even when the test panics; the gateway process is stopped by another guard.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egw_netns::link::{self, End};
use egw_netns::Netns;
use egw_proto::v1;
use egw_proto::v1::gateway_client::GatewayClient;

const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const ECHO_PORT: u16 = 7777;
/// Pod UDP endpoints, each its own flow.
const CLIENTS: usize = 8;

fn run(args: &[&str]) -> String {
    egw_netns::cmd::run_args(args[0], &args[1..])
        .unwrap_or_else(|error| panic!("{error}"))
        .stdout
}

/// The three namespaces; deleted on drop (egw-netns guards).
struct TestNet {
    pod: String,
    gw: String,
    inet: String,
    _guards: [Netns; 3],
}

impl TestNet {
    fn new() -> Self {
        let id = egw_netns::namespace::unique_name("egwg");
        let guards =
            ["pod", "gw", "inet"].map(|role| Netns::create(format!("{id}-{role}")).unwrap());
        let [pod, gw, inet] = guards.each_ref().map(|netns| netns.name().to_owned());
        let end = |namespace, name| End { namespace, name };
        link::add_veth(end(&gw, "gw-in"), end(&pod, "pod0"), Some(2)).unwrap();
        link::add_veth(end(&gw, "gw-out"), end(&inet, "inet0"), Some(2)).unwrap();
        for (ns, dev, cidr) in [
            (&gw, "gw-in", "10.244.0.1/16"),
            (&gw, "gw-out", "203.0.113.1/24"),
            (&gw, "gw-out", "198.51.100.1/32"),
            (&pod, "pod0", "10.244.1.10/16"),
            (&inet, "inet0", "203.0.113.10/24"),
        ] {
            link::add_address(ns, dev, cidr).unwrap();
        }
        for (ns, dev) in [
            (&gw, "gw-in"),
            (&gw, "gw-out"),
            (&pod, "pod0"),
            (&inet, "inet0"),
        ] {
            link::set_up(ns, dev).unwrap();
            // Frames the kernel sends with a partial checksum would reach AF_XDP unfinished.
            link::disable_tx_offload(ns, dev).unwrap();
        }
        run(&[
            "ip",
            "-n",
            &pod,
            "route",
            "add",
            "default",
            "via",
            "10.244.0.1",
        ]);
        run(&[
            "ip",
            "-n",
            &inet,
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            "203.0.113.1",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &gw,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        TestNet {
            pod,
            gw,
            inet,
            _guards: guards,
        }
    }
}

/// Enters network namespace `ns` on the current thread.
fn enter_netns(ns: &str) {
    egw_netns::enter(ns).unwrap();
}

/// The gateway process; stopped (SIGTERM, then SIGKILL) on drop.
struct Gateway {
    child: Option<Child>,
    log: PathBuf,
}

impl Gateway {
    fn start(ns: &str, config: &Path, log: PathBuf) -> Self {
        let log_file = File::create(&log).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                env!("CARGO_BIN_EXE_egw-gateway"),
                "--config",
            ])
            .arg(config)
            .env("RUST_LOG", "info,egw_gateway=debug")
            .stdout(Stdio::from(log_file.try_clone().unwrap()))
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap();
        Gateway {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|child| child.try_wait().unwrap())
        {
            panic!("gateway exited early ({status}):\n{}", self.log());
        }
    }

    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("gateway running");
        run(&["kill", &format!("-{name}"), &child.id().to_string()]);
    }

    /// Waits (bounded) until the log contains `text`.
    fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "log never said {text:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

struct ControlResults {
    status: v1::GetStatusResponse,
    flows: v1::ListFlowsResponse,
    invalid_apply: tonic::Status,
    applied: v1::ApplyRouteTableResponse,
    status_after_apply: v1::GetStatusResponse,
    drained: v1::DrainResponse,
    unknown_drain: tonic::Status,
}

async fn control_calls(path: PathBuf) -> ControlResults {
    let channel = tonic::transport::Endpoint::try_from("http://[::1]:1")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap();
    let mut client = GatewayClient::new(channel);
    let status = client
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let flows = client
        .list_flows(v1::ListFlowsRequest {
            pod_ip: Some(POD.to_string()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let table = |generation: u64, pool_b_address: &str| {
        egw_proto::yaml::RouteTableDocument::from_yaml_str(&format!(
            "generation: {generation}\n\
             pools:\n  - {{ name: pool-a, addresses: [198.51.100.1] }}\n  \
             - {{ name: pool-b, addresses: [{pool_b_address}] }}\n\
             policies:\n  - name: via-a\n    rules:\n      - {{ destination: 0.0.0.0/0, snat: pool-a }}\n\
             sources:\n  - {{ cidr: 10.244.1.10/32, policy: via-a }}\n"
        ))
        .unwrap()
        .to_proto()
    };
    let invalid_apply = client
        .apply_route_table(table(2, "255.255.255.255"))
        .await
        .unwrap_err();
    let applied = client
        .apply_route_table(table(2, "198.51.100.2"))
        .await
        .unwrap()
        .into_inner();
    let status_after_apply = client
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let drained = client
        .drain(v1::DrainRequest {
            external_ip: EXTERNAL.to_string(),
            undrain: false,
        })
        .await
        .unwrap()
        .into_inner();
    let unknown_drain = client
        .drain(v1::DrainRequest {
            external_ip: "192.0.2.1".into(),
            undrain: false,
        })
        .await
        .unwrap_err();
    ControlResults {
        status,
        flows,
        invalid_apply,
        applied,
        status_after_apply,
        drained,
        unknown_drain,
    }
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario: start, traffic, control calls, reload and shutdown of one gateway process, checked in order"
)]
fn pod_udp_is_snatted_and_the_reply_comes_back() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("egw.sock");
    let table = dir.path().join("table.yaml");
    std::fs::write(
        &table,
        "generation: 1\n\
         pools:\n  - { name: pool-a, addresses: [198.51.100.1] }\n\
         policies:\n  - name: via-a\n    rules:\n      - { destination: 0.0.0.0/0, snat: pool-a }\n\
         sources:\n  - { cidr: 10.244.1.10/32, policy: via-a }\n",
    )
    .unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "inside_interface: gw-in\n\
             outside_interface: gw-out\n\
             inside_address: 10.244.0.1\n\
             pod_cidrs: [10.244.0.0/16]\n\
             snat_addresses: [198.51.100.1]\n\
             workers: 2\n\
             control: {{ unix_socket: {} }}\n\
             route_table_file: {}\n\
             xdp: {{ frame_count: 2048, ring_size: 512 }}\n",
            socket.display(),
            table.display()
        ),
    )
    .unwrap();

    // The echo server answers with the source address it saw, until told to stop.
    let stop_echo = Arc::new(AtomicBool::new(false));
    let echo = {
        let (ns, stop) = (net.inet.clone(), Arc::clone(&stop_echo));
        let (ready_sender, ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            enter_netns(&ns);
            let socket = UdpSocket::bind((REMOTE, ECHO_PORT)).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            ready_sender.send(()).unwrap();
            let mut buffer = [0u8; 1500];
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((_, from)) = socket.recv_from(&mut buffer) {
                    socket.send_to(from.to_string().as_bytes(), from).unwrap();
                }
            }
        });
        ready.recv_timeout(Duration::from_secs(5)).unwrap();
        thread
    };

    let mut gateway = Gateway::start(&net.gw, &config, dir.path().join("gateway.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        gateway.assert_running();
        assert!(
            Instant::now() < deadline,
            "no control socket:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Several pod endpoints, so that with two workers (two queues) some frames reach a worker that
    // does not own their flow and are handed off. The first datagrams may be dropped while the
    // gateway resolves next hops; retry, bounded.
    let replies = {
        let ns = net.pod.clone();
        std::thread::spawn(move || {
            enter_netns(&ns);
            let mut buffer = [0u8; 1500];
            (0..CLIENTS)
                .map(|client| {
                    let socket = UdpSocket::bind((POD, 0)).unwrap();
                    socket
                        .set_read_timeout(Some(Duration::from_millis(250)))
                        .unwrap();
                    (0..40).find_map(|attempt| {
                        socket
                            .send_to(
                                format!("hello {client} {attempt}").as_bytes(),
                                (REMOTE, ECHO_PORT),
                            )
                            .unwrap();
                        let (len, from) = socket.recv_from(&mut buffer).ok()?;
                        let seen = String::from_utf8_lossy(&buffer[..len]).into_owned();
                        Some((seen, from))
                    })
                })
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap()
    };
    stop_echo.store(true, Ordering::Relaxed);
    echo.join().unwrap();
    gateway.assert_running();
    let mut seen_ports = BTreeSet::new();
    for (client, reply) in replies.into_iter().enumerate() {
        let (seen, from) = reply
            .unwrap_or_else(|| panic!("no reply reached pod client {client}:\n{}", gateway.log()));
        let seen: SocketAddr = seen.parse().unwrap();
        assert_eq!(seen.ip(), EXTERNAL, "the remote saw the pod untranslated");
        assert_eq!(
            from,
            SocketAddr::from((REMOTE, ECHO_PORT)),
            "reply not translated back"
        );
        assert!(
            seen_ports.insert(seen.port()),
            "two pod endpoints share {seen}"
        );
    }

    // Counters are published every 100 ms.
    std::thread::sleep(Duration::from_millis(300));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime.block_on(control_calls(socket.clone()));
    drop(runtime);
    let (status, flows) = (&results.status, &results.flows);
    assert_eq!(status.generation, 1);
    assert_eq!(status.interfaces.len(), 2, "{status:?}");
    assert_eq!(status.cores.len(), 2, "{status:?}");
    assert_eq!(status.conntrack.len(), 2, "{status:?}");
    let rx: u64 = status.cores.iter().map(|core| core.rx_packets).sum();
    let tx: u64 = status.cores.iter().map(|core| core.tx_packets).sum();
    let created: u64 = status.cores.iter().map(|core| core.flows_created).sum();
    assert!(rx >= 2 * CLIENTS as u64, "{status:?}");
    assert!(tx >= 2 * CLIENTS as u64, "{status:?}");
    assert_eq!(created, CLIENTS as u64, "{status:?}");
    let tracked: u64 = status.conntrack.iter().map(|core| core.used).sum();
    assert_eq!(tracked, CLIENTS as u64, "{status:?}");
    let external = status
        .external_ips
        .iter()
        .find(|ip| ip.ip == EXTERNAL.to_string())
        .unwrap_or_else(|| panic!("{status:?}"));
    assert_eq!(external.pool, "pool-a");
    assert_eq!(
        external.udp.as_ref().unwrap().used,
        CLIENTS as u64,
        "{external:?}"
    );
    assert_eq!(flows.flows.len(), CLIENTS, "{flows:?}");
    for flow in &flows.flows {
        assert_eq!(flow.remote_port, u32::from(ECHO_PORT), "{flow:?}");
        assert_eq!(flow.external_ip, EXTERNAL.to_string());
        assert!(
            seen_ports.contains(&u16::try_from(flow.external_port).unwrap()),
            "{flow:?} not among {seen_ports:?}"
        );
        assert_eq!(flow.state, v1::FlowState::Established as i32);
    }

    assert_eq!(results.invalid_apply.code(), tonic::Code::InvalidArgument);
    assert!(
        results.invalid_apply.message().contains("pool-b"),
        "{:?}",
        results.invalid_apply
    );
    assert_eq!(results.applied.generation, 2);
    assert_eq!(results.status_after_apply.generation, 2);
    let pool_b = results
        .status_after_apply
        .external_ips
        .iter()
        .find(|ip| ip.ip == "198.51.100.2")
        .unwrap_or_else(|| panic!("{:?}", results.status_after_apply));
    assert_eq!(pool_b.pool, "pool-b");
    assert!(results.drained.draining);
    assert_eq!(results.drained.external_ip, EXTERNAL.to_string());
    assert_eq!(results.unknown_drain.code(), tonic::Code::NotFound);
    let log = gateway.log();
    assert!(log.contains("route table applied"), "{log}");
    let cpus = std::thread::available_parallelism().map_or(1, |cpus| cpus.get());
    let expected = if cpus >= 2 {
        "worker pinned"
    } else {
        "runs unpinned"
    };
    assert!(log.contains(expected), "{log}");

    // A new gateway address reaches the XDP local-address map (pod traffic to it goes to the kernel).
    run(&[
        "ip",
        "-n",
        &net.gw,
        "addr",
        "add",
        "10.244.0.2/32",
        "dev",
        "gw-in",
    ]);
    gateway.wait_for_log("gateway addresses changed");
    assert!(gateway.log().contains("10.244.0.2"), "{}", gateway.log());

    // SIGHUP re-reads the route table file (generation 3 here) and applies it.
    std::fs::write(
        &table,
        std::fs::read_to_string(&table)
            .unwrap()
            .replace("generation: 1", "generation: 3"),
    )
    .unwrap();
    gateway.signal("HUP");
    gateway.wait_for_log("route table file reloaded");
    gateway.wait_for_log("route table applied generation=3");

    let exit = gateway.stop();
    assert!(
        exit.is_some_and(|status| status.success()),
        "gateway did not stop cleanly ({exit:?}):\n{}",
        gateway.log()
    );
    let link = run(&["ip", "-n", &net.gw, "link", "show", "dev", "gw-in"]);
    assert!(
        !link.contains("xdp"),
        "XDP still attached after shutdown: {link}"
    );
}
