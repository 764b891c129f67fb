//! egwctl over TCP with mutual TLS against a real control server, with
//! certificates generated for the run (no keys are committed).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Parser;
use egw_gateway::control::{
    BackendError, BoundControlServer, ControlBackend, ControlServerConfig, FlowPage, FlowQuery,
    MtlsConfig, TcpListenerConfig,
};
use egw_proto::v1;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A backend with nothing in it: these tests are about who may call what.
struct EmptyBackend;

impl ControlBackend for EmptyBackend {
    fn apply_route_table(&self, _table: v1::RouteTable) -> Result<(), BackendError> {
        Ok(())
    }
    fn epoch(&self) -> u64 {
        1
    }
    fn status(&self) -> v1::GetStatusResponse {
        v1::GetStatusResponse {
            version: "tls-test".into(),
            ..Default::default()
        }
    }
    fn list_flows(&self, _query: &FlowQuery) -> FlowPage {
        FlowPage::default()
    }
    fn drain(
        &self,
        external_ip: Ipv4Addr,
        undrain: bool,
    ) -> Result<v1::DrainResponse, BackendError> {
        Ok(v1::DrainResponse {
            external_ip: external_ip.to_string(),
            draining: !undrain,
            flows_remaining: 0,
        })
    }
    fn stats_snapshot(&self) -> v1::StatsSnapshot {
        v1::StatsSnapshot::default()
    }
}

struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    /// Writes `<name>.pem` and `<name>-key.pem` into `dir`.
    fn issue(
        &self,
        dir: &Path,
        name: &str,
        sans: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.0).unwrap();
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn write_pem(&self, path: &Path) {
        std::fs::write(path, self.0.pem()).unwrap();
    }
}

struct TlsFixture {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    ca_path: PathBuf,
    ca: Ca,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFixture {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("egw test CA");
        let ca_path = dir.path().join("ca.pem");
        ca.write_pem(&ca_path);
        let (server_cert, server_key) = ca.issue(
            dir.path(),
            "gateway",
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let tls = MtlsConfig::from_files(
            &server_cert,
            &server_key,
            &ca_path,
            vec!["ops-admin".into()],
            vec!["dashboard".into()],
        )
        .unwrap();
        let config = ControlServerConfig {
            unix_socket: None,
            tcp: Some(TcpListenerConfig {
                addr: "127.0.0.1:0".parse().unwrap(),
                tls,
            }),
            ..ControlServerConfig::default()
        };
        let bound = BoundControlServer::bind(config, Arc::new(EmptyBackend)).unwrap();
        let addr = bound.tcp_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            bound
                .serve(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        TlsFixture {
            dir,
            addr,
            ca_path,
            ca,
            stop: Some(stop),
            task,
        }
    }

    fn client(&self, name: &str) -> (PathBuf, PathBuf) {
        self.ca.issue(
            self.dir.path(),
            name,
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    async fn egwctl(
        &self,
        ca: &Path,
        (cert, key): &(PathBuf, PathBuf),
        args: &[&str],
    ) -> Result<String, String> {
        let server = format!("https://{}", self.addr);
        let mut argv: Vec<&str> = vec![
            "egwctl",
            "--config",
            "/dev/null",
            "--server",
            &server,
            "--ca",
            ca.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
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

#[tokio::test]
async fn admins_and_readers_over_mtls() {
    let fixture = TlsFixture::start();
    let admin = fixture.client("ops-admin");
    let reader = fixture.client("dashboard");

    let status = fixture
        .egwctl(&fixture.ca_path, &admin, &["status"])
        .await
        .unwrap();
    assert!(status.contains("tls-test"), "{status}");
    let drained = fixture
        .egwctl(&fixture.ca_path, &admin, &["drain", "198.51.100.1"])
        .await
        .unwrap();
    assert!(drained.contains("is draining"), "{drained}");

    let status = fixture
        .egwctl(&fixture.ca_path, &reader, &["-o", "json", "status"])
        .await
        .unwrap();
    assert!(status.contains("\"version\": \"tls-test\""), "{status}");
    let error = fixture
        .egwctl(&fixture.ca_path, &reader, &["drain", "198.51.100.1"])
        .await
        .unwrap_err();
    assert!(
        error.starts_with("permission denied") && error.contains("admin role"),
        "{error}"
    );
    fixture.stop().await;
}

#[tokio::test]
async fn tls_failures_name_the_files_involved() {
    let fixture = TlsFixture::start();

    // A client certificate from a CA the gateway does not trust.
    let other_dir = tempfile::tempdir().unwrap();
    let stranger = Ca::new("other CA").issue(
        other_dir.path(),
        "ops-admin",
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let error = fixture
        .egwctl(&fixture.ca_path, &stranger, &["status"])
        .await
        .unwrap_err();
    assert!(error.starts_with("TLS with https://"), "{error}");
    assert!(
        error.contains(stranger.0.to_str().unwrap()),
        "names the client certificate: {error}"
    );

    // A CA file that did not sign the gateway certificate.
    let wrong_ca = other_dir.path().join("wrong-ca.pem");
    Ca::new("unrelated CA").write_pem(&wrong_ca);
    let admin = fixture.client("ops-admin");
    let error = fixture
        .egwctl(&wrong_ca, &admin, &["status"])
        .await
        .unwrap_err();
    assert!(error.starts_with("TLS with https://"), "{error}");
    assert!(error.contains("wrong-ca.pem"), "names the CA file: {error}");

    // A key file that is not PEM.
    let garbage_key = other_dir.path().join("garbage-key.pem");
    std::fs::write(&garbage_key, "not a key").unwrap();
    let error = fixture
        .egwctl(
            &fixture.ca_path,
            &(admin.0.clone(), garbage_key),
            &["status"],
        )
        .await
        .unwrap_err();
    assert!(
        error.starts_with("client key file") && error.contains("garbage-key.pem"),
        "{error}"
    );
    fixture.stop().await;
}

#[test]
fn the_binary_reports_errors_on_stderr_with_a_failing_exit_code() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_egwctl"))
        .args(["--server", "unix:///nonexistent/egw.sock", "status"])
        .env_remove("EGW_CONFIG")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("egwctl: cannot reach the gateway at unix:///nonexistent/egw.sock"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_egwctl"))
        .args(["completion", "fish"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8(output.stdout)
        .unwrap()
        .contains("complete -c egwctl"));
}
