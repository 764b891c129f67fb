//! Which gateway a testbed is running, and what it needs to drive egw-gateway again.

use std::path::PathBuf;

use crate::process::ScopedChild;

/// The running gateway of a testbed.
pub(crate) enum ActiveGateway {
    /// nftables SNAT in the gateway namespace (nothing to stop).
    Kernel,
    /// egw-gateway, started with the lab's configuration.
    Egw {
        process: ScopedChild,
        binary: PathBuf,
        control_socket: PathBuf,
        route_table_file: PathBuf,
        generation: u64,
    },
}
