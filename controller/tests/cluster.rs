//! Cluster mode against a mocked API transport (`tower-test`): each scenario asserts the exact
//! API calls the controller makes (method, path and query, content type, body).

mod fake_aws;
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use egw_controller::aws::{AwsManager, AwsOptions};
use egw_controller::cluster::leader::{LeaderElector, LeaseOptions};
use egw_controller::cluster::{ClusterState, ReconcileReport, Reconciler, GATEWAY_FINALIZER};
use egw_controller::crd::{
    EgressGateway, EgressGatewayPolicy, EgressGatewayPolicySpec, EgressGatewaySpec, StaticInstance,
    StaticPool,
};
use egw_controller::metrics::Metrics;
use egw_controller::push::PushOptions;
use http::{Request, Response};
use k8s_openapi::api::core::v1::{Namespace, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock;

/// One request the controller sent.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    /// Path and query.
    uri: String,
    content_type: Option<String>,
    body: Value,
}

impl Call {
    fn line(&self) -> String {
        format!("{} {}", self.method, self.uri)
    }
}

type Handle = mock::Handle<Request<Body>, Response<Body>>;
/// The calls seen so far, shared with the running scenario.
type Seen = Arc<Mutex<Vec<Call>>>;

/// Answers every request with `respond(call) -> Some((status code, body))` until the client is
/// dropped; `None` leaves the request pending (a watch with no news). Returns the calls in order;
/// `seen` shows them while the scenario runs.
async fn api_server(
    mut handle: Handle,
    seen: Seen,
    respond: impl Fn(&Call) -> Option<(u16, Value)> + Send + 'static,
) -> Vec<Call> {
    let mut pending = Vec::new();
    while let Some((request, reply)) = handle.next_request().await {
        let method = request.method().to_string();
        let uri = request.uri().to_string();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|value| value.to_str().unwrap().to_owned());
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let call = Call {
            method,
            uri,
            content_type,
            body,
        };
        let answer = respond(&call);
        seen.lock().unwrap().push(call);
        match answer {
            Some((status, response)) => reply.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&response).unwrap()))
                    .unwrap(),
            ),
            None => pending.push(reply),
        }
    }
    drop(pending);
    let calls = seen.lock().unwrap().clone();
    calls
}

fn mocked(
    respond: impl Fn(&Call) -> (u16, Value) + Send + 'static,
) -> (Client, tokio::task::JoinHandle<Vec<Call>>) {
    let (client, _, server) = mocked_with_pending(move |call| Some(respond(call)));
    (client, server)
}

fn mocked_with_pending(
    respond: impl Fn(&Call) -> Option<(u16, Value)> + Send + 'static,
) -> (Client, Seen, tokio::task::JoinHandle<Vec<Call>>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(api_server(handle, Arc::clone(&seen), respond));
    (Client::new(service, "default"), seen, server)
}

async fn calls_after(server: tokio::task::JoinHandle<Vec<Call>>) -> Vec<Call> {
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the client was not dropped")
        .unwrap()
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

fn now() -> Timestamp {
    "2026-11-21T06:00:00Z".parse().unwrap()
}

fn reconciler(client: Client) -> Reconciler {
    Reconciler::new(
        client,
        "replica-a".to_owned(),
        PushOptions::default(),
        Metrics::new(),
    )
}

fn bypass_policy() -> EgressGatewayPolicy {
    let spec: EgressGatewayPolicySpec = serde_json::from_value(
        json!({"rules": [{"action": "Bypass", "description": "all direct"}]}),
    )
    .unwrap();
    let mut policy = EgressGatewayPolicy::new("direct", spec);
    policy.metadata.generation = Some(3);
    policy.metadata.resource_version = Some("41".into());
    policy.metadata.uid = Some("policy-uid".into());
    policy
}

#[tokio::test]
async fn policy_status_is_written_with_server_side_apply_once() {
    let policy = bypass_policy();
    let echo = serde_json::to_value(&policy).unwrap();
    let (client, server) = mocked(move |call| {
        let mut object = echo.clone();
        object["status"] = call.body["status"].clone();
        (200, object)
    });
    let mut reconciler = reconciler(client);
    let state = ClusterState {
        policies: vec![Arc::new(policy.clone())],
        ..ClusterState::default()
    };
    let report = reconciler.reconcile(&state, now()).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.statuses_written, 1);

    // A minute later, before the watch delivered the written status (the store is stale): the
    // status just written is not written again.
    let later = reconciler
        .reconcile(&state, "2026-11-21T06:01:00Z".parse().unwrap())
        .await;
    assert_eq!(later, Default::default());

    // The policy as the API server now holds it: reconciling again writes nothing.
    let mut written = policy;
    written.metadata.resource_version = Some("42".into());
    written.status = Some(serde_json::from_value(calls_so_far_status(&state)).unwrap());
    let state = ClusterState {
        policies: vec![Arc::new(written)],
        ..ClusterState::default()
    };
    let again = reconciler.reconcile(&state, now()).await;
    assert_eq!(again, Default::default());
    drop(reconciler);

    let calls = calls_after(server).await;
    let lines: Vec<String> = calls.iter().map(Call::line).collect();
    assert_eq!(
        lines,
        ["PATCH /apis/egw.dev/v1alpha1/egressgatewaypolicies/direct/status?&force=true&fieldManager=egw-controller"]
    );
    let call = &calls[0];
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(call.body["apiVersion"], "egw.dev/v1alpha1");
    assert_eq!(call.body["kind"], "EgressGatewayPolicy");
    let status = &call.body["status"];
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(status["pods"], 0);
    assert_eq!(status["namespaces"], 0);
    let conditions: BTreeMap<String, (String, String)> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|condition| {
            (
                condition["type"].as_str().unwrap().to_owned(),
                (
                    condition["status"].as_str().unwrap().to_owned(),
                    condition["lastTransitionTime"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(
        conditions,
        BTreeMap::from([
            (
                "Ready".to_owned(),
                ("True".to_owned(), "2026-11-21T06:00:00Z".to_owned())
            ),
            (
                "Degraded".to_owned(),
                ("False".to_owned(), "2026-11-21T06:00:00Z".to_owned())
            ),
        ])
    );
}

/// The status the controller computes for the scenario's policy (what the API server stored).
fn calls_so_far_status(state: &ClusterState) -> Value {
    let translation = egw_controller::translate::translate(&state.snapshot());
    let status = egw_controller::status::policy_status(
        &translation.policies["direct"],
        Some(3),
        None,
        &Time(now()),
    );
    serde_json::to_value(status).unwrap()
}

fn static_gateway(finalizers: &[&str], deleting: bool) -> EgressGateway {
    let spec = EgressGatewaySpec {
        static_pool: Some(StaticPool {
            instances: vec![StaticInstance {
                name: "lab-0".into(),
                // A socket nobody serves: the pusher's attempts stay off the API server.
                endpoint: "unix:///nonexistent/egw-test/lab-0.sock".into(),
                addresses: vec!["192.0.2.10".parse().unwrap()],
            }],
        }),
        ..serde_json::from_value(json!({"selector": {}, "static": {"instances": []}})).unwrap()
    };
    let mut gateway = EgressGateway::new("lab", spec);
    gateway.metadata.resource_version = Some("17".into());
    gateway.metadata.generation = Some(1);
    gateway.metadata.finalizers = (!finalizers.is_empty())
        .then(|| finalizers.iter().map(|name| (*name).to_owned()).collect());
    if deleting {
        gateway.metadata.deletion_timestamp = Some(Time(now()));
    }
    gateway
}

#[tokio::test]
async fn gateway_finalizer_is_added_then_released_on_deletion() {
    let gateway = static_gateway(&[], false);
    let echo = serde_json::to_value(&gateway).unwrap();
    let (client, server) = mocked(move |_| (200, echo.clone()));
    let mut reconciler = reconciler(client);
    let state = ClusterState {
        gateways: vec![Arc::new(gateway)],
        ..ClusterState::default()
    };
    let report = reconciler.reconcile(&state, now()).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.finalizers_changed, 1);

    // Deleted while another controller's finalizer is also present: only ours is removed, and a
    // deleting gateway gets no status write.
    let deleting = static_gateway(&["example.com/other", GATEWAY_FINALIZER], true);
    let state = ClusterState {
        gateways: vec![Arc::new(deleting)],
        ..ClusterState::default()
    };
    let report = reconciler.reconcile(&state, now()).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    drop(reconciler);

    let calls = calls_after(server).await;
    let lines: Vec<String> = calls.iter().map(Call::line).collect();
    assert_eq!(
        lines,
        [
            "PATCH /apis/egw.dev/v1alpha1/egressgateways/lab?",
            "PATCH /apis/egw.dev/v1alpha1/egressgateways/lab/status?&force=true&fieldManager=egw-controller",
            "PATCH /apis/egw.dev/v1alpha1/egressgateways/lab?",
        ]
    );
    assert_eq!(
        calls[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        calls[0].body,
        json!({"metadata": {"resourceVersion": "17", "finalizers": [GATEWAY_FINALIZER]}})
    );
    let status = &calls[1].body["status"];
    assert_eq!(status["mode"], "Static");
    assert_eq!(status["readyInstances"], 1);
    assert_eq!(status["instances"][0]["name"], "lab-0");
    assert_eq!(
        status["instances"][0]["addresses"][0]["snatIp"],
        "192.0.2.10"
    );
    assert_eq!(
        calls[2].body,
        json!({"metadata": {"resourceVersion": "17", "finalizers": ["example.com/other"]}})
    );
}

#[tokio::test]
async fn pod_denied_for_a_missing_policy_gets_one_event() {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some("partners".into()),
            annotations: Some(BTreeMap::from([(
                "egw.dev/policy".to_owned(),
                "partner-x".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("sync-0".into()),
            namespace: Some("partners".into()),
            uid: Some("pod-uid-1".into()),
            ..ObjectMeta::default()
        },
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.244.1.20".into()),
            ..PodStatus::default()
        }),
        ..Pod::default()
    };
    let (client, server) = mocked(|call| (201, call.body.clone()));
    let mut reconciler = reconciler(client);
    let state = ClusterState {
        pods: vec![Arc::new(pod)],
        namespaces: vec![Arc::new(namespace)],
        ..ClusterState::default()
    };
    let report = reconciler.reconcile(&state, now()).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.events_published, 1);
    // The same diagnostic on the next reconcile is not published again.
    let again = reconciler.reconcile(&state, now()).await;
    assert_eq!(again.events_published, 0);
    drop(reconciler);

    let calls = calls_after(server).await;
    let lines: Vec<String> = calls.iter().map(Call::line).collect();
    assert_eq!(
        lines,
        ["POST /apis/events.k8s.io/v1/namespaces/partners/events?"]
    );
    let event = &calls[0].body;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "PodDenied");
    assert_eq!(event["action"], "Translate");
    assert_eq!(event["reportingController"], "egw-controller");
    assert_eq!(event["reportingInstance"], "replica-a");
    assert_eq!(
        event["regarding"],
        json!({"apiVersion": "v1", "kind": "Pod", "name": "sync-0", "namespace": "partners", "uid": "pod-uid-1"})
    );
    let note = event["note"].as_str().unwrap();
    assert!(note.contains("partner-x"), "{note}");
}

fn lease_options() -> LeaseOptions {
    LeaseOptions::new("egw-system".into(), "replica-a".into())
}

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/egw-system/leases";

#[tokio::test]
async fn lease_is_created_when_missing() {
    let (client, server) = mocked(|call| match call.method.as_str() {
        "GET" => not_found(),
        _ => (201, call.body.clone()),
    });
    let mut elector = LeaderElector::new(client, lease_options());
    assert!(elector.try_acquire_or_renew(now()).await.unwrap());
    assert!(elector.is_leader());
    drop(elector);

    let calls = calls_after(server).await;
    let lines: Vec<String> = calls.iter().map(Call::line).collect();
    assert_eq!(
        lines,
        [
            format!("GET {LEASE_PATH}/egw-controller"),
            format!("POST {LEASE_PATH}?")
        ]
    );
    assert_eq!(
        calls[1].body,
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "egw-controller", "namespace": "egw-system"},
            "spec": {
                "holderIdentity": "replica-a",
                "leaseDurationSeconds": 15,
                "acquireTime": "2026-11-21T06:00:00.000000Z",
                "renewTime": "2026-11-21T06:00:00.000000Z",
                "leaseTransitions": 0
            }
        })
    );
}

fn lease(holder: &str, renewed: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "egw-controller", "namespace": "egw-system", "resourceVersion": "900"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-11-21T05:00:00.000000Z",
            "renewTime": renewed,
            "leaseTransitions": 4
        }
    })
}

#[tokio::test]
async fn a_fresh_lease_of_another_replica_is_left_alone_and_an_expired_one_taken_over() {
    // Renewed 5 s before `now()`: still held.
    let (client, server) = mocked(|_| (200, lease("replica-b", "2026-11-21T05:59:55.000000Z")));
    let mut elector = LeaderElector::new(client, lease_options());
    assert!(!elector.try_acquire_or_renew(now()).await.unwrap());
    assert!(!elector.is_leader());
    drop(elector);
    let lines: Vec<String> = calls_after(server).await.iter().map(Call::line).collect();
    assert_eq!(lines, [format!("GET {LEASE_PATH}/egw-controller")]);

    // Renewed 60 s before: expired, taken over with a conditional replace.
    let (client, server) = mocked(|call| match call.method.as_str() {
        "GET" => (200, lease("replica-b", "2026-11-21T05:59:00.000000Z")),
        _ => (200, call.body.clone()),
    });
    let mut elector = LeaderElector::new(client, lease_options());
    assert!(elector.try_acquire_or_renew(now()).await.unwrap());
    drop(elector);
    let calls = calls_after(server).await;
    let lines: Vec<String> = calls.iter().map(Call::line).collect();
    assert_eq!(
        lines,
        [
            format!("GET {LEASE_PATH}/egw-controller"),
            format!("PUT {LEASE_PATH}/egw-controller?"),
        ]
    );
    let replaced = &calls[1].body;
    assert_eq!(replaced["metadata"]["resourceVersion"], "900");
    assert_eq!(replaced["spec"]["holderIdentity"], "replica-a");
    assert_eq!(replaced["spec"]["leaseTransitions"], 5);
    assert_eq!(
        replaced["spec"]["acquireTime"],
        "2026-11-21T06:00:00.000000Z"
    );

    // Losing the race for it (409) leaves this replica a follower.
    let (client, server) = mocked(|call| match call.method.as_str() {
        "GET" => (200, lease("replica-b", "2026-11-21T05:59:00.000000Z")),
        _ => (
            409,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "conflict"}),
        ),
    });
    let mut elector = LeaderElector::new(client, lease_options());
    assert!(!elector.try_acquire_or_renew(now()).await.unwrap());
    assert!(!elector.is_leader());
    drop(elector);
    assert_eq!(calls_after(server).await.len(), 2);
}

/// The whole of cluster mode: lists of the four kinds, the Lease, then the leader's status write;
/// and a clean stop on shutdown.
#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario of cluster mode (list, lease, reconcile, shutdown) read top to bottom"
)]
#[tokio::test]
async fn run_lists_acquires_the_lease_then_reconciles_and_stops_on_shutdown() {
    let policy = serde_json::to_value(bypass_policy()).unwrap();
    let echo = policy.clone();
    let stored_lease: Mutex<Option<Value>> = Mutex::new(None);
    let (client, seen, server) = mocked_with_pending(move |call| {
        let path = call.uri.split('?').next().unwrap();
        if call.uri.contains("watch=true") {
            return None;
        }
        let list = |kind: &str, api_version: &str, items: Vec<Value>| {
            Some((
                200,
                json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "100"}, "items": items}),
            ))
        };
        match (call.method.as_str(), path) {
            ("GET", "/api/v1/pods") => list("PodList", "v1", vec![]),
            ("GET", "/api/v1/namespaces") => list("NamespaceList", "v1", vec![]),
            ("GET", "/apis/egw.dev/v1alpha1/egressgateways") => {
                list("EgressGatewayList", "egw.dev/v1alpha1", vec![])
            }
            ("GET", "/apis/egw.dev/v1alpha1/egressgatewaypolicies") => list(
                "EgressGatewayPolicyList",
                "egw.dev/v1alpha1",
                vec![echo.clone()],
            ),
            ("GET", _) if path.starts_with(LEASE_PATH) => {
                let lease = stored_lease.lock().unwrap().clone();
                Some(lease.map_or_else(not_found, |lease| (200, lease)))
            }
            ("POST" | "PUT", _) if path.starts_with(LEASE_PATH) => {
                let mut lease = call.body.clone();
                lease["metadata"]["resourceVersion"] = json!("7");
                *stored_lease.lock().unwrap() = Some(lease.clone());
                Some((if call.method == "POST" { 201 } else { 200 }, lease))
            }
            ("PATCH", _) => {
                let mut object = echo.clone();
                object["status"] = call.body["status"].clone();
                Some((200, object))
            }
            _ => Some((500, json!({}))),
        }
    });
    let options = egw_controller::cluster::ClusterOptions {
        push: PushOptions::default(),
        lease: LeaseOptions {
            renew_interval: Duration::from_millis(100),
            ..lease_options()
        },
        debounce: Duration::from_millis(10),
        resync_interval: Duration::from_secs(3600),
        http_address: None,
        gateway_grpc_port: 7443,
    };
    let metrics = Metrics::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(egw_controller::cluster::run(
        client,
        options,
        metrics.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let status_path =
        "/apis/egw.dev/v1alpha1/egressgatewaypolicies/direct/status?&force=true&fieldManager=egw-controller";
    for _ in 0..1000 {
        if seen
            .lock()
            .unwrap()
            .iter()
            .any(|call| call.uri == status_path)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("cluster mode stops on shutdown")
        .unwrap()
        .unwrap();
    let calls = calls_after(server).await;
    let lines: Vec<String> = calls
        .iter()
        .filter(|call| !call.uri.contains("watch=true"))
        .map(|call| format!("{} {}", call.method, call.uri.split('?').next().unwrap()))
        .collect();
    let position = |line: &str| {
        lines
            .iter()
            .position(|seen| seen == line)
            .unwrap_or_else(|| panic!("no {line} in {lines:#?}"))
    };
    let lease_created = position(&format!("POST {LEASE_PATH}"));
    let status_written =
        position("PATCH /apis/egw.dev/v1alpha1/egressgatewaypolicies/direct/status");
    for list in [
        "GET /api/v1/pods",
        "GET /api/v1/namespaces",
        "GET /apis/egw.dev/v1alpha1/egressgateways",
        "GET /apis/egw.dev/v1alpha1/egressgatewaypolicies",
    ] {
        assert!(
            position(list) < status_written,
            "{list} after the status write"
        );
    }
    assert!(position(&format!("GET {LEASE_PATH}/egw-controller")) < lease_created);
    assert!(
        lease_created < status_written,
        "status written before leading: {lines:#?}"
    );
    // Exactly one status write: the reconciles after it see no change to make.
    let writes = lines
        .iter()
        .filter(|line| line.starts_with("PATCH"))
        .count();
    assert_eq!(writes, 1, "{lines:#?}");
    assert!(metrics.render().contains("egw_controller_leader 1"));
    // On shutdown the leader gives the Lease up for the other replica.
    let release = calls.last().unwrap();
    assert_eq!(release.line(), format!("PUT {LEASE_PATH}/egw-controller?"));
    assert_eq!(release.body["spec"].get("holderIdentity"), None);
    assert_eq!(release.body["metadata"]["resourceVersion"], "7");
}

/// The leader pushes the translated tables; stepping down stops its pushers.
#[tokio::test]
async fn leader_pushes_tables_and_stops_when_stepping_down() {
    let sockets = tempfile::tempdir().unwrap();
    let gateway_server = support::TestGateway::start(&sockets.path().join("lab-0.sock"), 3).await;
    let mut gateway = static_gateway(&[GATEWAY_FINALIZER], false);
    if let Some(pool) = gateway.spec.static_pool.as_mut() {
        pool.instances[0].endpoint = gateway_server.endpoint();
    }
    let echo = serde_json::to_value(&gateway).unwrap();
    let (client, server) = mocked(move |_| (200, echo.clone()));
    let mut reconciler = reconciler(client);
    let state = ClusterState {
        gateways: vec![Arc::new(gateway)],
        ..ClusterState::default()
    };
    let report = reconciler.reconcile(&state, now()).await;
    assert_eq!(report.tables, 1);
    let table = gateway_server
        .wait_for_table("the leader's push", |_| true)
        .await;
    assert_eq!(table.generation, 1);
    assert_eq!(table.pools[0].addresses[0].snat_ip, "192.0.2.10");
    assert_eq!(reconciler.pusher().states().len(), 1);

    reconciler.step_down();
    assert!(reconciler.pusher().states().is_empty());
    drop(reconciler);
    // Only the status write reached the API server (the finalizer was already there).
    let lines: Vec<String> = calls_after(server).await.iter().map(Call::line).collect();
    assert_eq!(
        lines,
        ["PATCH /apis/egw.dev/v1alpha1/egressgateways/lab/status?&force=true&fieldManager=egw-controller"]
    );
}

// ---------------------------------------------------------------------------------------------
// AWS gateways (the address manager over an in-memory implementation of the egw-aws traits)
// ---------------------------------------------------------------------------------------------

fn aws_gateway(finalizers: &[&str], deleting: bool) -> EgressGateway {
    let spec: EgressGatewaySpec = serde_json::from_value(json!({
        "selector": {"matchLabels": {"app": "egw-gateway"}},
        "aws": {"elasticIps": {"allocate": 2}},
        // Fail over at once (draining is the manager tests' business).
        "health": {"drainSeconds": 0},
    }))
    .unwrap();
    let mut gateway = EgressGateway::new("egress", spec);
    gateway.metadata.resource_version = Some("30".into());
    gateway.metadata.generation = Some(1);
    gateway.metadata.uid = Some("gateway-uid".into());
    gateway.metadata.finalizers = (!finalizers.is_empty())
        .then(|| finalizers.iter().map(|name| (*name).to_owned()).collect());
    if deleting {
        gateway.metadata.deletion_timestamp = Some(Time(now()));
    }
    gateway
}

/// A Running gateway pod on `node-<index>`. Its IP is on loopback: the pusher never reaches
/// out of the host (and without client TLS it does not connect at all).
fn gateway_pod(name: &str, index: u8, ready: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "namespace": "egw-system",
            "labels": {"app": "egw-gateway"},
        },
        "spec": {"nodeName": format!("node-{index}"), "hostNetwork": true, "containers": []},
        "status": {
            "phase": "Running",
            "podIP": format!("127.0.0.{index}"),
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        },
    }))
    .unwrap()
}

fn aws_node(index: u8) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": format!("node-{index}")},
        "spec": {"providerID": format!("aws:///eu-west-1a/i-000000000000000{index}a")},
    })
}

/// Answers node reads with AWS nodes, status and finalizer patches with the gateway, and
/// Events with themselves.
fn aws_api(gateway: &EgressGateway) -> (Client, tokio::task::JoinHandle<Vec<Call>>) {
    let echo = serde_json::to_value(gateway).unwrap();
    mocked(move |call| {
        let path = call.uri.split('?').next().unwrap();
        match (call.method.as_str(), path) {
            ("GET", "/api/v1/nodes/node-1") => (200, aws_node(1)),
            ("GET", "/api/v1/nodes/node-2") => (200, aws_node(2)),
            ("PATCH", _) => {
                let mut object = echo.clone();
                object["status"] = call.body["status"].clone();
                (200, object)
            }
            ("POST", _) => (201, call.body.clone()),
            _ => not_found(),
        }
    })
}

fn aws_fake() -> fake_aws::FakeAws {
    let fake = fake_aws::FakeAws::new();
    fake.add_instance("i-0000000000000001a", 1, 8);
    fake.add_instance("i-0000000000000002a", 2, 8);
    fake
}

fn aws_reconciler(client: Client, fake: &fake_aws::FakeAws) -> Reconciler {
    let manager = AwsManager::new(
        fake.clone(),
        AwsOptions::new("prod-eu".to_owned()),
        Metrics::new(),
    );
    reconciler(client).with_aws(Box::new(manager))
}

/// Errors other than the pusher's (the pods' TLS endpoints cannot be used without client TLS).
fn non_push_errors(report: &ReconcileReport) -> Vec<&String> {
    report
        .errors
        .iter()
        .filter(|error| !error.contains("no client certificate is configured"))
        .collect()
}

#[tokio::test]
async fn aws_gateway_status_comes_from_the_manager_and_failovers_are_events() {
    let gateway = aws_gateway(&[GATEWAY_FINALIZER], false);
    let (client, server) = aws_api(&gateway);
    let fake = aws_fake();
    let mut reconciler = aws_reconciler(client, &fake);
    let state = ClusterState {
        pods: vec![
            Arc::new(gateway_pod("gw-0", 1, true)),
            Arc::new(gateway_pod("gw-1", 2, true)),
        ],
        gateways: vec![Arc::new(gateway.clone())],
        ..ClusterState::default()
    };
    let report = reconciler.reconcile(&state, now()).await;
    assert!(non_push_errors(&report).is_empty(), "{:?}", report.errors);
    assert_eq!(report.tables, 2);
    assert_eq!(report.statuses_written, 1);

    // gw-0 stops being Ready: its address moves to gw-1, recorded in status and as an Event.
    let state = ClusterState {
        pods: vec![
            Arc::new(gateway_pod("gw-0", 1, false)),
            Arc::new(gateway_pod("gw-1", 2, true)),
        ],
        ..state
    };
    let report = reconciler.reconcile(&state, now()).await;
    assert!(non_push_errors(&report).is_empty(), "{:?}", report.errors);
    // The Failover, and the translation's diagnostic that gw-0 is not Ready.
    assert_eq!(report.events_published, 2);
    drop(reconciler);

    let calls = calls_after(server).await;
    let lines: Vec<String> = calls.iter().map(Call::line).collect();
    let status_path = "PATCH /apis/egw.dev/v1alpha1/egressgateways/egress/status?&force=true&fieldManager=egw-controller";
    assert_eq!(
        lines,
        [
            // Each node is read once: providerIDs never change.
            "GET /api/v1/nodes/node-1",
            "GET /api/v1/nodes/node-2",
            status_path,
            status_path,
            "POST /apis/events.k8s.io/v1/namespaces/default/events?",
            "POST /apis/events.k8s.io/v1/namespaces/default/events?",
        ]
    );
    let status = &calls[2].body["status"];
    assert_eq!(status["mode"], "Aws");
    assert_eq!(status["readyInstances"], 2);
    assert_eq!(status["readyAddresses"], 2);
    assert_eq!(
        status["instances"][0],
        json!({
            "name": "gw-0",
            "node": "node-1",
            "endpoint": "127.0.0.1:7443",
            "ready": true,
            "instanceId": "i-0000000000000001a",
            "networkInterfaceId": "eni-primary-1",
            "addresses": [{
                "snatIp": "10.0.1.100",
                "publicIp": "198.51.100.1",
                "allocationId": "eipalloc-0001",
                "ready": true,
            }],
        })
    );
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(status.get("failovers"), None);

    let status = &calls[3].body["status"];
    assert_eq!(status["readyInstances"], 1);
    assert_eq!(status["instances"][0]["ready"], false);
    assert_eq!(
        status["instances"][1]["addresses"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        status["failovers"],
        json!([{
            "time": "2026-11-21T06:00:00Z",
            "allocationId": "eipalloc-0001",
            "publicIp": "198.51.100.1",
            "fromInstance": "gw-0",
            "toInstance": "gw-1",
            "reason": "pod not Ready",
        }])
    );
    assert_eq!(calls[4].body["reason"], "InstanceNotReady");
    let event = &calls[5].body;
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["reason"], "Failover");
    assert_eq!(
        event["note"],
        "moved 198.51.100.1 (eipalloc-0001) from gw-0 to gw-1: pod not Ready"
    );
    assert_eq!(event["regarding"]["kind"], "EgressGateway");
    assert_eq!(event["regarding"]["name"], "egress");
}

#[tokio::test]
async fn deleting_an_aws_gateway_cleans_up_before_releasing_the_finalizer() {
    let gateway = aws_gateway(&[GATEWAY_FINALIZER], false);
    let (client, server) = aws_api(&gateway);
    let fake = aws_fake();
    let mut reconciler =
        aws_reconciler(client, &fake).with_cleanup_retry_base(Duration::from_millis(50));
    let pods = vec![
        Arc::new(gateway_pod("gw-0", 1, true)),
        Arc::new(gateway_pod("gw-1", 2, true)),
    ];
    let state = ClusterState {
        pods: pods.clone(),
        gateways: vec![Arc::new(gateway)],
        ..ClusterState::default()
    };
    reconciler.reconcile(&state, now()).await;
    assert_eq!(fake.associations().len(), 2);

    // The first cleanup fails: the finalizer stays, a Warning Event says why.
    fake.fail_next(
        "prune_private_addresses",
        fake_aws::permanent("UnassignPrivateIpAddresses", "UnauthorizedOperation"),
    );
    let deleting = ClusterState {
        pods,
        gateways: vec![Arc::new(aws_gateway(&[GATEWAY_FINALIZER], true))],
        ..ClusterState::default()
    };
    let report = reconciler.reconcile(&deleting, now()).await;
    assert_eq!(report.finalizers_changed, 0);
    assert!(report
        .errors
        .iter()
        .any(|error| error.contains("UnauthorizedOperation")));
    assert_eq!(fake.state.lock().unwrap().addresses.len(), 2);
    assert!(reconciler.aws_due().is_some());

    // Reconciles during the backoff (pod churn) do not retry it, nor repeat the Event.
    let calls = fake.calls().len();
    let report = reconciler.reconcile(&deleting, now()).await;
    assert_eq!(report.finalizers_changed, 0);
    assert_eq!(report.events_published, 0);
    assert_eq!(fake.calls().len(), calls);

    // After the backoff the retry succeeds: everything is given back, then the finalizer goes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = reconciler.reconcile(&deleting, now()).await;
    assert!(non_push_errors(&report).is_empty(), "{:?}", report.errors);
    assert_eq!(report.finalizers_changed, 1);
    assert!(fake.state.lock().unwrap().addresses.is_empty());
    assert!(fake.state.lock().unwrap().interfaces.is_empty());
    drop(reconciler);

    let calls = calls_after(server).await;
    let lines: Vec<String> = calls.iter().map(Call::line).collect();
    assert_eq!(
        lines,
        [
            "GET /api/v1/nodes/node-1",
            "GET /api/v1/nodes/node-2",
            "PATCH /apis/egw.dev/v1alpha1/egressgateways/egress/status?&force=true&fieldManager=egw-controller",
            "POST /apis/events.k8s.io/v1/namespaces/default/events?",
            "PATCH /apis/egw.dev/v1alpha1/egressgateways/egress?",
        ]
    );
    let event = &calls[3].body;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "CleanupFailed");
    assert!(event["note"]
        .as_str()
        .unwrap()
        .contains("UnauthorizedOperation"));
    assert_eq!(
        calls[4].body,
        json!({"metadata": {"resourceVersion": "30", "finalizers": []}})
    );
    // Cleanup order: private addresses, then the addresses egw allocated (no routes were used).
    let cleanup: Vec<String> = fake
        .operations_since(fake.calls().len() - 2)
        .into_iter()
        .collect();
    assert_eq!(cleanup, ["prune_private_addresses", "release_owned"]);
}

#[tokio::test]
async fn without_aws_an_aws_gateway_fails_closed_and_says_how_to_fix_it() {
    let gateway = aws_gateway(&[GATEWAY_FINALIZER], false);
    let (client, server) = aws_api(&gateway);
    let mut reconciler = reconciler(client);
    let state = ClusterState {
        pods: vec![Arc::new(gateway_pod("gw-0", 1, true))],
        gateways: vec![Arc::new(gateway)],
        ..ClusterState::default()
    };
    let report = reconciler.reconcile(&state, now()).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // No instances: nothing to push to, and pods using the gateway are denied.
    assert_eq!(report.tables, 0);
    drop(reconciler);
    let calls = calls_after(server).await;
    let status = &calls[0].body["status"];
    assert_eq!(status["instances"], json!([]));
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["reason"], "AwsNotEnabled");
    assert!(status["conditions"][0]["message"]
        .as_str()
        .unwrap()
        .contains("--aws"));
    let reasons: Vec<&str> = calls[1..]
        .iter()
        .map(|call| call.body["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["GatewayNotReady", "AwsNotEnabled"]);
    assert_eq!(calls[2].body["type"], "Warning");
}

/// A failed AWS pass is retried by cluster mode itself (no watch event, no resync needed).
#[tokio::test]
async fn run_retries_a_failed_aws_pass_after_its_backoff() {
    let gateway = aws_gateway(&[GATEWAY_FINALIZER], false);
    let gateway_json = serde_json::to_value(&gateway).unwrap();
    let pod_json = serde_json::to_value(gateway_pod("gw-0", 1, true)).unwrap();
    let stored_lease: Mutex<Option<Value>> = Mutex::new(None);
    let (client, _seen, server) = mocked_with_pending(move |call| {
        let path = call.uri.split('?').next().unwrap();
        if call.uri.contains("watch=true") {
            return None;
        }
        let list = |kind: &str, api_version: &str, items: Vec<Value>| {
            Some((
                200,
                json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "100"}, "items": items}),
            ))
        };
        match (call.method.as_str(), path) {
            ("GET", "/api/v1/pods") => list("PodList", "v1", vec![pod_json.clone()]),
            ("GET", "/api/v1/namespaces") => list("NamespaceList", "v1", vec![]),
            ("GET", "/apis/egw.dev/v1alpha1/egressgateways") => list(
                "EgressGatewayList",
                "egw.dev/v1alpha1",
                vec![gateway_json.clone()],
            ),
            ("GET", "/apis/egw.dev/v1alpha1/egressgatewaypolicies") => {
                list("EgressGatewayPolicyList", "egw.dev/v1alpha1", vec![])
            }
            ("GET", "/api/v1/nodes/node-1") => Some((200, aws_node(1))),
            ("GET", _) if path.starts_with(LEASE_PATH) => {
                let lease = stored_lease.lock().unwrap().clone();
                Some(lease.map_or_else(not_found, |lease| (200, lease)))
            }
            ("POST" | "PUT", _) if path.starts_with(LEASE_PATH) => {
                let mut lease = call.body.clone();
                lease["metadata"]["resourceVersion"] = json!("7");
                *stored_lease.lock().unwrap() = Some(lease.clone());
                Some((if call.method == "POST" { 201 } else { 200 }, lease))
            }
            ("PATCH", _) => {
                let mut object = gateway_json.clone();
                object["status"] = call.body["status"].clone();
                Some((200, object))
            }
            ("POST", _) => Some((201, call.body.clone())),
            _ => Some((500, json!({}))),
        }
    });
    let fake = aws_fake();
    fake.fail_next("ensure_addresses", fake_aws::retryable("DescribeAddresses"));
    let manager = AwsManager::new(
        fake.clone(),
        AwsOptions {
            retry_base: Duration::from_millis(200),
            ..AwsOptions::new("prod-eu".to_owned())
        },
        Metrics::new(),
    );
    let options = egw_controller::cluster::ClusterOptions {
        push: PushOptions::default(),
        lease: LeaseOptions {
            renew_interval: Duration::from_millis(100),
            ..lease_options()
        },
        debounce: Duration::from_millis(10),
        resync_interval: Duration::from_secs(3600),
        http_address: None,
        gateway_grpc_port: 7443,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(egw_controller::cluster::run_with_aws(
        client,
        options,
        Metrics::new(),
        Some(Box::new(manager)),
        async {
            let _ = stopped.await;
        },
    ));
    let mut associated = false;
    for _ in 0..500 {
        if fake.associations().len() == 2 {
            associated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("cluster mode stops on shutdown")
        .unwrap()
        .unwrap();
    drop(server);
    assert!(associated, "no retry: {:#?}", fake.calls());
    let passes = fake
        .operations_since(0)
        .iter()
        .filter(|operation| *operation == "ensure_addresses")
        .count();
    assert!(passes >= 2, "{:#?}", fake.calls());
}
