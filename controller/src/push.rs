//! Pushing route tables to gateway instances over `egw.v1`.
//!
//! [`GatewayPusher`] runs one task per instance. The task owns the instance's *desired* table
//! (generation 0, as the translation produced it) and converges the gateway to it:
//!
//! 1. It reads what the gateway serves with `GetRouteTable` (on start, after every change, and
//!    every [`PushOptions::poll_interval`]). Nothing is persisted: on controller start the
//!    gateway's generation is the one to continue above.
//! 2. When the served content (generation aside) equals the desired table, nothing is pushed.
//!    Otherwise the desired table is pushed with `ApplyRouteTable` at generation
//!    `max(served, highest this controller pushed) + 1`, so generations only grow.
//! 3. A failed push leaves the gateway on its last good table (the gateway keeps serving it) and
//!    is retried with exponential backoff, bounded by [`PushOptions::max_backoff`]; a new
//!    desired table retries at once. An unreachable gateway is retried every poll interval at
//!    most, so a gateway that comes back is served within one poll.
//! 4. A changed `epoch`, or a served generation lower than the last one seen, means the gateway
//!    restarted (it then serves its startup table or none): the backoff is reset and the
//!    desired table is pushed on that same poll.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egw_proto::v1;
use egw_proto::v1::gateway_client::GatewayClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Code;

use crate::endpoint::{self, ClientTls, GatewayEndpoint};
use crate::metrics::{ErrorReason, Metrics};
use crate::translate::{InstanceKey, InstanceTable};
use egw_proto::spec::spec_to_wire as table_to_wire;

/// Timing of the pushers.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// How often a gateway is polled with `GetRouteTable` (restart detection, drift repair).
    pub poll_interval: Duration,
    /// First delay after a refused push.
    pub initial_backoff: Duration,
    /// Longest delay between retries of a refused push.
    pub max_backoff: Duration,
    /// Client identity for `https://` endpoints.
    pub tls: Option<Arc<ClientTls>>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            poll_interval: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// What the controller knows about one instance, for logs, status and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceState {
    pub endpoint: String,
    /// The last call reached the gateway.
    pub reachable: bool,
    /// The gateway's process epoch, once seen.
    pub epoch: Option<u64>,
    /// The generation the gateway served when last observed.
    pub served_generation: u64,
    /// The gateway serves the desired table.
    pub in_sync: bool,
    /// Tables this controller got accepted by the instance.
    pub pushes: u64,
    /// Gateway restarts detected.
    pub restarts: u64,
    /// The last error, cleared once in sync.
    pub last_error: Option<String>,
}

struct InstanceHandle {
    endpoint: String,
    desired: watch::Sender<Arc<v1::RouteTable>>,
    state: watch::Receiver<InstanceState>,
    task: JoinHandle<()>,
}

impl Drop for InstanceHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps every gateway instance on its desired table. Dropping it stops every push task.
pub struct GatewayPusher {
    options: PushOptions,
    metrics: Metrics,
    instances: BTreeMap<InstanceKey, InstanceHandle>,
}

impl std::fmt::Debug for GatewayPusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayPusher")
            .field("instances", &self.instances.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// An instance that cannot be pushed to.
#[derive(Debug)]
pub struct EndpointProblem {
    pub instance: InstanceKey,
    pub error: endpoint::EndpointError,
}

impl GatewayPusher {
    /// Must be called inside a Tokio runtime (tasks are spawned on [`GatewayPusher::update`]).
    pub fn new(options: PushOptions, metrics: Metrics) -> GatewayPusher {
        GatewayPusher {
            options,
            metrics,
            instances: BTreeMap::new(),
        }
    }

    /// Makes `tables` the desired state: new instances get a push task, instances that left
    /// (or have no endpoint yet) lose theirs, an instance whose endpoint changed gets a new one.
    /// Returns the instances whose endpoint is unusable (they are not pushed to).
    pub fn update(
        &mut self,
        tables: &BTreeMap<InstanceKey, InstanceTable>,
    ) -> Vec<EndpointProblem> {
        let mut problems = Vec::new();
        self.instances.retain(|key, handle| {
            tables
                .get(key)
                .and_then(|table| table.endpoint.as_deref())
                .is_some_and(|endpoint| endpoint == handle.endpoint)
        });
        for (key, table) in tables {
            let Some(endpoint_text) = table.endpoint.as_deref() else {
                continue;
            };
            let mut wanted = table_to_wire(&table.spec);
            wanted.generation = 0;
            if let Some(handle) = self.instances.get(key) {
                handle.desired.send_if_modified(|current| {
                    if **current == wanted {
                        false
                    } else {
                        *current = Arc::new(wanted);
                        true
                    }
                });
                continue;
            }
            let started = GatewayEndpoint::parse(endpoint_text).and_then(|endpoint| {
                endpoint::channel(&endpoint, self.options.tls.as_ref())
                    .map(|channel| (endpoint, channel))
            });
            match started {
                Ok((endpoint, channel)) => {
                    let handle = self.spawn(key.clone(), endpoint_text, endpoint, channel, wanted);
                    self.instances.insert(key.clone(), handle);
                }
                Err(error) => {
                    self.metrics.error(ErrorReason::Endpoint);
                    problems.push(EndpointProblem {
                        instance: key.clone(),
                        error,
                    });
                }
            }
        }
        problems
    }

    /// Stops every push task (e.g. on losing leadership).
    pub fn clear(&mut self) {
        self.instances.clear();
    }

    /// The current state of every instance being pushed to.
    pub fn states(&self) -> BTreeMap<InstanceKey, InstanceState> {
        self.instances
            .iter()
            .map(|(key, handle)| (key.clone(), handle.state.borrow().clone()))
            .collect()
    }

    /// Follows one instance's state.
    pub fn subscribe(&self, instance: &InstanceKey) -> Option<watch::Receiver<InstanceState>> {
        self.instances
            .get(instance)
            .map(|handle| handle.state.clone())
    }

    fn spawn(
        &self,
        key: InstanceKey,
        endpoint_text: &str,
        endpoint: GatewayEndpoint,
        channel: Channel,
        wanted: v1::RouteTable,
    ) -> InstanceHandle {
        let (desired_tx, desired_rx) = watch::channel(Arc::new(wanted));
        let (state_tx, state_rx) = watch::channel(InstanceState {
            endpoint: endpoint.to_string(),
            ..InstanceState::default()
        });
        let worker = InstanceWorker {
            key,
            client: GatewayClient::new(channel),
            options: self.options.clone(),
            metrics: self.metrics.clone(),
            state: state_tx,
            served: None,
            highest_pushed: 0,
            backoff: self.options.initial_backoff,
            push_not_before: Instant::now(),
        };
        let task = tokio::spawn(worker.run(desired_rx));
        InstanceHandle {
            // As the tables spell it, to notice a change.
            endpoint: endpoint_text.to_owned(),
            desired: desired_tx,
            state: state_rx,
            task,
        }
    }
}

/// What the gateway was last seen serving.
#[derive(Debug, Clone)]
struct Served {
    epoch: u64,
    generation: u64,
    /// Content with generation 0; `None` when the gateway serves no table.
    content: Option<v1::RouteTable>,
}

enum Outcome {
    InSync,
    Pushed,
    /// A refused push waits for its backoff.
    Waiting,
    Unreachable,
    Refused,
}

struct InstanceWorker {
    key: InstanceKey,
    client: GatewayClient<Channel>,
    options: PushOptions,
    metrics: Metrics,
    state: watch::Sender<InstanceState>,
    served: Option<Served>,
    highest_pushed: u64,
    backoff: Duration,
    push_not_before: Instant,
}

fn without_generation(table: &v1::RouteTable) -> v1::RouteTable {
    v1::RouteTable {
        generation: 0,
        ..table.clone()
    }
}

fn is_unreachable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
    )
}

impl InstanceWorker {
    async fn run(mut self, mut desired: watch::Receiver<Arc<v1::RouteTable>>) {
        loop {
            let wanted = Arc::clone(&desired.borrow_and_update());
            let wait = match self.sync_once(&wanted).await {
                Outcome::InSync | Outcome::Pushed => self.options.poll_interval,
                Outcome::Unreachable => {
                    let wait = self.backoff.min(self.options.poll_interval);
                    self.grow_backoff();
                    wait
                }
                Outcome::Refused => {
                    self.push_not_before = Instant::now() + self.backoff;
                    let wait = self.backoff.min(self.options.poll_interval);
                    self.grow_backoff();
                    wait
                }
                Outcome::Waiting => self
                    .push_not_before
                    .saturating_duration_since(Instant::now())
                    .min(self.options.poll_interval),
            };
            tokio::select! {
                changed = desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // A new table deserves a prompt attempt whatever failed before.
                    self.reset_backoff();
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn grow_backoff(&mut self) {
        self.backoff = (self.backoff * 2).min(self.options.max_backoff);
    }

    fn reset_backoff(&mut self) {
        self.backoff = self.options.initial_backoff;
        self.push_not_before = Instant::now();
    }

    fn fail(&mut self, reachable: bool, reason: ErrorReason, message: String) {
        self.metrics.error(reason);
        // Logged when it changes, not on every retry of an unreachable gateway.
        if self.state.borrow().last_error.as_deref() != Some(message.as_str()) {
            tracing::warn!(instance = %self.key, error = %message, "gateway push");
        }
        self.state.send_modify(|state| {
            state.reachable = reachable;
            state.in_sync = false;
            state.last_error = Some(message);
        });
    }

    async fn sync_once(&mut self, wanted: &v1::RouteTable) -> Outcome {
        let observed = match self
            .client
            .get_route_table(v1::GetRouteTableRequest {})
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let unreachable = is_unreachable(&status);
                let reason = if unreachable {
                    ErrorReason::GatewayUnreachable
                } else {
                    ErrorReason::PushRefused
                };
                self.fail(
                    !unreachable,
                    reason,
                    format!("GetRouteTable: {}", status_text(&status)),
                );
                return if unreachable {
                    Outcome::Unreachable
                } else {
                    Outcome::Refused
                };
            }
        };
        self.observe(&observed);
        let served_content = self
            .served
            .as_ref()
            .and_then(|served| served.content.as_ref());
        if served_content == Some(wanted) {
            self.reset_backoff();
            self.state.send_modify(|state| {
                state.reachable = true;
                state.in_sync = true;
                state.last_error = None;
            });
            return Outcome::InSync;
        }
        if Instant::now() < self.push_not_before {
            return Outcome::Waiting;
        }
        self.push(wanted, observed.generation, observed.epoch).await
    }

    /// Records what the gateway serves and notices restarts.
    fn observe(&mut self, observed: &v1::GetRouteTableResponse) {
        let restarted = self.served.as_ref().is_some_and(|served| {
            served.epoch != observed.epoch || observed.generation < served.generation
        });
        if restarted {
            tracing::warn!(
                instance = %self.key,
                epoch = observed.epoch,
                generation = observed.generation,
                "gateway restarted; pushing its table again"
            );
            self.metrics.gateway_restarted();
            self.reset_backoff();
        }
        let unchanged = self.served.as_ref().is_some_and(|served| {
            served.epoch == observed.epoch && served.generation == observed.generation
        });
        if !unchanged {
            // Same epoch and generation imply same content (the gateway refuses a different
            // table at its current generation), so the content is only compared on change.
            self.served = Some(Served {
                epoch: observed.epoch,
                generation: observed.generation,
                content: observed.table.as_ref().map(without_generation),
            });
        }
        self.state.send_modify(|state| {
            state.reachable = true;
            state.epoch = Some(observed.epoch);
            state.served_generation = observed.generation;
            if restarted {
                state.restarts += 1;
            }
        });
    }

    async fn push(
        &mut self,
        wanted: &v1::RouteTable,
        served_generation: u64,
        epoch: u64,
    ) -> Outcome {
        let generation = served_generation.max(self.highest_pushed) + 1;
        let table = v1::RouteTable {
            generation,
            ..wanted.clone()
        };
        let started = Instant::now();
        let result = self.client.apply_route_table(table).await;
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(response) => {
                let accepted = response.into_inner().generation;
                self.metrics.pushed(seconds);
                self.highest_pushed = generation;
                self.served = Some(Served {
                    epoch,
                    generation: accepted,
                    content: Some(wanted.clone()),
                });
                tracing::info!(instance = %self.key, generation = accepted, "route table pushed");
                self.reset_backoff();
                self.state.send_modify(|state| {
                    state.reachable = true;
                    state.in_sync = true;
                    state.served_generation = accepted;
                    state.pushes += 1;
                    state.last_error = None;
                });
                Outcome::Pushed
            }
            Err(status) => {
                self.metrics.push_failed(seconds);
                // The table is pushed at a generation no one used yet next time.
                self.highest_pushed = generation;
                let unreachable = is_unreachable(&status);
                let reason = if unreachable {
                    ErrorReason::GatewayUnreachable
                } else {
                    ErrorReason::PushRefused
                };
                self.fail(
                    !unreachable,
                    reason,
                    format!(
                        "ApplyRouteTable generation {generation}: {}",
                        status_text(&status)
                    ),
                );
                if unreachable {
                    Outcome::Unreachable
                } else {
                    Outcome::Refused
                }
            }
        }
    }
}

fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
