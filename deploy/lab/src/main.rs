//! `egw-lab`: build the lab, run the demo, serve the mirror, run probes inside namespaces.
#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};

use egw_lab::{bench, demo, gateway, mirror, probe, topology};
use egw_lab::{Gateway, Lab, LabConfig, LabError, Result};

#[derive(Parser)]
#[command(
    name = "egw-lab",
    version,
    about = "Network-namespace lab for egw: pods → gateway → internet, with a mirror that reports the egress address it sees"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GatewayChoice {
    /// egw-gateway if it can be found, otherwise the kernel.
    Auto,
    /// Linux forwarding + nftables SNAT.
    Kernel,
    /// The egw-gateway binary.
    Egw,
}

#[derive(clap::Args)]
struct GatewayArgs {
    #[arg(long, value_enum, default_value = "auto")]
    gateway: GatewayChoice,
    /// egw-gateway binary (default: $EGW_GATEWAY_BIN, then next to this executable).
    #[arg(long, env = gateway::GATEWAY_BIN_ENV)]
    gateway_bin: Option<PathBuf>,
    /// Number of pods (pod-a, pod-b, ... alternating between pool-a and pool-b).
    #[arg(long, default_value_t = 2)]
    pods: usize,
    /// One-armed gateway: pods and internet share the gateway's single interface.
    #[arg(long)]
    one_armed: bool,
}

#[derive(Subcommand)]
enum Commands {
    /// Build the lab, probe every pod over TCP/UDP/ICMP, print egress addresses, tear down.
    /// Exits non-zero if any probe failed or saw the wrong egress address.
    Demo {
        #[command(flatten)]
        lab: GatewayArgs,
        /// Drive the gateway with egw-controller in local mode: manifests (annotated namespaces,
        /// pods, an EgressGateway and a policy) → route table over gRPC → packets. Expected egress
        /// comes from the table the gateway then serves. Needs --gateway egw.
        #[arg(long)]
        controller: bool,
    },
    /// Build the lab and keep it until SIGINT/SIGTERM (or --max-secs), for manual poking.
    Up {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Namespace prefix (must start with "egwlab-"); default egwlab-<pid>-0-.
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long, default_value_t = 86_400)]
        max_secs: u64,
    },
    /// Remove lab namespaces left behind by killed runs.
    Down {
        /// Remove exactly the namespaces starting with this prefix.
        #[arg(long, conflicts_with = "all")]
        prefix: Option<String>,
        /// Remove every egwlab-* namespace, including those of running labs.
        #[arg(long)]
        all: bool,
    },
    /// Run the mirror server (normally inside the internet namespace).
    Mirror {
        #[arg(long, default_value_t = topology::mirror_tcp())]
        tcp: SocketAddr,
        #[arg(long, default_value_t = topology::mirror_udp())]
        udp: SocketAddr,
        /// Do not open the raw ICMP socket that records echo-request sources.
        #[arg(long)]
        no_icmp: bool,
        /// File to create once all sockets are bound.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Talk to the mirror (run inside a pod namespace) and print what it saw.
    #[command(subcommand)]
    Probe(ProbeCommand),
    /// Short iperf3 TCP run and UDP 64-byte flood from the first pod through the gateway.
    BenchQuick {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Seconds per measurement (at most 10).
        #[arg(long, default_value_t = bench::MAX_BENCH_SECONDS)]
        seconds: u32,
    },
    /// Write the egw-gateway config and route table the lab would use into DIR.
    EgwConfig {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 2)]
        pods: usize,
    },
}

#[derive(Subcommand)]
enum ProbeCommand {
    /// One TCP connection; prints `<ip>:<port>` as the mirror saw it.
    Tcp {
        #[arg(default_value_t = topology::mirror_tcp())]
        mirror: SocketAddr,
    },
    /// One UDP datagram; prints `<ip>:<port>` as the mirror saw it.
    Udp {
        #[arg(default_value_t = topology::mirror_udp())]
        mirror: SocketAddr,
    },
    /// One UDP datagram from `--bind ADDR:PORT` to TARGET; expects no answer.
    UdpSend {
        target: SocketAddr,
        #[arg(long)]
        bind: SocketAddr,
    },
    /// UDP to a closed port; prints `refused` if the ICMP port-unreachable came back (translated),
    /// `no-answer` otherwise.
    UdpRefused { target: SocketAddr },
    /// ICMP echo with a random token; prints `reply-from=<ip> token=<hex>`.
    Icmp {
        #[arg(default_value_t = topology::MIRROR_ADDRESS)]
        target: Ipv4Addr,
    },
    /// HTTP GET; prints the body (non-zero exit on non-200).
    Get { mirror: SocketAddr, path: String },
    /// Stream N pattern bytes to POST /sha256; prints `bytes= sha256= remote-sha256=`.
    TcpUpload {
        #[arg(default_value_t = topology::mirror_tcp())]
        mirror: SocketAddr,
        #[arg(long)]
        bytes: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Fetch N pattern bytes from GET /bytes and verify each; prints `verified=<n>`.
    TcpDownload {
        #[arg(default_value_t = topology::mirror_tcp())]
        mirror: SocketAddr,
        #[arg(long)]
        bytes: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Keep one TCP connection: print `seen=<addr> local=<addr>` now and once per stdin line.
    TcpHold {
        #[arg(default_value_t = topology::mirror_tcp())]
        mirror: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        max_queries: u32,
    },
}

fn resolve_gateway(args: &GatewayArgs) -> Result<Gateway> {
    match args.gateway {
        GatewayChoice::Kernel => Ok(Gateway::Kernel),
        GatewayChoice::Egw => Ok(Gateway::Egw {
            binary: gateway::find_gateway_binary(args.gateway_bin.as_deref())?,
        }),
        GatewayChoice::Auto => match gateway::find_gateway_binary(args.gateway_bin.as_deref()) {
            Ok(binary) => Ok(Gateway::Egw { binary }),
            Err(error) => {
                eprintln!("egw-lab: using the kernel gateway ({error})");
                Ok(Gateway::Kernel)
            }
        },
    }
}

fn lab_config(pods: usize, prefix: Option<String>) -> Result<LabConfig> {
    let binary = std::env::current_exe().map_err(|source| LabError::Io {
        context: "locating the egw-lab executable".to_owned(),
        source,
    })?;
    let mut config = LabConfig::new(pods, binary)?;
    config.prefix = prefix;
    Ok(config)
}

fn start_lab(args: &GatewayArgs, prefix: Option<String>) -> Result<Lab> {
    topology::require_root()?;
    topology::install_signal_teardown()?;
    let gateway = resolve_gateway(args)?;
    eprintln!("egw-lab: gateway: {}", gateway.label());
    let mut config = lab_config(args.pods, prefix)?;
    if args.one_armed {
        config.arms = egw_lab::Arms::One;
    }
    Lab::up(config, gateway)
}

/// What the controller-driven demo set up, printed before the probe table.
fn controller_intro(lab: &Lab) -> String {
    format!(
        "egw-controller --local {} pushed generation {} to egw-gateway:\n  \
         team-a: egw.dev/gateway=lab   team-b: egw.dev/policy=partner   team-c: no egress intent\n  \
         EgressGateway lab: one instance (this lab's gateway), addresses 198.51.100.1 and 198.51.100.2 (paired)\n\n",
        lab.manifest_dir().display(),
        lab.served_generation().map_or_else(|e| format!("? ({e})"), |g| g.to_string()),
    )
}

fn print_line(text: impl std::fmt::Display) -> Result<()> {
    writeln!(io::stdout(), "{text}").map_err(|source| LabError::Io {
        context: "writing to stdout".to_owned(),
        source,
    })
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Commands::Demo {
            lab: args,
            controller,
        } => {
            let mut lab = start_lab(&args, None)?;
            let source = if controller {
                lab.start_controller(&[
                    Ipv4Addr::new(198, 51, 100, 1),
                    Ipv4Addr::new(198, 51, 100, 2),
                ])?;
                print!("{}", controller_intro(&lab));
                demo::ExpectationSource::ServedTable
            } else {
                demo::ExpectationSource::LabConfig
            };
            let reports = demo::probe_all(&lab, source)?;
            lab.teardown()?;
            print!("{}", demo::render(&reports));
            Ok(if reports.iter().all(demo::PodReport::ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Commands::Up {
            gateway,
            prefix,
            max_secs,
        } => {
            let lab = start_lab(&gateway, prefix)?;
            print_line(format!("lab {} is up; namespaces:", lab.prefix()))?;
            for namespace in lab.namespaces() {
                print_line(format!("  {namespace}"))?;
            }
            print_line(format!("work dir: {}", lab.workdir().display()))?;
            print_line("ready")?;
            let deadline = Instant::now() + Duration::from_secs(max_secs);
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(500));
            }
            lab.teardown()?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Down { prefix, all } => {
            topology::require_root()?;
            let removed = match (prefix, all) {
                (Some(prefix), _) => topology::remove_namespaces_with_prefix(&prefix)?,
                (None, true) => topology::remove_namespaces_with_prefix(topology::LAB_PREFIX_ROOT)?,
                (None, false) => topology::remove_stale_labs()?,
            };
            for name in &removed {
                print_line(format!("removed {name}"))?;
            }
            print_line(format!("{} namespaces removed", removed.len()))?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Mirror {
            tcp,
            udp,
            no_icmp,
            ready_file,
        } => {
            mirror::serve(&mirror::MirrorConfig {
                tcp,
                udp,
                icmp: !no_icmp,
                ready_file,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Probe(command) => run_probe(command),
        Commands::BenchQuick { gateway, seconds } => {
            let label = resolve_gateway(&gateway)?.label();
            let lab = start_lab(&gateway, None)?;
            let report = bench::bench_quick(&lab, seconds)?;
            lab.teardown()?;
            print_line(format!(
                "gateway {label}, {} s per run, pod-a → inet",
                report.seconds
            ))?;
            print_line(format!("tcp  {:>8.2} Gbit/s", report.tcp_gbit_per_s))?;
            print_line(format!(
                "udp  {:>8.3} Gbit/s received, {:.0} pps received of {:.0} pps sent ({}-byte payload, {:.1}% lost)",
                report.udp_received_gbit_per_s, report.udp_received_pps, report.udp_sent_pps, report.udp_payload_bytes, report.udp_loss_percent
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::EgwConfig { dir, pods } => {
            std::fs::create_dir_all(&dir).map_err(|source| LabError::Io {
                context: format!("creating {}", dir.display()),
                source,
            })?;
            let absolute = dir.canonicalize().map_err(|source| LabError::Io {
                context: format!("resolving {}", dir.display()),
                source,
            })?;
            let config_path = gateway::write_egw_files(&lab_config(pods, None)?, &absolute)?;
            print_line(config_path.display())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_probe(command: ProbeCommand) -> Result<ExitCode> {
    match command {
        ProbeCommand::Tcp { mirror } => print_line(probe::tcp_source_seen(mirror)?)?,
        ProbeCommand::Udp { mirror } => print_line(probe::udp_source_seen(mirror)?)?,
        ProbeCommand::UdpSend { target, bind } => {
            probe::udp_send(bind, target)?;
            print_line("sent")?
        }
        ProbeCommand::UdpRefused { target } => print_line(if probe::udp_refused(target)? {
            "refused"
        } else {
            "no-answer"
        })?,
        ProbeCommand::Icmp { target } => {
            let echo = probe::icmp_echo(target)?;
            print_line(format!(
                "reply-from={} token={}",
                echo.reply_from, echo.token
            ))?;
        }
        ProbeCommand::Get { mirror, path } => print!("{}", probe::http_get(mirror, &path)?),
        ProbeCommand::TcpUpload {
            mirror,
            bytes,
            seed,
        } => {
            let report = probe::tcp_upload(mirror, bytes, seed)?;
            print_line(format!(
                "bytes={} sha256={} remote-sha256={}",
                report.bytes, report.local_sha256, report.remote_sha256
            ))?;
            if !report.intact() {
                eprintln!(
                    "egw-lab: upload corrupted: sent sha256 {} but the mirror received {}",
                    report.local_sha256, report.remote_sha256
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        ProbeCommand::TcpDownload {
            mirror,
            bytes,
            seed,
        } => {
            print_line(format!(
                "verified={}",
                probe::tcp_download(mirror, bytes, seed)?
            ))?;
        }
        ProbeCommand::TcpHold {
            mirror,
            max_queries,
        } => {
            probe::tcp_hold(
                mirror,
                &mut io::stdin().lock(),
                &mut io::stdout(),
                max_queries,
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            let mut message = format!("egw-lab: error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
