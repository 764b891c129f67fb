//! A real `egw.v1.Gateway` tonic server for tests: it keeps a route table with the gateway's
//! generation rules, validates tables by compiling them with the engine, and records every call.
//! It listens on a Unix socket in a temporary directory and can be restarted (new epoch, no
//! table), as a gateway process would be.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use egw_policy::{CompiledRouteTable, RouteTableSpec};
use egw_proto::v1;
use egw_proto::v1::gateway_server::{Gateway, GatewayServer};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

/// Wire → engine with the conversion the gateway itself uses.
pub fn spec_from_wire(table: &v1::RouteTable) -> Result<RouteTableSpec, String> {
    egw_proto::spec::spec_from_wire(table).map_err(|error| error.to_string())
}

/// Compiles a wire table with the engine.
pub fn compile_wire(table: &v1::RouteTable) -> CompiledRouteTable {
    CompiledRouteTable::compile(spec_from_wire(table).unwrap()).unwrap()
}

/// What a lookup decided, with pool addresses spelled out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Snat(Vec<Ipv4Addr>),
    Bypass,
    Deny(String),
}

pub fn verdict(table: &CompiledRouteTable, source: Ipv4Addr, destination: Ipv4Addr) -> Verdict {
    match table.lookup(source, destination) {
        egw_policy::Decision::Snat(pool) => Verdict::Snat(table.pool(pool).addresses().to_vec()),
        egw_policy::Decision::Bypass => Verdict::Bypass,
        egw_policy::Decision::Deny(reason) => Verdict::Deny(table.deny_reason(reason).to_owned()),
    }
}

/// A recorded call.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Get,
    Apply(v1::RouteTable),
}

#[derive(Debug, Default)]
struct GatewayState {
    epoch: u64,
    table: Option<v1::RouteTable>,
    calls: Vec<Call>,
    /// While set, ApplyRouteTable fails with this code.
    refuse: Option<tonic::Code>,
}

#[derive(Clone)]
struct RecordingService {
    state: Arc<Mutex<GatewayState>>,
}

type Stats = tokio_stream::Empty<Result<v1::StatsSnapshot, Status>>;

#[tonic::async_trait]
impl Gateway for RecordingService {
    async fn apply_route_table(
        &self,
        request: Request<v1::RouteTable>,
    ) -> Result<Response<v1::ApplyRouteTableResponse>, Status> {
        let table = request.into_inner();
        let mut state = self.state.lock().unwrap();
        state.calls.push(Call::Apply(table.clone()));
        if let Some(code) = state.refuse {
            return Err(Status::new(code, "refused by test"));
        }
        let current = state.table.as_ref().map_or(0, |table| table.generation);
        if table.generation < current {
            return Err(Status::failed_precondition("generation is older"));
        }
        if table.generation == current {
            if state.table.as_ref() == Some(&table) {
                return Ok(Response::new(v1::ApplyRouteTableResponse {
                    generation: current,
                    unchanged: true,
                }));
            }
            return Err(Status::failed_precondition(
                "same generation, different content",
            ));
        }
        let spec = spec_from_wire(&table).map_err(Status::invalid_argument)?;
        CompiledRouteTable::compile(spec)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let generation = table.generation;
        state.table = Some(table);
        Ok(Response::new(v1::ApplyRouteTableResponse {
            generation,
            unchanged: false,
        }))
    }

    async fn get_route_table(
        &self,
        _request: Request<v1::GetRouteTableRequest>,
    ) -> Result<Response<v1::GetRouteTableResponse>, Status> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(Call::Get);
        Ok(Response::new(v1::GetRouteTableResponse {
            table: state.table.clone(),
            generation: state.table.as_ref().map_or(0, |table| table.generation),
            epoch: state.epoch,
        }))
    }

    async fn get_status(
        &self,
        _request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::GetStatusResponse>, Status> {
        Err(Status::unimplemented("not part of the test gateway"))
    }

    async fn list_flows(
        &self,
        _request: Request<v1::ListFlowsRequest>,
    ) -> Result<Response<v1::ListFlowsResponse>, Status> {
        Err(Status::unimplemented("not part of the test gateway"))
    }

    type WatchStatsStream = Stats;

    async fn watch_stats(
        &self,
        _request: Request<v1::WatchStatsRequest>,
    ) -> Result<Response<Stats>, Status> {
        Err(Status::unimplemented("not part of the test gateway"))
    }

    async fn drain(
        &self,
        _request: Request<v1::DrainRequest>,
    ) -> Result<Response<v1::DrainResponse>, Status> {
        Err(Status::unimplemented("not part of the test gateway"))
    }
}

/// A running test gateway.
pub struct TestGateway {
    socket: PathBuf,
    /// Set for a TCP gateway with mutual TLS: where it listens and its TLS settings.
    tcp: Option<(std::net::SocketAddr, tonic::transport::ServerTlsConfig)>,
    state: Arc<Mutex<GatewayState>>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl TestGateway {
    /// Starts a gateway with `epoch` and no table on `socket`.
    pub async fn start(socket: &Path, epoch: u64) -> TestGateway {
        let state = Arc::new(Mutex::new(GatewayState {
            epoch,
            ..GatewayState::default()
        }));
        let mut gateway = TestGateway {
            socket: socket.to_owned(),
            tcp: None,
            state,
            stop: None,
            server: None,
        };
        gateway.listen().await;
        gateway
    }

    /// Starts a gateway on 127.0.0.1 (an ephemeral port) that requires mutual TLS.
    pub async fn start_tls(tls: tonic::transport::ServerTlsConfig, epoch: u64) -> TestGateway {
        let state = Arc::new(Mutex::new(GatewayState {
            epoch,
            ..GatewayState::default()
        }));
        let mut gateway = TestGateway {
            socket: PathBuf::new(),
            tcp: Some(("127.0.0.1:0".parse().unwrap(), tls)),
            state,
            stop: None,
            server: None,
        };
        gateway.listen().await;
        gateway
    }

    /// `https://` endpoint of a TLS gateway.
    pub fn https_endpoint(&self) -> String {
        let (address, _) = self.tcp.as_ref().unwrap();
        format!("https://{address}")
    }

    async fn listen(&mut self) {
        let (stop, stopped) = oneshot::channel::<()>();
        let service = GatewayServer::new(RecordingService {
            state: Arc::clone(&self.state),
        });
        if let Some((address, tls)) = &mut self.tcp {
            let listener = tokio::net::TcpListener::bind(*address).await.unwrap();
            *address = listener.local_addr().unwrap();
            let tls = tls.clone();
            let server = tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .tls_config(tls)
                    .unwrap()
                    .add_service(service)
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        async {
                            let _ = stopped.await;
                        },
                    )
                    .await
                    .unwrap();
            });
            self.stop = Some(stop);
            self.server = Some(server);
            return;
        }
        let _ = std::fs::remove_file(&self.socket);
        let listener = tokio::net::UnixListener::bind(&self.socket).unwrap();
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .unwrap();
        });
        self.stop = Some(stop);
        self.server = Some(server);
    }

    /// `unix://` endpoint of the socket.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Stops serving (connections close, the socket is removed).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// A new gateway process: new epoch, no table, fresh call log.
    pub async fn restart(&mut self, epoch: u64) {
        self.stop().await;
        {
            let mut state = self.state.lock().unwrap();
            *state = GatewayState {
                epoch,
                ..GatewayState::default()
            };
        }
        self.listen().await;
    }

    /// Makes the gateway hold `table` as if loaded from its configuration at startup.
    pub fn preload(&self, table: v1::RouteTable) {
        self.state.lock().unwrap().table = Some(table);
    }

    pub fn refuse_applies(&self, code: Option<tonic::Code>) {
        self.state.lock().unwrap().refuse = code;
    }

    pub fn table(&self) -> Option<v1::RouteTable> {
        self.state.lock().unwrap().table.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn applies(&self) -> Vec<v1::RouteTable> {
        self.calls()
            .into_iter()
            .filter_map(|call| match call {
                Call::Apply(table) => Some(table),
                Call::Get => None,
            })
            .collect()
    }

    /// Waits (bounded) until the served table satisfies `condition`; returns it.
    pub async fn wait_for_table(
        &self,
        what: &str,
        condition: impl Fn(&v1::RouteTable) -> bool,
    ) -> v1::RouteTable {
        wait_until(what, || self.table().filter(|table| condition(table))).await
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Polls `probe` every 20 ms for up to 20 s; panics naming `what` when it never succeeds.
pub async fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    for _ in 0..1000 {
        if let Some(value) = probe() {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}
