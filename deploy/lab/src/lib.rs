//! egw lab: builds a throw-away topology of network namespaces (pods → switch → gateway →
//! internet), runs a gateway (the Linux kernel with nftables SNAT, or egw-gateway), and checks
//! with real packets which source address each pod's traffic leaves with.
//!
//! Start with [`Lab::up`]; everything it creates is removed when the [`Lab`] is dropped, and
//! [`remove_namespaces_with_prefix`] / [`remove_stale_labs`] clean up after killed runs.
#![forbid(unsafe_code)]

pub mod bench;
pub mod cmd;
pub mod controller;
pub mod demo;
pub mod error;
pub mod gateway;
pub mod http;
pub mod icmp;
pub mod mirror;
pub mod pattern;
pub mod probe;
pub mod topology;

pub use error::{LabError, Result};
pub use gateway::{find_gateway_binary, EgwGatewayConfig, Gateway, RouteTable};
pub use topology::{
    install_signal_teardown, list_namespaces, mirror_tcp, mirror_udp, namespaces_with_prefix,
    remove_namespaces_with_prefix, remove_stale_labs, require_root, Arms, IcmpObservation, Lab,
    LabConfig, PodSpec, PoolSpec, ScopedChild, TcpHold, LAB_PREFIX_ROOT,
};
