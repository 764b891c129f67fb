//! egw's Kubernetes controller: `EgressGateway` / `EgressGatewayPolicy` custom resources and the
//! pure translation from cluster state to one route table per gateway instance.
//!
//! * [`crd`]: the custom resource types; [`crdgen`] renders them for `deploy/crds/`.
//! * [`annotations`] and [`selector`]: egress intent on namespaces and pods (with Calico aliases).
//! * [`input`]: the translation's input snapshot, built from Kubernetes objects.
//! * [`translate`]: snapshot in, per-instance route tables and diagnostics out.
//! * [`status`]: CRD status (usage, conditions) from the translation's reports.
//! * [`local`]: a snapshot from a directory of YAML manifests (`egw-controller --local DIR`).
#![forbid(unsafe_code)]

pub mod annotations;
pub mod crd;
pub mod crdgen;
pub mod endpoint;
pub mod input;
pub mod local;
pub mod metrics;
pub mod print;
pub mod push;
pub mod selector;
pub mod status;
pub mod translate;
pub mod wire;
