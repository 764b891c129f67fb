//! Processes a lab starts (mirror, gateway, generators, probes): killed when dropped, with their
//! log at hand for error messages.

use std::path::PathBuf;
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use egw_netns::cmd;

use crate::error::{LabError, Result};

/// A process the lab started; killed when dropped.
pub struct ScopedChild {
    label: String,
    child: Child,
    log: Option<PathBuf>,
}

impl ScopedChild {
    /// Takes charge of `child`, labelled `label` in errors, its output going to `log`.
    pub fn new(label: impl Into<String>, child: Child, log: Option<PathBuf>) -> Self {
        ScopedChild {
            label: label.into(),
            child,
            log,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` if it already exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Last `max_bytes` of its log file, for error messages.
    pub fn log_tail(&self, max_bytes: usize) -> String {
        let Some(path) = &self.log else {
            return String::new();
        };
        let text = std::fs::read(path).unwrap_or_default();
        let start = text.len().saturating_sub(max_bytes);
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn stop(mut self) {
        cmd::kill_and_reap(&mut self.child);
    }

    /// Waits up to `timeout` for it to exit by itself; kills it otherwise.
    pub fn wait_or_kill(mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        match cmd::wait_bounded(&mut self.child, timeout) {
            Ok(Some(status)) => Ok(status),
            Ok(None) => {
                cmd::kill_and_reap(&mut self.child);
                Err(LabError::Timeout {
                    command: self.label.clone(),
                    timeout,
                })
            }
            Err(source) => Err(LabError::io(format!("waiting for {}", self.label), source)),
        }
    }

    /// Waits until `ready()` holds, polling, for at most `timeout`; fails early, with its log,
    /// when the process exits first.
    pub fn wait_ready(&mut self, timeout: Duration, ready: impl Fn() -> bool) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if ready() {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                return Err(LabError::NotReady {
                    process: self.label().to_owned(),
                    waited: start.elapsed(),
                    detail: format!("exited with {status}; log: {}", self.log_tail(4000)),
                });
            }
            thread::sleep(cmd::POLL_INTERVAL);
        }
        Err(LabError::NotReady {
            process: self.label().to_owned(),
            waited: timeout,
            detail: format!("log: {}", self.log_tail(4000)),
        })
    }
}

impl Drop for ScopedChild {
    fn drop(&mut self) {
        cmd::kill_and_reap(&mut self.child);
    }
}
