//! The AWS side of the egw controller: the Elastic IP lifecycle of an `EgressGateway` whose
//! addresses come from AWS (`spec.aws`).
//!
//! The controller talks to [`provider::AddressProvider`]; [`Ec2Provider`] implements it on the
//! EC2 API. Addresses are either adopted (by allocation ID or by tag filter; egw never releases
//! those) or allocated and tagged by egw (released when the gateway goes away).
#![forbid(unsafe_code)]

mod ec2;
mod interfaces;
pub mod provider;
mod routes;
#[cfg(feature = "testing")]
pub mod testing;

pub use ec2::{
    https_client, Ec2Provider, Ec2ProviderSettings, RetryPolicy, DEFAULT_ATTEMPT_TIMEOUT,
};
pub use interfaces::{secondary_ips_tag_key, TAG_SECONDARY_IPS_PREFIX};
pub use provider::{
    AddressProvider, AddressSource, Association, AssociationTarget, GatewayAddressIntent,
    GatewayInterface, GatewayRef, InstanceDescription, InstanceState, InstanceTypeLimits,
    InterfaceMode, InterfaceProvider, ManagedAddress, NetworkInterface, PrivateAddressIntent,
    ProviderError, PrunedInterfaces, RouteIntent, RouteProvider, RouteState, OWNER_TAG_VALUE,
    TAG_CLUSTER, TAG_GATEWAY, TAG_INSTANCE, TAG_OWNER, TAG_SLOT,
};
pub use routes::{route_record_key, NO_PREVIOUS_ROUTE, ROUTE_RECORD_TAG_PREFIX};
