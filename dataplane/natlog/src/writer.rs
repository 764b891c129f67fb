//! The queue from dataplane workers and the thread that writes rotating log files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::queue::ArrayQueue;
use egw_engine::FlowEvent;
use egw_natlog_format::{UnixMillis, FILE_SUFFIX};
use serde::Serialize;

use crate::error::NatLogError;
use crate::event::NatEvent;
use crate::ipfix::{IpfixConfig, IpfixExporter};
use crate::uring::UringFile;

/// Events written per wake-up before the writer checks rotation and flushes.
const BATCH: usize = 4096;
/// Attempts at a unique file name when several files start in the same millisecond.
const NAME_ATTEMPTS: u32 = 10_000;

/// How log files are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoBackend {
    /// io_uring, falling back to plain writes (with a warning) where it cannot be set up.
    Auto,
    /// io_uring only: starting fails where it cannot be set up.
    Uring,
    /// Buffered `write(2)` calls.
    Plain,
}

/// The backend a writer actually uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActiveBackend {
    IoUring,
    Plain,
}

/// Where and how to write the log.
#[derive(Clone, Debug)]
pub struct NatLogConfig {
    /// Directory of the log files (created if missing).
    pub directory: PathBuf,
    /// File names are `{prefix}-{YYYYMMDDTHHMMSS.mmmZ}-{sequence}.jsonl`.
    pub file_prefix: String,
    /// The gateway's name, written in every record.
    pub gateway: String,
    /// Events queued between workers and the writer; more are dropped and counted.
    pub queue_capacity: usize,
    /// Start a new file once the current one reaches this size (0: no size limit).
    pub max_file_bytes: u64,
    /// Start a new file after this long (None: no time limit).
    pub rotate_every: Option<Duration>,
    /// Files kept, the one being written included; older ones are deleted.
    pub keep_files: usize,
    pub io_backend: IoBackend,
    /// io_uring submission queue size; must exceed `buffer_count`.
    pub ring_entries: u32,
    /// io_uring buffers: at most this many are in flight, bounding memory.
    pub buffer_count: usize,
    pub buffer_size: usize,
    /// How long the writer sleeps when the queue is empty (bounds how stale the file is).
    pub idle_wait: Duration,
    /// Also export every event as IPFIX (RFC 8158 NAT44 session records) to a UDP collector.
    pub ipfix: Option<IpfixConfig>,
}

impl NatLogConfig {
    /// Defaults: 64 Ki queued events, 64 MiB or 1 h per file, 48 files,
    /// io_uring (auto) with 8 × 64 KiB buffers.
    pub fn new(directory: impl Into<PathBuf>, gateway: impl Into<String>) -> Self {
        Self {
            directory: directory.into(),
            file_prefix: "natlog".to_owned(),
            gateway: gateway.into(),
            queue_capacity: 65_536,
            max_file_bytes: 64 * 1024 * 1024,
            rotate_every: Some(Duration::from_secs(3600)),
            keep_files: 48,
            io_backend: IoBackend::Auto,
            ring_entries: 16,
            buffer_count: 8,
            buffer_size: 64 * 1024,
            idle_wait: Duration::from_millis(100),
            ipfix: None,
        }
    }

    fn validate(&self) -> Result<(), NatLogError> {
        let problem = if self.queue_capacity == 0 {
            "queue_capacity must be positive"
        } else if self.keep_files == 0 {
            "keep_files must be at least 1 (the file being written)"
        } else if self.buffer_count == 0 || self.buffer_size == 0 {
            "buffer_count and buffer_size must be positive"
        } else if self.file_prefix.is_empty()
            || self.file_prefix.contains(['/', '\0'])
            || self.file_prefix.starts_with('.')
        {
            "file_prefix must be a plain, non-hidden file name part"
        } else if self.rotate_every.is_some_and(|every| every.is_zero()) {
            "rotate_every must be positive"
        } else if self.ipfix.as_ref().is_some_and(|ipfix| {
            !(crate::ipfix::MIN_MESSAGE_BYTES..=usize::from(u16::MAX))
                .contains(&ipfix.max_message_bytes)
        }) {
            "ipfix.max_message_bytes must hold the template and one record, and at most 65535 bytes"
        } else {
            return Ok(());
        };
        Err(NatLogError::Config(problem.to_owned()))
    }
}

/// Counters shared by workers and the writer.
#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    bytes: AtomicU64,
    rotations: AtomicU64,
    write_errors: AtomicU64,
    ipfix_messages: AtomicU64,
    ipfix_errors: AtomicU64,
    /// 0: not started, 1: io_uring, 2: plain.
    backend: AtomicU8,
}

/// A snapshot of the log's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NatLogStats {
    /// Events formatted and handed to the file.
    pub events_written: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
    /// Bytes handed to the file.
    pub bytes_written: u64,
    /// Files started after the first.
    pub rotations: u64,
    /// Writes, fsyncs or file creations that failed (their events are lost).
    pub write_errors: u64,
    /// The backend in use, once the writer has started.
    pub backend: Option<ActiveBackend>,
    /// IPFIX messages sent to the collector.
    pub ipfix_messages_sent: u64,
    /// IPFIX messages that could not be sent (their events are missing at the collector only).
    pub ipfix_send_errors: u64,
}

impl Counters {
    fn snapshot(&self) -> NatLogStats {
        NatLogStats {
            events_written: self.written.load(Ordering::Relaxed),
            events_dropped: self.dropped.load(Ordering::Relaxed),
            bytes_written: self.bytes.load(Ordering::Relaxed),
            rotations: self.rotations.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            ipfix_messages_sent: self.ipfix_messages.load(Ordering::Relaxed),
            ipfix_send_errors: self.ipfix_errors.load(Ordering::Relaxed),
            backend: match self.backend.load(Ordering::Relaxed) {
                1 => Some(ActiveBackend::IoUring),
                2 => Some(ActiveBackend::Plain),
                _ => None,
            },
        }
    }

    fn set_backend(&self, backend: ActiveBackend) {
        let code = match backend {
            ActiveBackend::IoUring => 1,
            ActiveBackend::Plain => 2,
        };
        self.backend.store(code, Ordering::Relaxed);
    }
}

/// The workers' end of the queue: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct NatLogSender {
    queue: Arc<ArrayQueue<NatEvent>>,
    counters: Arc<Counters>,
}

impl NatLogSender {
    /// Queues `event`; when the queue is full the event is dropped, counted, and
    /// `false` returned.
    pub fn submit(&self, event: NatEvent) -> bool {
        match self.queue.push(event) {
            Ok(()) => true,
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Drains an engine's events (from `Engine::take_flow_events`), stamping them
    /// with the current time and the public address `public_address_of` gives for their
    /// external address (the route table's, e.g. an AWS Elastic IP). Returns how many were
    /// dropped.
    pub fn submit_flow_events(
        &self,
        events: &mut Vec<FlowEvent>,
        public_address_of: impl Fn(std::net::Ipv4Addr) -> Option<std::net::Ipv4Addr>,
    ) -> usize {
        let now = UnixMillis::now();
        let dropped = events
            .drain(..)
            .filter(|event| {
                let event = NatEvent::from_flow_event(event, now);
                let public = public_address_of(*event.external.ip());
                !self.submit(event.with_public_address(public))
            })
            .count();
        dropped
    }

    /// Counts events lost before they reached this sender (e.g. the deltas of
    /// `Engine::flow_events_dropped`), so that one counter tells how complete the log is.
    pub fn record_dropped(&self, events: u64) {
        self.counters.dropped.fetch_add(events, Ordering::Relaxed);
    }

    /// The log's counters.
    pub fn stats(&self) -> NatLogStats {
        self.counters.snapshot()
    }
}

/// The writer's end of a queue made by [`queue`], before a writer consumes it.
#[derive(Debug)]
pub struct NatLogReceiver {
    queue: Arc<ArrayQueue<NatEvent>>,
    counters: Arc<Counters>,
}

/// A queue of `capacity` events. [`NatLogWriter::start`] makes its own; this is for
/// callers that must hand senders out before the writer starts.
pub fn queue(capacity: usize) -> Result<(NatLogSender, NatLogReceiver), NatLogError> {
    if capacity == 0 {
        return Err(NatLogError::Config(
            "queue_capacity must be positive".to_owned(),
        ));
    }
    let queue = Arc::new(ArrayQueue::new(capacity));
    let counters = Arc::new(Counters::default());
    Ok((
        NatLogSender {
            queue: queue.clone(),
            counters: counters.clone(),
        },
        NatLogReceiver { queue, counters },
    ))
}

/// The writer thread's handle. Dropping it stops the thread after it has written
/// every queued event; [`NatLogWriter::shutdown`] does the same and reports.
#[derive(Debug)]
pub struct NatLogWriter {
    sender: NatLogSender,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NatLogWriter {
    /// Opens the first file and starts the writer thread with a queue of
    /// `config.queue_capacity` events.
    pub fn start(config: NatLogConfig) -> Result<Self, NatLogError> {
        let (_, receiver) = queue(config.queue_capacity)?;
        Self::start_with(config, receiver)
    }

    /// Like [`NatLogWriter::start`], consuming a queue made earlier by [`queue`]
    /// (`config.queue_capacity` is then ignored).
    pub fn start_with(config: NatLogConfig, receiver: NatLogReceiver) -> Result<Self, NatLogError> {
        config.validate()?;
        fs::create_dir_all(&config.directory).map_err(|source| NatLogError::Directory {
            path: config.directory.clone(),
            source,
        })?;
        let counters = receiver.counters.clone();
        let mut files = FileSet::new(&config);
        let (path, file) = files.create()?;
        let sink = Sink::open(&config, &path, file, &counters)?;
        let ipfix = config
            .ipfix
            .as_ref()
            .map(|ipfix| {
                IpfixExporter::new(ipfix).map_err(|source| NatLogError::Ipfix {
                    collector: ipfix.collector,
                    source,
                })
            })
            .transpose()?;
        let sender = NatLogSender {
            queue: receiver.queue.clone(),
            counters: counters.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let state = WriterState {
            queue: receiver.queue,
            counters,
            stop: stop.clone(),
            sink,
            current_bytes: 0,
            opened_at: Instant::now(),
            files,
            config,
            line: Vec::with_capacity(512),
            ipfix,
        };
        state.files.remove_old();
        let thread = thread::Builder::new()
            .name("egw-natlog".to_owned())
            .spawn(move || state.run())
            .map_err(NatLogError::Spawn)?;
        Ok(Self {
            sender,
            stop,
            thread: Some(thread),
        })
    }

    /// A sender for a dataplane worker.
    pub fn sender(&self) -> NatLogSender {
        self.sender.clone()
    }

    /// The log's counters.
    pub fn stats(&self) -> NatLogStats {
        self.sender.stats()
    }

    /// Writes every queued event, fsyncs the file and stops the thread.
    pub fn shutdown(mut self) -> Result<NatLogStats, NatLogError> {
        self.stop_and_join()?;
        Ok(self.stats())
    }

    fn stop_and_join(&mut self) -> Result<(), NatLogError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.stop.store(true, Ordering::Release);
        thread.thread().unpark();
        thread.join().map_err(|_| NatLogError::WriterPanicked)
    }
}

impl Drop for NatLogWriter {
    fn drop(&mut self) {
        if let Err(error) = self.stop_and_join() {
            tracing::error!(%error, "natlog: writer did not stop cleanly");
        }
    }
}

/// Names, creates and prunes the log files.
struct FileSet {
    directory: PathBuf,
    prefix: String,
    keep: usize,
    sequence: u32,
}

impl FileSet {
    fn new(config: &NatLogConfig) -> Self {
        Self {
            directory: config.directory.clone(),
            prefix: config.file_prefix.clone(),
            keep: config.keep_files,
            sequence: 0,
        }
    }

    /// A new, empty file. Names sort in creation order: time, then a sequence
    /// number for files started within the same millisecond.
    fn create(&mut self) -> Result<(PathBuf, File), NatLogError> {
        let stamp = UnixMillis::now().to_file_stamp();
        let mut last_error = None;
        for _ in 0..NAME_ATTEMPTS {
            let path = self.directory.join(format!(
                "{}-{stamp}-{:06}{FILE_SUFFIX}",
                self.prefix, self.sequence
            ));
            self.sequence = self.sequence.wrapping_add(1);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((path, file)),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    last_error = Some((path, error));
                }
                Err(source) => return Err(NatLogError::File { path, source }),
            }
        }
        let (path, source) = last_error.unwrap_or_else(|| {
            (
                self.directory.clone(),
                io::Error::other("no file name attempts were made"),
            )
        });
        Err(NatLogError::File { path, source })
    }

    /// This writer's files (by prefix), oldest first.
    fn list(&self) -> io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.directory)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(&format!("{}-", self.prefix)) && name.ends_with(FILE_SUFFIX) {
                files.push(entry.path());
            }
        }
        files.sort();
        Ok(files)
    }

    fn remove_old(&self) {
        let files = match self.list() {
            Ok(files) => files,
            Err(error) => {
                tracing::warn!(%error, directory = %self.directory.display(), "natlog: cannot list old files");
                return;
            }
        };
        let excess = files.len().saturating_sub(self.keep);
        for path in &files[..excess] {
            if let Err(error) = fs::remove_file(path) {
                tracing::warn!(%error, path = %path.display(), "natlog: cannot remove old file");
            }
        }
    }

    /// Makes the directory entries of new and removed files durable.
    fn sync_directory(&self) -> io::Result<()> {
        File::open(&self.directory)?.sync_all()
    }
}

/// A log file written through io_uring or plain writes.
enum Sink {
    Uring(Box<UringFile>),
    Plain(BufWriter<File>),
}

impl Sink {
    fn open(
        config: &NatLogConfig,
        path: &Path,
        file: File,
        counters: &Counters,
    ) -> Result<Self, NatLogError> {
        let plain = |file: File| Sink::Plain(BufWriter::with_capacity(config.buffer_size, file));
        let sink = match config.io_backend {
            IoBackend::Plain => plain(file),
            IoBackend::Uring | IoBackend::Auto => {
                // Kept for the fallback: the ring gets its own descriptor.
                let fallback = file.try_clone().map_err(|source| NatLogError::File {
                    path: path.to_owned(),
                    source,
                })?;
                match UringFile::new(
                    file,
                    0,
                    config.ring_entries,
                    config.buffer_count,
                    config.buffer_size,
                ) {
                    Ok(uring) => Sink::Uring(Box::new(uring)),
                    Err(source) if config.io_backend == IoBackend::Uring => {
                        return Err(NatLogError::Uring {
                            path: path.to_owned(),
                            source,
                        })
                    }
                    Err(error) => {
                        if counters.backend.load(Ordering::Relaxed) != 2 {
                            tracing::warn!(
                                %error,
                                "natlog: io_uring unavailable (seccomp or an old kernel?), writing with plain write(2) calls"
                            );
                        }
                        plain(fallback)
                    }
                }
            }
        };
        counters.set_backend(match sink {
            Sink::Uring(_) => ActiveBackend::IoUring,
            Sink::Plain(_) => ActiveBackend::Plain,
        });
        Ok(sink)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Uring(uring) => uring.write(bytes),
            Sink::Plain(writer) => writer.write_all(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Uring(uring) => uring.flush(),
            Sink::Plain(writer) => writer.flush(),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match self {
            Sink::Uring(uring) => uring.sync(),
            Sink::Plain(writer) => {
                writer.flush()?;
                writer.get_ref().sync_all()
            }
        }
    }

    /// Failures reported after the call that caused them (io_uring completions).
    fn take_failures(&mut self) -> Option<(u64, io::Error)> {
        match self {
            Sink::Uring(uring) => uring.take_failures(),
            Sink::Plain(_) => None,
        }
    }
}

struct WriterState {
    queue: Arc<ArrayQueue<NatEvent>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    sink: Sink,
    current_bytes: u64,
    opened_at: Instant,
    files: FileSet,
    config: NatLogConfig,
    line: Vec<u8>,
    ipfix: Option<IpfixExporter>,
}

impl WriterState {
    fn run(mut self) {
        loop {
            // Read before draining: once set, an empty queue means every event
            // submitted before `shutdown` has been written.
            let stopping = self.stop.load(Ordering::Acquire);
            let mut taken = 0;
            while taken < BATCH {
                let Some(event) = self.queue.pop() else { break };
                self.write_event(&event);
                taken += 1;
                if self.size_rotation_due() {
                    self.rotate();
                }
            }
            if self.time_rotation_due() {
                self.rotate();
            }
            if taken == 0 {
                if let Err(error) = self.sink.flush() {
                    self.write_failed(&error);
                }
                self.collect_failures();
                self.flush_ipfix();
                if stopping {
                    break;
                }
                thread::park_timeout(self.config.idle_wait);
            }
        }
        if let Err(error) = self.sink.sync() {
            self.write_failed(&error);
        }
        self.collect_failures();
        self.flush_ipfix();
    }

    fn flush_ipfix(&mut self) {
        if let Some(exporter) = self.ipfix.as_mut() {
            let outcome = exporter.flush();
            self.count_ipfix(outcome);
        }
    }

    fn count_ipfix(&self, (sent, errors): (u64, u64)) {
        self.counters
            .ipfix_messages
            .fetch_add(sent, Ordering::Relaxed);
        if errors > 0 {
            let before = self
                .counters
                .ipfix_errors
                .fetch_add(errors, Ordering::Relaxed);
            if before == 0 {
                tracing::warn!("natlog: IPFIX collector unreachable; events still go to the files");
            }
        }
    }

    fn write_event(&mut self, event: &NatEvent) {
        if let Some(exporter) = self.ipfix.as_mut() {
            let outcome = exporter.add(*event);
            self.count_ipfix(outcome);
        }
        self.line.clear();
        let record = event.to_record(&self.config.gateway);
        if let Err(error) = serde_json::to_writer(&mut self.line, &record) {
            self.write_failed(&io::Error::other(error));
            return;
        }
        self.line.push(b'\n');
        match self.sink.write(&self.line) {
            Ok(()) => {
                self.counters.written.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes
                    .fetch_add(self.line.len() as u64, Ordering::Relaxed);
            }
            Err(error) => self.write_failed(&error),
        }
        self.current_bytes += self.line.len() as u64;
    }

    fn size_rotation_due(&self) -> bool {
        self.config.max_file_bytes > 0 && self.current_bytes >= self.config.max_file_bytes
    }

    /// An empty file is never rotated for age: that would only add empty files.
    fn time_rotation_due(&self) -> bool {
        self.config
            .rotate_every
            .is_some_and(|every| self.current_bytes > 0 && self.opened_at.elapsed() >= every)
    }

    /// Syncs and closes the current file, starts the next and prunes old ones. If
    /// the next file cannot be created, keeps writing the current one.
    fn rotate(&mut self) {
        if let Err(error) = self.sink.sync() {
            self.write_failed(&error);
        }
        self.collect_failures();
        let (path, file) = match self.files.create() {
            Ok(created) => created,
            Err(error) => {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "natlog: cannot start a new file; continuing the current one");
                self.opened_at = Instant::now();
                return;
            }
        };
        let mut config = self.config.clone();
        if config.io_backend == IoBackend::Uring {
            // Already proven to work at start; a failure now falls back rather than stops logging.
            config.io_backend = IoBackend::Auto;
        }
        match Sink::open(&config, &path, file, &self.counters) {
            Ok(sink) => self.sink = sink,
            Err(error) => {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "natlog: cannot open the new file; continuing the current one");
                self.opened_at = Instant::now();
                return;
            }
        }
        self.current_bytes = 0;
        self.opened_at = Instant::now();
        self.counters.rotations.fetch_add(1, Ordering::Relaxed);
        self.files.remove_old();
        if let Err(error) = self.files.sync_directory() {
            self.write_failed(&error);
        }
    }

    /// Counts failures the kernel reported asynchronously.
    fn collect_failures(&mut self) {
        if let Some((count, error)) = self.sink.take_failures() {
            self.writes_failed(count, &error);
        }
    }

    fn write_failed(&self, error: &io::Error) {
        self.writes_failed(1, error);
    }

    fn writes_failed(&self, count: u64, error: &io::Error) {
        let before = self
            .counters
            .write_errors
            .fetch_add(count, Ordering::Relaxed);
        let failures = before + count;
        // Log when the count passes 1, 2, 4, 8...: a full disk must not flood the log.
        if before == 0 || failures.ilog2() > before.ilog2() {
            tracing::warn!(%error, failures, "natlog: write failed; events lost");
        }
    }
}
