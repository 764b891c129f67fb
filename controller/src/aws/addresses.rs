//! Step 1 of a pass: the gateway's Elastic IPs, adopted (by allocation ID or tags) or allocated.

use egw_aws::{
    AddressProvider, AddressSource, GatewayAddressIntent, GatewayRef, InterfaceProvider,
    ManagedAddress, RouteProvider,
};

use super::manager::AwsManager;
use super::model::{AwsProblem, AwsReason};
use super::pods::instance_status;
use super::state::{Pass, PassError};
use crate::crd::ElasticIpSource;

/// The gateway's Elastic IPs as EC2 has them.
pub(super) struct Addresses {
    pub(super) managed: Vec<ManagedAddress>,
    /// They were adopted (not allocated by egw): one on another private IP of this gateway is
    /// disassociated before it is associated again.
    pub(super) adopted: bool,
}

impl<P> AwsManager<P>
where
    P: AddressProvider + InterfaceProvider + RouteProvider,
{
    /// Step 1: `ensure_addresses`. `None` when the spec names no valid source: the pass ends
    /// there, with every instance not Ready and an InvalidSpec problem.
    pub(super) async fn ensure_addresses(
        &self,
        pass: &mut Pass<'_>,
        gateway: &GatewayRef,
    ) -> Result<Option<Addresses>, PassError> {
        let input = pass.input;
        let source = match address_source(&input.pool.elastic_ips) {
            Ok(source) => source,
            Err(message) => {
                pass.outcome.instances = input
                    .pods
                    .iter()
                    .map(|pod| instance_status(pod, false, None, Vec::new()))
                    .collect();
                pass.outcome.problem = Some(AwsProblem {
                    reason: AwsReason::InvalidSpec,
                    message,
                    retryable: false,
                });
                return Ok(None);
            }
        };
        let intent = GatewayAddressIntent {
            gateway: gateway.clone(),
            source,
        };
        let adopted = !matches!(intent.source, AddressSource::Allocate { .. });
        let managed = self.record(
            "ensure_addresses",
            self.provider.ensure_addresses(&intent).await,
        )?;
        Ok(Some(Addresses { managed, adopted }))
    }
}

/// `spec.aws.elasticIps` as the provider's address source.
fn address_source(source: &ElasticIpSource) -> Result<AddressSource, String> {
    match (&source.allocation_ids, &source.tags, source.allocate) {
        (Some(ids), None, None) => Ok(AddressSource::AllocationIds(ids.clone())),
        (None, Some(tags), None) => Ok(AddressSource::Tags(tags.clone())),
        (None, None, Some(count)) => Ok(AddressSource::Allocate { count }),
        _ => Err("spec.aws.elasticIps: set exactly one of allocationIds, tags and allocate".into()),
    }
}
