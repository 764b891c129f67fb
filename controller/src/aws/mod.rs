//! Address management of AWS gateways (`spec.aws`): which gateway pod carries which Elastic IP,
//! on which private IP, and where the VPC routes point.
//!
//! One pass per gateway ([`AwsManager::reconcile_gateway`]):
//!
//! 1. `ensure_addresses`: the gateway's Elastic IPs (adopted or allocated).
//! 2. `describe_instance` for the EC2 instance of every gateway pod (from its node's
//!    `spec.providerID`): an instance carries addresses only while its pod is Ready, not
//!    terminating, and EC2 reports it `running`.
//! 3. [`plan::plan`]: sticky, balanced placement; failovers for addresses taken off instances
//!    that can no longer carry them; the route target.
//! 4. `ensure_private_addresses` on every instance that carries addresses, with its count. An
//!    instance type that cannot hold them carries nothing, and its addresses are planned again
//!    onto the others (condition reason `EniLimitExceeded`).
//! 5. Each address is paired with a private IP of its instance (existing pairings are kept) and
//!    associated there. An adopted address associated with one of this gateway's own instances
//!    is disassociated first; one associated with anything else is never taken.
//! 6. `spec.aws.routes`: `ensure_routes` to the target's ENI and `release_routes` for the routes
//!    no longer listed (all of them when the field was removed).
//! 7. `prune_private_addresses` on instances that no longer run a gateway pod.
//!
//! EC2 is not hammered: a gateway's pass runs again only when its inputs (spec, pods) changed,
//! after [`AwsOptions::resync_interval`], or after a failure (with exponential backoff);
//! otherwise the last outcome is reused.
//!
//! # Modules
//!
//! `model` (inputs, outcomes), `manager` (what is kept between passes, call metrics),
//! `reconcile` (when a pass runs, what it leaves), `pass` (the driver) and one module per step:
//! `addresses` (1), `health` (2), `placement` (3, 4), `associate` (5), `routes` (6), `prune` (7);
//! `state` and `pods` are what the steps share; `cleanup` gives everything back; `backend` is
//! the object-safe face the cluster reconciler uses.

pub mod node;
pub mod plan;

mod addresses;
mod associate;
mod backend;
mod cleanup;
mod health;
mod manager;
mod model;
mod pass;
mod placement;
mod pods;
mod prune;
mod reconcile;
mod routes;
mod state;

pub use self::backend::AwsBackend;
pub use self::manager::AwsManager;
pub use self::model::{
    AwsGatewayInput, AwsGatewayOutcome, AwsOptions, AwsProblem, AwsReason, CleanupReport,
    GatewayPod, DEFAULT_GATEWAY_GRPC_PORT, DEFAULT_RESYNC_INTERVAL, DEFAULT_RETRY_BASE,
    FAILOVER_HISTORY,
};
