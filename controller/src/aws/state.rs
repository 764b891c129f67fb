//! The state of one pass in progress, shared by its steps.

use std::collections::BTreeMap;
use std::time::Instant;

use egw_aws::ProviderError;

use super::model::{AwsGatewayInput, AwsGatewayOutcome};

/// A failed step of a pass.
pub(super) struct PassError {
    pub(super) error: ProviderError,
}

impl From<ProviderError> for PassError {
    fn from(error: ProviderError) -> Self {
        PassError { error }
    }
}

/// The state of a pass in progress.
pub(super) struct Pass<'a> {
    pub(super) input: &'a AwsGatewayInput,
    pub(super) now: Instant,
    pub(super) outcome: AwsGatewayOutcome,
    /// The instance the VPC routes point at (`spec.aws.routes`).
    pub(super) route_target: Option<String>,
    /// ENI of each instance (by name) as last seen.
    pub(super) interfaces: BTreeMap<String, String>,
    /// Since when each unhealthy instance (by name) has been unhealthy, for its drain.
    pub(super) unhealthy_since: BTreeMap<String, Instant>,
    /// When the earliest drain ends.
    pub(super) drain_until: Option<Instant>,
}
