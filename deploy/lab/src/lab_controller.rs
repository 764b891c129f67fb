//! The lab under egw-controller: manifests in the lab's work directory, the controller started
//! on them, and the egress the table the gateway then serves promises.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use egw_testbed::gateway;
use egw_testbed::topology::MIRROR_ADDRESS;
use egw_testbed::{LabError, Result};

use crate::controller;
use crate::lab::Lab;

impl Lab {
    /// Where [`start_controller`](Self::start_controller) keeps its manifests.
    pub fn manifest_dir(&self) -> PathBuf {
        self.workdir().join("manifests")
    }

    /// Starts `egw-controller --local` on manifests describing this lab (an EgressGateway whose
    /// one instance is this lab's egw-gateway with `addresses`, a policy, annotated namespaces and
    /// the pods), and waits until it has pushed its first route table.
    pub fn start_controller(&mut self, addresses: &[Ipv4Addr]) -> Result<()> {
        let Some((binary, control_socket)) = self.egw_binary_and_socket() else {
            return Err(LabError::Config(
                "the controller drives the egw gateway".to_owned(),
            ));
        };
        let controller = controller::find_controller_binary(binary)?;
        let dir = self.manifest_dir();
        controller::write_manifests(&dir, self.config(), control_socket, addresses)?;
        let before = self.served_generation()?;
        let args = vec!["--local".to_owned(), dir.display().to_string()];
        // Any namespace will do: the controller talks to the gateway over a unix socket.
        let child = self.spawn_in(
            &self.gateway_namespace(),
            "egw-controller",
            &controller,
            &args,
        )?;
        self.controller = Some(child);
        self.wait_for_generation_above(before)?;
        Ok(())
    }

    /// Rewrites the EgressGateway manifest with new addresses (as an operator editing the file).
    pub fn edit_gateway_addresses(&self, addresses: &[Ipv4Addr]) -> Result<()> {
        let Some((_, control_socket)) = self.egw_binary_and_socket() else {
            return Err(LabError::Config("no egw gateway".to_owned()));
        };
        gateway::write_atomically(
            &self.manifest_dir().join(controller::GATEWAY_FILE),
            &controller::gateway_manifest(control_socket, addresses),
        )
    }
    /// Waits (bounded) until the gateway serves a generation above `generation`.
    pub fn wait_for_generation_above(&self, generation: u64) -> Result<u64> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.served_generation()?;
            if now > generation {
                return Ok(now);
            }
            if std::time::Instant::now() > deadline {
                let log = self
                    .controller
                    .as_ref()
                    .map(|c| c.log_tail(2000))
                    .unwrap_or_default();
                return Err(LabError::Config(format!(
                    "the gateway still serves generation {now} after 20 s; controller log:\n{log}"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The egress `pod` should have towards the mirror according to the table the gateway serves.
    pub fn expected_egress_from_table(
        &self,
        pod: &str,
    ) -> Result<std::result::Result<Vec<Ipv4Addr>, String>> {
        let address = self.config().pod(pod)?.address;
        controller::expected_egress(&self.served_table()?, address, MIRROR_ADDRESS)
    }
}
