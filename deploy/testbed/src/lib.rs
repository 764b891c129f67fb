//! egw test bed: builds a throw-away topology of network namespaces (pods → switch → gateway →
//! internet) and runs the gateway under test in it (the Linux kernel with nftables SNAT, or
//! egw-gateway). The lab (`egw-lab`: mirror, probes, end-to-end tests, demo) and the bench
//! (`egw-bench compare`: load through each gateway) both stand on it.
//!
//! Start with [`Testbed::build`]; everything it creates is removed when the [`Testbed`] is
//! dropped, and [`remove_namespaces_with_prefix`] / [`remove_stale_labs`] clean up after killed
//! runs.

mod active;
mod control;
pub mod error;
pub mod gateway;
pub mod process;
pub mod testbed;
pub mod topology;

pub use egw_netns::cmd;
pub use error::{LabError, Result};
pub use gateway::{find_gateway_binary, EgwGatewayConfig, Gateway};
pub use process::ScopedChild;
pub use testbed::Testbed;
pub use topology::{
    install_signal_teardown, list_namespaces, mirror_tcp, mirror_udp, namespaces_with_prefix,
    remove_namespaces_with_prefix, remove_stale_labs, require_root, Arms, LabConfig, PodSpec,
    PoolSpec, LAB_PREFIX_ROOT,
};
