//! Building a lab's network, one step per function: namespaces and the switch, the pods' links,
//! the gateway's links, the addresses and routes, then sysctls and offloads.
//!
//! Every interface is created directly inside a lab namespace (egw-netns), so nothing ever
//! appears in (or collides with) the host's root namespace, and deleting the namespaces removes
//! everything.

use egw_netns::cmd;
use egw_netns::link::{self, End};
use egw_netns::namespace::{self, ip_in};

use crate::error::Result;
use crate::topology::config::{
    Arms, LabConfig, BRIDGE, GW_INSIDE_ADDRESS, GW_INSIDE_IF, GW_OUTSIDE_ADDRESS, GW_OUTSIDE_IF,
    GW_SWITCH_PORT, HOST_IF, INET_ROUTER_ADDRESS, INET_SWITCH_PORT, MIRROR_ADDRESS, POD_PREFIX_LEN,
    SNAT_CIDR, TRANSIT_PREFIX_LEN,
};

/// The names of a lab's fixed namespaces, derived from its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub prefix: String,
}

impl Names {
    pub fn switch(&self) -> String {
        format!("{}switch", self.prefix)
    }

    pub fn gateway(&self) -> String {
        format!("{}gw", self.prefix)
    }

    pub fn inet(&self) -> String {
        format!("{}inet", self.prefix)
    }

    pub fn pod(&self, pod: &str) -> String {
        format!("{}{pod}", self.prefix)
    }
}

/// `ip -n <namespace> <words...>`; every word is a lab-chosen name or address without spaces.
fn ipn(namespace: &str, words: &str) -> Result<()> {
    let args: Vec<&str> = words.split_whitespace().collect();
    ip_in(namespace, &args)?;
    Ok(())
}

/// `sysctl -q -w <settings...>` inside `namespace`.
pub(crate) fn sysctl(namespace: &str, settings: &[String]) -> Result<()> {
    let mut args = vec!["-q".to_owned(), "-w".to_owned()];
    args.extend(settings.iter().cloned());
    cmd::run(
        cmd::in_netns(namespace, "sysctl", &args),
        cmd::ADMIN_COMMAND_TIMEOUT,
    )?;
    Ok(())
}

/// Builds the whole topology of `config`; every namespace created is pushed to `created`
/// before anything else happens in it, so the caller can tear down a partial build.
pub(crate) fn build(config: &LabConfig, names: &Names, created: &mut Vec<String>) -> Result<()> {
    let mut add = |name: String| -> Result<()> {
        namespace::add(&name)?;
        created.push(name);
        Ok(())
    };
    for name in [names.switch(), names.gateway(), names.inet()] {
        add(name)?;
    }
    for pod in &config.pods {
        add(names.pod(&pod.name))?;
    }
    ipn(&names.switch(), &format!("link add {BRIDGE} type bridge"))?;
    ipn(&names.switch(), &format!("link set {BRIDGE} up"))?;
    connect_pods(config, names)?;
    connect_gateway(config, names)?;
    address_gateway(config, names)?;
    address_inet(names)?;
    tune(config, names)
}

/// Each pod: a veth from its `eth0` to a bridge port, its address, a default route to the gateway.
fn connect_pods(config: &LabConfig, names: &Names) -> Result<()> {
    let switch = names.switch();
    for (index, pod) in config.pods.iter().enumerate() {
        let namespace = names.pod(&pod.name);
        let port = format!("p{index}");
        link::add_veth(
            End {
                namespace: &namespace,
                name: HOST_IF,
            },
            End {
                namespace: &switch,
                name: &port,
            },
            None,
        )?;
        ipn(&switch, &format!("link set {port} master {BRIDGE} up"))?;
        ipn(
            &namespace,
            &format!("addr add {}/{POD_PREFIX_LEN} dev {HOST_IF}", pod.address),
        )?;
        ipn(&namespace, &format!("link set {HOST_IF} up"))?;
        ipn(
            &namespace,
            &format!("route add default via {GW_INSIDE_ADDRESS}"),
        )?;
        link::disable_tx_offload(&namespace, HOST_IF)?;
        link::disable_tx_offload(&switch, &port)?;
    }
    Ok(())
}

/// The gateway's inside veth to the bridge and, two-armed, its outside veth to the internet
/// host; one-armed, the internet host hangs off the same bridge instead.
fn connect_gateway(config: &LabConfig, names: &Names) -> Result<()> {
    let (switch, gw, inet) = (names.switch(), names.gateway(), names.inet());
    let queues = Some(config.gateway_queues.max(1));
    link::add_veth(
        End {
            namespace: &gw,
            name: GW_INSIDE_IF,
        },
        End {
            namespace: &switch,
            name: GW_SWITCH_PORT,
        },
        queues,
    )?;
    ipn(
        &switch,
        &format!("link set {GW_SWITCH_PORT} master {BRIDGE} up"),
    )?;
    match config.arms {
        Arms::Two => link::add_veth(
            End {
                namespace: &gw,
                name: GW_OUTSIDE_IF,
            },
            End {
                namespace: &inet,
                name: HOST_IF,
            },
            queues,
        )?,
        // The internet host hangs off the same bridge: pods and internet share gw-in.
        Arms::One => {
            link::add_veth(
                End {
                    namespace: &inet,
                    name: HOST_IF,
                },
                End {
                    namespace: &switch,
                    name: INET_SWITCH_PORT,
                },
                None,
            )?;
            ipn(
                &switch,
                &format!("link set {INET_SWITCH_PORT} master {BRIDGE} up"),
            )?;
            link::disable_tx_offload(&switch, INET_SWITCH_PORT)?;
        }
    }
    Ok(())
}

/// The gateway's inside and outside addresses and the SNAT addresses.
fn address_gateway(config: &LabConfig, names: &Names) -> Result<()> {
    let gw = names.gateway();
    let outside = config.outside_interface();
    ipn(
        &gw,
        &format!("addr add {GW_INSIDE_ADDRESS}/{POD_PREFIX_LEN} dev {GW_INSIDE_IF}"),
    )?;
    ipn(
        &gw,
        &format!("addr add {GW_OUTSIDE_ADDRESS}/{TRANSIT_PREFIX_LEN} dev {outside}"),
    )?;
    // The SNAT addresses live on the outside interface as /32s so the kernel answers ARP
    // for them; the internet side then simply routes the pool prefix to the gateway.
    for pool in &config.pools {
        ipn(&gw, &format!("addr add {}/32 dev {outside}", pool.address))?;
    }
    ipn(&gw, &format!("link set {GW_INSIDE_IF} up"))?;
    ipn(&gw, &format!("link set {outside} up"))
}

/// The internet host: its router address, the mirror's address, the route to the SNAT pools.
fn address_inet(names: &Names) -> Result<()> {
    let inet = names.inet();
    ipn(
        &inet,
        &format!("addr add {INET_ROUTER_ADDRESS}/{TRANSIT_PREFIX_LEN} dev {HOST_IF}"),
    )?;
    ipn(
        &inet,
        &format!("addr add {MIRROR_ADDRESS}/32 dev {HOST_IF}"),
    )?;
    ipn(&inet, &format!("link set {HOST_IF} up"))?;
    ipn(
        &inet,
        &format!("route add {SNAT_CIDR} via {GW_OUTSIDE_ADDRESS}"),
    )
}

/// Forwarding on, rp_filter and redirects off, TX checksum offload off on the remaining links.
fn tune(config: &LabConfig, names: &Names) -> Result<()> {
    let (switch, gw, inet) = (names.switch(), names.gateway(), names.inet());
    let outside = config.outside_interface();
    // rp_filter would drop un-NATed or asymmetric packets in ways that hide gateway bugs
    // behind "no reply"; the tests want to see exactly what the gateway emits.
    let mut gw_settings = vec!["net.ipv4.ip_forward=1".to_owned()];
    for device in ["all", "default", GW_INSIDE_IF, outside] {
        gw_settings.push(format!("net.ipv4.conf.{device}.rp_filter=0"));
    }
    // One-armed, every forwarded packet leaves on the interface it arrived on, which makes
    // the kernel send ICMP redirects to the pods; they would only add noise.
    for device in ["all", "default", GW_INSIDE_IF] {
        gw_settings.push(format!("net.ipv4.conf.{device}.send_redirects=0"));
    }
    sysctl(&gw, &gw_settings)?;
    sysctl(
        &inet,
        &[
            "net.ipv4.conf.all.rp_filter=0".to_owned(),
            format!("net.ipv4.conf.{HOST_IF}.rp_filter=0"),
        ],
    )?;
    link::disable_tx_offload(&gw, GW_INSIDE_IF)?;
    link::disable_tx_offload(&switch, GW_SWITCH_PORT)?;
    link::disable_tx_offload(&inet, HOST_IF)?;
    if config.arms == Arms::Two {
        link::disable_tx_offload(&gw, GW_OUTSIDE_IF)?;
    }
    Ok(())
}
