//! `bench-quick`: a short iperf3 TCP run and a UDP small-packet flood from the first pod to the
//! internet namespace, through whichever gateway the lab runs. Numbers are for side-by-side
//! comparison (kernel vs egw) on the same machine, not absolute claims.

use std::thread;
use std::time::Duration;

use serde_json::Value;

use egw_testbed::topology::MIRROR_ADDRESS;
use egw_testbed::{LabError, Result};

use crate::lab::Lab;

/// Upper bound on each iperf3 run.
pub const MAX_BENCH_SECONDS: u32 = 10;
const IPERF_PORT: u16 = 5201;
/// UDP payload size for the flood: small packets measure per-packet cost, which is what a
/// NAT gateway spends its time on.
pub const UDP_PAYLOAD_BYTES: u32 = 64;
const SERVER_START_ATTEMPTS: u32 = 25;

/// Results of one `bench-quick`.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub seconds: u32,
    pub tcp_gbit_per_s: f64,
    pub udp_payload_bytes: u32,
    pub udp_sent_pps: f64,
    pub udp_received_pps: f64,
    pub udp_received_gbit_per_s: f64,
    pub udp_loss_percent: f64,
}

fn number(json: &Value, path: &[&str]) -> Result<f64> {
    let mut node = json;
    for key in path {
        node = &node[*key];
    }
    node.as_f64().ok_or_else(|| LabError::BadOutput {
        command: format!("iperf3 -J (field {})", path.join(".")),
        output: json
            .get("error")
            .map_or_else(|| "field missing".to_owned(), Value::to_string),
    })
}

/// Runs both measurements from the lab's first pod; each lasts `seconds` (capped at
/// [`MAX_BENCH_SECONDS`]).
pub fn bench_quick(lab: &Lab, seconds: u32) -> Result<BenchReport> {
    let seconds = seconds.clamp(1, MAX_BENCH_SECONDS);
    let pod = lab
        .config()
        .pods
        .first()
        .ok_or_else(|| LabError::Config("lab has no pods".to_owned()))?
        .name
        .clone();
    let pod_namespace = lab.pod_namespace(&pod)?;
    let server_args: Vec<String> = [
        "-s",
        "-B",
        &MIRROR_ADDRESS.to_string(),
        "-p",
        &IPERF_PORT.to_string(),
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    let _server = lab.spawn_in(
        &lab.inet_namespace(),
        "iperf3-server",
        "iperf3",
        &server_args,
    )?;

    let client = |extra: &[&str]| -> Result<Value> {
        let mut args: Vec<String> = vec![
            "-c".to_owned(),
            MIRROR_ADDRESS.to_string(),
            "-p".to_owned(),
            IPERF_PORT.to_string(),
            "-t".to_owned(),
            seconds.to_string(),
            "-J".to_owned(),
            "--connect-timeout".to_owned(),
            "3000".to_owned(),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let timeout = Duration::from_secs(u64::from(seconds) + 20);
        let mut last_error = None;
        // The server needs a moment to listen, and serves one test at a time.
        for _ in 0..SERVER_START_ATTEMPTS {
            match lab.run_in(&pod_namespace, "iperf3", &args, timeout) {
                Ok(output) => {
                    let json: Value =
                        serde_json::from_str(&output.stdout).map_err(|_| LabError::BadOutput {
                            command: "iperf3 -J".to_owned(),
                            output: output.stdout.clone(),
                        })?;
                    // iperf3 3.12 reports e.g. "connection refused" in the JSON and exits 0.
                    match json.get("error") {
                        None => return Ok(json),
                        Some(error) => {
                            last_error = Some(LabError::ProbeFailed(format!("iperf3: {error}")))
                        }
                    }
                }
                Err(error @ LabError::Timeout { .. }) => return Err(error),
                Err(error) => last_error = Some(error),
            }
            thread::sleep(Duration::from_millis(200));
        }
        Err(last_error.unwrap_or_else(|| LabError::ProbeFailed("iperf3 never ran".to_owned())))
    };

    let tcp = client(&[])?;
    let tcp_bits = number(&tcp, &["end", "sum_received", "bits_per_second"])?;
    let udp = client(&["-u", "-b", "0", "-l", &UDP_PAYLOAD_BYTES.to_string()])?;
    let received = &["end", "sum_received"];
    let field = |name: &str| number(&udp, &[received[0], received[1], name]);
    let udp_seconds = field("seconds")?.max(f64::EPSILON);
    let packets = field("packets")?;
    let lost = field("lost_packets")?;
    Ok(BenchReport {
        seconds,
        tcp_gbit_per_s: tcp_bits / 1e9,
        udp_payload_bytes: UDP_PAYLOAD_BYTES,
        udp_sent_pps: packets / udp_seconds,
        udp_received_pps: (packets - lost) / udp_seconds,
        udp_received_gbit_per_s: field("bits_per_second")? / 1e9,
        udp_loss_percent: field("lost_percent")?,
    })
}
