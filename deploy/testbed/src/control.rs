//! Driving the gateway under test in a [`Testbed`]: starting it (kernel or egw-gateway),
//! reconfiguring it (nftables ruleset, route table over gRPC with egwctl), stopping, killing and
//! restarting it, and reading what it serves (route table, metrics).

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use egw_netns::cmd;

use crate::active::ActiveGateway;
use crate::error::{LabError, Result};
use crate::gateway::{self, Gateway, KERNEL_NFT_TABLE};
use crate::process::ScopedChild;
use crate::testbed::Testbed;
use crate::topology::build;
use crate::topology::config::{GATEWAY_READY_TIMEOUT, PROBE_TIMEOUT};

impl Testbed {
    /// Starts the gateway. Only one gateway per lab.
    pub fn start_gateway(&mut self, gateway: Gateway) -> Result<()> {
        if self.gateway.is_some() {
            return Err(LabError::Config(
                "a gateway is already running in this lab".to_owned(),
            ));
        }
        match gateway {
            Gateway::Kernel => {
                self.apply_kernel_ruleset()?;
                self.gateway = Some(ActiveGateway::Kernel);
            }
            Gateway::Egw { binary } => {
                // Forwarding stays on: traffic a `Bypass` rule sends out unchanged comes back
                // addressed to the pod, which the XDP program leaves to the kernel to route.
                build::sysctl(
                    &self.gateway_namespace(),
                    &["net.ipv4.ip_forward=1".to_owned()],
                )?;
                let config_path = gateway::write_egw_files(&self.config, self.workdir())?;
                let gateway_config =
                    gateway::EgwGatewayConfig::for_lab(&self.config, self.workdir());
                let control_socket = gateway_config.control.unix_socket.clone();
                let process = self.spawn_egw(&binary, &config_path, &control_socket)?;
                self.gateway = Some(ActiveGateway::Egw {
                    process,
                    binary,
                    control_socket,
                    route_table_file: gateway_config.route_table_file,
                    generation: 1,
                });
            }
        }
        Ok(())
    }

    fn apply_kernel_ruleset(&self) -> Result<()> {
        let ruleset_path = self.workdir().join("egw_lab.nft");
        gateway::write_atomically(&ruleset_path, &gateway::kernel_ruleset(&self.config)?)?;
        self.run_in(
            &self.gateway_namespace(),
            "nft",
            &["-f".to_owned(), ruleset_path.display().to_string()],
            cmd::ADMIN_COMMAND_TIMEOUT,
        )?;
        Ok(())
    }

    /// The nftables ruleset currently loaded in the gateway namespace (`nft list table`).
    pub fn kernel_ruleset_loaded(&self) -> Result<String> {
        Ok(self
            .run_in(
                &self.gateway_namespace(),
                "nft",
                &[
                    "list".to_owned(),
                    "table".to_owned(),
                    "ip".to_owned(),
                    KERNEL_NFT_TABLE.to_owned(),
                ],
                cmd::ADMIN_COMMAND_TIMEOUT,
            )?
            .stdout)
    }

    /// Moves `pod` to `pool` in the running gateway. New connections use the new pool;
    /// established ones keep their mapping (kernel: conntrack; egw: its session table).
    /// For egw this rewrites the route table file (generation + 1) and sends SIGHUP.
    pub fn set_pod_pool(&mut self, pod: &str, pool: &str) -> Result<()> {
        self.config.pool_address(pool)?;
        let index = self
            .config
            .pods
            .iter()
            .position(|candidate| candidate.name == pod)
            .ok_or_else(|| LabError::Config(format!("unknown pod {pod:?}")))?;
        self.config.pods[index].pool = pool.to_owned();
        let config = self.config.clone();
        match &mut self.gateway {
            None => Ok(()),
            Some(ActiveGateway::Kernel) => self.apply_kernel_ruleset(),
            Some(ActiveGateway::Egw {
                route_table_file,
                generation,
                ..
            }) => {
                // Over gRPC, as an operator or the controller would.
                *generation += 1;
                let yaml = gateway::route_table_yaml(&config, *generation)?;
                gateway::write_atomically(route_table_file, &yaml)?;
                self.apply_route_table_yaml(&yaml)?;
                Ok(())
            }
        }
    }

    fn spawn_egw(&self, binary: &Path, config_path: &Path, socket: &Path) -> Result<ScopedChild> {
        // A socket left by a killed gateway must not pass for readiness.
        let _ = std::fs::remove_file(socket);
        let args = vec!["--config".to_owned(), config_path.display().to_string()];
        let mut process = self.spawn_in(&self.gateway_namespace(), "egw-gateway", binary, &args)?;
        process.wait_ready(GATEWAY_READY_TIMEOUT, || socket.exists())?;
        Ok(process)
    }

    /// Runs `egwctl` against this lab's egw-gateway; returns its standard output.
    pub fn egwctl(&self, args: &[&str]) -> Result<String> {
        let Some(ActiveGateway::Egw {
            binary,
            control_socket,
            ..
        }) = &self.gateway
        else {
            return Err(LabError::Config("egwctl needs the egw gateway".to_owned()));
        };
        let egwctl = gateway::find_egwctl_binary(binary)?;
        let server = format!("unix://{}", control_socket.display());
        let mut full = vec!["--server", server.as_str()];
        full.extend_from_slice(args);
        Ok(cmd::run_args(&egwctl.display().to_string(), full)?.stdout)
    }

    /// Applies a route table (egw YAML form) over gRPC with `egwctl routes apply`.
    pub fn apply_route_table_yaml(&self, yaml: &str) -> Result<String> {
        let path = self.workdir().join("applied-table.yaml");
        gateway::write_atomically(&path, yaml)?;
        self.egwctl(&["routes", "apply", "-f", &path.display().to_string()])
    }

    /// Kills egw-gateway with SIGKILL (no chance to clean up) and waits until it is gone.
    pub fn kill_gateway(&mut self) -> Result<()> {
        let Some(ActiveGateway::Egw { process, .. }) = &mut self.gateway else {
            return Err(LabError::Config("kill needs the egw gateway".to_owned()));
        };
        cmd::run_args("kill", ["-KILL", &process.id().to_string()])?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while process.exited().is_none() {
            if std::time::Instant::now() > deadline {
                return Err(LabError::Config(
                    "egw-gateway survived SIGKILL for 10 s".to_owned(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops egw-gateway with SIGTERM (its clean shutdown: NAT log flushed, XDP detached) and
    /// waits up to `timeout` for it to exit; returns its exit status.
    pub fn terminate_gateway(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let Some(ActiveGateway::Egw { process, .. }) = &mut self.gateway else {
            return Err(LabError::Config(
                "terminate needs the egw gateway".to_owned(),
            ));
        };
        if let Some(status) = process.exited() {
            return Ok(status);
        }
        cmd::run_args("kill", ["-TERM", &process.id().to_string()])?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = process.exited() {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(LabError::Config(format!(
                    "egw-gateway did not exit within {timeout:?} of SIGTERM; log: {}",
                    process.log_tail(4000)
                )));
            }
            thread::sleep(cmd::POLL_INTERVAL);
        }
    }

    /// egw-gateway's `/metrics` text, fetched inside the gateway namespace (needs
    /// [`LabConfig::egw_observability`](crate::LabConfig::egw_observability)).
    pub fn egw_metrics(&self) -> Result<String> {
        self.egw_http_get("/metrics")
    }

    /// `GET path` from egw-gateway's metrics listener, inside the gateway namespace.
    pub fn egw_http_get(&self, path: &str) -> Result<String> {
        if !self.config.egw_observability {
            return Err(LabError::Config(
                "the egw metrics listener needs LabConfig::egw_observability".to_owned(),
            ));
        }
        let args = vec![
            "probe".to_owned(),
            "get".to_owned(),
            gateway::EGW_METRICS_LISTEN.to_owned(),
            path.to_owned(),
        ];
        Ok(self
            .run_in(
                &self.gateway_namespace(),
                &self.config.lab_binary,
                &args,
                PROBE_TIMEOUT,
            )?
            .stdout)
    }

    /// Where egw-gateway writes its NAT event log (with [`LabConfig::egw_observability`](crate::LabConfig::egw_observability)).
    pub fn egw_nat_log_dir(&self) -> PathBuf {
        self.workdir().join(gateway::EGW_NAT_LOG_DIR)
    }

    /// Starts egw-gateway again with the lab's configuration (after [`kill_gateway`](Self::kill_gateway)).
    pub fn restart_gateway(&mut self) -> Result<()> {
        let Some(ActiveGateway::Egw {
            binary,
            control_socket,
            ..
        }) = &self.gateway
        else {
            return Err(LabError::Config("restart needs the egw gateway".to_owned()));
        };
        let (binary, socket) = (binary.clone(), control_socket.clone());
        let config_path = self.workdir().join(gateway::EGW_CONFIG_FILE);
        let fresh = self.spawn_egw(&binary, &config_path, &socket)?;
        if let Some(ActiveGateway::Egw {
            process,
            generation,
            ..
        }) = &mut self.gateway
        {
            *process = fresh;
            *generation = 1;
        }
        Ok(())
    }

    /// The route table the gateway serves, in the YAML form `egwctl routes get -o yaml` prints.
    pub fn served_table(&self) -> Result<String> {
        self.egwctl(&["-o", "yaml", "routes", "get"])
    }

    /// The generation of the route table the gateway serves.
    pub fn served_generation(&self) -> Result<u64> {
        let yaml = self.served_table()?;
        let table = egw_proto::yaml::RouteTableDocument::from_yaml_str(&yaml).map_err(|e| {
            LabError::Config(format!(
                "egwctl routes get printed an unreadable table: {e}"
            ))
        })?;
        Ok(table.generation)
    }
}

impl Testbed {
    /// The running egw-gateway's binary and control socket; `None` with the kernel gateway or
    /// none. Tools that talk to the gateway (egwctl, the controller) come from the same build.
    pub fn egw_binary_and_socket(&self) -> Option<(&Path, &Path)> {
        match &self.gateway {
            Some(ActiveGateway::Egw {
                binary,
                control_socket,
                ..
            }) => Some((binary, control_socket)),
            _ => None,
        }
    }
}
