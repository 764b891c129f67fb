//! `egwctl nat-log ...`: questions answered from NAT log files, offline (no gateway).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use comfy_table::{presets, ColumnConstraint, Table};
use egw_natlog_format::{LogProtocol, Mapping, NatLogIndex, RecordFilter, UnixMillis};
use serde::Serialize;

use crate::error::CliError;
use crate::options::{OutputFormat, ProtocolArg};

/// `egwctl nat-log ...`
#[derive(Debug, Subcommand)]
pub enum NatLogCommand {
    /// Which pod held an external IP:port at a time (or what a pod used).
    ///
    /// Reads every *.jsonl file in --dir, the one being written included. A
    /// mapping matches when it was created at or before --at and not deleted
    /// before it; at a hand-over both pods are listed.
    Query(NatLogQueryArgs),
}

/// `egwctl nat-log query ...`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("subject").required(true).args(["external", "pod"])))]
pub struct NatLogQueryArgs {
    /// The NAT log directory (the gateway's natlog directory, or a copy).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The external endpoint seen by the remote side.
    #[arg(long, value_name = "IP:PORT", requires = "at")]
    pub external: Option<SocketAddrV4>,
    /// The pod IP: list its mappings (held at --at when given).
    #[arg(long, value_name = "IP", conflicts_with = "external")]
    pub pod: Option<Ipv4Addr>,
    /// The time, RFC 3339 (e.g. 2026-11-21T05:40:19.123Z or with an offset).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<UnixMillis>,
    /// Only this protocol.
    #[arg(long = "proto", value_enum)]
    pub protocol: Option<ProtocolArg>,
}

fn parse_time(text: &str) -> Result<UnixMillis, String> {
    UnixMillis::parse_rfc3339(text).map_err(|error| error.to_string())
}

/// The answer, as printed with `-o json` / `-o yaml`.
#[derive(Debug, Serialize)]
struct QueryView<'a> {
    question: String,
    files: usize,
    skipped_lines: u64,
    mappings: Vec<&'a Mapping>,
}

/// Runs a `nat-log` subcommand, writing to `out`.
pub fn run(
    command: NatLogCommand,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        NatLogCommand::Query(args) => query(args, format, out),
    }
}

fn query(args: NatLogQueryArgs, format: OutputFormat, out: &mut dyn Write) -> Result<(), CliError> {
    let protocol = args.protocol.map(|protocol| match protocol {
        ProtocolArg::Tcp => LogProtocol::Tcp,
        ProtocolArg::Udp => LogProtocol::Udp,
        ProtocolArg::Icmp => LogProtocol::Icmp,
    });
    let filter = RecordFilter {
        external: args.external,
        pod: args.pod,
        proto: protocol,
    };
    let index = NatLogIndex::load_dir_matching(&args.dir, &filter)?;
    let (question, mappings) = match (args.external, args.pod, args.at) {
        (Some(external), _, Some(at)) => (
            format!("{} held {external} at {at}", describe(protocol)),
            index.holders_of(external, at, protocol),
        ),
        (None, Some(pod), at) => (
            match at {
                Some(at) => format!("{} mappings of pod {pod} held at {at}", describe(protocol)),
                None => format!("{} mappings of pod {pod}", describe(protocol)),
            },
            index.mappings_of_pod(pod, at, protocol),
        ),
        _ => {
            return Err(CliError::Usage(
                "give --external IP:PORT with --at TIME, or --pod IP".to_owned(),
            ))
        }
    };
    let view = QueryView {
        question,
        files: index.files,
        skipped_lines: index.skipped_lines,
        mappings,
    };
    match format {
        OutputFormat::Table => out.write_all(render_table(&view).as_bytes())?,
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &view)
                .map_err(|error| CliError::Reply(error.to_string()))?;
            out.write_all(b"\n")?;
        }
        OutputFormat::Yaml => {
            let text =
                serde_yaml::to_string(&view).map_err(|error| CliError::Reply(error.to_string()))?;
            out.write_all(text.as_bytes())?;
        }
    }
    Ok(())
}

fn describe(protocol: Option<LogProtocol>) -> String {
    match protocol {
        Some(protocol) => protocol.to_string(),
        None => "any protocol:".to_owned(),
    }
}

fn render_table(view: &QueryView<'_>) -> String {
    let mut text = String::new();
    if view.mappings.is_empty() {
        text.push_str(&format!(
            "no match ({}) in {} files\n",
            view.question, view.files
        ));
    } else {
        let mut table = Table::new();
        table.load_preset(presets::NOTHING);
        // The PUBLIC column (AWS Elastic IP behind the gateway) only where the log has one.
        let with_public = view.mappings.iter().any(|mapping| mapping.public.is_some());
        let mut header = vec!["PROTO", "POD", "EXTERNAL"];
        if with_public {
            header.push("PUBLIC");
        }
        header.extend(["REMOTE", "CREATED", "DELETED", "REASON", "CORE", "GATEWAY"]);
        table.set_header(header);
        for column in table.column_iter_mut() {
            column.set_padding((0, 2));
            column.set_constraint(ColumnConstraint::ContentWidth);
        }
        for mapping in &view.mappings {
            let created = match (mapping.created, mapping.created_estimated) {
                (Some(created), false) => created.to_string(),
                (Some(created), true) => format!("~{created}"),
                (None, _) => "unknown".to_owned(),
            };
            let mut row = vec![
                mapping.proto.to_string(),
                mapping.pod.to_string(),
                mapping.external.to_string(),
            ];
            if with_public {
                row.push(
                    mapping
                        .public
                        .map_or_else(|| "-".to_owned(), |public| public.to_string()),
                );
            }
            row.extend([
                mapping.remote.to_string(),
                created,
                mapping
                    .deleted
                    .map_or_else(|| "-".to_owned(), |deleted| deleted.to_string()),
                mapping.reason.clone().unwrap_or_else(|| "-".to_owned()),
                mapping.core.to_string(),
                mapping.gateway.clone(),
            ]);
            table.add_row(row);
        }
        for line in table.lines() {
            text.push_str(line.trim_end());
            text.push('\n');
        }
    }
    if view.skipped_lines > 0 {
        text.push_str(&format!(
            "note: {} lines were not NAT log records (e.g. a torn last line) and were skipped\n",
            view.skipped_lines
        ));
    }
    text
}
