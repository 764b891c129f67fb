//! `egw-controller --local DIR` end to end: a manifest directory, a real tonic gateway on a Unix
//! socket, edits and deletions in the directory.

mod support;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use egw_controller::local_run::{run_local, LocalOptions};
use egw_controller::metrics::Metrics;
use egw_controller::push::PushOptions;
use support::{compile_wire, verdict, wait_until, TestGateway, Verdict};

const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 20);
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const FIRST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const SECOND: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);

fn gateway_yaml(endpoint: &str, address: Ipv4Addr) -> String {
    format!(
        r#"apiVersion: egw.dev/v1alpha1
kind: EgressGateway
metadata: {{name: lab}}
spec:
  selector: {{}}
  static:
    instances:
      - {{name: lab-0, endpoint: "{endpoint}", addresses: [{address}]}}
"#
    )
}

const WORKLOADS: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: partners
  annotations: {egw.dev/policy: partner-x}
---
apiVersion: v1
kind: Pod
metadata: {name: sync-0, namespace: partners}
status: {phase: Running, podIP: 10.244.1.20}
"#;

const POLICY: &str = r#"apiVersion: egw.dev/v1alpha1
kind: EgressGatewayPolicy
metadata: {name: partner-x}
spec:
  rules:
    - destination: {cidr: 10.0.0.0/8}
      action: Bypass
    - gateway: {name: lab}
"#;

fn write(dir: &Path, name: &str, text: &str) {
    // Write then rename, as editors and `kubectl cp`-like tools do, so a scan never sees half a file.
    let staging = dir.join(format!(".{name}.tmp"));
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(&staging, dir.join(name)).unwrap();
}

#[tokio::test]
async fn edits_and_deletions_in_the_directory_reach_the_gateway() {
    let sockets = tempfile::tempdir().unwrap();
    let manifests = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start(&sockets.path().join("lab-0.sock"), 11).await;
    write(
        manifests.path(),
        "gateway.yaml",
        &gateway_yaml(&gateway.endpoint(), FIRST),
    );
    write(manifests.path(), "workloads.yaml", WORKLOADS);
    write(manifests.path(), "policy.yaml", POLICY);

    let metrics = Metrics::new();
    let options = LocalOptions {
        dir: manifests.path().to_owned(),
        scan_interval: Duration::from_millis(50),
        push: PushOptions {
            poll_interval: Duration::from_millis(100),
            ..PushOptions::default()
        },
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn(run_local(options, metrics.clone(), async {
        let _ = stopped.await;
    }));

    let first = gateway.wait_for_table("first table", |_| true).await;
    assert_eq!(first.generation, 1);
    let table = compile_wire(&first);
    assert_eq!(verdict(&table, POD, REMOTE), Verdict::Snat(vec![FIRST]));
    assert_eq!(
        verdict(&table, POD, Ipv4Addr::new(10, 1, 2, 3)),
        Verdict::Bypass
    );

    // Edit: the instance's address changes.
    write(
        manifests.path(),
        "gateway.yaml",
        &gateway_yaml(&gateway.endpoint(), SECOND),
    );
    let second = gateway
        .wait_for_table("table after the edit", |table| table.generation == 2)
        .await;
    assert_eq!(
        verdict(&compile_wire(&second), POD, REMOTE),
        Verdict::Snat(vec![SECOND])
    );

    // A broken file is not applied: the gateway keeps its table.
    write(
        manifests.path(),
        "zz-broken.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: [\n",
    );
    wait_until("the load error", || {
        metrics
            .render()
            .contains("egw_controller_errors_total{reason=\"local_load\"} 1")
            .then_some(())
    })
    .await;
    assert_eq!(gateway.applies().len(), 2);
    std::fs::remove_file(manifests.path().join("zz-broken.yaml")).unwrap();

    // Deleting the referenced policy: the pod is denied, with the reason, and that is pushed.
    std::fs::remove_file(manifests.path().join("policy.yaml")).unwrap();
    let denied = gateway
        .wait_for_table("table after deleting the policy", |table| {
            table.generation == 3
        })
        .await;
    let table = compile_wire(&denied);
    match verdict(&table, POD, REMOTE) {
        Verdict::Deny(reason) => assert!(reason.contains("partner-x"), "{reason}"),
        other => panic!("expected a deny, got {other:?}"),
    }
    assert!(matches!(
        verdict(&table, POD, Ipv4Addr::new(10, 1, 2, 3)),
        Verdict::Deny(_)
    ));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), runner)
        .await
        .expect("local mode stops on shutdown")
        .unwrap();
    assert!(metrics
        .render()
        .contains("egw_controller_tables_pushed_total 3"));
}

#[tokio::test]
async fn the_binary_pushes_in_local_mode_and_stops_on_sigterm() {
    let sockets = tempfile::tempdir().unwrap();
    let manifests = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start(&sockets.path().join("lab-0.sock"), 5).await;
    write(
        manifests.path(),
        "gateway.yaml",
        &gateway_yaml(&gateway.endpoint(), FIRST),
    );
    write(manifests.path(), "workloads.yaml", WORKLOADS);
    write(manifests.path(), "policy.yaml", POLICY);

    let mut child = ChildGuard(
        std::process::Command::new(env!("CARGO_BIN_EXE_egw-controller"))
            .arg("--local")
            .arg(manifests.path())
            .arg("--gateway-poll-ms")
            .arg("100")
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let table = gateway
        .wait_for_table("push from the binary", |_| true)
        .await;
    assert_eq!(
        verdict(&compile_wire(&table), POD, REMOTE),
        Verdict::Snat(vec![FIRST])
    );

    let pid = child.0.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_until("the controller to exit on SIGTERM", || {
        child.0.try_wait().unwrap()
    })
    .await;
    assert!(status.success(), "{status}");
}

/// Kills the controller if the test fails before it exits.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
