//! `egw-bench`: load generator, receiver and the egw-vs-kernel comparison. See bench/README.md.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use egw_bench::compare::{self, CompareSettings, Contestant, PointStatus, Profile};
use egw_bench::generate::{self, FlowPlan, TcpSettings, UdpSettings};
use egw_bench::netinfo::parse_mac;
use egw_bench::receive::{self, ReceiveSettings};

#[derive(Parser)]
#[command(
    name = "egw-bench",
    version,
    about = "egw load generator, receiver and side-by-side benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// AF_XDP UDP flood.
    Udp,
    /// TCP connect + reset with kernel sockets (connections per second).
    Tcp,
}

#[derive(Subcommand)]
enum Command {
    /// Send load (run inside a pod's network namespace).
    Generate(GenerateArgs),
    /// Count and time what arrives (run inside the internet namespace).
    Receive(ReceiveArgs),
    /// Re-render the Markdown table and SVG plot of a results JSON.
    Render(RenderArgs),
    /// Build the lab and run the same load through egw, the kernel and the I/O ceiling.
    Compare(CompareArgs),
}

#[derive(clap::Args)]
struct GenerateArgs {
    #[arg(long, value_enum, default_value = "udp")]
    mode: Mode,
    #[arg(long, default_value = "eth0")]
    interface: String,
    #[arg(long, default_value_t = 0)]
    queue: u32,
    /// UDP destination address.
    #[arg(long, default_value = "203.0.113.10")]
    destination: Ipv4Addr,
    /// Source address (default: the kernel's choice towards the destination).
    #[arg(long)]
    source: Option<Ipv4Addr>,
    /// Next hop MAC (default: the default gateway's, resolved through ARP).
    #[arg(long)]
    dst_mac: Option<String>,
    #[arg(long, default_value_t = 1000)]
    flows: u32,
    /// Ethernet frame length without FCS, 62..=1514.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Packets per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    #[arg(long, default_value_t = generate::DEFAULT_SOURCE_PORT_BASE)]
    source_port_base: u16,
    #[arg(long, default_value_t = generate::DEFAULT_DESTINATION_PORT_BASE)]
    destination_port_base: u16,
    /// TCP mode: where to connect.
    #[arg(long, default_value = "203.0.113.10:9100")]
    target: SocketAddrV4,
    /// TCP mode: connections in flight.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// Seconds; the run also stops after --count packets/connections.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 100_000_000)]
    count: u64,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(clap::Args)]
struct ReceiveArgs {
    #[arg(long, default_value = "eth0")]
    interface: String,
    #[arg(long, default_value_t = 0)]
    queue: u32,
    /// Expected source address (repeatable); others count as mismatches.
    #[arg(long = "expect-source")]
    expect_sources: Vec<Ipv4Addr>,
    /// Also accept TCP connections here (connections per second).
    #[arg(long)]
    tcp_listen: Option<SocketAddrV4>,
    /// Do not receive UDP (no XDP program is attached).
    #[arg(long)]
    no_udp: bool,
    /// Upper bound on the run, seconds.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Stop once this many packets/connections arrived.
    #[arg(long)]
    expect_count: Option<u64>,
    /// Stop after this many milliseconds without traffic, once some arrived.
    #[arg(long)]
    idle_exit_ms: Option<u64>,
    /// Stop (after a short drain) when this file appears.
    #[arg(long)]
    stop_file: Option<PathBuf>,
    /// Created when ready to receive.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(clap::Args)]
struct CompareArgs {
    /// A few seconds per point and a reduced sweep (about 2–3 minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// egw-gateway binary (default: $EGW_GATEWAY_BIN, then next to this executable).
    #[arg(long, env = "EGW_GATEWAY_BIN")]
    gateway_bin: Option<PathBuf>,
    /// Comma-separated subset of egw,kernel,ceiling.
    #[arg(long, value_delimiter = ',')]
    contestants: Vec<String>,
    /// Worker counts to sweep (egw-gateway workers and generator pods), e.g. 1,2,4,8.
    #[arg(long, value_delimiter = ',')]
    workers: Vec<u32>,
    /// Flow counts to sweep (overrides the profile).
    #[arg(long, value_delimiter = ',')]
    flows: Vec<u32>,
    /// Frame sizes to sweep (overrides the profile).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Seconds per point (overrides the profile).
    #[arg(long)]
    seconds: Option<u64>,
    /// Packets per second per generator (default: maximum).
    #[arg(long)]
    rate: Option<u64>,
    /// Skip the TCP connections-per-second point.
    #[arg(long)]
    no_cps: bool,
    /// Send every flow once before each UDP point (default: on in the full profile).
    #[arg(long, overrides_with = "no_warmup")]
    warmup: bool,
    #[arg(long)]
    no_warmup: bool,
    /// Leave the host's conntrack limits alone (the kernel may then drop new flows).
    #[arg(long)]
    no_host_tune: bool,
    #[arg(long, default_value = "bench/results")]
    out_dir: PathBuf,
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct RenderArgs {
    /// A results JSON written by `compare`.
    json: PathBuf,
    /// Where to write the Markdown and SVG (default: next to the JSON).
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct OutputArgs {
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Also write the JSON result to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
}

fn seconds(value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|error| format!("bad duration {value}: {error}"))
}

fn emit<T: serde::Serialize + std::fmt::Debug>(
    output: &OutputArgs,
    result: &T,
    human: String,
) -> Result<(), String> {
    let json = serde_json::to_string_pretty(result).map_err(|error| error.to_string())?;
    if let Some(path) = &output.json_out {
        std::fs::write(path, format!("{json}\n"))
            .map_err(|error| format!("writing {}: {error}", path.display()))?;
    }
    if output.json {
        println!("{json}");
    } else {
        println!("{human}");
    }
    Ok(())
}

fn run(cli: Cli) -> Result<bool, String> {
    match cli.command {
        Command::Generate(args) => cmd_generate(args),
        Command::Receive(args) => cmd_receive(args),
        Command::Render(RenderArgs { json, out_dir }) => {
            let text = std::fs::read_to_string(&json)
                .map_err(|error| format!("reading {}: {error}", json.display()))?;
            let report: egw_bench::compare::CompareReport = serde_json::from_str(&text)
                .map_err(|error| format!("parsing {}: {error}", json.display()))?;
            let dir =
                out_dir.unwrap_or_else(|| json.parent().map(PathBuf::from).unwrap_or_default());
            let outputs = egw_bench::report::write_rendered(&report, &dir)
                .map_err(|error| error.to_string())?;
            println!("{}", egw_bench::report::markdown(&report));
            println!(
                "wrote {}, {}",
                outputs.markdown.display(),
                outputs.svg.display()
            );
            Ok(true)
        }
        Command::Compare(args) => cmd_compare(args),
    }
}

/// `egw-bench generate`.
fn cmd_generate(args: GenerateArgs) -> Result<bool, String> {
    let GenerateArgs {
        mode,
        interface,
        queue,
        destination,
        source,
        dst_mac,
        flows,
        size,
        rate,
        source_port_base,
        destination_port_base,
        target,
        parallel,
        duration,
        count,
        output,
    } = args;
    let duration = seconds(duration)?;
    match mode {
        Mode::Udp => {
            let destination_mac = dst_mac
                .map(|text| {
                    parse_mac(&text)
                        .ok_or_else(|| format!("--dst-mac {text:?} is not a MAC address"))
                })
                .transpose()?;
            let plan = FlowPlan::new(flows, source_port_base, destination_port_base)
                .map_err(|error| error.to_string())?;
            let report = generate::run_udp(&UdpSettings {
                interface,
                queue,
                destination,
                source,
                destination_mac,
                plan,
                frame_len: size,
                rate,
                duration,
                count,
                progress: !output.quiet,
            })
            .map_err(|error| error.to_string())?;
            let human = format!(
                "sent {} frames of {} B over {:.2} s: {:.0} pps, {:.3} Gbit/s ({} dropped before the wire, zero-copy {})",
                report.sent, report.frame_len, report.seconds, report.pps, report.gbit_per_s, report.tx_dropped, report.zero_copy
            );
            emit(&output, &report, human)?;
        }
        Mode::Tcp => {
            let report = generate::run_tcp(&TcpSettings {
                target,
                parallel,
                connect_timeout: Duration::from_secs(2),
                duration,
                count,
                progress: !output.quiet,
            })
            .map_err(|error| error.to_string())?;
            let human = format!(
                "{} connections ({} failed) in {:.2} s: {:.0}/s, connect p50 {} µs p99 {} µs",
                report.connected,
                report.failed,
                report.seconds,
                report.connections_per_s,
                report.connect_latency.p50_ns / 1000,
                report.connect_latency.p99_ns / 1000
            );
            emit(&output, &report, human)?;
        }
    }
    Ok(true)
}

/// `egw-bench receive`.
fn cmd_receive(args: ReceiveArgs) -> Result<bool, String> {
    let ReceiveArgs {
        interface,
        queue,
        expect_sources,
        tcp_listen,
        no_udp,
        duration,
        expect_count,
        idle_exit_ms,
        stop_file,
        ready_file,
        output,
    } = args;
    let report = receive::run(&ReceiveSettings {
        interface,
        queue,
        expect_sources,
        tcp_listen,
        udp: !no_udp,
        duration: seconds(duration)?,
        expect_count,
        idle_exit: idle_exit_ms.map(Duration::from_millis),
        stop_file,
        ready_file,
        progress: !output.quiet,
    })
    .map_err(|error| error.to_string())?;
    let human = format!(
        "received {} packets ({} from a wrong source, {} foreign) in {:.2} s: {:.0} pps, {:.3} Gbit/s; \
         one-way latency p50 {} µs p90 {} µs p99 {} µs p99.9 {} µs max {} µs; \
         {} TCP connections ({:.0}/s, {} from a wrong source)",
        report.packets,
        report.source_mismatches,
        report.foreign,
        report.seconds,
        report.pps,
        report.gbit_per_s,
        report.latency.p50_ns / 1000,
        report.latency.p90_ns / 1000,
        report.latency.p99_ns / 1000,
        report.latency.p999_ns / 1000,
        report.latency.max_ns / 1000,
        report.tcp_accepted,
        report.connections_per_s,
        report.tcp_source_mismatches
    );
    emit(&output, &report, human)?;
    Ok(true)
}

/// `egw-bench compare`.
fn cmd_compare(args: CompareArgs) -> Result<bool, String> {
    let CompareArgs {
        quick,
        gateway_bin,
        contestants,
        workers,
        flows,
        sizes,
        seconds,
        rate,
        no_cps,
        warmup,
        no_warmup,
        no_host_tune,
        out_dir,
        quiet,
    } = args;
    let bench_bin =
        std::env::current_exe().map_err(|error| format!("locating egw-bench: {error}"))?;
    let profile = if quick { Profile::Quick } else { Profile::Full };
    let mut settings = CompareSettings::for_profile(profile, bench_bin, out_dir);
    settings.gateway_bin = gateway_bin;
    if !contestants.is_empty() {
        settings.contestants = contestants
            .iter()
            .map(|name| {
                Contestant::parse(name)
                    .ok_or_else(|| format!("unknown contestant {name:?} (egw, kernel, ceiling)"))
            })
            .collect::<Result<_, _>>()?;
    }
    settings.overridden = !(contestants.is_empty()
        && flows.is_empty()
        && sizes.is_empty()
        && seconds.is_none()
        && rate.is_none()
        && !no_cps);
    if !workers.is_empty() {
        settings.workers = workers;
    }
    if !flows.is_empty() {
        settings.flows = flows;
    }
    if !sizes.is_empty() {
        settings.frame_sizes = sizes;
    }
    if let Some(seconds) = seconds {
        settings.seconds = seconds;
    }
    settings.rate = rate;
    settings.cps = !no_cps;
    if warmup {
        settings.warmup = true;
    }
    if no_warmup {
        settings.warmup = false;
    }
    settings.tune_host_conntrack = !no_host_tune;
    settings.progress = !quiet;
    egw_testbed::install_signal_teardown().map_err(|error| error.to_string())?;
    eprintln!(
        "egw-bench: compare, about {} s",
        settings.estimated_seconds()
    );
    let (report, outputs) = compare::run(&settings).map_err(|error| error.to_string())?;
    println!("{}", egw_bench::report::markdown(&report));
    println!(
        "wrote {}, {}, {}",
        outputs.json.display(),
        outputs.markdown.display(),
        outputs.svg.display()
    );
    Ok(!report
        .points
        .iter()
        .any(|point| point.status == PointStatus::Failed))
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("egw-bench: {error}");
            ExitCode::from(2)
        }
    }
}
