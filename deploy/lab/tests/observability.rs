//! egw-gateway's observability on real packets in lab namespaces: the `/metrics` series move
//! with traffic and drops, and the NAT event log records one `create` per flow with the
//! addresses the remote side saw, one `delete` (reason `shutdown`) per flow still open at
//! SIGTERM, and answers `egwctl nat-log query --external IP:PORT --at TIME` with the right pod.
//!
//! Deletes are asserted at shutdown rather than on idle timeout: the gateway enforces the RFC
//! minimum timeouts (minutes), and flows still open when the gateway stops must be closed in a
//! compliance log anyway.
//!
//! Needs root and a built egw-gateway + egwctl (`EGW_GATEWAY_BIN`, or next to the test binary's
//! target directory, as `cargo test --workspace` builds them). Fails, never skips, without them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egw_lab::{gateway, topology, Gateway, Lab, LabConfig};
use serde_json::Value;

/// How long a counter may take to show up in a scrape (workers publish every 100 ms).
const SCRAPE_PATIENCE: Duration = Duration::from_secs(10);

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
    let mut config =
        LabConfig::new(pods, PathBuf::from(env!("CARGO_BIN_EXE_egw-lab"))).expect("lab config");
    config.egw_observability = true;
    Lab::up(config, egw())
        .unwrap_or_else(|error| panic!("building the lab with egw-gateway: {error}"))
}

/// The value of one series (`name{labels}` exactly as rendered), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, value)| value.parse().ok())
}

fn scrape(lab: &Lab) -> String {
    lab.egw_metrics()
        .expect("GET /metrics in the gateway namespace")
}

/// Scrapes until `series` satisfies `accept`; panics with the last scrape otherwise.
fn wait_for(lab: &Lab, series: &str, accept: impl Fn(f64) -> bool) -> String {
    let start = Instant::now();
    loop {
        let metrics = scrape(lab);
        if sample(&metrics, series).is_some_and(&accept) {
            return metrics;
        }
        if start.elapsed() > SCRAPE_PATIENCE {
            panic!("{series} never reached the expected value; last scrape:\n{metrics}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const DENY_POD_B: &str = "\
generation: 5
pools:
  - { name: pool-a, addresses: [198.51.100.1] }
  - { name: pool-b, addresses: [198.51.100.2] }
policies:
  - name: via-a
    rules:
      - { destination: 0.0.0.0/0, snat: pool-a }
  - name: deny-mirror
    rules:
      - { destination: 0.0.0.0/0, snat: pool-b }
      - { destination: 203.0.113.10/32, deny: mirror blocked }
sources:
  - { cidr: 10.244.1.10/32, policy: via-a }
  - { cidr: 10.244.1.11/32, policy: deny-mirror }
";

#[test]
fn metrics_expose_the_documented_series_and_follow_traffic_and_drops() {
    let lab = lab(2);
    assert_eq!(lab.egw_http_get("/healthz").expect("healthz"), "ok\n");

    let before = scrape(&lab);
    for series in [
        "egw_rx_packets_total{core=\"0\"}",
        "egw_rx_bytes_total{core=\"0\"}",
        "egw_tx_packets_total{core=\"0\"}",
        "egw_tx_bytes_total{core=\"0\"}",
        "egw_flows_created_total{core=\"0\"}",
        "egw_flows_expired_total{core=\"0\"}",
        "egw_handoffs_total{core=\"0\"}",
        "egw_conntrack_flows{core=\"0\"}",
        "egw_drops_total{core=\"0\",reason=\"denied\"}",
        "egw_drops_total{core=\"0\",reason=\"no_route\"}",
        "egw_route_table_generation",
        "egw_natlog_events_written_total",
        "egw_natlog_events_dropped_total",
    ] {
        assert!(
            sample(&before, series).is_some(),
            "{series} missing:\n{before}"
        );
    }
    assert!(
        sample(&before, "egw_conntrack_capacity{core=\"0\"}")
            .is_some_and(|capacity| capacity > 0.0),
        "{before}"
    );
    assert_eq!(sample(&before, "egw_route_table_generation"), Some(1.0));
    for interface in ["gw-in", "gw-out"] {
        let prefix = format!("egw_xdp_info{{interface=\"{interface}\",mode=\"");
        assert!(
            before
                .lines()
                .any(|line| line.starts_with(&prefix) && line.ends_with("} 1")),
            "no XDP info for {interface}:\n{before}"
        );
    }
    let rx_before = sample(&before, "egw_rx_packets_total{core=\"0\"}").unwrap();
    let created_before = sample(&before, "egw_flows_created_total{core=\"0\"}").unwrap();

    lab.probe_tcp("pod-a").expect("TCP through egw");
    lab.probe_udp("pod-a").expect("UDP through egw");
    let after = wait_for(&lab, "egw_flows_created_total{core=\"0\"}", |created| {
        created >= created_before + 2.0
    });
    assert!(
        sample(&after, "egw_rx_packets_total{core=\"0\"}").unwrap() > rx_before,
        "{after}"
    );
    assert!(
        sample(&after, "egw_tx_packets_total{core=\"0\"}").unwrap() > 0.0,
        "{after}"
    );
    assert!(
        sample(&after, "egw_conntrack_flows{core=\"0\"}").unwrap() >= 2.0,
        "{after}"
    );
    for protocol in ["tcp", "udp"] {
        let labels = format!("{{external_ip=\"198.51.100.1\",protocol=\"{protocol}\"}}");
        assert!(
            sample(&after, &format!("egw_ports_in_use{labels}")).is_some_and(|ports| ports >= 1.0),
            "{protocol}: {after}"
        );
        assert!(
            sample(&after, &format!("egw_port_utilization_ratio{labels}"))
                .is_some_and(|ratio| ratio > 0.0 && ratio < 0.9),
            "{protocol}: {after}"
        );
        assert_eq!(
            sample(&after, &format!("egw_port_exhaustion{labels}")),
            Some(0.0),
            "{protocol}: {after}"
        );
    }
    wait_for(&lab, "egw_natlog_events_written_total", |written| {
        written >= 2.0
    });

    assert_eq!(
        sample(&after, "egw_drops_total{core=\"0\",reason=\"denied\"}"),
        Some(0.0)
    );
    lab.apply_route_table_yaml(DENY_POD_B)
        .expect("apply the deny table");
    wait_for(&lab, "egw_route_table_generation", |generation| {
        generation == 5.0
    });
    assert!(lab.probe_udp("pod-b").is_err(), "a Deny rule drops");
    wait_for(
        &lab,
        "egw_drops_total{core=\"0\",reason=\"denied\"}",
        |denied| denied >= 1.0,
    );
}

/// Every record of every log file in `dir`.
fn nat_log_records(dir: &Path) -> Vec<Value> {
    let mut records = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|error| panic!("{dir:?}: {error}"));
    for entry in entries {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|extension| extension == "jsonl")
        {
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                records.push(
                    serde_json::from_str(line)
                        .unwrap_or_else(|error| panic!("{path:?}: {error}: {line}")),
                );
            }
        }
    }
    records
}

fn field<'a>(record: &'a Value, name: &str) -> &'a str {
    record[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} missing in {record}"))
}

/// The lab table, with pool-a's address mapped to a public address the way the controller
/// pushes an AWS Elastic IP: the gateway still translates to 198.51.100.1 and logs 54.240.0.1.
const POOL_A_BEHIND_ELASTIC_IP: &str = "\
generation: 3
pools:
  - { name: pool-a, addresses: [{snat: 198.51.100.1, public: 54.240.0.1}] }
  - { name: pool-b, addresses: [198.51.100.2] }
policies:
  - name: via-a
    rules:
      - { destination: 0.0.0.0/0, snat: pool-a }
  - name: via-b
    rules:
      - { destination: 0.0.0.0/0, snat: pool-b }
sources:
  - { cidr: 10.244.1.10/32, policy: via-a }
  - { cidr: 10.244.1.11/32, policy: via-b }
";

#[test]
fn nat_log_records_each_flow_and_closes_it_at_shutdown_and_egwctl_finds_the_pod() {
    let mut lab = lab(2);
    lab.apply_route_table_yaml(POOL_A_BEHIND_ELASTIC_IP)
        .expect("apply the table with a public address");
    wait_for(&lab, "egw_route_table_generation", |generation| {
        generation == 3.0
    });
    let seen_tcp = lab.probe_tcp("pod-a").expect("TCP through egw");
    let seen_udp = lab.probe_udp("pod-b").expect("UDP through egw");
    let status = lab
        .terminate_gateway(Duration::from_secs(30))
        .expect("egw-gateway stops on SIGTERM");
    assert!(status.success(), "egw-gateway exit status {status}");

    let records = nat_log_records(&lab.egw_nat_log_dir());
    let creates: Vec<&Value> = records
        .iter()
        .filter(|record| record["event"] == "create")
        .collect();
    let deletes: Vec<&Value> = records
        .iter()
        .filter(|record| record["event"] == "delete")
        .collect();
    assert_eq!(creates.len(), 2, "one create per flow: {records:#?}");
    assert_eq!(deletes.len(), 2, "one delete per flow: {records:#?}");

    let flows: [(&str, &str, SocketAddr, SocketAddr); 2] = [
        ("tcp", "10.244.1.10", seen_tcp, topology::mirror_tcp()),
        ("udp", "10.244.1.11", seen_udp, topology::mirror_udp()),
    ];
    for (proto, pod, external, remote) in flows {
        let create = creates
            .iter()
            .find(|record| record["proto"] == proto)
            .unwrap_or_else(|| panic!("no {proto} create: {records:#?}"));
        assert_eq!(field(create, "external"), external.to_string(), "{create}");
        assert_eq!(field(create, "remote"), remote.to_string(), "{create}");
        assert!(
            field(create, "pod").starts_with(&format!("{pod}:")),
            "{create}"
        );
        assert_eq!(
            field(create, "gateway"),
            gateway::EGW_LAB_GATEWAY_NAME,
            "{create}"
        );
        let delete = deletes
            .iter()
            .find(|record| record["proto"] == proto)
            .unwrap_or_else(|| panic!("no {proto} delete: {records:#?}"));
        for key in ["pod", "external", "public", "remote"] {
            assert_eq!(delete[key], create[key], "{key}: {delete} vs {create}");
        }
        assert_eq!(field(delete, "reason"), "shutdown", "{delete}");
        // The pushed table's public address is logged for pool-a's flows only, same port.
        let public = (proto == "tcp").then(|| format!("54.240.0.1:{}", external.port()));
        assert_eq!(
            create["public"].as_str().map(str::to_owned),
            public,
            "{create}"
        );

        let at = field(create, "ts");
        let answer = lab
            .egwctl(&[
                "-o",
                "json",
                "nat-log",
                "query",
                "--dir",
                &lab.egw_nat_log_dir().display().to_string(),
                "--external",
                &external.to_string(),
                "--at",
                at,
            ])
            .expect("egwctl nat-log query");
        let answer: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|error| panic!("query answer is JSON ({error}): {answer}"));
        let mappings = answer["mappings"].as_array().expect("mappings");
        assert_eq!(mappings.len(), 1, "{answer}");
        assert_eq!(mappings[0]["pod"], create["pod"], "{answer}");
        assert_eq!(mappings[0]["reason"], "shutdown", "{answer}");

        // The compliance question as the outside world asks it: by the public endpoint.
        if let Some(public) = &public {
            let answer = lab
                .egwctl(&[
                    "-o",
                    "json",
                    "nat-log",
                    "query",
                    "--dir",
                    &lab.egw_nat_log_dir().display().to_string(),
                    "--external",
                    public,
                    "--at",
                    at,
                ])
                .expect("egwctl nat-log query by public endpoint");
            let answer: Value = serde_json::from_str(&answer).expect("JSON answer");
            assert_eq!(answer["mappings"][0]["pod"], create["pod"], "{answer}");
            assert_eq!(answer["mappings"].as_array().map(Vec::len), Some(1));
        }
    }
}
