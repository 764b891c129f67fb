//! End-to-end behaviour specific to egw-gateway, on real packets in lab namespaces: bypass and
//! deny rules, fail-closed for unknown sources, unsolicited and spoofed inbound traffic, ICMP
//! error translation, restart after SIGKILL, and the control API's status document.
//!
//! Needs root and a built egw-gateway + egwctl (`EGW_GATEWAY_BIN`, or next to the test binary's
//! target directory, as `cargo test --workspace` builds them). Fails, never skips, without them.

use std::net::SocketAddr;
use std::path::PathBuf;

use egw_lab::{gateway, topology, Gateway, Lab, LabConfig};
use serde_json::Value;

fn egw() -> Gateway {
    if let Err(error) = topology::require_root() {
        panic!("these end-to-end tests build network namespaces and must run as root: {error}");
    }
    let binary = gateway::find_gateway_binary(None).unwrap_or_else(|error| {
        panic!("egw-gateway is needed (cargo build -p egw-gateway -p egwctl): {error}")
    });
    Gateway::Egw { binary }
}

fn lab(pods: usize) -> Lab {
    let config =
        LabConfig::new(pods, PathBuf::from(env!("CARGO_BIN_EXE_egw-lab"))).expect("lab config");
    Lab::up(config, egw())
        .unwrap_or_else(|error| panic!("building the lab with egw-gateway: {error}"))
}

fn status(lab: &Lab) -> Value {
    let text = lab
        .egwctl(&["-o", "json", "status"])
        .expect("egwctl status");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("status is JSON ({e}): {text}"))
}

/// Sum of one drop reason over all cores.
fn drops(status: &Value, reason: &str) -> u64 {
    status["cores"]
        .as_array()
        .map(|cores| {
            cores
                .iter()
                .map(|c| c["drops"][reason].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// From the internet namespace, one UDP datagram posing as `from` to `to`.
fn send_from_internet(lab: &Lab, from: &str, to: &str) {
    let args: Vec<String> = ["probe", "udp-send", "--bind", from, to]
        .iter()
        .map(|s| s.to_string())
        .collect();
    lab.run_in(
        &lab.inet_namespace(),
        &lab.config().lab_binary,
        &args,
        std::time::Duration::from_secs(10),
    )
    .expect("udp-send from the internet namespace");
}

const BYPASS_AND_DENY: &str = "\
generation: 10
pools:
  - { name: pool-a, addresses: [198.51.100.1] }
  - { name: pool-b, addresses: [198.51.100.2] }
policies:
  - name: via-a
    rules:
      - { destination: 0.0.0.0/0, snat: pool-a }
      - { destination: 203.0.113.10/32, bypass: true, description: internal partner }
  - name: deny-mirror
    rules:
      - { destination: 0.0.0.0/0, snat: pool-b }
      - { destination: 203.0.113.10/32, deny: mirror blocked }
sources:
  - { cidr: 10.244.1.10/32, policy: via-a }
  - { cidr: 10.244.1.11/32, policy: deny-mirror }
";

#[test]
fn bypass_forwards_unchanged_deny_and_unknown_sources_are_dropped_and_counted() {
    let lab = lab(3);
    // The mirror can answer a pod address directly only for bypassed traffic.
    let route: Vec<String> = ["route", "add", "10.244.0.0/16", "via", "203.0.113.1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    lab.run_in(
        &lab.inet_namespace(),
        "ip",
        &route,
        std::time::Duration::from_secs(5),
    )
    .expect("route back to pods");
    lab.apply_route_table_yaml(BYPASS_AND_DENY).expect("apply");

    let seen = lab.probe_tcp("pod-a").expect("bypassed TCP");
    assert_eq!(
        seen.ip().to_string(),
        "10.244.1.10",
        "bypass keeps the pod address"
    );
    let seen = lab.probe_udp("pod-a").expect("bypassed UDP");
    assert_eq!(seen.ip().to_string(), "10.244.1.10");

    let before = status(&lab);
    assert!(lab.probe_udp("pod-b").is_err(), "a Deny rule drops");
    assert!(
        lab.probe_udp("pod-c").is_err(),
        "a pod with no policy gets no egress"
    );
    let after = status(&lab);
    assert!(
        drops(&after, "denied") > drops(&before, "denied"),
        "{after}"
    );
    assert!(
        drops(&after, "no_policy") > drops(&before, "no_policy"),
        "{after}"
    );
}

#[test]
fn unsolicited_and_spoofed_inbound_packets_are_dropped() {
    let lab = lab(2);
    let mapped = lab.probe_udp("pod-a").expect("udp");
    let before = drops(&status(&lab), "no_flow");
    // Nothing mapped on this port.
    send_from_internet(&lab, "203.0.113.10:5555", "198.51.100.1:40000");
    // The mapped external port, from the mirror's address but the wrong port: no conntrack entry.
    send_from_internet(&lab, "203.0.113.10:9999", &mapped.to_string());
    let mut after = before;
    for _ in 0..50 {
        after = drops(&status(&lab), "no_flow");
        if after >= before + 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        after,
        before + 2,
        "both unsolicited packets dropped as no_flow"
    );
}

#[test]
fn icmp_errors_from_the_internet_reach_the_pod_translated() {
    let lab = lab(2);
    let closed: SocketAddr = "203.0.113.10:9".parse().expect("addr");
    assert!(
        lab.probe_udp_refused("pod-a", closed).expect("probe"),
        "the mirror host's port-unreachable must reach pod-a's socket with its quote translated"
    );
    let s = status(&lab);
    assert!(s.to_string().contains("icmp"), "{s}");
}

#[test]
fn sigkill_leaves_no_xdp_program_and_a_restarted_gateway_carries_traffic() {
    let mut lab = lab(2);
    assert_eq!(
        lab.probe_udp("pod-a").expect("before").ip().to_string(),
        "198.51.100.1"
    );
    lab.kill_gateway().expect("kill");
    let args: Vec<String> = ["-d", "link", "show"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let links = lab
        .run_in(
            &lab.gateway_namespace(),
            "ip",
            &args,
            std::time::Duration::from_secs(5),
        )
        .expect("ip link");
    assert!(
        !links.stdout.contains("prog/xdp"),
        "a killed gateway left an XDP program attached:\n{}",
        links.stdout
    );
    assert!(
        lab.probe_udp("pod-a").is_err(),
        "no egress at all while the gateway is down (fail closed)"
    );
    lab.restart_gateway().expect("restart");
    assert_eq!(
        lab.probe_udp("pod-a")
            .expect("after restart")
            .ip()
            .to_string(),
        "198.51.100.1"
    );
    assert_eq!(
        lab.probe_tcp("pod-b")
            .expect("after restart")
            .ip()
            .to_string(),
        "198.51.100.2"
    );
}

#[test]
fn status_json_has_the_documented_fields() {
    let lab = lab(2);
    lab.probe_udp("pod-a").expect("traffic");
    let s = status(&lab);
    for field in [
        "version",
        "uptime_seconds",
        "epoch",
        "generation",
        "interfaces",
        "cores",
        "conntrack",
        "external_ips",
    ] {
        assert!(s.get(field).is_some(), "status lacks {field}: {s}");
    }
    let interfaces = s["interfaces"].as_array().expect("interfaces");
    assert_eq!(interfaces.len(), 2, "{s}");
    assert!(
        interfaces
            .iter()
            .all(|i| i["xdp_mode"].is_string() && i["socket_mode"].is_string()),
        "{s}"
    );
    let rx: u64 = s["cores"]
        .as_array()
        .expect("cores")
        .iter()
        .map(|c| c["rx_packets"].as_u64().unwrap_or(0))
        .sum();
    assert!(rx > 0, "counters move with traffic: {s}");
    assert_eq!(s["generation"].as_u64(), Some(1), "{s}");
}
