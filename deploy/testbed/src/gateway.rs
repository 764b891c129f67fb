//! The gateway under test, behind one small adapter: either the Linux kernel (nftables SNAT,
//! works today and is the reference behaviour) or the egw-gateway binary.
//!
//! The egw-gateway contract the lab relies on:
//! - started as `egw-gateway --config <file>` inside the gateway namespace, config as written
//!   by [`EgwGatewayConfig`] (YAML), route table as written by [`route_table_for_lab`];
//! - ready once `control.unix_socket` exists;
//! - on SIGHUP, re-reads `route_table_file` (the lab replaces it atomically, generation + 1);
//! - exits on SIGTERM/SIGKILL;
//! - forwards on its own: the lab turns kernel IPv4 forwarding off in the gateway namespace
//!   for egw, so a packet egw does not handle is dropped instead of being quietly forwarded
//!   (un-NATed) by the kernel. ARP and the addresses on the interfaces stay with the kernel.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use egw_proto::yaml;
use ipnet::Ipv4Net;
use serde::Serialize;

use crate::error::{LabError, Result};
use crate::topology::config::{LabConfig, GW_INSIDE_ADDRESS, GW_INSIDE_IF, POD_CIDR};

/// Which gateway forwards pod traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gateway {
    /// Linux forwarding + nftables SNAT (table [`KERNEL_NFT_TABLE`]).
    Kernel,
    /// The egw-gateway binary at `binary`.
    Egw { binary: PathBuf },
}

impl Gateway {
    /// Short name for tables and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Gateway::Kernel => "kernel",
            Gateway::Egw { .. } => "egw",
        }
    }
}

/// nftables table the kernel gateway owns inside the gateway namespace.
pub const KERNEL_NFT_TABLE: &str = "egw_lab";
/// Environment variable naming the egw-gateway binary.
pub const GATEWAY_BIN_ENV: &str = "EGW_GATEWAY_BIN";
/// File names inside the lab's work directory.
pub const EGW_CONFIG_FILE: &str = "egw.yaml";
pub const EGW_ROUTE_TABLE_FILE: &str = "table.yaml";
pub const EGW_CONTROL_SOCKET: &str = "egw.sock";
/// The NAT event log directory inside the lab's work directory (with
/// [`LabConfig::egw_observability`]).
pub const EGW_NAT_LOG_DIR: &str = "natlog";
/// Where egw-gateway serves `/metrics` and `/healthz`, in the gateway namespace (with
/// [`LabConfig::egw_observability`]): loopback, so nothing outside the lab can reach it.
pub const EGW_METRICS_LISTEN: &str = "127.0.0.1:9464";
/// The gateway name written into every NAT log record in the lab.
pub const EGW_LAB_GATEWAY_NAME: &str = "egw-lab";

/// The nftables ruleset implementing the lab's pod → pool mapping. Written as
/// "create, delete, recreate" so applying it is one atomic replacement whether or not the
/// table exists; established connections keep their conntrack NAT binding across it.
pub fn kernel_ruleset(config: &LabConfig) -> Result<String> {
    let mut rules = String::new();
    let outside = config.outside_interface();
    for pod in &config.pods {
        let egress = config.pool_address(&pod.pool)?;
        rules.push_str(&format!(
            "    ip saddr {} oif \"{outside}\" snat to {egress}\n",
            pod.address
        ));
    }
    Ok(format!(
        "table ip {KERNEL_NFT_TABLE}\ndelete table ip {KERNEL_NFT_TABLE}\n\
         table ip {KERNEL_NFT_TABLE} {{\n  chain postrouting {{\n    \
         type nat hook postrouting priority srcnat; policy accept;\n{rules}  }}\n}}\n"
    ))
}

/// `control:` section of the gateway config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlConfig {
    pub unix_socket: PathBuf,
}

/// `metrics:` section of the gateway config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricsConfig {
    pub listen: String,
}

/// `nat_log:` section of the gateway config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatLogConfig {
    pub dir: PathBuf,
    pub gateway_name: String,
}

/// The egw-gateway configuration file. This struct is the single writer of that format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgwGatewayConfig {
    pub inside_interface: String,
    pub outside_interface: String,
    pub inside_address: Ipv4Addr,
    pub pod_cidrs: Vec<String>,
    pub snat_addresses: Vec<Ipv4Addr>,
    pub workers: u32,
    pub control: ControlConfig,
    pub route_table_file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat_log: Option<NatLogConfig>,
}

impl EgwGatewayConfig {
    /// Config for the lab topology, with control socket and route table inside `dir`.
    pub fn for_lab(config: &LabConfig, dir: &Path) -> Self {
        EgwGatewayConfig {
            inside_interface: GW_INSIDE_IF.to_owned(),
            outside_interface: config.outside_interface().to_owned(),
            inside_address: GW_INSIDE_ADDRESS,
            pod_cidrs: vec![POD_CIDR.to_owned()],
            snat_addresses: config.pools.iter().map(|pool| pool.address).collect(),
            workers: 1,
            control: ControlConfig {
                unix_socket: dir.join(EGW_CONTROL_SOCKET),
            },
            route_table_file: dir.join(EGW_ROUTE_TABLE_FILE),
            metrics: config.egw_observability.then(|| MetricsConfig {
                listen: EGW_METRICS_LISTEN.to_owned(),
            }),
            nat_log: config.egw_observability.then(|| NatLogConfig {
                dir: dir.join(EGW_NAT_LOG_DIR),
                gateway_name: EGW_LAB_GATEWAY_NAME.to_owned(),
            }),
        }
    }

    pub fn to_yaml(&self) -> Result<String> {
        serde_yaml::to_string(self).map_err(|source| LabError::Yaml {
            what: "gateway config",
            source,
        })
    }
}

/// Policy name used for "everything via `pool`": `pool-a` → `via-a`.
pub fn policy_name_for_pool(pool: &str) -> String {
    format!("via-{}", pool.strip_prefix("pool-").unwrap_or(pool))
}

/// The lab's route table in the gateway's own YAML form ([`yaml::RouteTableDocument`], the document
/// egw-gateway loads at start and on SIGHUP): one pool per lab pool, one catch-all policy per
/// pool, one /32 source per pod.
pub fn route_table_for_lab(config: &LabConfig, generation: u64) -> yaml::RouteTableDocument {
    yaml::RouteTableDocument {
        generation,
        pools: config
            .pools
            .iter()
            .map(|pool| yaml::Pool {
                name: pool.name.clone(),
                addresses: vec![yaml::PoolAddress {
                    snat: pool.address,
                    public: None,
                }],
                pairing: true,
            })
            .collect(),
        policies: config
            .pools
            .iter()
            .map(|pool| yaml::Policy {
                name: policy_name_for_pool(&pool.name),
                rules: vec![yaml::Rule {
                    destination: Ipv4Net::default(),
                    action: yaml::Action::Snat {
                        pool: pool.name.clone(),
                    },
                    description: None,
                }],
            })
            .collect(),
        sources: config
            .pods
            .iter()
            .map(|pod| yaml::Source {
                cidr: Ipv4Net::from(pod.address),
                policy: policy_name_for_pool(&pod.pool),
            })
            .collect(),
        default_action: yaml::Action::Deny {
            reason: yaml::DEFAULT_DENY_REASON.to_owned(),
        },
    }
}

/// [`route_table_for_lab`] rendered as YAML.
pub fn route_table_yaml(config: &LabConfig, generation: u64) -> Result<String> {
    route_table_for_lab(config, generation)
        .to_yaml_string()
        .map_err(|source| LabError::TableYaml { source })
}

/// Writes `contents` to `path` via a temporary file + rename, so a reader never sees a
/// half-written file.
pub fn write_atomically(path: &Path, contents: &str) -> Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|source| LabError::io(format!("writing {}", path.display()), source))
}

/// Writes the gateway config and generation-1 route table into `dir`; returns the config path.
pub fn write_egw_files(config: &LabConfig, dir: &Path) -> Result<PathBuf> {
    let gateway_config = EgwGatewayConfig::for_lab(config, dir);
    write_atomically(
        &gateway_config.route_table_file,
        &route_table_yaml(config, 1)?,
    )?;
    let config_path = dir.join(EGW_CONFIG_FILE);
    write_atomically(&config_path, &gateway_config.to_yaml()?)?;
    Ok(config_path)
}

/// Locates egw-gateway: explicit path, then `$EGW_GATEWAY_BIN`, then next to the current
/// executable (cargo puts all workspace binaries in one target dir; test binaries live one
/// level deeper in `deps/`).
/// Environment variable naming the egwctl binary the lab drives the gateway with.
pub const EGWCTL_BIN_ENV: &str = "EGWCTL_BIN";

/// egwctl: the one next to the gateway binary (both come from one cargo build), else
/// `EGWCTL_BIN`.
pub fn find_egwctl_binary(gateway_binary: &Path) -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = gateway_binary.parent() {
        candidates.push(dir.join("egwctl"));
    }
    if let Some(path) = std::env::var_os(EGWCTL_BIN_ENV).filter(|value| !value.is_empty()) {
        candidates.push(PathBuf::from(path));
    }
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            LabError::Config(format!(
                "egwctl not found (looked at {candidates:?}); build it (cargo build -p egwctl) or set {EGWCTL_BIN_ENV}"
            ))
        })
}

pub fn find_gateway_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = explicit {
        candidates.push(path.to_owned());
    } else if let Some(path) = std::env::var_os(GATEWAY_BIN_ENV).filter(|value| !value.is_empty()) {
        candidates.push(PathBuf::from(path));
    } else if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("egw-gateway"));
            if let Some(parent) = dir.parent() {
                candidates.push(parent.join("egw-gateway"));
            }
        }
    }
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or(LabError::GatewayBinaryNotFound {
            looked_at: candidates,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab_config() -> LabConfig {
        LabConfig::new(2, PathBuf::from("/nonexistent/egw-lab")).unwrap()
    }

    #[test]
    fn gateway_config_matches_the_documented_shape() {
        let yaml = EgwGatewayConfig::for_lab(&lab_config(), Path::new("/run/egw-lab"))
            .to_yaml()
            .unwrap();
        assert_eq!(
            yaml,
            "inside_interface: gw-in\noutside_interface: gw-out\ninside_address: 10.244.0.1\n\
             pod_cidrs:\n- 10.244.0.0/16\nsnat_addresses:\n- 198.51.100.1\n- 198.51.100.2\n\
             workers: 1\ncontrol:\n  unix_socket: /run/egw-lab/egw.sock\n\
             route_table_file: /run/egw-lab/table.yaml\n"
        );
    }

    #[test]
    fn observability_adds_metrics_and_nat_log_sections() {
        let mut config = lab_config();
        config.egw_observability = true;
        let yaml = EgwGatewayConfig::for_lab(&config, Path::new("/run/egw-lab"))
            .to_yaml()
            .unwrap();
        assert!(
            yaml.ends_with(
                "route_table_file: /run/egw-lab/table.yaml\nmetrics:\n  listen: 127.0.0.1:9464\n\
                 nat_log:\n  dir: /run/egw-lab/natlog\n  gateway_name: egw-lab\n"
            ),
            "{yaml}"
        );
    }

    /// The lab's table before it used `egw_proto::yaml`'s types: the gateway must read the
    /// same table from what the lab writes now.
    const LAB_TABLE_BEFORE: &str =
        "generation: 1\npools:\n- name: pool-a\n  addresses:\n  - 198.51.100.1\n\
             - name: pool-b\n  addresses:\n  - 198.51.100.2\npolicies:\n- name: via-a\n  rules:\n\
             \x20 - destination: 0.0.0.0/0\n    snat: pool-a\n- name: via-b\n  rules:\n\
             \x20 - destination: 0.0.0.0/0\n    snat: pool-b\nsources:\n\
             - cidr: 10.244.1.10/32\n  policy: via-a\n- cidr: 10.244.1.11/32\n  policy: via-b\n";

    #[test]
    fn route_table_matches_the_documented_shape() {
        let yaml = route_table_yaml(&lab_config(), 1).unwrap();
        assert_eq!(
            yaml,
            "generation: 1\npools:\n- name: pool-a\n  addresses:\n  - 198.51.100.1\n  pairing: true\n\
             - name: pool-b\n  addresses:\n  - 198.51.100.2\n  pairing: true\npolicies:\n- name: via-a\n  rules:\n\
             \x20 - destination: 0.0.0.0/0\n    snat: pool-a\n- name: via-b\n  rules:\n\
             \x20 - destination: 0.0.0.0/0\n    snat: pool-b\nsources:\n\
             - cidr: 10.244.1.10/32\n  policy: via-a\n- cidr: 10.244.1.11/32\n  policy: via-b\n\
             default:\n  deny: no policy for source\n"
        );
        // The same document as before the lab used the proto types: the defaults the old
        // writer left out are now spelled out, and read back identically.
        let before = yaml::RouteTableDocument::from_yaml_str(LAB_TABLE_BEFORE).unwrap();
        assert_eq!(
            yaml::RouteTableDocument::from_yaml_str(&yaml).unwrap(),
            before
        );
        assert_eq!(route_table_for_lab(&lab_config(), 1), before);
    }

    #[test]
    fn kernel_ruleset_maps_each_pod_to_its_pool() {
        let ruleset = kernel_ruleset(&lab_config()).unwrap();
        assert!(ruleset.contains("ip saddr 10.244.1.10 oif \"gw-out\" snat to 198.51.100.1"));
        assert!(ruleset.contains("ip saddr 10.244.1.11 oif \"gw-out\" snat to 198.51.100.2"));
        assert!(ruleset.starts_with("table ip egw_lab\ndelete table ip egw_lab\n"));
    }

    #[test]
    fn one_armed_uses_the_inside_interface_for_both_directions() {
        let mut config = lab_config();
        config.arms = crate::topology::config::Arms::One;
        let gateway_config = EgwGatewayConfig::for_lab(&config, Path::new("/d"));
        assert_eq!(gateway_config.inside_interface, "gw-in");
        assert_eq!(gateway_config.outside_interface, "gw-in");
        assert!(kernel_ruleset(&config)
            .unwrap()
            .contains("ip saddr 10.244.1.10 oif \"gw-in\" snat to 198.51.100.1"));
    }

    #[test]
    fn explicit_missing_binary_is_an_error() {
        let error = find_gateway_binary(Some(Path::new("/nonexistent/egw-gateway"))).unwrap_err();
        assert!(matches!(error, LabError::GatewayBinaryNotFound { .. }));
    }
}
