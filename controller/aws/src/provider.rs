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
    /// The instance type cannot hold what the gateway needs (ENIs per instance or IPv4
    /// addresses per ENI, from DescribeInstanceTypes). Nothing was changed.
    #[error(
        "instance {instance_id} ({instance_type}) {what}: needs {wanted}, the limit is {limit}"
    )]
    InstanceLimitExceeded {
        instance_id: String,
        instance_type: String,
        /// `"network interfaces"` or `"IPv4 addresses per network interface"`.
        what: &'static str,
        wanted: u32,
        limit: u32,
    },
    /// The request cannot be made as asked (e.g. adopt by an empty tag filter, which would
    /// adopt every address in the account).
    #[error("invalid request: {0}")]
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
            ProviderError::InvalidIntent(_)
            | ProviderError::UnexpectedResponse { .. }
            | ProviderError::InstanceLimitExceeded { .. } => None,
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

// ---------------------------------------------------------------------------------------------
// Instances and network interfaces (ENI modes)
// ---------------------------------------------------------------------------------------------

/// Tag naming, on an ENI egw created in `EniPerGateway` mode, the instance it is for. A second
/// ENI for the same gateway and instance is a duplicate (a crash between create and tag lookup)
/// and is deleted.
pub const TAG_INSTANCE: &str = "egw.dev/instance";

/// EC2 instance lifecycle state (`InstanceState.Name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
    /// A state this version of egw does not know.
    Other(String),
}

/// One ENI as egw sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInterface {
    /// `eni-…`.
    pub network_interface_id: String,
    /// Attachment device index (0 = primary), when attached.
    pub device_index: Option<i32>,
    /// Subnet the ENI lives in.
    pub subnet_id: String,
    /// Security groups of the ENI.
    pub security_group_ids: Vec<String>,
    /// The ENI's primary private IPv4 address.
    pub primary_private_ip: Ipv4Addr,
    /// Secondary private IPv4 addresses, sorted.
    pub secondary_private_ips: Vec<Ipv4Addr>,
    /// `SourceDestCheck`; must be `false` on an ENI that forwards pod traffic.
    pub source_dest_check: bool,
    /// The ENI was created by egw for this gateway (owner, cluster and gateway tags).
    pub owned_by_egw: bool,
}

/// An EC2 instance that runs (or ran) a gateway pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceDescription {
    /// `i-…`.
    pub instance_id: String,
    pub state: InstanceState,
    /// e.g. `c6in.xlarge`, for [`InstanceTypeLimits`].
    pub instance_type: String,
    /// Every attached ENI, sorted by device index (the primary first).
    pub interfaces: Vec<NetworkInterface>,
}

impl InstanceDescription {
    /// The ENI at device index 0.
    pub fn primary_interface(&self) -> Option<&NetworkInterface> {
        self.interfaces
            .iter()
            .find(|interface| interface.device_index == Some(0))
    }
}

/// Networking limits of an instance type (`DescribeInstanceTypes` → `NetworkInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceTypeLimits {
    /// `MaximumNetworkInterfaces`.
    pub max_network_interfaces: u32,
    /// `Ipv4AddressesPerInterface` (primary and secondary addresses together).
    pub ipv4_addresses_per_interface: u32,
}

/// How a gateway's private addresses (the ones its Elastic IPs map to) are held on an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceMode {
    /// Secondary private IPs on the instance's primary ENI.
    SecondaryIp,
    /// A dedicated ENI created and attached by egw.
    EniPerGateway {
        /// Subnet for the ENI; `None`: the primary ENI's subnet.
        subnet_id: Option<String>,
        /// Security groups for the ENI; empty: the primary ENI's groups.
        security_group_ids: Vec<String>,
    },
}

/// "This gateway needs `count` private addresses on this instance."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateAddressIntent {
    pub gateway: GatewayRef,
    pub instance_id: String,
    pub mode: InterfaceMode,
    /// Private addresses the gateway needs on the instance (one per Elastic IP it carries).
    pub count: u32,
}

/// The gateway's private addresses on one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayInterface {
    /// The ENI holding them (the primary ENI in `SecondaryIp` mode, egw's ENI otherwise). Its
    /// source/dest check is off.
    pub network_interface_id: String,
    /// Device index of that ENI on the instance.
    pub device_index: i32,
    /// Exactly `count` private addresses egw may map Elastic IPs to. In `SecondaryIp` mode only
    /// secondaries egw assigned (never the node's own or the VPC CNI's), sorted; in
    /// `EniPerGateway` mode the ENI's primary address first, then its secondaries sorted.
    pub private_ips: Vec<Ipv4Addr>,
}

/// ENIs, private addresses and instance facts. Every method is idempotent and converges from
/// any partial state (a crash between any two EC2 calls).
pub trait InterfaceProvider: Send + Sync {
    /// The instance, or `None` when EC2 does not know it (terminated long ago).
    fn describe_instance(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<InstanceDescription>, ProviderError>> + Send;

    /// Limits of an instance type.
    fn instance_type_limits(
        &self,
        instance_type: &str,
    ) -> impl Future<Output = Result<InstanceTypeLimits, ProviderError>> + Send;

    /// Makes the intent true: exactly `count` egw private addresses on the instance, on an ENI
    /// whose source/dest check is off. Fails with [`ProviderError::InstanceLimitExceeded`] (and
    /// changes nothing) when the instance type cannot hold them.
    fn ensure_private_addresses(
        &self,
        intent: &PrivateAddressIntent,
    ) -> impl Future<Output = Result<GatewayInterface, ProviderError>> + Send;

    /// Removes what egw holds for `gateway` on instances not in `keep_instance_ids`: deletes its
    /// ENIs (detaching them first) and unassigns the secondary addresses it assigned. Returns
    /// the ENI IDs deleted and the addresses unassigned, for the log.
    fn prune_private_addresses(
        &self,
        gateway: &GatewayRef,
        keep_instance_ids: &[String],
    ) -> impl Future<Output = Result<PrunedInterfaces, ProviderError>> + Send;
}

/// What [`InterfaceProvider::prune_private_addresses`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunedInterfaces {
    pub deleted_network_interface_ids: Vec<String>,
    pub unassigned_private_ips: Vec<Ipv4Addr>,
}

// ---------------------------------------------------------------------------------------------
// VPC routes (NAT-instance pattern)
// ---------------------------------------------------------------------------------------------

/// "Route these destinations of these route tables to this ENI."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteIntent {
    pub gateway: GatewayRef,
    /// `rtb-…`.
    pub route_table_ids: Vec<String>,
    /// IPv4 CIDRs, e.g. `0.0.0.0/0`.
    pub destination_cidrs: Vec<String>,
    /// The active gateway instance's ENI.
    pub target_network_interface_id: String,
}

/// One route as egw left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteState {
    pub route_table_id: String,
    pub destination_cidr: String,
    pub target_network_interface_id: String,
    /// The route's target before egw took it over (e.g. `nat-…`, `igw-…`), restored on
    /// release; `None` when egw created the route.
    pub previous_target: Option<String>,
}

/// VPC route tables. Routes cannot be tagged, so egw records each route it manages (and the
/// target it replaced) in a tag on the route table before changing the route.
pub trait RouteProvider: Send + Sync {
    /// Points every listed destination of every listed table at the target ENI (creating or
    /// replacing routes); a no-op for routes already there.
    fn ensure_routes(
        &self,
        intent: &RouteIntent,
    ) -> impl Future<Output = Result<Vec<RouteState>, ProviderError>> + Send;

    /// Gives back every route egw manages for `gateway` that is not in `keep` (table, CIDR):
    /// restores the replaced target, or deletes the route egw created, and drops the record.
    fn release_routes(
        &self,
        gateway: &GatewayRef,
        keep: &[(String, String)],
    ) -> impl Future<Output = Result<Vec<RouteState>, ProviderError>> + Send;
}
