//! The contract between the control server and the dataplane: the [`ControlBackend`] trait the
//! gateway implements, its errors, and the flow-listing query and page types.

use std::net::Ipv4Addr;

use egw_proto::v1;
use ipnet::Ipv4Net;

/// What the gateway's dataplane provides to the control server.
///
/// All methods are synchronous and are called from the async runtime
/// ([`ControlBackend::apply_route_table`] and [`ControlBackend::list_flows`]
/// from a blocking-pool thread), so they must not block for long. They may be
/// called concurrently from several connections.
///
/// Panics in a method are caught and reported to the caller as `INTERNAL`,
/// but a backend should return errors instead.
pub trait ControlBackend: Send + Sync + 'static {
    /// Validates `table` and, if valid, makes it the served table atomically:
    /// every packet sees either the old or the new table, never a mix.
    ///
    /// The server calls this only for a table whose generation is newer than
    /// the current one (or for the first table), and serialises calls. On
    /// error the previous table must keep serving, unchanged.
    ///
    /// Return [`BackendError::InvalidTable`] with a message naming the bad
    /// element (e.g. `policies[via-a].rules[2]: unknown pool "pool-z"`); it is
    /// shown verbatim to the operator.
    fn apply_route_table(&self, table: v1::RouteTable) -> Result<(), BackendError>;

    /// The table the backend was already serving when the control server
    /// started (e.g. loaded from the gateway configuration), if any. Called once
    /// when the server is created; it seeds the current generation.
    fn initial_route_table(&self) -> Option<v1::RouteTable> {
        None
    }

    /// A random number chosen once at process start (see [`new_epoch`]) and
    /// never changed afterwards; lets a controller detect gateway restarts.
    fn epoch(&self) -> u64;

    /// A point-in-time status. The server overwrites `epoch` with
    /// [`ControlBackend::epoch`] and `generation` with the generation it serves.
    fn status(&self) -> v1::GetStatusResponse;

    /// Returns up to `query.limit` flows matching `query`, starting at
    /// `query.start` (the beginning when `None`).
    ///
    /// Set [`FlowPage::next`] to where the next page starts, or `None` when
    /// the listing is complete. Cursors must be resumable: a cursor handed out
    /// earlier may come back on a later call, after flows were created or
    /// expired in the meantime. Flows that exist for the whole listing must be
    /// returned exactly once; flows created or expired during it may or may
    /// not appear. [`FlowQuery::matches`] implements the filter semantics for
    /// backends that filter wire-form flows.
    fn list_flows(&self, query: &FlowQuery) -> FlowPage;

    /// Starts (`undrain == false`) or stops draining `external_ip`.
    ///
    /// Return [`BackendError::UnknownExternalIp`] when the address belongs to
    /// no pool of the served table.
    fn drain(
        &self,
        external_ip: Ipv4Addr,
        undrain: bool,
    ) -> Result<v1::DrainResponse, BackendError>;

    /// Current counters, per core and summed, with the time they were read.
    fn stats_snapshot(&self) -> v1::StatsSnapshot;
}

/// Errors a [`ControlBackend`] reports to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The route table is invalid; `message` names the offending element.
    /// Reported as `INVALID_ARGUMENT`.
    #[error("invalid route table: {message}")]
    InvalidTable {
        /// What is wrong, and where.
        message: String,
    },
    /// The address is no external IP of the served table. Reported as `NOT_FOUND`.
    #[error("{ip} is not an external IP of any pool")]
    UnknownExternalIp {
        /// The address asked about.
        ip: Ipv4Addr,
    },
    /// The dataplane cannot serve the request right now. Reported as `UNAVAILABLE`.
    #[error("dataplane unavailable: {message}")]
    Unavailable {
        /// Why.
        message: String,
    },
}

/// Where a flow listing resumes. Its meaning belongs to the backend (e.g.
/// `shard` = core and `position` = conntrack slot); the server only encodes it
/// into an opaque page token and hands it back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowCursor {
    /// Backend-defined partition (e.g. the core index).
    pub shard: u32,
    /// Backend-defined position inside the partition.
    pub position: u64,
}

/// A flow listing request, already validated. Filters combine with AND;
/// `None` matches everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowQuery {
    /// Only flows from this pod address.
    pub pod_ip: Option<Ipv4Addr>,
    /// Only flows translated to this external address.
    pub external_ip: Option<Ipv4Addr>,
    /// Only flows using this external port (ICMP identifier for ICMP).
    pub external_port: Option<u16>,
    /// Only flows whose remote address lies in this prefix.
    pub destination: Option<Ipv4Net>,
    /// Only flows of this protocol.
    pub protocol: Option<v1::Protocol>,
    /// Only flows in this state.
    pub state: Option<v1::FlowState>,
    /// Resume here; `None` starts at the beginning.
    pub start: Option<FlowCursor>,
    /// The most flows to return (1..=[`MAX_PAGE_SIZE`](super::MAX_PAGE_SIZE)).
    pub limit: usize,
}

impl FlowQuery {
    /// A query matching every flow, from the beginning, with `limit`.
    pub fn all(limit: usize) -> Self {
        FlowQuery {
            pod_ip: None,
            external_ip: None,
            external_port: None,
            destination: None,
            protocol: None,
            state: None,
            start: None,
            limit,
        }
    }

    /// Whether a wire-form flow passes the filters (cursor and limit ignored).
    /// A flow whose address fields do not parse matches no address filter.
    pub fn matches(&self, flow: &v1::Flow) -> bool {
        fn ip_is(text: &str, wanted: Option<Ipv4Addr>) -> bool {
            wanted.is_none_or(|wanted| text.parse::<Ipv4Addr>() == Ok(wanted))
        }
        ip_is(&flow.pod_ip, self.pod_ip)
            && ip_is(&flow.external_ip, self.external_ip)
            && self
                .external_port
                .is_none_or(|port| flow.external_port == u32::from(port))
            && self.destination.is_none_or(|prefix| {
                flow.remote_ip
                    .parse::<Ipv4Addr>()
                    .is_ok_and(|remote| prefix.contains(&remote))
            })
            && self
                .protocol
                .is_none_or(|protocol| flow.protocol == protocol as i32)
            && self.state.is_none_or(|state| flow.state == state as i32)
    }
}

/// One page of a flow listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowPage {
    /// At most [`FlowQuery::limit`] flows.
    pub flows: Vec<v1::Flow>,
    /// Where the next page starts; `None` when there are no more flows.
    pub next: Option<FlowCursor>,
}

/// A fresh random epoch for [`ControlBackend::epoch`], drawn from the
/// standard library's per-process random hash keys.
pub fn new_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}
