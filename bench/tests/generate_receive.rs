//! `egw-bench generate` and `receive` run by hand in a lab (kernel gateway), the way the README
//! shows: the generator finds its source address and the gateway's MAC itself, the receiver
//! stops on its own after the expected count. Needs root (network namespaces, XDP).

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use egw_testbed::{Gateway, LabConfig, Testbed};
use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_egw-bench");

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| (*word).to_owned()).collect()
}

fn wait_for_file(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario on one lab: UDP load, then TCP connections, each checked end to end"
)]
fn udp_and_tcp_load_arrive_translated() {
    let mut lab = Testbed::build(LabConfig::new(1, PathBuf::from(BENCH)).unwrap()).unwrap();
    lab.start_gateway(Gateway::Kernel).unwrap();
    let pod = lab.pod_namespace("pod-a").unwrap();
    let inet = lab.inet_namespace();
    let dir = lab.workdir().to_owned();

    // UDP: 5000 packets at 50 kpps over 100 flows.
    let (ready, received) = (dir.join("udp.ready"), dir.join("udp-received.json"));
    let mut receiver_args = args(&[
        "receive",
        "--expect-source",
        "198.51.100.1",
        "--expect-count",
        "5000",
        "--duration",
        "30",
        "--quiet",
        "--json-out",
    ]);
    receiver_args.extend([
        path_arg(&received),
        "--ready-file".to_owned(),
        path_arg(&ready),
    ]);
    let receiver = lab
        .spawn_in(&inet, "udp-receiver", BENCH, &receiver_args)
        .unwrap();
    wait_for_file(&ready);
    let sent = lab
        .run_in(
            &pod,
            BENCH,
            &args(&[
                "generate",
                "--flows",
                "100",
                "--size",
                "128",
                "--rate",
                "50000",
                "--count",
                "5000",
                "--duration",
                "10",
                "--json",
                "--quiet",
            ]),
            Duration::from_secs(30),
        )
        .unwrap();
    let sent: Value = serde_json::from_str(&sent.stdout).unwrap();
    assert_eq!(sent["sent"], 5000, "{sent:#}");
    assert_eq!(sent["source"], "10.244.1.10");
    assert_eq!(sent["frame_len"], 128);
    assert!(receiver
        .wait_or_kill(Duration::from_secs(30))
        .unwrap()
        .success());
    let received = read_json(&received);
    assert_eq!(received["packets"], 5000, "{received:#}");
    assert_eq!(received["source_mismatches"], 0);
    assert_eq!(received["sequence_span"], 5000);
    assert_eq!(received["bytes"], 5000 * 128);
    assert_eq!(received["latency"]["samples"], 5000);
    assert_eq!(received["inter_arrival"]["samples"], 4999);

    // TCP: 200 connections, accepted from the SNAT address.
    let (ready, received) = (dir.join("tcp.ready"), dir.join("tcp-received.json"));
    let mut receiver_args = args(&[
        "receive",
        "--no-udp",
        "--tcp-listen",
        "203.0.113.10:9100",
        "--expect-source",
        "198.51.100.1",
        "--expect-count",
        "200",
        "--duration",
        "30",
        "--quiet",
        "--json-out",
    ]);
    receiver_args.extend([
        path_arg(&received),
        "--ready-file".to_owned(),
        path_arg(&ready),
    ]);
    let receiver = lab
        .spawn_in(&inet, "tcp-receiver", BENCH, &receiver_args)
        .unwrap();
    wait_for_file(&ready);
    let connected = lab
        .run_in(
            &pod,
            BENCH,
            &args(&[
                "generate",
                "--mode",
                "tcp",
                "--target",
                "203.0.113.10:9100",
                "--parallel",
                "8",
                "--count",
                "200",
                "--duration",
                "20",
                "--json",
                "--quiet",
            ]),
            Duration::from_secs(40),
        )
        .unwrap();
    let connected: Value = serde_json::from_str(&connected.stdout).unwrap();
    assert_eq!(connected["connected"], 200, "{connected:#}");
    assert_eq!(connected["failed"], 0);
    assert!(receiver
        .wait_or_kill(Duration::from_secs(30))
        .unwrap()
        .success());
    let received = read_json(&received);
    assert_eq!(received["tcp_accepted"], 200, "{received:#}");
    assert_eq!(received["tcp_source_mismatches"], 0);
    assert_eq!(received["packets"], 0);
    lab.teardown().unwrap();
}

#[test]
fn a_wrong_expected_source_is_counted() {
    let mut lab = Testbed::build(LabConfig::new(1, PathBuf::from(BENCH)).unwrap()).unwrap();
    lab.start_gateway(Gateway::Kernel).unwrap();
    let pod = lab.pod_namespace("pod-a").unwrap();
    let dir = lab.workdir().to_owned();
    let (ready, received) = (dir.join("ready"), dir.join("received.json"));
    // pod-a leaves as 198.51.100.1; expecting .2 must flag every packet.
    let mut receiver_args = args(&[
        "receive",
        "--expect-source",
        "198.51.100.2",
        "--expect-count",
        "500",
        "--duration",
        "30",
        "--quiet",
        "--json-out",
    ]);
    receiver_args.extend([
        path_arg(&received),
        "--ready-file".to_owned(),
        path_arg(&ready),
    ]);
    let receiver = lab
        .spawn_in(&lab.inet_namespace(), "receiver", BENCH, &receiver_args)
        .unwrap();
    wait_for_file(&ready);
    lab.run_in(
        &pod,
        BENCH,
        &args(&[
            "generate",
            "--rate",
            "20000",
            "--count",
            "500",
            "--duration",
            "10",
            "--quiet",
        ]),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(receiver
        .wait_or_kill(Duration::from_secs(30))
        .unwrap()
        .success());
    let received = read_json(&received);
    assert_eq!(received["packets"], 500, "{received:#}");
    assert_eq!(received["source_mismatches"], 500);
    assert_eq!(received["first_mismatch"], "198.51.100.1");
    lab.teardown().unwrap();
}
