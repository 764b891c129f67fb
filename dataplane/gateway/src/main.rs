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
use egw_gateway::metrics;
use egw_gateway::reload;
use tracing::{error, info, warn};

/// How long in-flight control requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);
/// How often `main` checks that every dataplane worker is still running.
const WATCHDOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

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
    // Colours only for people: files and log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
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
    let metrics_config = config.metrics.clone();
    // Bound before the dataplane starts, so a taken port fails startup plainly.
    let metrics_listener = match &metrics_config {
        Some(metrics) => Some(runtime.block_on(metrics::bind(metrics.listen))?),
        None => None,
    };
    let table_file = config.route_table_file.clone();
    let control_socket = config.control.unix_socket.clone();
    let dataplane = Arc::new(Dataplane::start(config).context("starting the dataplane")?);
    let backend = Arc::new(GatewayBackend::new(Arc::clone(&dataplane)));
    let served = runtime.block_on(async {
        let (stop_sender, mut stop_receiver) = tokio::sync::watch::channel(false);
        let server = control::serve(server_config, backend, async move {
            // An error means the sender is gone, which also means stop.
            let _ = stop_receiver.wait_for(|stop| *stop).await;
        });
        tokio::pin!(server);
        let metrics_server = async {
            match (metrics_listener, &metrics_config) {
                (Some(listener), Some(metrics)) => {
                    info!(listen = %metrics.listen, "serving /metrics and /healthz");
                    let mut stop = stop_sender.subscribe();
                    metrics::serve(
                        listener,
                        Arc::clone(&dataplane),
                        metrics.port_exhaustion_threshold,
                        async move {
                            let _ = stop.wait_for(|stop| *stop).await;
                        },
                    )
                    .await
                }
                _ => std::future::pending().await,
            }
        };
        let watchdog = async {
            let mut interval = tokio::time::interval(WATCHDOG_INTERVAL);
            loop {
                interval.tick().await;
                if let Some(worker) = dataplane.failed_worker() {
                    return worker;
                }
            }
        };
        let reloads = async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hangups = match signal(SignalKind::hangup()) {
                Ok(hangups) => hangups,
                Err(error) => {
                    error!(%error, "installing the SIGHUP handler failed; reloads are disabled");
                    return std::future::pending().await;
                }
            };
            while hangups.recv().await.is_some() {
                match reload::reload(table_file.as_deref(), control_socket.as_deref()).await {
                    Ok(reply) => info!(
                        generation = reply.generation,
                        unchanged = reply.unchanged,
                        "route table file reloaded (SIGHUP)"
                    ),
                    Err(error) => error!(
                        error = %format!("{:#}", anyhow::Error::from(error)),
                        "route table reload (SIGHUP) failed; the served table is unchanged"
                    ),
                }
            }
            std::future::pending().await
        };
        tokio::select! {
            result = &mut server => result.context("control server"),
            () = reloads => Ok(()),
            result = metrics_server => result.context("metrics server"),
            worker = watchdog => {
                let _ = stop_sender.send(true);
                Err(anyhow::anyhow!("dataplane worker {worker} stopped unexpectedly"))
            }
            () = shutdown_signal() => {
                let _ = stop_sender.send(true);
                // Clients that never close their connections must not hold the shutdown up.
                match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                    Ok(result) => result.context("control server"),
                    Err(_) => {
                        warn!(grace = ?SHUTDOWN_GRACE, "control connections still open; closing them");
                        Ok(())
                    }
                }
            }
        }
    });
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    dataplane.stop();
    served?;
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
