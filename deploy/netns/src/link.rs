//! Links between namespaces: veth pairs, addresses, MACs (iproute2 and ethtool).

use crate::cmd;
use crate::error::{NetnsError, Result};
use crate::namespace::ip_in;

/// One end of a veth pair: the namespace it lives in and its interface name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
}

/// Creates a veth pair `a` ↔ `b`, each end directly in its namespace (nothing ever appears in
/// the caller's namespace). `queues` sets RX and TX queue counts of both ends (one AF_XDP
/// worker serves each queue); `None` keeps the kernel default.
pub fn add_veth(a: End<'_>, b: End<'_>, queues: Option<u16>) -> Result<()> {
    let queues = queues.map(|count| count.to_string());
    let queue_args: Vec<&str> = queues
        .as_deref()
        .map(|count| vec!["numtxqueues", count, "numrxqueues", count])
        .unwrap_or_default();
    let mut args = vec!["link", "add", a.name];
    args.extend(&queue_args);
    args.extend(["type", "veth", "peer", "name", b.name]);
    args.extend(&queue_args);
    args.extend(["netns", b.namespace]);
    ip_in(a.namespace, &args).map(drop)
}

/// `ip -n <namespace> addr add <cidr> dev <device>`.
pub fn add_address(namespace: &str, device: &str, cidr: &str) -> Result<()> {
    ip_in(namespace, &["addr", "add", cidr, "dev", device]).map(drop)
}

/// `ip -n <namespace> link set <device> up`.
pub fn set_up(namespace: &str, device: &str) -> Result<()> {
    ip_in(namespace, &["link", "set", device, "up"]).map(drop)
}

/// Veths default to TX checksum offload: the sender leaves only the pseudo-header sum in
/// the TCP/UDP checksum field (CHECKSUM_PARTIAL) and nobody ever completes it, because a
/// veth peer trusts the skb metadata. AF_XDP (and XDP) see raw frame bytes without that
/// metadata, so a gateway would forward packets with wrong checksums that the real receiver
/// drops. With TX checksumming off, the stack writes complete checksums (and, since TSO
/// needs checksum offload, segments to MTU-sized frames) before the frame hits the wire.
pub fn disable_tx_offload(namespace: &str, device: &str) -> Result<()> {
    cmd::run(
        cmd::in_netns(namespace, "ethtool", ["-K", device, "tx", "off"]),
        cmd::ADMIN_COMMAND_TIMEOUT,
    )
    .map(drop)
}

/// MAC address of `device` in `namespace`.
pub fn mac(namespace: &str, device: &str) -> Result<[u8; 6]> {
    let out = ip_in(namespace, &["link", "show", "dev", device])?;
    let bad = || NetnsError::BadOutput {
        command: format!("ip -n {namespace} link show dev {device}"),
        output: out.clone(),
    };
    let text = out
        .split("link/ether ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(bad)?;
    parse_mac(text).ok_or_else(bad)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_mac() {
        assert_eq!(
            parse_mac("02:00:0a:ff:00:01"),
            Some([2, 0, 0x0a, 0xff, 0, 1])
        );
        assert_eq!(parse_mac("02:00:0a:ff:00"), None);
        assert_eq!(parse_mac("02:00:0a:ff:00:01:02"), None);
        assert_eq!(parse_mac("zz:00:0a:ff:00:01"), None);
    }
}
