//! egw's Kubernetes controller: `EgressGateway` / `EgressGatewayPolicy` custom resources, the
//! pure translation from cluster state to one route table per gateway instance, and the loops
//! that push those tables to the gateways and report back.
//!
//! * [`crd`]: the custom resource types; [`crdgen`] renders them for `deploy/crds/`.
//! * [`annotations`] and [`selector`]: egress intent on namespaces and pods (with Calico aliases).
//! * [`input`]: the translation's input snapshot, built from Kubernetes objects.
//! * [`translate`]: snapshot in, per-instance route tables and diagnostics out.
//! * [`status`]: CRD status (usage, conditions) from the translation's reports.
//! * [`local`]: a snapshot from a directory of YAML manifests (`egw-controller --local DIR`);
//!   [`local_run`] watches such a directory and pushes its tables.
//! * `egw_proto::spec`: engine route tables to `egw.v1.RouteTable`; [`endpoint`]: gateway control
//!   endpoints (Unix socket, mutual TLS); [`push`]: [`push::GatewayPusher`] keeps every gateway
//!   instance on its table (generations, restarts, backoff).
//! * [`aws`]: Elastic IPs, private addresses and VPC routes of AWS gateways (planner and
//!   manager over the `egw-aws` provider traits).
//! * [`cluster`]: cluster mode (reflectors, reconciler, status, Events, finalizer, leader
//!   election, `/metrics`); [`metrics`]: the Prometheus metrics.
#![forbid(unsafe_code)]

pub mod annotations;
pub mod aws;
pub mod cluster;
/// The custom resource types, from the `egw-crd` crate (kept at this path for the controller's
/// own code and tests).
pub use egw_crd as crd;
pub mod crdgen;
pub mod endpoint;
pub mod input;
pub mod local;
pub mod local_run;
pub mod metrics;
pub mod print;
pub mod push;
pub mod selector;
pub mod status;
pub mod translate;

/// An error and its sources, `: `-separated, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
