//! `egwctl nat-log query` end to end: arguments parsed as the binary parses them, log files
//! written in a temporary directory, output compared. (Here rather than in `src/natlog.rs` so the
//! module does not need `args`, which needs it.)

use clap::Parser;
use egw_natlog_format::{EventKind, LogProtocol, NatLogRecord, UnixMillis};
use egwctl::args::{Cli, Command};
use egwctl::natlog::run;
use egwctl::CliError;

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
    let cli = Cli::try_parse_from(arguments).map_err(|error| CliError::Usage(error.to_string()))?;
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
    let json: serde_json::Value = serde_json::from_str(&run_cli(&json_arguments).unwrap()).unwrap();
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
