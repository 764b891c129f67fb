//! The lab topology: what it is made of ([`config`]), how it is built ([`build`]), how it is
//! removed ([`cleanup`], and [`signals`] when the process is told to stop).
//!
//! ```text
//!  [prefix]pod-a (eth0 10.244.1.10/16) ─┐
//!  [prefix]pod-b (eth0 10.244.1.11/16) ─┤ [prefix]switch: br0
//!                                       └─ gw-in 10.244.0.1/16  [prefix]gw  gw-out 203.0.113.1/24
//!                                                                          + 198.51.100.x/32 (SNAT)
//!                                                  [prefix]inet: eth0 203.0.113.254/24, mirror 203.0.113.10
//!                                                                route 198.51.100.0/24 via 203.0.113.1
//! ```

pub mod build;
pub mod cleanup;
pub mod config;
pub mod signals;

pub use cleanup::{
    list_namespaces, namespaces_with_prefix, remove_namespaces_with_prefix, remove_stale_labs,
    require_root,
};
pub use config::*;
pub use signals::{install_signal_teardown, teardown_active_labs};
