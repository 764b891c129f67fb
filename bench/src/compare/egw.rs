//! egw-gateway as a contestant: started by the bench itself with its worker count, flow
//! capacity and route table.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use egw_testbed::gateway::{route_table_yaml, write_atomically, EgwGatewayConfig};
use egw_testbed::{ScopedChild, Testbed};

use crate::compare::limits::{GATEWAY_READY_TIMEOUT, RELOAD_SETTLE};
use crate::results::{step, CompareError};

/// egw-gateway started by the bench itself (not `Testbed::start_gateway`) so it can choose the
/// worker count and the route table.
pub(crate) struct EgwProcess {
    pub(crate) child: ScopedChild,
    pub(crate) table_path: PathBuf,
}

impl EgwProcess {
    pub(crate) fn start(
        lab: &Testbed,
        binary: &Path,
        workers: u32,
        flow_capacity_per_core: u64,
        table_yaml: Option<String>,
    ) -> Result<Self, CompareError> {
        let gw = lab.gateway_namespace();
        lab.run_in(
            &gw,
            "sysctl",
            &[
                "-q".to_owned(),
                "-w".to_owned(),
                "net.ipv4.ip_forward=0".to_owned(),
            ],
            Duration::from_secs(20),
        )?;
        let dir = lab.workdir();
        let mut config = EgwGatewayConfig::for_lab(lab.config(), dir);
        config.workers = workers;
        let table = match table_yaml {
            Some(yaml) => yaml,
            None => route_table_yaml(lab.config(), 1)?,
        };
        write_atomically(&config.route_table_file, &table)?;
        let config_path = dir.join("egw-bench-gateway.yaml");
        // Sized like the kernel's conntrack (egw's default is 256 k flows per core).
        let yaml = format!(
            "{}conntrack:\n  capacity_per_core: {flow_capacity_per_core}\n",
            config.to_yaml()?
        );
        write_atomically(&config_path, &yaml)?;
        let mut child = lab.spawn_in(
            &gw,
            "egw-gateway",
            binary,
            &["--config".to_owned(), config_path.display().to_string()],
        )?;
        let socket = config.control.unix_socket.clone();
        let start = Instant::now();
        while !socket.exists() {
            if let Some(status) = child.exited() {
                return Err(step(
                    "egw-gateway exited",
                    format!("{status}: {}", child.log_tail(3000)),
                ));
            }
            if start.elapsed() > GATEWAY_READY_TIMEOUT {
                return Err(step("egw-gateway not ready", child.log_tail(3000)));
            }
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(RELOAD_SETTLE);
        Ok(EgwProcess {
            child,
            table_path: config.route_table_file,
        })
    }

    pub(crate) fn check_alive(&mut self) -> Result<(), CompareError> {
        match self.child.exited() {
            Some(status) => Err(step(
                "egw-gateway died",
                format!("{status}: {}", self.child.log_tail(3000)),
            )),
            None => Ok(()),
        }
    }
}
