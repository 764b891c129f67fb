//! egw lab: on the test bed (egw-testbed: a throw-away topology of network namespaces, pods →
//! switch → gateway → internet, with the kernel or egw-gateway as the gateway), runs a mirror
//! server and probes that check with real packets which source address each pod's traffic
//! leaves with; plus the demo, the iperf3 quick bench and the controller-driven lab.
//!
//! Start with [`Lab::up`]; everything it creates is removed when the [`Lab`] is dropped, and
//! [`remove_namespaces_with_prefix`] / [`remove_stale_labs`] clean up after killed runs.
//! The test bed's modules are re-exported here (`egw_lab::topology`, `egw_lab::gateway`, ...),
//! as the lab's tests and binary use them alongside the lab's own.
#![forbid(unsafe_code)]

pub mod bench;
pub mod controller;
pub mod demo;
pub mod hold;
pub mod http;
pub mod icmp;
pub mod lab;
mod lab_controller;
pub mod mirror;
pub mod observe;
pub mod pattern;
pub mod probe;

pub use egw_testbed::{cmd, error, gateway, process, topology};
pub use egw_testbed::{
    find_gateway_binary, install_signal_teardown, list_namespaces, mirror_tcp, mirror_udp,
    namespaces_with_prefix, remove_namespaces_with_prefix, remove_stale_labs, require_root, Arms,
    EgwGatewayConfig, Gateway, LabConfig, LabError, PodSpec, PoolSpec, Result, ScopedChild,
    Testbed, LAB_PREFIX_ROOT,
};
pub use hold::TcpHold;
pub use lab::Lab;
pub use observe::IcmpObservation;
