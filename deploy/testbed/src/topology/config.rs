//! What a lab is made of: its fixed addresses and names, and [`LabConfig`] (pods, pools, arms).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{LabError, Result};

/// Every lab namespace name starts with this; `egw-lab down` never touches anything else.
pub const LAB_PREFIX_ROOT: &str = "egwlab-";
pub const POD_CIDR: &str = "10.244.0.0/16";
pub const POD_PREFIX_LEN: u8 = 16;
pub const GW_INSIDE_IF: &str = "gw-in";
pub const GW_OUTSIDE_IF: &str = "gw-out";
pub const GW_INSIDE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
pub const GW_OUTSIDE_ADDRESS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const INET_ROUTER_ADDRESS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
pub const TRANSIT_PREFIX_LEN: u8 = 24;
pub const SNAT_CIDR: &str = "198.51.100.0/24";
pub const MIRROR_ADDRESS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const MIRROR_TCP_PORT: u16 = 8080;
pub const MIRROR_UDP_PORT: u16 = 8081;
/// Interface name of a pod's (and the internet host's) link, inside its own namespace.
pub const HOST_IF: &str = "eth0";
/// The switch namespace's bridge and the gateway's and internet host's ports on it.
pub(crate) const BRIDGE: &str = "br0";
pub(crate) const GW_SWITCH_PORT: &str = "gwport";
pub(crate) const INET_SWITCH_PORT: &str = "inetport";
const MAX_PODS: usize = 200;

/// How long the mirror may take to bind its sockets.
pub const MIRROR_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long egw-gateway may take to create its control socket.
pub const GATEWAY_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one probe process (the 200 MB upload gets [`UPLOAD_TIMEOUT`] instead).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// Mirror TCP endpoint.
pub fn mirror_tcp() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(MIRROR_ADDRESS, MIRROR_TCP_PORT))
}

/// Mirror UDP endpoint.
pub fn mirror_udp() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(MIRROR_ADDRESS, MIRROR_UDP_PORT))
}

/// An SNAT pool: a name (as in the route table) and its external address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    pub address: Ipv4Addr,
}

/// A pod: namespace suffix, address, and the pool its traffic must leave through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub name: String,
    pub address: Ipv4Addr,
    pub pool: String,
}

/// How the gateway is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arms {
    /// Pods on `gw-in`, internet on `gw-out`.
    #[default]
    Two,
    /// Pods and internet on the same bridge, both reached through `gw-in`.
    One,
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabConfig {
    pub pods: Vec<PodSpec>,
    pub pools: Vec<PoolSpec>,
    /// The egw-lab binary, run inside namespaces for the mirror and probes.
    pub lab_binary: PathBuf,
    /// Namespace name prefix; `None` picks a unique `egwlab-<pid>-<n>-`.
    pub prefix: Option<String>,
    pub arms: Arms,
    /// RX/TX queues of the gateway's veths: one egw-gateway worker serves each queue, so a
    /// multi-worker run needs as many queues as workers.
    pub gateway_queues: u16,
    /// egw only: serve `/metrics` on [`gateway::EGW_METRICS_LISTEN`](crate::gateway::EGW_METRICS_LISTEN) in the gateway namespace and
    /// write the NAT event log to `<workdir>/`[`gateway::EGW_NAT_LOG_DIR`](crate::gateway::EGW_NAT_LOG_DIR). Off by default.
    pub egw_observability: bool,
}

impl LabConfig {
    /// `pod_count` pods `pod-a`, `pod-b`, ... at 10.244.1.10, .11, ..., alternating between
    /// `pool-a` (198.51.100.1) and `pool-b` (198.51.100.2).
    pub fn new(pod_count: usize, lab_binary: PathBuf) -> Result<Self> {
        if !(1..=MAX_PODS).contains(&pod_count) {
            return Err(LabError::Config(format!(
                "pod count must be between 1 and {MAX_PODS}, got {pod_count}"
            )));
        }
        let pools = vec![
            PoolSpec {
                name: "pool-a".to_owned(),
                address: Ipv4Addr::new(198, 51, 100, 1),
            },
            PoolSpec {
                name: "pool-b".to_owned(),
                address: Ipv4Addr::new(198, 51, 100, 2),
            },
        ];
        let pods = (0..pod_count)
            .map(|index| {
                let name = match u8::try_from(index) {
                    Ok(letter @ 0..=25) => format!("pod-{}", char::from(b'a' + letter)),
                    _ => format!("pod-{index}"),
                };
                PodSpec {
                    name,
                    address: Ipv4Addr::new(10, 244, 1, 10 + index as u8),
                    pool: pools[index % pools.len()].name.clone(),
                }
            })
            .collect();
        Ok(LabConfig {
            pods,
            pools,
            lab_binary,
            prefix: None,
            arms: Arms::Two,
            gateway_queues: 1,
            egw_observability: false,
        })
    }

    /// The gateway interface facing the internet: `gw-out`, or `gw-in` when one-armed.
    pub fn outside_interface(&self) -> &'static str {
        match self.arms {
            Arms::Two => GW_OUTSIDE_IF,
            Arms::One => GW_INSIDE_IF,
        }
    }

    /// External address of `pool`.
    pub fn pool_address(&self, pool: &str) -> Result<Ipv4Addr> {
        self.pools
            .iter()
            .find(|candidate| candidate.name == pool)
            .map(|candidate| candidate.address)
            .ok_or_else(|| LabError::Config(format!("unknown pool {pool:?}")))
    }

    /// The pod called `name`.
    pub fn pod(&self, name: &str) -> Result<&PodSpec> {
        self.pods
            .iter()
            .find(|pod| pod.name == name)
            .ok_or_else(|| LabError::Config(format!("unknown pod {name:?}")))
    }

    /// The address `pod`'s traffic must appear from on the internet side.
    pub fn expected_egress(&self, pod: &str) -> Result<Ipv4Addr> {
        self.pool_address(&self.pod(pod)?.pool)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for pod in &self.pods {
            self.pool_address(&pod.pool)?;
            if self
                .pods
                .iter()
                .filter(|other| other.name == pod.name)
                .count()
                > 1
            {
                return Err(LabError::Config(format!(
                    "duplicate pod name {:?}",
                    pod.name
                )));
            }
        }
        for pod in &self.pods {
            if !is_name_safe(&pod.name) {
                return Err(LabError::Config(format!(
                    "pod name {:?} must be non-empty lower-case letters, digits and '-'",
                    pod.name
                )));
            }
        }
        if let Some(prefix) = &self.prefix {
            // Build removes stale namespaces with its prefix first, so a prefix must name
            // exactly one lab: `egwlab-<id>-`, never the bare root that matches all labs.
            let id = prefix
                .strip_prefix(LAB_PREFIX_ROOT)
                .and_then(|rest| rest.strip_suffix('-'));
            if !id.is_some_and(is_name_safe) {
                return Err(LabError::Config(format!(
                    "prefix {prefix:?} must look like {LAB_PREFIX_ROOT}<id>- (id: lower-case letters, digits, '-')"
                )));
            }
        }
        Ok(())
    }
}

fn is_name_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_prefix(prefix: &str) -> LabConfig {
        let mut config = LabConfig::new(2, PathBuf::from("/x")).unwrap();
        config.prefix = Some(prefix.to_owned());
        config
    }

    #[test]
    fn prefix_must_name_exactly_one_lab() {
        assert!(config_with_prefix("egwlab-ci-1-").validate().is_ok());
        for bad in [
            "egwlab-",
            "egwlab",
            "cni-1-",
            "egwlab-x",
            "egwlab-A-",
            "egwlab-a b-",
        ] {
            assert!(config_with_prefix(bad).validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn default_pods_alternate_pools() {
        let config = LabConfig::new(3, PathBuf::from("/x")).unwrap();
        let names: Vec<_> = config.pods.iter().map(|pod| pod.name.as_str()).collect();
        assert_eq!(names, ["pod-a", "pod-b", "pod-c"]);
        assert_eq!(
            config.expected_egress("pod-a").unwrap(),
            Ipv4Addr::new(198, 51, 100, 1)
        );
        assert_eq!(
            config.expected_egress("pod-b").unwrap(),
            Ipv4Addr::new(198, 51, 100, 2)
        );
        assert_eq!(
            config.expected_egress("pod-c").unwrap(),
            Ipv4Addr::new(198, 51, 100, 1)
        );
        assert_eq!(config.pods[2].address, Ipv4Addr::new(10, 244, 1, 12));
        assert!(LabConfig::new(0, PathBuf::from("/x")).is_err());
        assert!(LabConfig::new(201, PathBuf::from("/x")).is_err());
    }

    #[test]
    fn unsafe_pod_names_are_rejected() {
        let mut config = LabConfig::new(1, PathBuf::from("/x")).unwrap();
        config.pods[0].name = "pod a".to_owned();
        assert!(config.validate().is_err());
    }
}
