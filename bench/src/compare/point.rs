//! One measured point: receiver in the internet namespace, one generator per pod, `/proc/stat`
//! sampled around them, and the result computed from what arrived.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use egw_testbed::topology::{HOST_IF, MIRROR_ADDRESS};
use egw_testbed::{ScopedChild, Testbed};

use crate::compare::limits::{
    COUNT_PER_SECOND, CPS_PORT, PROCESS_SLACK, READY_TIMEOUT, WARMUP_MAX_SECONDS,
};
use crate::cpu::{process_times, CpuDelta, CpuSample, ProcessTimes};
use crate::receive::ReceiveReport;
use crate::results::{
    step, CompareError, CompareSettings, Contestant, LoadKind, PointResult, PointStatus,
    FIRST_DESTINATION_PORT, PORTS_PER_POINT,
};

/// One point of a contestant's sweep, with what it needs from the run around it.
pub(crate) struct Point<'a> {
    pub(crate) lab: &'a Testbed,
    pub(crate) settings: &'a CompareSettings,
    pub(crate) contestant: Contestant,
    pub(crate) workers: u32,
    pub(crate) kind: LoadKind,
    pub(crate) flows: u32,
    pub(crate) frame_len: usize,
    pub(crate) index: usize,
    pub(crate) expected: &'a [Ipv4Addr],
    pub(crate) gateway_mac: &'a str,
    pub(crate) baseline: f64,
    pub(crate) gateway_pid: Option<u32>,
}

impl Point<'_> {
    fn file(&self, name: &str) -> PathBuf {
        self.lab
            .workdir()
            .join(format!("point{}-{name}", self.index))
    }

    fn wait_for(
        child: &mut ScopedChild,
        path: &Path,
        timeout: Duration,
    ) -> Result<(), CompareError> {
        let start = Instant::now();
        while !path.exists() {
            if let Some(status) = child.exited() {
                return Err(step(
                    format!("{} exited early", child.label()),
                    format!("{status}: {}", child.log_tail(3000)),
                ));
            }
            if start.elapsed() > timeout {
                return Err(step(
                    format!("{} not ready", child.label()),
                    child.log_tail(3000),
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CompareError> {
        let text = fs::read_to_string(path).map_err(|source| CompareError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text)
            .map_err(|error| step(format!("parsing {}", path.display()), error))
    }

    fn spawn_generators(
        &self,
        tag: &str,
        count: u64,
        seconds: u64,
    ) -> Result<Vec<(ScopedChild, PathBuf)>, CompareError> {
        let lab = self.lab;
        let flows_per_generator = self.flows.div_ceil(self.workers).max(1);
        let cps_target = SocketAddrV4::new(MIRROR_ADDRESS, CPS_PORT);
        let mut generators = Vec::new();
        for (generator_index, pod) in lab.config().pods.iter().enumerate() {
            let output = self.file(&format!("{tag}{generator_index}.json"));
            let mut args: Vec<String> = match self.kind {
                LoadKind::Udp => {
                    let mut args: Vec<String> = vec![
                        "generate".into(),
                        "--interface".into(),
                        HOST_IF.into(),
                        "--destination".into(),
                        MIRROR_ADDRESS.to_string(),
                        "--source".into(),
                        pod.address.to_string(),
                        "--dst-mac".into(),
                        self.gateway_mac.to_owned(),
                        "--flows".into(),
                        flows_per_generator.to_string(),
                        "--size".into(),
                        self.frame_len.to_string(),
                        // Each point its own destination ports: its flows are new to the
                        // gateway unless its own warm-up created them.
                        "--destination-port-base".into(),
                        (FIRST_DESTINATION_PORT + PORTS_PER_POINT * self.index as u32).to_string(),
                    ];
                    if let Some(rate) = self.settings.rate {
                        args.extend(["--rate".into(), rate.to_string()]);
                    }
                    args
                }
                LoadKind::Cps => vec![
                    "generate".into(),
                    "--mode".into(),
                    "tcp".into(),
                    "--target".into(),
                    cps_target.to_string(),
                    "--parallel".into(),
                    self.settings.cps_parallel.to_string(),
                ],
            };
            args.extend([
                "--duration".into(),
                seconds.to_string(),
                "--count".into(),
                count.to_string(),
                "--quiet".into(),
                "--json-out".into(),
                output.display().to_string(),
            ]);
            let namespace = lab.pod_namespace(&pod.name)?;
            let child = lab.spawn_in(
                &namespace,
                &format!("point{}-{tag}{generator_index}", self.index),
                &self.settings.bench_bin,
                &args,
            )?;
            generators.push((child, output));
        }
        Ok(generators)
    }

    /// Waits for every generator; returns their JSON result files.
    fn wait_generators(
        &self,
        generators: Vec<(ScopedChild, PathBuf)>,
        seconds: u64,
    ) -> Result<Vec<PathBuf>, CompareError> {
        let mut failures = Vec::new();
        let mut outputs = Vec::new();
        for (child, output) in generators {
            let label = child.label().to_owned();
            let log = self.lab.workdir().join(format!("{label}.log"));
            match child.wait_or_kill(Duration::from_secs(seconds) + PROCESS_SLACK) {
                Ok(status) if status.success() => outputs.push(output),
                Ok(status) => {
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    let tail: String = text
                        .chars()
                        .rev()
                        .take(2000)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    failures.push(format!("{label}: {status}: {tail}"));
                }
                Err(error) => failures.push(format!("{label}: {error}")),
            }
        }
        if failures.is_empty() {
            Ok(outputs)
        } else {
            Err(step("generator failed", failures.join("; ")))
        }
    }

    /// The receiver's command line: counts what arrives from the expected sources, and for the
    /// connections point also accepts TCP.
    fn receiver_args(&self, stop: &Path, ready: &Path, received_json: &Path) -> Vec<String> {
        let mut receiver_args: Vec<String> = vec![
            "receive".into(),
            "--interface".into(),
            HOST_IF.into(),
            "--duration".into(),
            (self.settings.seconds + PROCESS_SLACK.as_secs()).to_string(),
            "--stop-file".into(),
            stop.display().to_string(),
            "--ready-file".into(),
            ready.display().to_string(),
            "--json-out".into(),
            received_json.display().to_string(),
        ];
        for source in self.expected {
            receiver_args.extend(["--expect-source".into(), source.to_string()]);
        }
        if self.kind == LoadKind::Cps {
            let cps_target = SocketAddrV4::new(MIRROR_ADDRESS, CPS_PORT);
            receiver_args.extend([
                "--tcp-listen".into(),
                cps_target.to_string(),
                "--no-udp".into(),
            ]);
        }
        receiver_args
    }

    /// Runs the point: warm-up, receiver, generators under CPU sampling, then the result.
    pub(crate) fn run(&self) -> Result<PointResult, CompareError> {
        let lab = self.lab;
        let seconds = self.settings.seconds;
        let (ready, stop, received_json) = (
            self.file("receive.ready"),
            self.file("receive.stop"),
            self.file("receive.json"),
        );
        let receiver_args = self.receiver_args(&stop, &ready, &received_json);
        if self.settings.warmup && self.kind == LoadKind::Udp {
            // Every flow once, unmeasured, so the measured run sees established flows rather
            // than flow set-up (the receiver is not running yet, so nothing is counted).
            let count = u64::from(self.flows.div_ceil(self.workers).max(1));
            let warmup = self.spawn_generators("warmup", count, WARMUP_MAX_SECONDS)?;
            self.wait_generators(warmup, WARMUP_MAX_SECONDS)?;
        }
        let mut receiver = lab.spawn_in(
            &lab.inet_namespace(),
            &format!("point{}-receive", self.index),
            &self.settings.bench_bin,
            &receiver_args,
        )?;
        Self::wait_for(&mut receiver, &ready, READY_TIMEOUT)?;

        let gateway_before = self
            .gateway_pid
            .and_then(|pid| process_times(&pid.to_string()));
        let cpu_before = CpuSample::now()?;
        let generators = self.spawn_generators("generate", seconds * COUNT_PER_SECOND, seconds);
        let outputs = generators.and_then(|generators| self.wait_generators(generators, seconds));
        let cpu = CpuSample::now()?.since(&cpu_before);
        let gateway_after = self
            .gateway_pid
            .and_then(|pid| process_times(&pid.to_string()));
        fs::write(&stop, b"stop\n").map_err(|source| CompareError::Io {
            path: stop.clone(),
            source,
        })?;
        let receiver_label = receiver.label().to_owned();
        let receiver_status = receiver.wait_or_kill(Duration::from_secs(10))?;
        let outputs = outputs?;
        if !receiver_status.success() {
            return Err(step(
                receiver_label,
                format!("exited with {receiver_status}"),
            ));
        }
        let received: ReceiveReport = Self::read_json(&received_json)?;
        let mut result = PointResult::skipped(
            self.contestant,
            self.workers,
            self.kind,
            self.flows,
            self.frame_len,
            PointStatus::Ok,
            "",
        );
        result.baseline_utilisation = self.baseline;
        result.cpu = Some(cpu);
        if let (Some(before), Some(after)) = (gateway_before, gateway_after) {
            result.gateway_process = Some(ProcessTimes {
                user_seconds: after.user_seconds - before.user_seconds,
                system_seconds: after.system_seconds - before.system_seconds,
            });
        }
        self.count_delivered(&mut result, &outputs, &received)?;
        Self::attribute_cpu(&mut result, &cpu, self.baseline, &received);
        Self::judge(&mut result, received);
        Ok(result)
    }

    /// What was sent (the generators' reports) and what arrived from the right source.
    fn count_delivered(
        &self,
        result: &mut PointResult,
        outputs: &[PathBuf],
        received: &ReceiveReport,
    ) -> Result<(), CompareError> {
        match self.kind {
            LoadKind::Udp => {
                for output in outputs {
                    result.generators.push(Self::read_json(output)?);
                }
                result.sent = result.generators.iter().map(|report| report.sent).sum();
                result.delivered = received.packets - received.source_mismatches;
                let seconds = received.seconds.max(f64::EPSILON);
                result.delivered_per_s = result.delivered as f64 / seconds;
            }
            LoadKind::Cps => {
                for output in outputs {
                    result.connectors.push(Self::read_json(output)?);
                }
                result.sent = result
                    .connectors
                    .iter()
                    .map(|report| report.connected + report.failed)
                    .sum();
                result.delivered = received.tcp_accepted - received.tcp_source_mismatches;
                let seconds = result
                    .connectors
                    .iter()
                    .map(|report| report.seconds)
                    .fold(0.0, f64::max)
                    .max(f64::EPSILON);
                result.delivered_per_s = result.delivered as f64 / seconds;
            }
        }
        if result.sent > 0 {
            result.loss_fraction =
                result.sent.saturating_sub(result.delivered) as f64 / result.sent as f64;
        }
        Ok(())
    }

    /// CPU per delivered unit: whole machine, net of the baseline, and attributed to our own
    /// processes (see [`PointResult`]).
    fn attribute_cpu(
        result: &mut PointResult,
        cpu: &CpuDelta,
        baseline: f64,
        received: &ReceiveReport,
    ) {
        if result.delivered == 0 {
            return;
        }
        let delivered = result.delivered as f64;
        let own_busy = (cpu.busy_cpu_seconds - baseline * cpu.total_cpu_seconds).max(0.0);
        result.cpu_ns_per_unit = Some(cpu.busy_cpu_seconds * 1e9 / delivered);
        result.cpu_ns_per_unit_net = Some(own_busy * 1e9 / delivered);
        let user: f64 = result
            .generators
            .iter()
            .map(|report| report.process.user_seconds)
            .sum::<f64>()
            + result
                .connectors
                .iter()
                .map(|report| report.process.user_seconds)
                .sum::<f64>()
            + received.process.user_seconds
            + result
                .gateway_process
                .map_or(0.0, |times| times.user_seconds);
        result.cpu_ns_per_unit_attributed = Some((cpu.kernel_cpu_seconds + user) * 1e9 / delivered);
    }

    /// Fails the point when anything arrived from the wrong source or nothing arrived; keeps
    /// the receiver's report.
    fn judge(result: &mut PointResult, received: ReceiveReport) {
        let mismatches = received.source_mismatches + received.tcp_source_mismatches;
        if mismatches > 0 {
            result.note = format!(
                "{mismatches} arrived from the wrong source (first: {})",
                received.first_mismatch.clone().unwrap_or_default()
            );
            result.status = PointStatus::Failed;
        } else if result.delivered == 0 {
            result.note = "nothing arrived".to_owned();
            result.status = PointStatus::Failed;
        }
        result.receiver = Some(received);
    }
}
