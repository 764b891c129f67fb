//! `egw-controller`: cluster mode (default), or local mode on a manifest directory
//! (`--local DIR`, with `--print` to print the tables once instead of pushing them).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use egw_controller::aws::{AwsBackend, AwsManager, AwsOptions};
use egw_controller::cluster::leader::LeaseOptions;
use egw_controller::cluster::ClusterOptions;
use egw_controller::endpoint::{ClientTls, ClientTlsFiles};
use egw_controller::error_chain;
use egw_controller::local_run::LocalOptions;
use egw_controller::metrics::Metrics;
use egw_controller::push::PushOptions;

#[derive(Debug, Parser)]
#[command(name = "egw-controller", version, about = "egw Kubernetes controller")]
struct Args {
    /// Read EgressGateway, EgressGatewayPolicy, Namespace and Pod manifests from this directory
    /// instead of a Kubernetes API server; watch it and push to the static instances' endpoints.
    #[arg(long, value_name = "DIR")]
    local: Option<PathBuf>,
    /// With --local: print the route table of every gateway instance as YAML once and exit
    /// (diagnostics go to stderr).
    #[arg(long, requires = "local")]
    print: bool,
    /// CA certificate (PEM) that signed the gateways' control-server certificates.
    #[arg(long, env = "EGW_GATEWAY_CA", value_name = "PEM", requires_all = ["gateway_tls_cert", "gateway_tls_key"])]
    gateway_ca: Option<PathBuf>,
    /// Client certificate (PEM) presented to gateways over TCP (mutual TLS).
    #[arg(
        long,
        env = "EGW_GATEWAY_TLS_CERT",
        value_name = "PEM",
        requires = "gateway_ca"
    )]
    gateway_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --gateway-tls-cert.
    #[arg(
        long,
        env = "EGW_GATEWAY_TLS_KEY",
        value_name = "PEM",
        requires = "gateway_ca"
    )]
    gateway_tls_key: Option<PathBuf>,
    /// Name gateway certificates are checked against (default: the endpoint's host).
    #[arg(long, env = "EGW_GATEWAY_SERVER_NAME")]
    gateway_server_name: Option<String>,
    /// How often each gateway is polled (restart detection, drift repair), in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=1000))]
    gateway_poll_ms: u64,
    /// Address of `/metrics` and `/healthz` (cluster mode).
    #[arg(long, env = "EGW_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    metrics_address: SocketAddr,
    /// Namespace of the leader-election Lease (cluster mode).
    #[arg(long, env = "POD_NAMESPACE", default_value = "egw-system")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "egw-controller")]
    lease_name: String,
    /// This replica's identity in the Lease and in Events (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Manage the Elastic IPs, private addresses and VPC routes of AWS gateways (`spec.aws`).
    /// Without it AWS gateways fail closed. Credentials and region come from the standard AWS
    /// chain (IRSA / EKS Pod Identity, AWS_REGION, instance metadata).
    #[arg(long, env = "EGW_AWS", requires = "cluster_name")]
    aws: bool,
    /// Name of this Kubernetes cluster, unique among the clusters running egw in the same AWS
    /// account and region: egw tags what it creates with it and only touches what carries it.
    #[arg(long, env = "EGW_CLUSTER_NAME", value_parser = non_empty)]
    cluster_name: Option<String>,
    /// AWS region (default: the standard chain's).
    #[arg(long, env = "EGW_AWS_REGION", requires = "aws")]
    aws_region: Option<String>,
    /// EC2 endpoint URL instead of the region's (VPC endpoints, tests).
    #[arg(long, env = "EGW_AWS_ENDPOINT_URL", requires = "aws")]
    aws_endpoint_url: Option<String>,
    /// Seconds between checks of an unchanged AWS gateway against EC2 (instance states, drift).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=3600))]
    aws_resync_seconds: u64,
    /// Port of the gateway pods' gRPC control server (AWS gateways are pushed to at
    /// `<pod IP>:<port>`).
    #[arg(long, env = "EGW_GATEWAY_GRPC_PORT", default_value_t = egw_controller::aws::DEFAULT_GATEWAY_GRPC_PORT)]
    gateway_grpc_port: u16,
}

fn non_empty(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(trimmed.to_owned())
}

/// The AWS address manager for `--aws`: the EC2 provider from the standard credential chain.
async fn aws_backend(
    args: &Args,
    metrics: &Metrics,
) -> Result<Option<Box<dyn AwsBackend>>, String> {
    if !args.aws {
        return Ok(None);
    }
    let cluster = args
        .cluster_name
        .clone()
        .ok_or("--aws needs --cluster-name (EGW_CLUSTER_NAME)")?;
    let options = AwsOptions {
        resync_interval: Duration::from_secs(args.aws_resync_seconds),
        ..AwsOptions::new(cluster)
    };
    let settings = egw_aws::Ec2ProviderSettings {
        endpoint_url: args.aws_endpoint_url.clone(),
        region: args.aws_region.clone(),
        ..egw_aws::Ec2ProviderSettings::default()
    };
    ec2_manager(settings, options, metrics).await
}

/// The manager on the real EC2 provider (region and credentials from the standard chain).
async fn ec2_manager(
    settings: egw_aws::Ec2ProviderSettings,
    options: AwsOptions,
    metrics: &Metrics,
) -> Result<Option<Box<dyn AwsBackend>>, String> {
    let provider = egw_aws::Ec2Provider::from_env(settings).await;
    let Some(region) = provider.region() else {
        return Err(
            "--aws: no AWS region found; set --aws-region (EGW_AWS_REGION) or AWS_REGION"
                .to_owned(),
        );
    };
    tracing::info!(%region, cluster = %options.cluster, "managing AWS gateways");
    Ok(Some(Box::new(AwsManager::new(
        provider,
        options,
        metrics.clone(),
    ))))
}

fn push_options(args: &Args) -> Result<PushOptions, String> {
    let tls = match (
        &args.gateway_ca,
        &args.gateway_tls_cert,
        &args.gateway_tls_key,
    ) {
        (Some(ca), Some(cert), Some(key)) => Some(Arc::new(
            ClientTls::load(&ClientTlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
                server_name: args.gateway_server_name.clone(),
            })
            .map_err(|error| error_chain(&error))?,
        )),
        _ => None,
    };
    Ok(PushOptions {
        poll_interval: Duration::from_millis(args.gateway_poll_ms),
        tls,
        ..PushOptions::default()
    })
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn run(args: Args) -> Result<(), String> {
    let push = push_options(&args)?;
    let metrics = Metrics::new();
    if let Some(dir) = args.local {
        let options = LocalOptions {
            push,
            ..LocalOptions::new(dir)
        };
        egw_controller::local_run::run_local(options, metrics, shutdown_signal()).await;
        return Ok(());
    }
    let aws = aws_backend(&args, &metrics).await?;
    let identity = args
        .identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "egw-controller".to_owned());
    let client = kube::Client::try_default()
        .await
        .map_err(|error| format!("cannot reach the Kubernetes API: {}", error_chain(&error)))?;
    let options = ClusterOptions {
        push,
        lease: LeaseOptions {
            name: args.lease_name,
            ..LeaseOptions::new(args.lease_namespace, identity)
        },
        debounce: Duration::from_millis(200),
        resync_interval: Duration::from_secs(60),
        http_address: Some(args.metrics_address),
        gateway_grpc_port: args.gateway_grpc_port,
    };
    egw_controller::cluster::run_with_aws(client, options, metrics, aws, shutdown_signal())
        .await
        .map_err(|error| error_chain(&error))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print {
        return egw_controller::print::print_local(args.local.as_deref().unwrap_or(".".as_ref()));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("egw-controller: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_flags_need_a_cluster_name_and_default_sensibly() {
        let missing = Args::try_parse_from(["egw-controller", "--aws"]);
        assert!(missing.is_err());
        let region_alone = Args::try_parse_from(["egw-controller", "--aws-region", "eu-west-1"]);
        assert!(region_alone.is_err());
        let empty = Args::try_parse_from(["egw-controller", "--aws", "--cluster-name", " "]);
        assert!(empty.is_err());
        let args = Args::try_parse_from([
            "egw-controller",
            "--aws",
            "--cluster-name",
            "prod-eu",
            "--aws-endpoint-url",
            "https://ec2.eu-west-1.amazonaws.com",
        ])
        .unwrap();
        assert!(args.aws);
        assert_eq!(args.cluster_name.as_deref(), Some("prod-eu"));
        assert_eq!(args.aws_resync_seconds, 60);
        assert_eq!(
            args.gateway_grpc_port,
            egw_controller::aws::DEFAULT_GATEWAY_GRPC_PORT
        );
        let plain = Args::try_parse_from(["egw-controller"]).unwrap();
        assert!(!plain.aws);
    }
}
