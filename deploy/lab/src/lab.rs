//! [`Lab`]: the test bed (egw-testbed: topology, gateway under test) plus what only the lab
//! runs in it: the mirror server the probes talk to and, when asked, egw-controller.
//!
//! A `Lab` dereferences to its [`Testbed`], so every testbed operation (namespaces, gateway
//! control, `spawn_in`/`run_in`) is called on the lab directly. Dropping it stops the mirror and
//! the controller and tears the testbed down, also while unwinding from a panic.

use std::ops::{Deref, DerefMut};
use std::thread;
use std::time::Duration;

use egw_testbed::topology::{mirror_tcp, mirror_udp, MIRROR_READY_TIMEOUT};
use egw_testbed::{Gateway, LabConfig, LabError, Result, ScopedChild, Testbed};

/// A built lab; see the module documentation.
pub struct Lab {
    testbed: Testbed,
    mirror: Option<ScopedChild>,
    pub(crate) controller: Option<ScopedChild>,
}

impl Deref for Lab {
    type Target = Testbed;

    fn deref(&self) -> &Testbed {
        &self.testbed
    }
}

impl DerefMut for Lab {
    fn deref_mut(&mut self) -> &mut Testbed {
        &mut self.testbed
    }
}

impl Lab {
    /// Builds the topology only (no mirror, no gateway). Partial builds are torn down.
    pub fn build(config: LabConfig) -> Result<Lab> {
        Ok(Lab {
            testbed: Testbed::build(config)?,
            mirror: None,
            controller: None,
        })
    }

    /// Builds the topology, starts the mirror and the gateway.
    pub fn up(config: LabConfig, gateway: Gateway) -> Result<Lab> {
        let mut lab = Lab::build(config)?;
        lab.start_mirror()?;
        lab.start_gateway(gateway)?;
        Ok(lab)
    }

    /// Starts `egw-lab mirror` in the internet namespace and waits until it has bound.
    pub fn start_mirror(&mut self) -> Result<()> {
        let ready_file = self.workdir().join("mirror.ready");
        let args = vec![
            "mirror".to_owned(),
            "--tcp".to_owned(),
            mirror_tcp().to_string(),
            "--udp".to_owned(),
            mirror_udp().to_string(),
            "--ready-file".to_owned(),
            ready_file.display().to_string(),
        ];
        let mut child = self.spawn_in(
            &self.inet_namespace(),
            "mirror",
            &self.config().lab_binary,
            &args,
        )?;
        child.wait_ready(MIRROR_READY_TIMEOUT, || ready_file.exists())?;
        self.mirror = Some(child);
        Ok(())
    }

    /// Runs `egw-lab <args>` inside `namespace`; returns its trimmed standard output.
    pub(crate) fn lab_probe(
        &self,
        namespace: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<String> {
        let output = self.run_in(namespace, &self.config().lab_binary, args, timeout)?;
        Ok(output.stdout.trim().to_owned())
    }

    /// Runs `egw-lab probe <args>` inside `pod`'s namespace.
    pub(crate) fn pod_probe(&self, pod: &str, args: &[&str], timeout: Duration) -> Result<String> {
        let namespace = self.pod_namespace(pod)?;
        let mut full = vec!["probe".to_owned()];
        full.extend(args.iter().map(|arg| (*arg).to_owned()));
        self.lab_probe(&namespace, &full, timeout)
    }

    /// Parses a probe's output, naming the probe when it cannot.
    pub(crate) fn parse_addr<T: std::str::FromStr>(text: &str, what: &str) -> Result<T> {
        text.trim().parse().map_err(|_| LabError::BadOutput {
            command: what.to_owned(),
            output: text.to_owned(),
        })
    }

    /// Stops everything and deletes the namespaces, reporting the first error.
    pub fn teardown(mut self) -> Result<()> {
        if let Some(mirror) = self.mirror.take() {
            mirror.stop();
        }
        self.testbed.teardown_in_place()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The work directory (and with it every log) is about to go; when a test is failing,
        // the mirror's last words help (the testbed prints the gateway's).
        if thread::panicking() {
            if let Some(mirror) = &self.mirror {
                eprintln!("egw-lab: mirror log tail:\n{}", mirror.log_tail(2000));
            }
        }
        if let Some(mirror) = self.mirror.take() {
            mirror.stop();
        }
    }
}
