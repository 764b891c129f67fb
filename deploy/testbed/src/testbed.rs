//! [`Testbed`]: a built lab topology and its RAII guard. Dropping it kills every process it
//! started and deletes every namespace it created, also while unwinding from a panic.

use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use egw_netns::cmd::{self, CommandOutput};

use crate::active::ActiveGateway;
use crate::error::{LabError, Result};
use crate::process::ScopedChild;
use crate::topology::build::{self, Names};
use crate::topology::cleanup::{remove_namespace, remove_namespaces_with_prefix, require_root};
use crate::topology::config::{LabConfig, LAB_PREFIX_ROOT};
use crate::topology::signals::{register_prefix, unregister_prefix};

/// Makes the default prefixes of the labs of one process unique.
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A built lab topology, with the gateway under test once started.
pub struct Testbed {
    pub(crate) names: Names,
    pub(crate) config: LabConfig,
    workdir: tempfile::TempDir,
    namespaces: Vec<String>,
    pub(crate) gateway: Option<ActiveGateway>,
}

impl Testbed {
    /// Builds the topology only (no gateway). Partial builds are torn down.
    pub fn build(config: LabConfig) -> Result<Testbed> {
        require_root()?;
        config.validate()?;
        let prefix = config.prefix.clone().unwrap_or_else(|| {
            format!(
                "{LAB_PREFIX_ROOT}{}-{}-",
                std::process::id(),
                LAB_COUNTER.fetch_add(1, Ordering::SeqCst)
            )
        });
        // A previous process with the same pid may have been SIGKILLed mid-run.
        remove_namespaces_with_prefix(&prefix)?;
        let workdir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir()
            .map_err(|source| LabError::io("creating lab work directory", source))?;
        register_prefix(&prefix);
        let mut testbed = Testbed {
            names: Names { prefix },
            config,
            workdir,
            namespaces: Vec::new(),
            gateway: None,
        };
        build::build(&testbed.config, &testbed.names, &mut testbed.namespaces)?;
        Ok(testbed)
    }

    pub fn prefix(&self) -> &str {
        &self.names.prefix
    }

    pub fn config(&self) -> &LabConfig {
        &self.config
    }

    /// Directory holding logs, gateway config and control socket; removed with the lab.
    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    /// Namespaces created so far.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    pub fn pod_namespace(&self, pod: &str) -> Result<String> {
        Ok(self.names.pod(&self.config.pod(pod)?.name))
    }

    pub fn switch_namespace(&self) -> String {
        self.names.switch()
    }

    pub fn gateway_namespace(&self) -> String {
        self.names.gateway()
    }

    pub fn inet_namespace(&self) -> String {
        self.names.inet()
    }

    /// Spawns `program args` inside `namespace`, output appended to `<workdir>/<label>.log`.
    pub fn spawn_in(
        &self,
        namespace: &str,
        label: &str,
        program: impl AsRef<OsStr>,
        args: &[String],
    ) -> Result<ScopedChild> {
        let log_path = self.workdir.path().join(format!("{label}.log"));
        let log = File::create(&log_path)
            .map_err(|source| LabError::io(format!("creating {}", log_path.display()), source))?;
        let log_err = log
            .try_clone()
            .map_err(|source| LabError::io("duplicating log handle", source))?;
        let mut command = cmd::in_netns(namespace, program, args);
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let description = cmd::describe(&command);
        let child = command.spawn().map_err(|source| LabError::Spawn {
            command: description,
            source,
        })?;
        Ok(ScopedChild::new(label, child, Some(log_path)))
    }

    /// Runs `program args` inside `namespace` to completion, bounded by `timeout`.
    pub fn run_in(
        &self,
        namespace: &str,
        program: impl AsRef<OsStr>,
        args: &[String],
        timeout: Duration,
    ) -> Result<CommandOutput> {
        Ok(cmd::run(cmd::in_netns(namespace, program, args), timeout)?)
    }

    /// Stops everything and deletes the namespaces, reporting the first error.
    pub fn teardown(mut self) -> Result<()> {
        self.teardown_in_place()
    }

    /// [`teardown`](Self::teardown) for owners that cannot give the testbed away (their own
    /// `Drop`); running it twice is harmless.
    pub fn teardown_in_place(&mut self) -> Result<()> {
        if let Some(ActiveGateway::Egw { process, .. }) = self.gateway.take() {
            process.stop();
        }
        let mut first_error = None;
        for name in std::mem::take(&mut self.namespaces).iter().rev() {
            if let Err(error) = remove_namespace(name) {
                first_error.get_or_insert(error);
            }
        }
        // Anything with our prefix that was not (yet) recorded, e.g. a namespace whose
        // `ip netns add` succeeded but whose follow-up failed.
        if let Err(error) = remove_namespaces_with_prefix(&self.names.prefix) {
            first_error.get_or_insert(error);
        }
        unregister_prefix(&self.names.prefix);
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // The work directory (and with it every log) is about to go; when a test is failing,
        // the gateway's last words are the most useful thing to keep.
        if thread::panicking() {
            if let Some(ActiveGateway::Egw { process, .. }) = &self.gateway {
                eprintln!(
                    "egw-lab: {} log tail:\n{}",
                    process.label(),
                    process.log_tail(8000)
                );
            }
        }
        if let Err(error) = self.teardown_in_place() {
            eprintln!("egw-lab: teardown of {} failed: {error}", self.names.prefix);
        }
    }
}
