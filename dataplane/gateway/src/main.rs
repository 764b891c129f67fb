//! `egw-gateway --config FILE`: wiring only (see the library for the pieces).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use egw_gateway::backend::GatewayBackend;
use egw_gateway::config::{GatewayConfig, LogFormat, Overrides};
use egw_gateway::control;
use egw_gateway::dataplane::Dataplane;
use tracing::{error, info};

/// The egw AF_XDP egress NAT gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// YAML configuration file.
    #[arg(long, short = 'c', env = "EGW_GATEWAY_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    overrides: Overrides,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                error!(%error, "installing the SIGTERM handler failed");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT received, shutting down"),
        _ = terminate => info!("SIGTERM received, shutting down"),
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = GatewayConfig::load(&args.config, &args.overrides)?;
    init_tracing(config.log_format);
    info!(config = %args.config.display(), workers = config.workers,
        inside = %config.inside_interface, outside = %config.outside_interface_name(),
        one_armed = config.one_armed(), "egw-gateway starting");
    let server_config = config.control.server_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("egw-control")
        .build()
        .context("starting the async runtime")?;
    let dataplane = Arc::new(Dataplane::start(config).context("starting the dataplane")?);
    let backend = Arc::new(GatewayBackend::new(Arc::clone(&dataplane)));
    let served = runtime.block_on(control::serve(server_config, backend, shutdown_signal()));
    // The server holds the last other reference to the dataplane; once it is gone, stopping
    // joins the workers and detaches XDP.
    drop(runtime);
    match Arc::try_unwrap(dataplane) {
        Ok(dataplane) => dataplane.shutdown(),
        Err(_) => error!("the dataplane is still referenced; XDP detaches at exit"),
    }
    served.context("control server")?;
    info!("egw-gateway stopped");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Tracing may not be initialised yet (configuration errors), so print plainly too.
            eprintln!("egw-gateway: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
