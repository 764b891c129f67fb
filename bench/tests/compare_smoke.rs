//! CI smoke test: `egw-bench compare` through a real lab (kernel gateway, plus egw-gateway when
//! `EGW_GATEWAY_BIN` names one), a second per point at a modest fixed rate. It checks that the
//! pipeline works — frames arrive with the SNAT source, TCP connections are accepted, the three
//! output files are written and the table renders missing contestants — not how fast it is.
//! Needs root (network namespaces, XDP).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn egw_gateway() -> Option<PathBuf> {
    std::env::var_os("EGW_GATEWAY_BIN")
        .map(PathBuf::from)
        .filter(|path| path.is_file())
}

fn points<'a>(json: &'a Value, contestant: &str) -> Vec<&'a Value> {
    json["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|point| point["contestant"] == contestant)
        .collect()
}

#[test]
fn compare_runs_the_kernel_and_renders_every_output() {
    let out = tempfile::tempdir().unwrap();
    let gateway = egw_gateway();
    let mut command = Command::new(env!("CARGO_BIN_EXE_egw-bench"));
    command.args([
        "compare",
        "--flows",
        "300",
        "--sizes",
        "64,1514",
        "--seconds",
        "1",
        "--rate",
        "20000",
        "--no-host-tune",
        "--quiet",
        "--out-dir",
    ]);
    command.arg(out.path());
    match &gateway {
        Some(binary) => {
            command.arg("--gateway-bin").arg(binary);
            command.args(["--contestants", "kernel,egw,ceiling"]);
        }
        None => {
            command.args(["--gateway-bin", "/nonexistent/egw-gateway"]);
            command.args(["--contestants", "kernel,egw"]);
        }
    }
    command.env_remove("EGW_GATEWAY_BIN");
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // The lab of that process is gone.
    let namespaces = egw_testbed::namespaces_with_prefix(&format!("egwlab-{pid}-")).unwrap();
    assert!(namespaces.is_empty(), "left behind: {namespaces:?}");

    let files: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    let with_extension = |extension: &str| {
        files
            .iter()
            .find(|path| path.extension().is_some_and(|found| found == extension))
            .unwrap_or_else(|| panic!("no .{extension} in {files:?}"))
            .clone()
    };
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(with_extension("json")).unwrap()).unwrap();
    let markdown = std::fs::read_to_string(with_extension("md")).unwrap();
    let svg = std::fs::read_to_string(with_extension("svg")).unwrap();

    let kernel = points(&json, "kernel");
    assert_eq!(kernel.len(), 3, "two UDP sizes and one TCP point");
    for point in &kernel {
        assert_eq!(point["status"], "ok", "{point:#}");
        let receiver = &point["receiver"];
        assert_eq!(receiver["expected_sources"][0], "198.51.100.1");
        assert_eq!(receiver["source_mismatches"], 0);
        assert_eq!(receiver["tcp_source_mismatches"], 0);
        let delivered = point["delivered"].as_u64().unwrap();
        let sent = point["sent"].as_u64().unwrap();
        assert!(delivered > 0 && delivered <= sent, "{point:#}");
        if point["kind"] == "udp" {
            assert_eq!(receiver["packets"].as_u64().unwrap(), delivered);
            // 20 000 pps for one second: the rate limit bounds what was sent.
            assert!(sent <= 20_001, "{sent}");
            assert!(receiver["latency"]["samples"].as_u64().unwrap() > 0);
            assert_eq!(point["generators"][0]["source"], "10.244.1.10");
        } else {
            assert!(receiver["tcp_accepted"].as_u64().unwrap() > 0);
        }
    }

    match gateway {
        Some(_) => {
            for contestant in ["egw", "ceiling"] {
                for point in points(&json, contestant) {
                    assert_eq!(point["status"], "ok", "{point:#}");
                }
            }
        }
        None => {
            let egw = points(&json, "egw");
            assert_eq!(egw.len(), 3);
            assert!(egw.iter().all(|point| point["status"] == "not_run"));
            let row = markdown
                .lines()
                .find(|line| line.starts_with("| 1 | UDP 300 flows, 64 B"))
                .unwrap_or_else(|| panic!("{markdown}"));
            assert!(row.contains("not run"), "{row}");
        }
    }
    assert!(markdown.contains("| 1 | TCP connect+close |"), "{markdown}");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains("kernel 64 B") && svg.contains("<polyline"),
        "{svg}"
    );
}
