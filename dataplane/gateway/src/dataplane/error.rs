//! Why the dataplane could not start.

use crate::netlink::NetlinkError;

/// Starting the dataplane failed; each variant names the step (and worker) that failed.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("interface `{0}` not found")]
    UnknownInterface(String),
    #[error("reading route table file {path}: {message}")]
    RouteTableFile { path: String, message: String },
    #[error("route table file {path}: {message}")]
    InvalidRouteTable { path: String, message: String },
    #[error("XDP steering program")]
    Loader(#[from] egw_xdp::LoaderError),
    #[error("worker {worker}: opening the AF_XDP sockets of queue {worker}")]
    Sockets {
        worker: u16,
        #[source]
        source: egw_xdp::xsk::XskError,
    },
    #[error("worker {worker}: {message}")]
    Worker { worker: u16, message: String },
    #[error("starting the NAT event log")]
    NatLog(#[from] egw_natlog::NatLogError),
}
