//! Local mode, end to end: `egw-controller --local DIR` watches a manifest directory, translates
//! it and pushes every static instance's table to the instance's `endpoint`, until shut down.
//!
//! The directory is scanned every [`LocalOptions::scan_interval`] (500 ms by default): the
//! names and contents of its YAML files are hashed, which is simple, works on every filesystem
//! (including ConfigMap volumes, whose updates are symlink swaps) and costs nothing for a
//! directory of manifests. A change is applied once the directory has looked the same for one
//! more scan, so an editor's save-rename-write sequence or a `cp` of several files is one
//! translation, not several.
//!
//! A directory that does not load (a half-written or invalid file) is reported and **not**
//! applied: gateways keep the last good tables. Deleting an object is a change like any other:
//! deleting a referenced policy denies its pods (fail closed), and that is pushed.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::local::{load_dir, LocalError};
use crate::metrics::{ErrorReason, Metrics};
use crate::print::diagnostic_lines;
use crate::push::{GatewayPusher, PushOptions};
use crate::translate::{fnv1a64, translate, Severity, Translation};

/// Settings of [`run_local`].
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub dir: PathBuf,
    pub scan_interval: Duration,
    pub push: PushOptions,
}

impl LocalOptions {
    pub fn new(dir: PathBuf) -> LocalOptions {
        LocalOptions {
            dir,
            scan_interval: Duration::from_millis(500),
            push: PushOptions::default(),
        }
    }
}

/// What the directory looked like at one scan: `(file name, content hash)`, sorted. A directory
/// that cannot be listed has no fingerprint (and is reported when loaded).
fn fingerprint(dir: &Path) -> Option<Vec<(PathBuf, u64)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        let is_yaml = matches!(
            path.extension().and_then(|extension| extension.to_str()),
            Some("yaml" | "yml")
        );
        if is_yaml && path.is_file() {
            // A file deleted between listing and reading simply drops out.
            if let Ok(content) = std::fs::read(&path) {
                files.push((path, fnv1a64(&content)));
            }
        }
    }
    files.sort();
    Some(files)
}

/// Translates and pushes; keeps the previous diagnostics to log only new ones (as Events would
/// be emitted once, not on every resync).
struct LocalController {
    pusher: GatewayPusher,
    metrics: Metrics,
    logged: BTreeSet<String>,
}

impl LocalController {
    fn apply(&mut self, dir: &Path) -> Result<Translation, LocalError> {
        let input = load_dir(dir)?;
        for skipped in &input.skipped {
            tracing::debug!(
                file = %skipped.path.display(),
                document = skipped.document,
                kind = %skipped.kind,
                "skipped a manifest of another kind"
            );
        }
        let translation = translate(&input.snapshot);
        self.metrics.reconciled();
        let lines: BTreeSet<String> = diagnostic_lines(&translation).into_iter().collect();
        for (line, diagnostic) in diagnostic_lines(&translation)
            .into_iter()
            .zip(&translation.diagnostics)
        {
            if self.logged.contains(&line) {
                continue;
            }
            match diagnostic.severity {
                Severity::Error => tracing::error!(reason = %diagnostic.reason, "{line}"),
                Severity::Warning => tracing::warn!(reason = %diagnostic.reason, "{line}"),
            }
        }
        self.logged = lines;
        for problem in self.pusher.update(&translation.tables) {
            tracing::error!(
                instance = %problem.instance,
                error = %crate::error_chain(&problem.error),
                "cannot push to this instance"
            );
        }
        tracing::info!(
            tables = translation.tables.len(),
            pods = translation.pods.len(),
            diagnostics = translation.diagnostics.len(),
            "translated {}",
            dir.display()
        );
        Ok(translation)
    }
}

/// Runs local mode until `shutdown` completes. Must run inside a Tokio runtime.
pub async fn run_local(
    options: LocalOptions,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) {
    let mut controller = LocalController {
        pusher: GatewayPusher::new(options.push.clone(), metrics.clone()),
        metrics,
        logged: BTreeSet::new(),
    };
    tokio::pin!(shutdown);
    let mut applied: Option<Option<Vec<(PathBuf, u64)>>> = None;
    let mut previous_scan = fingerprint(&options.dir);
    let mut interval = tokio::time::interval(options.scan_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!("shutting down");
                return;
            }
            _ = interval.tick() => {}
        }
        let scan = fingerprint(&options.dir);
        // The first translation happens at once; later ones once the directory is stable.
        let settled = applied.is_none() || scan == previous_scan;
        let changed = applied.as_ref() != Some(&scan);
        previous_scan = scan.clone();
        if !(settled && changed) {
            continue;
        }
        applied = Some(scan);
        if let Err(error) = controller.apply(&options.dir) {
            controller.metrics.error(ErrorReason::LocalLoad);
            tracing::error!(
                error = %crate::error_chain(&error),
                "manifests not applied; gateways keep their last tables"
            );
        }
    }
}
