//! egw-gateway: the AF_XDP egress NAT gateway daemon.
//!
//! - [`config`]: the YAML configuration and its command-line overrides.
//! - [`nexthop`] and [`netlink`]: next-hop MAC resolution from the kernel's routes and neighbours.
//! - [`dataplane`]: the pinned AF_XDP workers, each running an [`egw_engine::Engine`].
//! - [`backend`]: the [`control::ControlBackend`] over the dataplane.
//! - [`control`]: the `egw.v1` gRPC server.
//! - [`metrics`]: `/metrics` (OpenMetrics) and `/healthz` over HTTP; the series are listed there.
//!
//! # Running
//!
//! `egw-gateway --config gateway.yaml` (see [`config`] for the fields; flags override some), as
//! root or with `CAP_BPF`, `CAP_NET_ADMIN` and `CAP_NET_RAW`, in the
//! network namespace of its interfaces. It attaches the XDP steering program (native mode, else
//! generic), opens one AF_XDP socket per interface and worker on queues `0..workers`, and serves
//! `egw.v1.Gateway` on the control socket. SIGHUP re-reads `route_table_file` and applies it through
//! the control socket ([`reload`]). SIGTERM or SIGINT stops it cleanly and detaches XDP;
//! any startup failure exits with status 1 and one readable line on stderr.
//!
//! With `metrics.listen` (or `--metrics-listen`) it serves `/metrics` and `/healthz` ([`metrics`]).
//! With `nat_log.dir` every worker records each mapping it creates and removes in the NAT event
//! log ([`egw_natlog`]); at shutdown the flows still open are logged as `delete` with reason
//! `shutdown` and the log is flushed before the process exits.
//!
//! Peers on veth links must send complete checksums (`ethtool -K DEV tx off`): AF_XDP sees frames
//! before the kernel would finish a partial checksum, and the gateway does not.
//!
//! # Counters
//!
//! `GetStatus` reports per core the engine's counters and drops by reason
//! ([`egw_engine::DropReason::name`]) plus the gateway's own drops
//! ([`dataplane::GatewayCounters::drops`]): `neighbour_unresolved` (the next hop's MAC was not
//! known yet; the kernel was asked to resolve it), `no_route` (no kernel route through the egress
//! interface), `handoff_ring_full`, `no_frame`, `tx_ring_full` and `frame_too_large`.
#![forbid(unsafe_code)]

pub mod backend;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod metrics;
pub mod netlink;
pub mod nexthop;
pub mod reload;
