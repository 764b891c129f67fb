//! [`EngineConfig`]: what a core's engine is built with, its defaults, and why [`Engine::new`]
//! may refuse it.

use std::net::Ipv4Addr;

use thiserror::Error;

use crate::conntrack::Timeouts;
use crate::frag::FragmentConfig;

#[cfg(doc)]
use super::Engine;

/// Filtering of unsolicited inbound UDP (RFC 4787 section 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Filtering {
    /// REQ-8 option: any remote may send to a mapped external endpoint.
    EndpointIndependent,
    /// Only remotes the pod endpoint has sent to (any port).
    AddressDependent,
    /// Only the exact remote endpoints the pod has sent to. Allows per-destination port reuse.
    #[default]
    AddressAndPortDependent,
}

/// Per-core engine configuration. All cores of a gateway share everything but `core` and
/// `table_seed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    pub core: u16,
    pub cores: u16,
    /// Flows this core tracks at most.
    pub flow_capacity: u32,
    pub timeouts: Timeouts,
    pub udp_filtering: Filtering,
    /// SNAT port range, split between cores.
    pub port_range: (u16, u16),
    /// Source of ICMP errors the gateway sends to pods (its inside address).
    pub inside_address: Ipv4Addr,
    pub inside_mtu: u16,
    pub outside_mtu: u16,
    pub fragments: FragmentConfig,
    /// Shared by all cores: decides which core owns a pod endpoint.
    pub steering_seed: u64,
    /// Per core: seeds the flow-table hash (hash-flooding resistance) and port shuffling.
    pub table_seed: u64,
    /// ICMP errors this core may generate per second (RFC 1812 4.3.2.8 rate limiting).
    pub icmp_errors_per_second: u32,
    /// When the table is full, evict a flow that never got an answer to admit a new one (as
    /// conntrack's early drop); established and replied flows are never evicted either way.
    pub early_drop_unreplied: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            core: 0,
            cores: 1,
            flow_capacity: 1 << 16,
            timeouts: Timeouts::default(),
            udp_filtering: Filtering::default(),
            port_range: (1024, 65535),
            inside_address: Ipv4Addr::UNSPECIFIED,
            inside_mtu: 1500,
            outside_mtu: 1500,
            fragments: FragmentConfig::default(),
            steering_seed: 0x6567_775f_7374_6572,
            table_seed: 0x6567_775f_7461_626c,
            icmp_errors_per_second: 1000,
            early_drop_unreplied: true,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("core {core} is out of range for {cores} cores")]
    CoreOutOfRange { core: u16, cores: u16 },
    #[error("port range {first}-{last} cannot be split between {cores} cores")]
    PortRange { first: u16, last: u16, cores: u16 },
    #[error("flow capacity must be between 1 and {max}, got {got}")]
    FlowCapacity { got: u32, max: u32 },
    #[error("invalid timeouts: {0}")]
    Timeouts(String),
    #[error("MTU {0} is below the IPv4 minimum of 68")]
    Mtu(u16),
}

/// Flows per core at most (slot numbers are u32 and the indices double their size).
pub const MAX_FLOWS_PER_CORE: u32 = 1 << 28;
