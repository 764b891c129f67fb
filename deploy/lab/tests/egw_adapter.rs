//! The egw-gateway adapter, exercised with stand-in executables (shell scripts) so its contract
//! — where the binary runs, what config it gets, readiness, reload, shutdown — is checked
//! independently of the real gateway. Needs root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use egw_lab::{gateway, topology, EgwGatewayConfig, Gateway, Lab, LabConfig, LabError};

fn must_be_root() {
    if let Err(error) = topology::require_root() {
        panic!("these tests build network namespaces and must run as root: {error}");
    }
}

fn config() -> LabConfig {
    LabConfig::new(2, PathBuf::from(env!("CARGO_BIN_EXE_egw-lab"))).unwrap()
}

fn write_script(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("fake-egw-gateway");
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Records its pid, the config it was given and the links of its namespace; creates the control
/// socket path; lives at most 60 s.
const RECORDING_GATEWAY: &str = r#"
[ "$1" = "--config" ] || { echo "expected --config, got $*" >&2; exit 2; }
dir=$(dirname "$2")
echo $$ > "$dir/fake.pid"
cp "$2" "$dir/seen-config.yaml"
ip -o link show > "$dir/seen-links"
table=$(sed -n 's/^route_table_file: //p' "$2")
touch "$(sed -n 's/^  unix_socket: //p' "$2")"
i=0
while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
"#;

/// A stand-in egwctl next to the stand-in gateway: records its arguments and the table it was
/// asked to apply.
fn write_fake_egwctl(dir: &Path, record_dir: &Path) {
    let path = dir.join("egwctl");
    let body = format!(
        "#!/bin/sh\necho \"$@\" > {rec}/egwctl-args\nwhile [ $# -gt 0 ]; do [ \"$1\" = -f ] && cp \"$2\" {rec}/applied-table.yaml; shift; done\n",
        rec = record_dir.display()
    );
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn wait_for_file(path: &Path) -> String {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                return text;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} never appeared", path.display());
}

#[test]
fn egw_adapter_runs_the_binary_in_the_gateway_namespace_with_the_lab_config() {
    must_be_root();
    let scripts = tempfile::tempdir().unwrap();
    let binary = write_script(scripts.path(), RECORDING_GATEWAY);
    write_fake_egwctl(scripts.path(), scripts.path());
    let mut lab = Lab::up(config(), Gateway::Egw { binary }).unwrap();
    let workdir = lab.workdir().to_owned();

    let seen_config = std::fs::read_to_string(workdir.join("seen-config.yaml")).unwrap();
    assert_eq!(
        seen_config,
        EgwGatewayConfig::for_lab(lab.config(), &workdir)
            .to_yaml()
            .unwrap()
    );
    let seen_table = std::fs::read_to_string(workdir.join(gateway::EGW_ROUTE_TABLE_FILE)).unwrap();
    assert!(seen_table.starts_with("generation: 1\n"), "{seen_table}");
    let links = std::fs::read_to_string(workdir.join("seen-links")).unwrap();
    assert!(
        links.contains("gw-in@"),
        "not run in the gateway namespace: {links}"
    );
    assert!(
        links.contains("gw-out@"),
        "not run in the gateway namespace: {links}"
    );

    // A pool change goes over gRPC: egwctl routes apply against the lab's control socket.
    lab.set_pod_pool("pod-a", "pool-b").unwrap();
    let args = wait_for_file(&scripts.path().join("egwctl-args"));
    let socket = workdir.join("egw.sock");
    assert!(
        args.starts_with(&format!(
            "--server unix://{} routes apply -f ",
            socket.display()
        )),
        "{args}"
    );
    let reloaded = wait_for_file(&scripts.path().join("applied-table.yaml"));
    assert!(reloaded.starts_with("generation: 2\n"), "{reloaded}");
    assert!(
        reloaded.contains("- cidr: 10.244.1.10/32\n  policy: via-b\n"),
        "{reloaded}"
    );

    let pid = wait_for_file(&workdir.join("fake.pid")).trim().to_owned();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let prefix = lab.prefix().to_owned();
    lab.teardown().unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "gateway process {pid} survived teardown"
    );
    assert!(topology::namespaces_with_prefix(&prefix)
        .unwrap()
        .is_empty());
}

#[test]
fn egw_adapter_reports_a_gateway_that_dies_with_its_output() {
    must_be_root();
    let scripts = tempfile::tempdir().unwrap();
    let binary = write_script(
        scripts.path(),
        "echo 'cannot attach XDP program to gw-in' >&2\nexit 3\n",
    );
    let error = match Lab::up(config(), Gateway::Egw { binary }) {
        Ok(_) => panic!("a gateway that exits must not count as ready"),
        Err(error) => error,
    };
    assert!(matches!(error, LabError::NotReady { .. }), "{error}");
    assert!(
        error.to_string().contains("cannot attach XDP program"),
        "{error}"
    );
}
