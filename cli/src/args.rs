//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::natlog::NatLogCommand;
// Re-exported: they are part of the argument types, and `egwctl::args::OutputFormat` is their
// public path.
pub use crate::options::{OutputFormat, ProtocolArg};

/// egwctl: inspect and operate egw egress gateways.
///
/// Talks to one gateway over its control socket (default
/// unix:///run/egw/egw.sock) or over TCP with mutual TLS
/// (https://HOST:PORT with --ca, --cert and --key).
#[derive(Debug, Parser)]
#[command(name = "egwctl", version, propagate_version = true)]
pub struct Cli {
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Gateway address: unix:///PATH or https://HOST:PORT
    /// [default: unix:///run/egw/egw.sock]
    #[arg(long, global = true, env = "EGW_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// CA certificate (PEM) that signed the gateway's server certificate (https only).
    #[arg(long, global = true, env = "EGW_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Client certificate (PEM) presented to the gateway (https only).
    #[arg(long, global = true, env = "EGW_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// Private key (PEM) of the client certificate (https only).
    #[arg(long, global = true, env = "EGW_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Configuration file with defaults for server, ca, cert and key
    /// [default: ~/.config/egw/egwctl.yaml, used when it exists].
    #[arg(long, global = true, env = "EGW_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show version, interfaces, counters, conntrack and external IP usage.
    Status,
    /// Read or replace the route table.
    #[command(subcommand)]
    Routes(RoutesCommand),
    /// List tracked flows.
    Flows(FlowsArgs),
    /// Show packet counters, once or continuously.
    Stats(StatsArgs),
    /// Stop (or with --undo resume) new flows on an external IP.
    Drain(DrainArgs),
    /// Query NAT log files (offline: no gateway needed).
    #[command(subcommand)]
    NatLog(NatLogCommand),
    /// Print a shell completion script.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `egwctl routes ...`
#[derive(Debug, Subcommand)]
pub enum RoutesCommand {
    /// Print the route table the gateway serves (`-o yaml` output can be applied again).
    Get,
    /// Replace the route table with a YAML file.
    Apply {
        /// The route table file ("-" reads standard input).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
}

/// `egwctl flows ...`
#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Only flows of this pod IP.
    #[arg(long, value_name = "IP")]
    pub pod: Option<String>,
    /// Only flows to remote addresses in this CIDR.
    #[arg(long, value_name = "CIDR")]
    pub dst: Option<String>,
    /// Only flows using this external IP (and port).
    #[arg(long, value_name = "IP[:PORT]")]
    pub external: Option<String>,
    /// Only flows of this protocol.
    #[arg(long = "proto", value_enum)]
    pub protocol: Option<ProtocolArg>,
    /// Only flows in this state.
    #[arg(long, value_enum)]
    pub state: Option<StateArg>,
    /// Flows per request (the gateway caps it at 1000).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: u32,
    /// Fetch every page, not just the first.
    #[arg(long)]
    pub all: bool,
}

/// Flow state filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Seen in one direction only.
    New,
    /// Seen in both directions.
    Established,
    /// Closing.
    Closing,
}

/// `egwctl stats ...`
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Keep printing snapshots until interrupted.
    #[arg(short, long)]
    pub watch: bool,
    /// Time between snapshots with --watch (e.g. 500ms, 1s, 2m).
    #[arg(long, default_value = "1s", value_parser = parse_interval, value_name = "DURATION")]
    pub interval: Duration,
    /// Stop after this many snapshots with --watch.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// `egwctl drain ...`
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The external IP.
    pub ip: String,
    /// Resume new flows on the IP instead.
    #[arg(long)]
    pub undo: bool,
}

/// Parses `250ms`, `1s`, `2m` or a bare number of seconds.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit_ms) = if let Some(number) = text.strip_suffix("ms") {
        (number, 1)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1000)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60_000)
    } else {
        (text, 1000)
    };
    let value: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 1s or 2m"))?;
    let millis = value
        .checked_mul(unit_ms)
        .filter(|millis| *millis > 0)
        .ok_or_else(|| format!("{text:?} must be a positive duration"))?;
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn intervals_parse() {
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("fast").is_err());
    }
}
