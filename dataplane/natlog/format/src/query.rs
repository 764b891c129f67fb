//! Answering "which pod held external IP:port X at time T" from the log files.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::QueryError;
use crate::millis::UnixMillis;
use crate::record::{EventKind, LogProtocol, NatLogRecord, FILE_SUFFIX};

/// One mapping's life, rebuilt from its create and delete records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mapping {
    pub proto: LogProtocol,
    pub pod: SocketAddrV4,
    pub external: SocketAddrV4,
    /// `external` as the outside world saw it (AWS Elastic IP, same port), when logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public: Option<SocketAddrV4>,
    pub remote: SocketAddrV4,
    pub core: u16,
    pub gateway: String,
    /// When the mapping was created; `None` when neither its create record nor
    /// the age in its delete record is in the log.
    pub created: Option<UnixMillis>,
    /// True when `created` comes from the delete record's age (whole seconds,
    /// so up to a second early) because the create record was lost or rotated away.
    pub created_estimated: bool,
    /// When the mapping was deleted; `None` while it is (as far as the log says) still held.
    pub deleted: Option<UnixMillis>,
    pub reason: Option<String>,
}

impl Mapping {
    /// Created at or before `at` and not deleted before `at`.
    pub fn held_at(&self, at: UnixMillis) -> bool {
        self.created.is_some_and(|created| created <= at)
            && self.deleted.is_none_or(|deleted| deleted >= at)
    }
}

/// Every mapping found in a set of log records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NatLogIndex {
    /// Ordered by creation time (unknown first), then pod.
    pub mappings: Vec<Mapping>,
    /// Files read.
    pub files: usize,
    /// Lines that were not records (e.g. the torn last line of a crashed writer).
    pub skipped_lines: u64,
}

/// Which records a query needs; the others are skipped while reading, so that
/// memory follows the answer, not the size of the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordFilter {
    pub external: Option<SocketAddrV4>,
    pub pod: Option<Ipv4Addr>,
    pub proto: Option<LogProtocol>,
}

impl RecordFilter {
    pub fn matches(&self, record: &NatLogRecord) -> bool {
        self.external
            .is_none_or(|external| external == record.external || Some(external) == record.public)
            && self.pod.is_none_or(|pod| pod == *record.pod.ip())
            && self.proto.is_none_or(|proto| proto == record.proto)
    }

    /// Text every matching line contains, whatever its JSON formatting: lines
    /// without it are skipped without being parsed.
    fn needle(&self) -> Option<String> {
        match (self.external, self.pod) {
            (Some(external), _) => Some(external.to_string()),
            (None, Some(pod)) => Some(format!("{pod}:")),
            (None, None) => None,
        }
    }
}

type FlowKey = (
    LogProtocol,
    SocketAddrV4,
    SocketAddrV4,
    SocketAddrV4,
    u16,
    String,
);

impl NatLogIndex {
    /// Reads every `*.jsonl` file in `directory`, including the one being written.
    pub fn load_dir(directory: &Path) -> Result<Self, QueryError> {
        Self::load_dir_matching(directory, &RecordFilter::default())
    }

    /// Like [`NatLogIndex::load_dir`], keeping only the records `filter` matches.
    pub fn load_dir_matching(directory: &Path, filter: &RecordFilter) -> Result<Self, QueryError> {
        let read_dir_error = |source| QueryError::ReadDir {
            path: directory.to_owned(),
            source,
        };
        let mut paths: Vec<PathBuf> = Vec::new();
        for entry in fs::read_dir(directory).map_err(read_dir_error)? {
            let path = entry.map_err(read_dir_error)?.path();
            let is_log = path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(FILE_SUFFIX) && !name.starts_with('.'));
            if is_log && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut records = Vec::new();
        let mut skipped_lines = 0;
        for path in &paths {
            match File::open(path) {
                Ok(file) => {
                    skipped_lines += read_records(BufReader::new(file), filter, &mut records)
                }
                // Rotated away between listing and opening: its mappings are gone anyway.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(QueryError::ReadFile {
                        path: path.clone(),
                        source,
                    })
                }
            }
        }
        let mut index = Self::from_records(records);
        index.files = paths.len();
        index.skipped_lines = skipped_lines;
        Ok(index)
    }

    /// Pairs create and delete records (given in file order) into mappings.
    pub fn from_records(records: impl IntoIterator<Item = NatLogRecord>) -> Self {
        let mut records: Vec<NatLogRecord> = records.into_iter().collect();
        // Workers stamp events on different cores: restore time order; the stable
        // sort keeps file order between records of the same millisecond.
        records.sort_by_key(|record| record.ts);
        let mut mappings: Vec<Mapping> = Vec::new();
        // Per flow, the mappings created and not yet deleted, oldest first.
        let mut open: HashMap<FlowKey, Vec<usize>> = HashMap::new();
        for record in records {
            let key: FlowKey = (
                record.proto,
                record.pod,
                record.external,
                record.remote,
                record.core,
                record.gateway.clone(),
            );
            match record.event {
                EventKind::Create => {
                    open.entry(key).or_default().push(mappings.len());
                    mappings.push(Mapping {
                        proto: record.proto,
                        pod: record.pod,
                        external: record.external,
                        public: record.public,
                        remote: record.remote,
                        core: record.core,
                        gateway: record.gateway,
                        created: Some(record.ts),
                        created_estimated: false,
                        deleted: None,
                        reason: None,
                    });
                }
                EventKind::Delete => {
                    if let Some(index) = open.get_mut(&key).and_then(Vec::pop) {
                        let mapping = &mut mappings[index];
                        mapping.public = mapping.public.or(record.public);
                        mapping.deleted = Some(record.ts);
                        mapping.reason = record.reason;
                        continue;
                    }
                    let created = record
                        .age_s
                        .map(|age| UnixMillis(record.ts.0 - i64::from(age) * 1000 - 999));
                    mappings.push(Mapping {
                        proto: record.proto,
                        pod: record.pod,
                        external: record.external,
                        public: record.public,
                        remote: record.remote,
                        core: record.core,
                        gateway: record.gateway,
                        created,
                        created_estimated: created.is_some(),
                        deleted: Some(record.ts),
                        reason: record.reason,
                    });
                }
            }
        }
        mappings.sort_by_key(|mapping| (mapping.created, mapping.pod));
        Self {
            mappings,
            files: 0,
            skipped_lines: 0,
        }
    }

    /// The mappings that held `external` at `at` (usually one; more where a
    /// mapping ended and another began in the same millisecond, or where the
    /// same external endpoint serves different remotes). `external` is the gateway's
    /// external address or its public address (AWS Elastic IP).
    pub fn holders_of(
        &self,
        external: SocketAddrV4,
        at: UnixMillis,
        proto: Option<LogProtocol>,
    ) -> Vec<&Mapping> {
        self.mappings
            .iter()
            .filter(|mapping| mapping.external == external || mapping.public == Some(external))
            .filter(|mapping| proto.is_none_or(|proto| proto == mapping.proto))
            .filter(|mapping| mapping.held_at(at))
            .collect()
    }

    /// The mappings of pod IP `pod`, only those held at `at` when given.
    pub fn mappings_of_pod(
        &self,
        pod: Ipv4Addr,
        at: Option<UnixMillis>,
        proto: Option<LogProtocol>,
    ) -> Vec<&Mapping> {
        self.mappings
            .iter()
            .filter(|mapping| *mapping.pod.ip() == pod)
            .filter(|mapping| proto.is_none_or(|proto| proto == mapping.proto))
            .filter(|mapping| at.is_none_or(|at| mapping.held_at(at)))
            .collect()
    }
}

/// Appends the matching records of one file; returns how many lines were not records.
fn read_records(
    reader: impl BufRead,
    filter: &RecordFilter,
    records: &mut Vec<NatLogRecord>,
) -> u64 {
    let needle = filter.needle();
    let mut skipped = 0;
    for line in reader.split(b'\n') {
        let Ok(line) = line else {
            skipped += 1;
            break;
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Some(needle) = &needle {
            // Not UTF-8 is not a record either; the parse below counts it.
            let mentioned =
                std::str::from_utf8(&line).map_or(true, |text| text.contains(needle.as_str()));
            if !mentioned {
                continue;
            }
        }
        match serde_json::from_slice::<NatLogRecord>(&line) {
            Ok(record) if filter.matches(&record) => records.push(record),
            Ok(_) => {}
            Err(_) => skipped += 1,
        }
    }
    skipped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ts: i64, event: EventKind, pod: &str, external: &str) -> NatLogRecord {
        NatLogRecord {
            ts: UnixMillis(ts),
            event,
            proto: LogProtocol::Tcp,
            pod: pod.parse().unwrap(),
            external: external.parse().unwrap(),
            public: None,
            remote: "203.0.113.10:80".parse().unwrap(),
            reason: (event == EventKind::Delete).then(|| "idle_timeout".to_owned()),
            age_s: None,
            core: 0,
            gateway: "gw".to_owned(),
        }
    }

    #[test]
    fn held_at_includes_both_ends() {
        let index = NatLogIndex::from_records([
            record(1000, EventKind::Create, "10.0.0.1:1", "198.51.100.1:1042"),
            record(2000, EventKind::Delete, "10.0.0.1:1", "198.51.100.1:1042"),
        ]);
        let external = "198.51.100.1:1042".parse().unwrap();
        assert!(index.holders_of(external, UnixMillis(999), None).is_empty());
        assert_eq!(index.holders_of(external, UnixMillis(1000), None).len(), 1);
        assert_eq!(index.holders_of(external, UnixMillis(2000), None).len(), 1);
        assert!(index
            .holders_of(external, UnixMillis(2001), None)
            .is_empty());
        assert!(index
            .holders_of(external, UnixMillis(1500), Some(LogProtocol::Udp))
            .is_empty());
    }

    #[test]
    fn a_delete_without_its_create_uses_the_age() {
        let mut delete = record(10_000, EventKind::Delete, "10.0.0.1:1", "198.51.100.1:1042");
        delete.age_s = Some(5);
        let index = NatLogIndex::from_records([delete]);
        let mapping = &index.mappings[0];
        assert!(mapping.created_estimated);
        assert!(mapping.held_at(UnixMillis(5_000)));
        assert!(!mapping.held_at(UnixMillis(3_000)));
    }

    #[test]
    fn garbage_and_torn_lines_are_skipped() {
        let good = serde_json::to_string(&record(
            1,
            EventKind::Create,
            "10.0.0.1:1",
            "198.51.100.1:1",
        ))
        .unwrap();
        let text = format!("{good}\nnot json\n\n{good}\n\0\0\0{{\"ts\":\"2026");
        let mut records = Vec::new();
        assert_eq!(
            read_records(text.as_bytes(), &RecordFilter::default(), &mut records),
            2
        );
        assert_eq!(records.len(), 2);
        // With a filter, lines that cannot match are not even parsed (nor counted).
        let filter = RecordFilter {
            external: Some("198.51.100.1:1".parse().unwrap()),
            ..RecordFilter::default()
        };
        records.clear();
        assert_eq!(read_records(text.as_bytes(), &filter, &mut records), 0);
        assert_eq!(records.len(), 2);
        let other = RecordFilter {
            pod: Some(Ipv4Addr::new(10, 0, 0, 2)),
            ..RecordFilter::default()
        };
        records.clear();
        read_records(text.as_bytes(), &other, &mut records);
        assert!(records.is_empty());
    }
}
