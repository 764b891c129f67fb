//! Writer → rotating files → query, through the public API.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use egw_natlog::{
    queue, ActiveBackend, EventKind, IoBackend, LogProtocol, NatEvent, NatLogConfig, NatLogError,
    NatLogIndex, NatLogRecord, NatLogWriter, RecordFilter, UnixMillis,
};

const T0: i64 = 1_795_240_000_000;

fn small_files(dir: &Path) -> NatLogConfig {
    let mut config = NatLogConfig::new(dir, "gw-test");
    config.max_file_bytes = 8 * 1024;
    config.keep_files = 10_000;
    config.buffer_count = 2;
    config.buffer_size = 1024;
    config.ring_entries = 4;
    config.idle_wait = Duration::from_millis(5);
    config
}

fn event(
    at: i64,
    kind: EventKind,
    pod: SocketAddrV4,
    external: SocketAddrV4,
    remote: SocketAddrV4,
) -> NatEvent {
    NatEvent {
        at: UnixMillis(at),
        kind,
        protocol: LogProtocol::Tcp,
        pod,
        external,
        public: None,
        remote,
        core: pod.port() % 4,
        reason: (kind == EventKind::Delete).then_some("idle_timeout"),
        age_secs: None,
    }
}

fn log_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    files
}

fn lines_in(dir: &Path) -> Vec<NatLogRecord> {
    log_files(dir)
        .iter()
        .flat_map(|path| {
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str::<NatLogRecord>(line).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Submits, retrying while the queue is full (the test is the only producer
/// and must not lose events; the dataplane would drop instead).
fn submit_all(writer: &NatLogWriter, events: &[NatEvent]) {
    let sender = writer.sender();
    let deadline = Instant::now() + Duration::from_secs(60);
    for event in events {
        while !sender.submit(*event) {
            assert!(Instant::now() < deadline, "writer stopped draining");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Pods take turns on a few external ports: each holds a port for a while, the
/// next pod gets it in the same millisecond the previous mapping is deleted, and
/// for one port a second pod shares it towards a different remote.
#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario: the events, the ground truth they imply, and every query checked against it"
)]
fn the_right_pod_is_found_across_rotations_and_port_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let writer = NatLogWriter::start(small_files(dir.path())).unwrap();
    let remote = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 80);
    let other_remote = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 20), 443);
    let external_ip = Ipv4Addr::new(198, 51, 100, 1);
    // (external, pod, remote, created, deleted)
    let mut truth = Vec::new();
    let mut events = Vec::new();
    for port in 1000..1020u16 {
        let external = SocketAddrV4::new(external_ip, port);
        for turn in 0..50i64 {
            let pod = SocketAddrV4::new(
                Ipv4Addr::new(10, 244, (turn % 7) as u8, (port % 250) as u8),
                40_000 + turn as u16,
            );
            let created = T0 + turn * 1000;
            let deleted = created + 1000;
            truth.push((external, pod, remote, created, deleted));
            events.push(event(created, EventKind::Create, pod, external, remote));
            events.push(event(deleted, EventKind::Delete, pod, external, remote));
        }
    }
    // Port 1000 is also used towards another remote by one pod for 10 s in the middle.
    let sharing_pod = SocketAddrV4::new(Ipv4Addr::new(10, 244, 9, 9), 50_000);
    let shared = SocketAddrV4::new(external_ip, 1000);
    truth.push((shared, sharing_pod, other_remote, T0 + 20_500, T0 + 30_500));
    events.push(event(
        T0 + 20_500,
        EventKind::Create,
        sharing_pod,
        shared,
        other_remote,
    ));
    events.push(event(
        T0 + 30_500,
        EventKind::Delete,
        sharing_pod,
        shared,
        other_remote,
    ));
    // Workers deliver in (roughly) time order, interleaved across ports.
    events.sort_by_key(|event| (event.at, event.kind == EventKind::Create));
    submit_all(&writer, &events);
    let stats = writer.shutdown().unwrap();

    assert_eq!(stats.events_written, events.len() as u64);
    assert_eq!(stats.events_dropped, 0);
    assert_eq!(stats.write_errors, 0);
    assert_eq!(stats.backend, Some(ActiveBackend::IoUring));
    assert!(stats.rotations >= 10, "{stats:?}");
    let files = log_files(dir.path());
    assert_eq!(files.len() as u64, stats.rotations + 1);
    let total: u64 = files
        .iter()
        .map(|path| std::fs::metadata(path).unwrap().len())
        .sum();
    assert_eq!(total, stats.bytes_written);

    let index = NatLogIndex::load_dir(dir.path()).unwrap();
    assert_eq!(index.skipped_lines, 0);
    assert_eq!(index.files, files.len());
    assert_eq!(index.mappings.len(), truth.len());
    let expected_at = |external: SocketAddrV4, at: i64| -> BTreeSet<(SocketAddrV4, SocketAddrV4)> {
        truth
            .iter()
            .filter(|(ext, _, _, created, deleted)| {
                *ext == external && *created <= at && *deleted >= at
            })
            .map(|(_, pod, remote, _, _)| (*pod, *remote))
            .collect()
    };
    let mut probes = 0;
    for port in [1000u16, 1001, 1013, 1019] {
        let external = SocketAddrV4::new(external_ip, port);
        // What egwctl does: read only this endpoint's records.
        let filter = RecordFilter {
            external: Some(external),
            ..RecordFilter::default()
        };
        let only_this_port = NatLogIndex::load_dir_matching(dir.path(), &filter).unwrap();
        let mappings_of_port = truth.iter().filter(|(ext, ..)| *ext == external).count();
        assert_eq!(only_this_port.mappings.len(), mappings_of_port);
        for at in (T0 - 1000..T0 + 52_000).step_by(250).chain([
            T0,
            T0 + 999,
            T0 + 1000,
            T0 + 1001,
            T0 + 20_500,
            T0 + 30_500,
            T0 + 30_501,
            T0 + 50_000,
            T0 + 50_001,
        ]) {
            let found: BTreeSet<_> = index
                .holders_of(external, UnixMillis(at), None)
                .iter()
                .map(|mapping| (mapping.pod, mapping.remote))
                .collect();
            assert_eq!(
                found,
                expected_at(external, at),
                "port {port} at T0{:+}",
                at - T0
            );
            let found_filtered: BTreeSet<_> = only_this_port
                .holders_of(external, UnixMillis(at), None)
                .iter()
                .map(|mapping| (mapping.pod, mapping.remote))
                .collect();
            assert_eq!(found_filtered, found);
            probes += 1;
        }
    }
    assert!(probes > 800);

    // At a handover both the leaving and the arriving pod are reported; a
    // millisecond either side, only one.
    let external = SocketAddrV4::new(external_ip, 1001);
    let pods = |at: i64| -> Vec<u16> {
        index
            .holders_of(external, UnixMillis(at), Some(LogProtocol::Tcp))
            .iter()
            .map(|mapping| mapping.pod.port())
            .collect()
    };
    assert_eq!(pods(T0 + 4999), vec![40_004]);
    assert_eq!(pods(T0 + 5000), vec![40_004, 40_005]);
    assert_eq!(pods(T0 + 5001), vec![40_005]);
    assert!(index
        .holders_of(external, UnixMillis(T0 + 5000), Some(LogProtocol::Udp))
        .is_empty());

    // The reverse question: what did the sharing pod use, and when.
    let of_pod = index.mappings_of_pod(*sharing_pod.ip(), None, None);
    assert_eq!(of_pod.len(), 1);
    assert_eq!(of_pod[0].external, shared);
    assert_eq!(of_pod[0].deleted, Some(UnixMillis(T0 + 30_500)));
    assert_eq!(of_pod[0].reason.as_deref(), Some("idle_timeout"));
    assert!(index
        .mappings_of_pod(*sharing_pod.ip(), Some(UnixMillis(T0 + 30_501)), None)
        .is_empty());
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let (sender, receiver) = queue(4).unwrap();
    let pod = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 10), 40_000);
    let external = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 1042);
    let remote = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 80);
    // No writer consumes the queue yet: the fifth and later events are dropped.
    let accepted: Vec<bool> = (0..10)
        .map(|i| sender.submit(event(T0 + i, EventKind::Create, pod, external, remote)))
        .collect();
    assert_eq!(
        accepted,
        [true, true, true, true, false, false, false, false, false, false]
    );
    assert_eq!(sender.stats().events_dropped, 6);
    assert_eq!(sender.stats().backend, None);
    // Events an engine dropped before they reached the queue count too.
    sender.record_dropped(3);

    let writer = NatLogWriter::start_with(small_files(dir.path()), receiver).unwrap();
    let stats = writer.shutdown().unwrap();
    assert_eq!(stats.events_written, 4);
    assert_eq!(stats.events_dropped, 9);
    let written: Vec<i64> = lines_in(dir.path()).iter().map(|r| r.ts.0).collect();
    assert_eq!(written, [T0, T0 + 1, T0 + 2, T0 + 3]);
}

#[test]
fn engine_events_are_stamped_and_drained() {
    use egw_engine::{FlowEvent, FlowInfo, FlowState, Protocol};
    let dir = tempfile::tempdir().unwrap();
    let writer = NatLogWriter::start(small_files(dir.path())).unwrap();
    let flow = FlowInfo {
        core: 1,
        protocol: Protocol::Udp,
        pod: (Ipv4Addr::new(10, 244, 1, 10), 5353),
        external: (Ipv4Addr::new(198, 51, 100, 1), 2000),
        remote: (Ipv4Addr::new(203, 0, 113, 53), 53),
        state: FlowState::Unreplied,
        age_secs: 30,
        idle_secs: 30,
        packets_out: 1,
        packets_in: 0,
        bytes_out: 40,
        bytes_in: 0,
    };
    let before = UnixMillis::now();
    let mut events = vec![
        FlowEvent::Created(flow.clone()),
        FlowEvent::Removed {
            flow,
            reason: "idle_timeout",
        },
    ];
    // The route table maps the external address to an Elastic IP; other addresses have none.
    let elastic_ip = Ipv4Addr::new(54, 1, 2, 3);
    let public_address_of =
        |external: Ipv4Addr| (external == Ipv4Addr::new(198, 51, 100, 1)).then_some(elastic_ip);
    assert_eq!(
        writer
            .sender()
            .submit_flow_events(&mut events, public_address_of),
        0
    );
    assert!(events.is_empty());
    writer.shutdown().unwrap();
    let records = lines_in(dir.path());
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|record| record.ts >= before
        && record.gateway == "gw-test"
        && record.proto == LogProtocol::Udp
        && record.core == 1
        && record.public == Some(SocketAddrV4::new(elastic_ip, 2000))));
    assert_eq!(records[1].reason.as_deref(), Some("idle_timeout"));
    assert_eq!(records[1].age_s, Some(30));

    // "Who used Elastic IP 54.1.2.3:2000?" is answered from the public endpoint, and the
    // gateway's own external endpoint still answers too.
    let index = NatLogIndex::load_dir(dir.path()).unwrap();
    let during = records[0].ts;
    for asked in ["54.1.2.3:2000", "198.51.100.1:2000"] {
        let holders = index.holders_of(asked.parse().unwrap(), during, None);
        assert_eq!(holders.len(), 1, "{asked}");
        assert_eq!(holders[0].pod, "10.244.1.10:5353".parse().unwrap());
        assert_eq!(holders[0].public, Some(SocketAddrV4::new(elastic_ip, 2000)));
    }
    let filter = RecordFilter {
        external: Some("54.1.2.3:2000".parse().unwrap()),
        ..RecordFilter::default()
    };
    assert_eq!(
        NatLogIndex::load_dir_matching(dir.path(), &filter)
            .unwrap()
            .mappings
            .len(),
        1
    );
    assert!(index
        .holders_of("54.1.2.3:2001".parse().unwrap(), during, None)
        .is_empty());
}

fn write_some(config: NatLogConfig, count: i64) -> egw_natlog::NatLogStats {
    let dir = config.directory.clone();
    let writer = NatLogWriter::start(config).unwrap();
    let pod = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 10), 40_000);
    let remote = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 80);
    let events: Vec<NatEvent> = (0..count)
        .map(|i| {
            let external = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 1000 + i as u16);
            event(T0 + i, EventKind::Create, pod, external, remote)
        })
        .collect();
    submit_all(&writer, &events);
    let stats = writer.shutdown().unwrap();
    let written: Vec<i64> = lines_in(&dir).iter().map(|r| r.ts.0 - T0).collect();
    let expected: Vec<i64> = (0..count).collect();
    if stats.rotations == 0 {
        assert_eq!(written, expected);
    }
    stats
}

#[test]
fn the_plain_backend_writes_the_same_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_files(dir.path());
    config.io_backend = IoBackend::Plain;
    config.max_file_bytes = 0;
    let stats = write_some(config, 300);
    assert_eq!(stats.backend, Some(ActiveBackend::Plain));
    assert_eq!(stats.events_written, 300);
}

#[test]
fn auto_falls_back_to_plain_writes_when_io_uring_cannot_be_set_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_files(dir.path());
    // The kernel refuses a ring of zero entries, as it refuses io_uring under seccomp.
    config.ring_entries = 0;
    config.max_file_bytes = 0;
    let stats = write_some(config.clone(), 50);
    assert_eq!(stats.backend, Some(ActiveBackend::Plain));
    assert_eq!(stats.events_written, 50);

    config.io_backend = IoBackend::Uring;
    assert!(matches!(
        NatLogWriter::start(config),
        Err(NatLogError::Uring { .. })
    ));
}

#[test]
fn only_the_newest_files_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_files(dir.path());
    config.max_file_bytes = 1024;
    config.keep_files = 3;
    let stats = write_some(config, 400);
    assert!(stats.rotations > 5, "{stats:?}");
    let files = log_files(dir.path());
    assert_eq!(files.len(), 3);
    let last = lines_in(dir.path()).last().map(|record| record.ts.0 - T0);
    assert_eq!(last, Some(399));
}

#[test]
fn files_rotate_after_their_time_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_files(dir.path());
    config.max_file_bytes = 0;
    config.rotate_every = Some(Duration::from_millis(20));
    let writer = NatLogWriter::start(config).unwrap();
    let pod = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 10), 40_000);
    let external = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 1042);
    let remote = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 80);
    assert!(writer
        .sender()
        .submit(event(T0, EventKind::Create, pod, external, remote)));
    let deadline = Instant::now() + Duration::from_secs(30);
    while writer.stats().rotations == 0 {
        assert!(
            Instant::now() < deadline,
            "no rotation: {:?}",
            writer.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(writer
        .sender()
        .submit(event(T0 + 1, EventKind::Delete, pod, external, remote)));
    let stats = writer.shutdown().unwrap();
    let files = log_files(dir.path());
    // An empty file is never rotated for age alone: at most one more rotation
    // (after the second event) can have happened.
    assert!((1..=2).contains(&stats.rotations), "{stats:?}");
    assert_eq!(files.len() as u64, stats.rotations + 1);
    let index = NatLogIndex::load_dir(dir.path()).unwrap();
    assert_eq!(index.mappings.len(), 1);
    assert_eq!(index.holders_of(external, UnixMillis(T0), None).len(), 1);
}

#[test]
fn bad_configurations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for change in [
        (|config: &mut NatLogConfig| config.keep_files = 0) as fn(&mut NatLogConfig),
        |config| config.file_prefix = "../x".to_owned(),
        |config| config.rotate_every = Some(Duration::ZERO),
        |config| config.buffer_size = 0,
        |config| {
            let collector = "127.0.0.1:4739".parse().unwrap();
            let mut ipfix = egw_natlog::IpfixConfig::new(collector, 1);
            ipfix.max_message_bytes = 64;
            config.ipfix = Some(ipfix);
        },
    ] {
        let mut config = small_files(dir.path());
        change(&mut config);
        assert!(matches!(
            NatLogWriter::start(config),
            Err(NatLogError::Config(_))
        ));
    }
}
