//! `egwctl nat-log ...`: questions answered from NAT log files, offline (no gateway).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use comfy_table::{presets, ColumnConstraint, Table};
use egw_natlog_format::{LogProtocol, Mapping, NatLogIndex, RecordFilter, UnixMillis};
use serde::Serialize;

use crate::args::{OutputFormat, ProtocolArg};
use crate::error::CliError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;
    use egw_natlog_format::{EventKind, NatLogRecord};

    fn write_log(dir: &std::path::Path) {
        let record = |ts: i64, event: EventKind, pod: &str, reason: Option<&str>| NatLogRecord {
            ts: UnixMillis(ts),
            event,
            proto: LogProtocol::Tcp,
            pod: pod.parse().unwrap(),
            external: "198.51.100.1:1042".parse().unwrap(),
            public: None,
            remote: "203.0.113.10:80".parse().unwrap(),
            reason: reason.map(str::to_owned),
            age_s: None,
            core: 0,
            gateway: "gw-a".to_owned(),
        };
        let t0 = 1_795_240_819_000;
        let records = [
            record(t0, EventKind::Create, "10.244.1.10:40000", None),
            record(
                t0 + 5000,
                EventKind::Delete,
                "10.244.1.10:40000",
                Some("idle_timeout"),
            ),
            record(t0 + 6000, EventKind::Create, "10.244.2.20:41000", None),
        ];
        let mut text = String::new();
        for record in &records {
            text.push_str(&serde_json::to_string(record).unwrap());
            text.push('\n');
        }
        std::fs::write(dir.join("natlog-a.jsonl"), text).unwrap();
    }

    fn run_cli(arguments: &[&str]) -> Result<String, CliError> {
        let cli =
            Cli::try_parse_from(arguments).map_err(|error| CliError::Usage(error.to_string()))?;
        let Command::NatLog(command) = cli.command else {
            panic!("not a nat-log command");
        };
        let mut out = Vec::new();
        run(command, cli.output, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn answers_for_the_elastic_ip_the_outside_world_saw() {
        let dir = tempfile::tempdir().unwrap();
        let record = NatLogRecord {
            ts: UnixMillis(1_795_240_819_000),
            event: EventKind::Create,
            proto: LogProtocol::Udp,
            pod: "10.244.1.10:5353".parse().unwrap(),
            external: "10.0.1.5:2000".parse().unwrap(),
            public: Some("54.1.2.3:2000".parse().unwrap()),
            remote: "203.0.113.53:53".parse().unwrap(),
            reason: None,
            age_s: None,
            core: 1,
            gateway: "gw-a".to_owned(),
        };
        let line = serde_json::to_string(&record).unwrap() + "\n";
        std::fs::write(dir.path().join("natlog-a.jsonl"), line).unwrap();
        let path = dir.path().to_str().unwrap();
        let held = run_cli(&[
            "egwctl",
            "nat-log",
            "query",
            "--dir",
            path,
            "--external",
            "54.1.2.3:2000",
            "--at",
            "2026-11-21T06:00:20Z",
        ])
        .unwrap();
        assert_eq!(
            held,
            "PROTO  POD               EXTERNAL       PUBLIC         REMOTE           CREATED                   DELETED  REASON  CORE  GATEWAY\n\
             udp    10.244.1.10:5353  10.0.1.5:2000  54.1.2.3:2000  203.0.113.53:53  2026-11-21T06:00:19.000Z  -        -       1     gw-a\n"
        );
    }

    #[test]
    fn finds_the_pod_that_held_an_external_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path());
        let path = dir.path().to_str().unwrap();
        let base = [
            "egwctl",
            "nat-log",
            "query",
            "--dir",
            path,
            "--external",
            "198.51.100.1:1042",
        ];
        let at = |time: &str| {
            let mut arguments = base.to_vec();
            arguments.extend(["--at", time]);
            run_cli(&arguments).unwrap()
        };
        let held = at("2026-11-21T06:00:21Z");
        assert_eq!(
            held,
            "PROTO  POD                EXTERNAL           REMOTE           CREATED                   DELETED                   REASON        CORE  GATEWAY\n\
             tcp    10.244.1.10:40000  198.51.100.1:1042  203.0.113.10:80  2026-11-21T06:00:19.000Z  2026-11-21T06:00:24.000Z  idle_timeout  0     gw-a\n"
        );
        assert!(at("2026-11-21T06:00:24.500Z").starts_with("no match"));
        assert!(at("2026-11-21T07:00:25+01:00").contains("10.244.2.20:41000"));

        let mut json_arguments = base.to_vec();
        json_arguments.extend(["--at", "2026-11-21T06:00:30Z", "-o", "json"]);
        let json: serde_json::Value =
            serde_json::from_str(&run_cli(&json_arguments).unwrap()).unwrap();
        assert_eq!(json["mappings"][0]["pod"], "10.244.2.20:41000");
        assert_eq!(json["mappings"][0]["deleted"], serde_json::Value::Null);
        assert_eq!(json["files"], 1);
    }

    #[test]
    fn lists_a_pods_mappings() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path());
        let path = dir.path().to_str().unwrap();
        let all = run_cli(&[
            "egwctl",
            "-o",
            "yaml",
            "nat-log",
            "query",
            "--dir",
            path,
            "--pod",
            "10.244.1.10",
        ])
        .unwrap();
        let yaml: serde_yaml::Value = serde_yaml::from_str(&all).unwrap();
        assert_eq!(yaml["mappings"].as_sequence().unwrap().len(), 1);
        let udp = run_cli(&[
            "egwctl",
            "nat-log",
            "query",
            "--dir",
            path,
            "--pod",
            "10.244.1.10",
            "--proto",
            "udp",
        ])
        .unwrap();
        assert!(udp.starts_with("no match"));
    }

    #[test]
    fn bad_questions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        // --external needs --at; a time must be RFC 3339; one subject is needed.
        assert!(run_cli(&[
            "egwctl",
            "nat-log",
            "query",
            "--dir",
            path,
            "--external",
            "198.51.100.1:1"
        ])
        .is_err());
        assert!(run_cli(&[
            "egwctl", "nat-log", "query", "--dir", path, "--pod", "10.0.0.1", "--at", "noon"
        ])
        .is_err());
        assert!(run_cli(&["egwctl", "nat-log", "query", "--dir", path]).is_err());
        let missing = run_cli(&[
            "egwctl",
            "nat-log",
            "query",
            "--dir",
            "/nonexistent/natlog",
            "--pod",
            "10.0.0.1",
        ]);
        assert!(matches!(missing, Err(CliError::NatLog(_))));
    }
}
