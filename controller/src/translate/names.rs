//! Hashing and naming: the rendezvous weight of next hops, and table names and deny reasons
//! bounded to what the engine accepts.

use std::net::Ipv4Addr;

use super::output::InstanceKey;

/// Longest table policy name before it is shortened with a hash.
const MAX_TABLE_NAME: usize = 200;
/// Longest deny reason the engine accepts.
const MAX_REASON: usize = egw_policy::MAX_DENY_REASON_LEN;

/// FNV-1a, 64 bits: a fixed, platform-independent string hash.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The splitmix64 finalizer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Rendezvous weight of an instance for a pod:
/// `mix64(mix64(u32(pod_ip)) ^ mix64(fnv1a64("gateway/instance")))`. Fixed so that the node
/// side can compute the same next hops; changing it reshuffles every pod.
pub fn instance_weight(pod_ip: Ipv4Addr, instance: &InstanceKey) -> u64 {
    let key = format!("{}/{}", instance.gateway, instance.instance);
    mix64(mix64(u64::from(u32::from(pod_ip))) ^ mix64(fnv1a64(key.as_bytes())))
}

pub(super) fn bounded_name(base: String) -> String {
    if base.len() <= MAX_TABLE_NAME {
        return base;
    }
    let hash = fnv1a64(base.as_bytes());
    let mut cut = MAX_TABLE_NAME - 17;
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{hash:016x}", &base[..cut])
}

pub(super) fn bounded_reason(reason: String) -> String {
    if reason.len() <= MAX_REASON {
        return reason;
    }
    let mut cut = MAX_REASON - '…'.len_utf8();
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &reason[..cut])
}

pub(super) fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
