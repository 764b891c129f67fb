//! What the controller asks of a cloud address provider, independent of the EC2 SDK.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;

/// Tag naming the Kubernetes cluster an egw-allocated address belongs to.
pub const TAG_CLUSTER: &str = "egw.dev/cluster";
/// Tag naming the `EgressGateway` an egw-allocated address belongs to.
pub const TAG_GATEWAY: &str = "egw.dev/gateway";
/// Tag marking an address as allocated (and so releasable) by egw.
pub const TAG_OWNER: &str = "egw.dev/owner";
/// Value of [`TAG_OWNER`] on addresses egw allocated.
pub const OWNER_TAG_VALUE: &str = "egw-controller";
/// Tag holding the index (0..N) an allocated address fills. Allocation is per slot, so a retried
/// or repeated allocation is recognised as a duplicate of its slot and released.
pub const TAG_SLOT: &str = "egw.dev/slot";

/// Which gateway of which cluster: the identity egw tags its addresses with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GatewayRef {
    /// Cluster name, unique per AWS account and region among the clusters running egw.
    pub cluster: String,
    /// `EgressGateway` name.
    pub gateway: String,
}

/// Where a gateway's Elastic IPs come from (`spec.aws.elasticIps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressSource {
    /// Adopt exactly these existing allocations. egw never releases them.
    AllocationIds(Vec<String>),
    /// Adopt every existing address carrying all of these tags. egw never releases them.
    Tags(BTreeMap<String, String>),
    /// egw allocates and tags this many addresses, and releases them with the gateway.
    Allocate {
        /// How many addresses the gateway wants.
        count: u32,
    },
}

/// A gateway's address request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAddressIntent {
    /// The gateway the addresses are for.
    pub gateway: GatewayRef,
    /// Where they come from.
    pub source: AddressSource,
}

/// Where an address is associated: a private IP of an ENI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Association {
    /// Association ID (`eipassoc-…`), needed to disassociate.
    pub association_id: String,
    /// ENI the address is associated with, when AWS reports one.
    pub network_interface_id: Option<String>,
    /// Private IPv4 address on that ENI the public address maps to.
    pub private_ip: Option<Ipv4Addr>,
    /// Instance owning that ENI, when AWS reports one.
    pub instance_id: Option<String>,
}

/// An Elastic IP as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedAddress {
    /// Allocation ID (`eipalloc-…`).
    pub allocation_id: String,
    /// The public IPv4 address traffic leaves with.
    pub public_ip: Ipv4Addr,
    /// Current association, if any.
    pub association: Option<Association>,
    /// `true` when egw allocated it for this gateway (tagged owner, cluster and gateway), so
    /// egw may move (reassociate) and release it. Adopted addresses are `false`.
    pub owned_by_egw: bool,
    /// For owned addresses, the slot (0..count) the address fills.
    pub slot: Option<u32>,
}

/// Where to associate an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationTarget {
    /// ENI (`eni-…`) of the gateway instance.
    pub network_interface_id: String,
    /// Private IPv4 address of that ENI the public address is to map to.
    pub private_ip: Ipv4Addr,
}

/// Why a provider call failed. Retryable failures have already been retried (with bounded
/// exponential backoff) by the provider when they are returned.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Throttling, server errors, timeouts, lost connections: still failing after the retries.
    #[error("{operation}: transient AWS failure, still failing after {attempts} attempts: {code}: {message}")]
    Retryable {
        /// The EC2 API action (or egw step) that failed.
        operation: &'static str,
        /// AWS error code, or the SDK's failure kind when no response came.
        code: String,
        /// AWS error message or SDK error detail.
        message: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// AWS rejected the request; retrying the same request cannot help (permissions, invalid
    /// parameters, address in use by something else).
    #[error("{operation}: AWS rejected the request: {code}: {message}")]
    Permanent {
        /// The EC2 API action that failed.
        operation: &'static str,
        /// AWS error code, e.g. `UnauthorizedOperation`.
        code: String,
        /// AWS error message.
        message: String,
    },
    /// A referenced allocation, ENI or association does not exist, or no address matched.
    #[error("{operation}: not found: {code}: {message}")]
    NotFound {
        /// The EC2 API action (or egw step) that failed.
        operation: &'static str,
        /// AWS error code, e.g. `InvalidAllocationID.NotFound`.
        code: String,
        /// AWS error message or what egw looked for.
        message: String,
    },
    /// An account limit was hit (e.g. `AddressLimitExceeded`: 5 Elastic IPs per region by default).
    #[error("{operation}: limit exceeded: {code}: {message}")]
    LimitExceeded {
        /// The EC2 API action that failed.
        operation: &'static str,
        /// AWS error code.
        code: String,
        /// AWS error message.
        message: String,
    },
    /// The request cannot be made as asked (e.g. adopt by an empty tag filter, which would
    /// adopt every address in the account).
    #[error("invalid address intent: {0}")]
    InvalidIntent(String),
    /// AWS answered without a field egw needs.
    #[error("{operation}: unexpected response: {detail}")]
    UnexpectedResponse {
        /// The EC2 API action.
        operation: &'static str,
        /// What was missing or malformed.
        detail: String,
    },
}

impl ProviderError {
    /// Whether the failure is transient (the controller should requeue rather than report a
    /// configuration problem).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Retryable { .. })
    }

    /// The AWS error code, for the gateway's status condition.
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            ProviderError::Retryable { code, .. }
            | ProviderError::Permanent { code, .. }
            | ProviderError::NotFound { code, .. }
            | ProviderError::LimitExceeded { code, .. } => Some(code),
            ProviderError::InvalidIntent(_) | ProviderError::UnexpectedResponse { .. } => None,
        }
    }
}

/// The Elastic IP operations the controller performs for an `EgressGateway`. Every method is
/// idempotent: it reads the current state first, so calling it again after a crash or an
/// error converges instead of duplicating work.
pub trait AddressProvider: Send + Sync {
    /// Makes the intent true and returns the gateway's addresses: the adopted ones, or exactly
    /// `count` egw-owned ones (allocating missing slots, releasing duplicates and surplus).
    fn ensure_addresses(
        &self,
        intent: &GatewayAddressIntent,
    ) -> impl Future<Output = Result<Vec<ManagedAddress>, ProviderError>> + Send;

    /// Associates `address` with a private IP of an ENI; a no-op when it already is. Moving an
    /// address that is associated elsewhere is allowed only for egw-owned addresses.
    fn associate(
        &self,
        address: &ManagedAddress,
        target: &AssociationTarget,
    ) -> impl Future<Output = Result<ManagedAddress, ProviderError>> + Send;

    /// Disassociates an address (a no-op when it is not associated).
    fn disassociate(
        &self,
        address: &ManagedAddress,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Disassociates and releases every address egw allocated for `gateway`; adopted addresses
    /// are never touched. Returns the released allocation IDs.
    fn release_owned(
        &self,
        gateway: &GatewayRef,
    ) -> impl Future<Output = Result<Vec<String>, ProviderError>> + Send;
}
