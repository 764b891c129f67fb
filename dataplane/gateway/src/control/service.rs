//! The `egw.v1.Gateway` service over a [`ControlBackend`].

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use egw_proto::v1;
use egw_proto::v1::gateway_server::Gateway;
use tokio::sync::watch;
use tokio_stream::wrappers::{IntervalStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::api::{BackendError, ControlBackend};
use super::auth::{require, Role};
use super::paging::{encode_token, query_from_request};

/// WatchStats interval bounds and default, in milliseconds.
const MIN_WATCH_INTERVAL_MS: u64 = 100;
const MAX_WATCH_INTERVAL_MS: u64 = 60_000;
const DEFAULT_WATCH_INTERVAL_MS: u64 = 1_000;

/// The route table being served, owned by the server so generation rules do
/// not depend on each backend getting them right.
#[derive(Debug, Default)]
struct Tables {
    /// The served table; locked only briefly, so readers never wait for an apply.
    current: Mutex<Option<Arc<v1::RouteTable>>>,
    /// Held across a whole apply (check, backend call, swap) to serialise them.
    apply_serial: Mutex<()>,
}

impl Tables {
    fn current(&self) -> Option<Arc<v1::RouteTable>> {
        lock(&self.current).clone()
    }

    fn generation(&self) -> u64 {
        self.current().map_or(0, |table| table.generation)
    }
}

pub(crate) struct GatewayService<B> {
    backend: Arc<B>,
    tables: Arc<Tables>,
    /// Becomes true when the server shuts down; ends WatchStats streams, which
    /// would otherwise hold graceful shutdown open forever.
    stopping: watch::Receiver<bool>,
}

impl<B> Clone for GatewayService<B> {
    fn clone(&self) -> Self {
        GatewayService {
            backend: Arc::clone(&self.backend),
            tables: Arc::clone(&self.tables),
            stopping: self.stopping.clone(),
        }
    }
}

/// A poisoned lock only means a backend call panicked while holding it; the
/// guarded values are replaced whole, so they are still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn backend_status(error: BackendError) -> Status {
    match error {
        BackendError::InvalidTable { message } => {
            Status::invalid_argument(format!("invalid route table: {message}"))
        }
        error @ BackendError::UnknownExternalIp { .. } => Status::not_found(error.to_string()),
        error @ BackendError::Unavailable { .. } => Status::unavailable(error.to_string()),
    }
}

fn join_error(error: tokio::task::JoinError) -> Status {
    Status::internal(format!("gateway backend failed: {error}"))
}

impl<B: ControlBackend> GatewayService<B> {
    pub(crate) fn new(backend: Arc<B>, stopping: watch::Receiver<bool>) -> Self {
        let tables = Tables {
            current: Mutex::new(backend.initial_route_table().map(Arc::new)),
            apply_serial: Mutex::new(()),
        };
        GatewayService {
            backend,
            tables: Arc::new(tables),
            stopping,
        }
    }

    fn apply(
        backend: &B,
        tables: &Tables,
        table: v1::RouteTable,
    ) -> Result<v1::ApplyRouteTableResponse, Status> {
        let _serial = lock(&tables.apply_serial);
        if let Some(current) = tables.current() {
            let current_generation = current.generation;
            if table.generation < current_generation {
                return Err(Status::failed_precondition(format!(
                    "generation {} is older than the current generation {current_generation}",
                    table.generation
                )));
            }
            if table.generation == current_generation {
                return if *current == table {
                    Ok(v1::ApplyRouteTableResponse {
                        generation: current_generation,
                        unchanged: true,
                    })
                } else {
                    Err(Status::failed_precondition(format!(
                        "generation {current_generation} is already applied with different content; \
                         use a generation greater than {current_generation}"
                    )))
                };
            }
        }
        let table = Arc::new(table);
        backend
            .apply_route_table(v1::RouteTable::clone(&table))
            .map_err(backend_status)?;
        let generation = table.generation;
        *lock(&tables.current) = Some(table);
        Ok(v1::ApplyRouteTableResponse {
            generation,
            unchanged: false,
        })
    }
}

enum WatchEvent {
    Tick,
    Stop,
}

type StatsStream = Pin<Box<dyn Stream<Item = Result<v1::StatsSnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl<B: ControlBackend> Gateway for GatewayService<B> {
    async fn apply_route_table(
        &self,
        request: Request<v1::RouteTable>,
    ) -> Result<Response<v1::ApplyRouteTableResponse>, Status> {
        require(&request, Role::Admin)?;
        let table = request.into_inner();
        let backend = Arc::clone(&self.backend);
        let tables = Arc::clone(&self.tables);
        let reply = tokio::task::spawn_blocking(move || Self::apply(&backend, &tables, table))
            .await
            .map_err(join_error)??;
        tracing::info!(
            generation = reply.generation,
            unchanged = reply.unchanged,
            "route table applied"
        );
        Ok(Response::new(reply))
    }

    async fn get_route_table(
        &self,
        request: Request<v1::GetRouteTableRequest>,
    ) -> Result<Response<v1::GetRouteTableResponse>, Status> {
        require(&request, Role::Reader)?;
        let current = self.tables.current();
        Ok(Response::new(v1::GetRouteTableResponse {
            generation: current.as_ref().map_or(0, |table| table.generation),
            table: current.map(|table| v1::RouteTable::clone(&table)),
            epoch: self.backend.epoch(),
        }))
    }

    async fn get_status(
        &self,
        request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::GetStatusResponse>, Status> {
        require(&request, Role::Reader)?;
        let mut status = self.backend.status();
        status.epoch = self.backend.epoch();
        status.generation = self.tables.generation();
        Ok(Response::new(status))
    }

    async fn list_flows(
        &self,
        request: Request<v1::ListFlowsRequest>,
    ) -> Result<Response<v1::ListFlowsResponse>, Status> {
        require(&request, Role::Reader)?;
        let epoch = self.backend.epoch();
        let query = query_from_request(request.get_ref(), epoch)?;
        let backend = Arc::clone(&self.backend);
        let (query, page) = tokio::task::spawn_blocking(move || {
            let page = backend.list_flows(&query);
            (query, page)
        })
        .await
        .map_err(join_error)?;
        if page.flows.len() > query.limit {
            return Err(Status::internal(format!(
                "gateway backend returned {} flows for a page of {}",
                page.flows.len(),
                query.limit
            )));
        }
        let next_page_token = page
            .next
            .map(|cursor| encode_token(&query, cursor, epoch))
            .unwrap_or_default();
        Ok(Response::new(v1::ListFlowsResponse {
            flows: page.flows,
            next_page_token,
        }))
    }

    type WatchStatsStream = StatsStream;

    async fn watch_stats(
        &self,
        request: Request<v1::WatchStatsRequest>,
    ) -> Result<Response<Self::WatchStatsStream>, Status> {
        require(&request, Role::Reader)?;
        let interval_ms = match u64::from(request.get_ref().interval_ms) {
            0 => DEFAULT_WATCH_INTERVAL_MS,
            requested => requested.clamp(MIN_WATCH_INTERVAL_MS, MAX_WATCH_INTERVAL_MS),
        };
        let mut ticks = tokio::time::interval(Duration::from_millis(interval_ms));
        // A slow client should get fewer snapshots, not a burst of stale ones.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let backend = Arc::clone(&self.backend);
        // No spawned task: the stream lives in the response body and is
        // dropped (with its backend reference) as soon as the client goes away.
        let ticks = IntervalStream::new(ticks).map(|_| WatchEvent::Tick);
        let stop = WatchStream::new(self.stopping.clone())
            .filter(|stopping| *stopping)
            .map(|_| WatchEvent::Stop);
        let snapshots = ticks.merge(stop).map_while(move |event| match event {
            WatchEvent::Tick => Some(Ok(backend.stats_snapshot())),
            WatchEvent::Stop => None,
        });
        Ok(Response::new(Box::pin(snapshots)))
    }

    async fn drain(
        &self,
        request: Request<v1::DrainRequest>,
    ) -> Result<Response<v1::DrainResponse>, Status> {
        require(&request, Role::Admin)?;
        let request = request.into_inner();
        let ip = request.external_ip.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "external_ip: {:?} is not an IPv4 address",
                request.external_ip
            ))
        })?;
        let reply = self
            .backend
            .drain(ip, request.undrain)
            .map_err(backend_status)?;
        tracing::info!(%ip, draining = reply.draining, "drain state changed");
        Ok(Response::new(reply))
    }
}
