//! egw-gateway: the AF_XDP egress NAT gateway daemon.
//!
//! - [`config`]: the YAML configuration and its command-line overrides.
//! - [`convert`]: wire route tables to the engine's and back.
//! - [`nexthop`] and [`netlink`]: next-hop MAC resolution from the kernel's routes and neighbours.
//! - [`dataplane`]: the pinned AF_XDP workers, each running an [`egw_engine::Engine`].
//! - [`backend`]: the [`control::ControlBackend`] over the dataplane.
//! - [`control`]: the `egw.v1` gRPC server.
#![forbid(unsafe_code)]

pub mod backend;
pub mod config;
pub mod control;
pub mod convert;
pub mod dataplane;
pub mod netlink;
pub mod nexthop;
