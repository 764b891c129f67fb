//! End-to-end tests on real packets. They need root (network namespaces, veths, nftables) and
//! fail — not skip — without it.
//!
//! Every scenario is a function of the gateway. Each test runs it against the kernel gateway,
//! and additionally against egw-gateway when `EGW_GATEWAY_BIN` names a binary.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use egw_lab::{demo, gateway, topology, Gateway, Lab, LabConfig};

const UPLOAD_BYTES: u64 = 200 * 1024 * 1024;
const DOWNLOAD_BYTES: u64 = 64 * 1024 * 1024;

fn lab_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_egw-lab"))
}

fn must_be_root() {
    if let Err(error) = topology::require_root() {
        panic!("these end-to-end tests build network namespaces and must run as root: {error}");
    }
}

/// The kernel gateway always; egw-gateway too when EGW_GATEWAY_BIN is set (a set but wrong
/// path is a test failure, not a silent skip).
fn gateways_under_test() -> Vec<Gateway> {
    let mut gateways = vec![Gateway::Kernel];
    if std::env::var_os(gateway::GATEWAY_BIN_ENV).is_some_and(|value| !value.is_empty()) {
        let binary = gateway::find_gateway_binary(None).unwrap_or_else(|error| {
            panic!("{} is set but unusable: {error}", gateway::GATEWAY_BIN_ENV)
        });
        gateways.push(Gateway::Egw { binary });
    }
    gateways
}

fn config(pods: usize) -> LabConfig {
    LabConfig::new(pods, lab_binary()).unwrap()
}

fn up(gateway: &Gateway, pods: usize) -> Lab {
    must_be_root();
    Lab::up(config(pods), gateway.clone()).unwrap_or_else(|error| {
        panic!(
            "building the lab with the {} gateway: {error}",
            gateway.label()
        )
    })
}

mod scenarios {
    use super::*;

    /// Each pod's TCP, UDP and ICMP traffic leaves with its pool's address.
    pub fn egress_address_per_pod(gateway: &Gateway) {
        let lab = up(gateway, 3);
        let expected = [
            ("pod-a", [198, 51, 100, 1]),
            ("pod-b", [198, 51, 100, 2]),
            ("pod-c", [198, 51, 100, 1]),
        ];
        for (pod, address) in expected {
            let address = IpAddr::from(address);
            assert_eq!(
                lab.probe_tcp(pod).unwrap().ip(),
                address,
                "{} tcp {pod}",
                gateway.label()
            );
            assert_eq!(
                lab.probe_udp(pod).unwrap().ip(),
                address,
                "{} udp {pod}",
                gateway.label()
            );
            let icmp = lab.probe_icmp(pod).unwrap();
            assert_eq!(
                IpAddr::V4(icmp.egress),
                address,
                "{} icmp {pod}",
                gateway.label()
            );
            assert_eq!(
                icmp.reply_from,
                topology::MIRROR_ADDRESS,
                "{} icmp reply {pod}",
                gateway.label()
            );
        }
        let reports = demo::probe_all(&lab, demo::ExpectationSource::LabConfig).unwrap();
        assert_eq!(reports.len(), 3);
        assert!(
            reports.iter().all(demo::PodReport::ok),
            "{}",
            demo::render(&reports)
        );
        lab.teardown().unwrap();
    }

    /// 200 MB pod → internet arrive bit-identical; 64 MB internet → pod too.
    pub fn bulk_transfer_integrity(gateway: &Gateway) {
        let lab = up(gateway, 2);
        let upload = lab.probe_upload("pod-a", UPLOAD_BYTES).unwrap();
        assert_eq!(upload.bytes, UPLOAD_BYTES);
        assert_eq!(upload.local_sha256.len(), 64);
        assert_eq!(
            upload.local_sha256,
            upload.remote_sha256,
            "{}",
            gateway.label()
        );
        assert_eq!(
            lab.probe_download("pod-b", DOWNLOAD_BYTES).unwrap(),
            DOWNLOAD_BYTES
        );
        lab.teardown().unwrap();
    }

    /// Moving a pod to another pool changes new connections only; an open connection keeps
    /// the address and port it started with.
    pub fn open_connection_keeps_mapping(gateway: &Gateway) {
        let mut lab = up(gateway, 2);
        let mut hold = lab.tcp_hold("pod-a").unwrap();
        let before = hold.first_seen();
        assert_eq!(before.ip(), IpAddr::from([198, 51, 100, 1]));
        lab.set_pod_pool("pod-a", "pool-b").unwrap();
        assert_eq!(
            lab.probe_tcp("pod-a").unwrap().ip(),
            IpAddr::from([198, 51, 100, 2]),
            "{}",
            gateway.label()
        );
        assert_eq!(
            lab.probe_udp("pod-a").unwrap().ip(),
            IpAddr::from([198, 51, 100, 2]),
            "{}",
            gateway.label()
        );
        assert_eq!(
            hold.seen_now().unwrap(),
            before,
            "{}: established connection was remapped",
            gateway.label()
        );
        drop(hold);
        lab.teardown().unwrap();
    }

    /// Explicit teardown and drop-during-panic both leave nothing with the lab's prefix.
    pub fn teardown_leaves_nothing(gateway: &Gateway) {
        let lab = up(gateway, 2);
        let prefix = lab.prefix().to_owned();
        let workdir = lab.workdir().to_owned();
        assert_eq!(topology::namespaces_with_prefix(&prefix).unwrap().len(), 5);
        assert!(workdir.exists());
        lab.teardown().unwrap();
        assert_eq!(
            topology::namespaces_with_prefix(&prefix).unwrap(),
            Vec::<String>::new()
        );
        assert!(!workdir.exists());

        let gateway = gateway.clone();
        let (sender, prefix_of_panicking_lab) = mpsc::channel();
        let outcome = std::thread::spawn(move || {
            let lab = up(&gateway, 2);
            sender.send(lab.prefix().to_owned()).unwrap();
            panic!("deliberate panic while the lab is up");
        })
        .join();
        assert!(outcome.is_err());
        let prefix = prefix_of_panicking_lab
            .recv_timeout(Duration::from_secs(5))
            .unwrap();
        assert_eq!(
            topology::namespaces_with_prefix(&prefix).unwrap(),
            Vec::<String>::new()
        );
    }

    /// bench-quick measures traffic that actually went through.
    pub fn bench_quick_moves_traffic(gateway: &Gateway) {
        let lab = up(gateway, 2);
        let report = egw_lab::bench::bench_quick(&lab, 1).unwrap();
        assert!(report.tcp_gbit_per_s > 0.0, "{report:?}");
        assert!(report.udp_received_pps > 0.0, "{report:?}");
        lab.teardown().unwrap();
    }
}

#[test]
fn egress_address_per_pod() {
    for gateway in gateways_under_test() {
        scenarios::egress_address_per_pod(&gateway);
    }
}

/// Same checks with a one-armed gateway (pods and internet behind one interface).
#[test]
fn one_armed_egress_address_per_pod() {
    must_be_root();
    for gateway in gateways_under_test() {
        let mut config = config(2);
        config.arms = egw_lab::Arms::One;
        let lab = Lab::up(config, gateway.clone()).unwrap();
        let reports = demo::probe_all(&lab, demo::ExpectationSource::LabConfig).unwrap();
        assert_eq!(reports.len(), 2);
        assert!(
            reports.iter().all(demo::PodReport::ok),
            "{}: {}",
            gateway.label(),
            demo::render(&reports)
        );
        let upload = lab.probe_upload("pod-b", 16 * 1024 * 1024).unwrap();
        assert_eq!(upload.local_sha256, upload.remote_sha256);
        lab.teardown().unwrap();
    }
}

#[test]
fn bulk_transfer_integrity() {
    for gateway in gateways_under_test() {
        scenarios::bulk_transfer_integrity(&gateway);
    }
}

#[test]
fn open_connection_keeps_mapping() {
    for gateway in gateways_under_test() {
        scenarios::open_connection_keeps_mapping(&gateway);
    }
}

#[test]
fn teardown_leaves_nothing() {
    for gateway in gateways_under_test() {
        scenarios::teardown_leaves_nothing(&gateway);
    }
}

#[test]
fn bench_quick_moves_traffic() {
    for gateway in gateways_under_test() {
        scenarios::bench_quick_moves_traffic(&gateway);
    }
}

/// Without a gateway nothing reaches the internet with a routable source: the lab has no path
/// that bypasses the gateway, so a passing egress test really is the gateway's doing.
#[test]
fn without_gateway_pods_get_no_answers() {
    must_be_root();
    let mut lab = Lab::build(config(2)).unwrap();
    lab.start_mirror().unwrap();
    assert!(lab.probe_udp("pod-a").is_err());
    assert!(lab.probe_tcp("pod-b").is_err());
    lab.teardown().unwrap();
}

/// `egw-lab up` killed with SIGKILL leaves its namespaces; plain `egw-lab down` removes them
/// (owner is dead) while a lab of a live process is left alone.
#[test]
fn down_removes_leftovers_of_a_killed_run() {
    must_be_root();
    let live_lab = Lab::build(config(1)).unwrap();

    let mut up = Command::new(lab_binary())
        .args(["up", "--gateway", "kernel", "--max-secs", "120"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = up.stdout.take().unwrap();
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut prefix = None;
    let mut workdir = None;
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("egw-lab up never became ready");
        if let Some(rest) = line.strip_prefix("lab ") {
            prefix = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(path) = line.strip_prefix("work dir: ") {
            workdir = Some(PathBuf::from(path));
        }
        if line == "ready" {
            break;
        }
    }
    let prefix = prefix.expect("egw-lab up did not print its prefix");
    assert!(prefix.starts_with(&format!("{}{}-", topology::LAB_PREFIX_ROOT, up.id())));
    up.kill().unwrap();
    up.wait().unwrap();
    assert_eq!(
        topology::namespaces_with_prefix(&prefix).unwrap().len(),
        5,
        "SIGKILL should leave the namespaces behind"
    );

    let down = Command::new(lab_binary()).arg("down").output().unwrap();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(
        topology::namespaces_with_prefix(&prefix).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        topology::namespaces_with_prefix(live_lab.prefix())
            .unwrap()
            .len(),
        4,
        "down removed a live lab"
    );
    let workdir = workdir.expect("egw-lab up did not print its work dir");
    assert!(!workdir.exists(), "{} survived `down`", workdir.display());
    assert!(
        live_lab.workdir().exists(),
        "down removed a live lab's work dir"
    );

    let explicit = Command::new(lab_binary())
        .args(["down", "--prefix", live_lab.prefix()])
        .output()
        .unwrap();
    assert!(
        explicit.status.success(),
        "{}",
        String::from_utf8_lossy(&explicit.stderr)
    );
    assert_eq!(
        topology::namespaces_with_prefix(live_lab.prefix()).unwrap(),
        Vec::<String>::new()
    );
    live_lab.teardown().unwrap();
}

#[test]
fn down_refuses_foreign_prefixes() {
    let output = Command::new(lab_binary())
        .args(["down", "--prefix", "cni-"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("refusing"));
}

/// SIGTERM (and SIGINT) during a running `egw-lab up`/`demo` tear the lab down.
#[test]
fn sigterm_tears_the_lab_down() {
    must_be_root();
    let mut up = Command::new(lab_binary())
        .args(["up", "--gateway", "kernel", "--max-secs", "120"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(up.stdout.take().unwrap());
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut prefix = None;
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("egw-lab up never became ready");
        if let Some(rest) = line.strip_prefix("lab ") {
            prefix = rest.split_whitespace().next().map(str::to_owned);
        }
        if line == "ready" {
            break;
        }
    }
    let prefix = prefix.expect("egw-lab up did not print its prefix");
    assert_eq!(topology::namespaces_with_prefix(&prefix).unwrap().len(), 5);
    let kill = Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut status = None;
    for _ in 0..300 {
        status = up.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = status else {
        up.kill().unwrap();
        panic!("egw-lab up ignored SIGTERM for 15 s");
    };
    assert_eq!(status.code(), Some(128 + 15));
    assert_eq!(
        topology::namespaces_with_prefix(&prefix).unwrap(),
        Vec::<String>::new()
    );
}

/// The README's main command: `egw-lab demo` builds, probes, prints the table, tears down and
/// exits 0 only when every pod left with its pool address.
#[test]
fn demo_command_prints_each_pods_egress() {
    must_be_root();
    for gateway in gateways_under_test() {
        let mut command = Command::new(lab_binary());
        command.args(["demo", "--gateway", gateway.label(), "--pods", "2"]);
        if let Gateway::Egw { binary } = &gateway {
            command.arg("--gateway-bin").arg(binary);
        }
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let demo_prefix = format!("{}{}-", topology::LAB_PREFIX_ROOT, child.id());
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}: {stdout}{}",
            gateway.label(),
            String::from_utf8_lossy(&output.stderr)
        );
        let rows: Vec<&str> = stdout.lines().skip(1).collect();
        assert_eq!(rows.len(), 2, "{stdout}");
        assert!(
            rows[0].starts_with("pod-a") && rows[0].contains("198.51.100.1:"),
            "{stdout}"
        );
        assert!(
            rows[1].starts_with("pod-b") && rows[1].contains("198.51.100.2:"),
            "{stdout}"
        );
        assert!(rows.iter().all(|row| row.ends_with(" ok")), "{stdout}");
        assert_eq!(
            topology::namespaces_with_prefix(&demo_prefix).unwrap(),
            Vec::<String>::new()
        );
    }
}

/// The mirror answers unknown endpoints and bad parameters with errors, which the probe
/// turns into a failing exit status.
#[test]
fn mirror_rejects_bad_requests() {
    must_be_root();
    let mut lab = Lab::build(config(1)).unwrap();
    lab.start_mirror().unwrap();
    let get = |path: &str| {
        lab.run_in(
            &lab.inet_namespace(),
            lab_binary(),
            &[
                "probe".to_owned(),
                "get".to_owned(),
                topology::mirror_tcp().to_string(),
                path.to_owned(),
            ],
            Duration::from_secs(30),
        )
    };
    assert!(get("/").unwrap().stdout.starts_with("203.0.113.10:"));
    let not_found = get("/nope").unwrap_err().to_string();
    assert!(not_found.contains("404"), "{not_found}");
    let bad = get("/bytes?n=lots").unwrap_err().to_string();
    assert!(bad.contains("400"), "{bad}");
    let unseen = get("/icmp-seen?token=00").unwrap_err().to_string();
    assert!(unseen.contains("404"), "{unseen}");
    lab.teardown().unwrap();
}
