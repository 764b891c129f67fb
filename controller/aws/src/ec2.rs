//! [`AddressProvider`] on the EC2 API (aws-sdk-ec2).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Address, DomainType, Filter, ResourceType, Tag, TagSpecification};
use aws_sdk_ec2::Client;

use crate::provider::{
    AddressProvider, AddressSource, Association, AssociationTarget, GatewayAddressIntent,
    GatewayRef, InstanceTypeLimits, ManagedAddress, ProviderError, OWNER_TAG_VALUE, TAG_CLUSTER,
    TAG_GATEWAY, TAG_OWNER, TAG_SLOT,
};

/// Bounded exponential backoff for transient failures. The delay doubles from `base_delay` up
/// to `max_delay`; after `max_attempts` attempts the failure is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub base_delay: Duration,
    /// Upper bound of any one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    fn delay_before(&self, next_attempt: u32) -> Duration {
        let doublings = next_attempt.saturating_sub(2).min(16);
        self.base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }
}

/// How [`Ec2Provider::from_env`] builds its client.
#[derive(Debug, Clone, Default)]
pub struct Ec2ProviderSettings {
    /// EC2 endpoint to use instead of the region's (tests, VPC endpoints).
    pub endpoint_url: Option<String>,
    /// Region to use instead of the standard chain's (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Backoff for transient failures.
    pub retry: RetryPolicy,
    /// Longest one EC2 request may take before it counts as a (retryable) timeout; `None`:
    /// [`DEFAULT_ATTEMPT_TIMEOUT`].
    pub attempt_timeout: Option<Duration>,
}

/// A hung EC2 call becomes a retryable timeout after this long.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// Elastic IP lifecycle, ENIs and instance facts on EC2.
#[derive(Debug, Clone)]
pub struct Ec2Provider {
    pub(crate) client: Client,
    retry: RetryPolicy,
    /// Instance-type limits never change, so each type is asked about once per process.
    pub(crate) instance_type_limits: Arc<Mutex<HashMap<String, InstanceTypeLimits>>>,
}

/// The HTTPS client the provider talks to EC2 with: rustls on ring, like the rest of egw (tonic,
/// kube), so one crypto provider serves the whole process.
pub fn https_client() -> aws_sdk_ec2::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

impl Ec2Provider {
    /// Region and credentials from the standard chain (environment, profile, web identity /
    /// IRSA, container and instance metadata).
    pub async fn from_env(settings: Ec2ProviderSettings) -> Self {
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(https_client());
        if let Some(region) = settings.region {
            loader = loader.region(aws_sdk_ec2::config::Region::new(region));
        }
        let shared = loader.load().await;
        // Keep the chain's connect timeout; add a per-attempt bound so a hung call is retried.
        let timeouts = shared
            .timeout_config()
            .map(TimeoutConfig::to_builder)
            .unwrap_or_default()
            .operation_attempt_timeout(settings.attempt_timeout.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT))
            .build();
        let mut config = aws_sdk_ec2::config::Builder::from(&shared).timeout_config(timeouts);
        if let Some(endpoint) = settings.endpoint_url {
            config = config.endpoint_url(endpoint);
        }
        Self::from_client(Client::from_conf(config.build()), settings.retry)
    }

    /// The region the provider talks to, if the chain found one. Without it every call fails,
    /// so a caller should refuse to start.
    pub fn region(&self) -> Option<String> {
        self.client.config().region().map(ToString::to_string)
    }

    /// Uses `client` as built by the caller. Its own retries are turned off: the provider
    /// retries whole read-then-write steps instead, because blindly resending AllocateAddress
    /// after a lost response allocates a second address.
    pub fn from_client(client: Client, retry: RetryPolicy) -> Self {
        let config = client
            .config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build();
        Ec2Provider {
            client: Client::from_conf(config),
            retry,
            instance_type_limits: Arc::default(),
        }
    }

    /// Runs `step` until it succeeds, fails permanently or runs out of attempts. Every step
    /// re-reads the state it acts on, so repeating one is safe.
    pub(crate) async fn with_retries<T, F, Fut>(&self, mut step: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut attempt = 1;
        loop {
            match step().await {
                Ok(value) => return Ok(value),
                Err(ProviderError::Retryable {
                    operation,
                    code,
                    message,
                    ..
                }) if attempt < self.retry.max_attempts => {
                    attempt += 1;
                    let delay = self.retry.delay_before(attempt);
                    tracing::warn!(operation, %code, %message, attempt, ?delay, "transient AWS failure; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(ProviderError::Retryable {
                    operation,
                    code,
                    message,
                    ..
                }) => {
                    return Err(ProviderError::Retryable {
                        operation,
                        code,
                        message,
                        attempts: attempt,
                    })
                }
                Err(other) => return Err(other),
            }
        }
    }

    async fn describe(
        &self,
        allocation_ids: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<Vec<Address>, ProviderError> {
        let mut request = self.client.describe_addresses();
        for id in allocation_ids {
            request = request.allocation_ids(id);
        }
        for (key, value) in tags {
            request = request.filters(
                Filter::builder()
                    .name(format!("tag:{key}"))
                    .values(value)
                    .build(),
            );
        }
        let output = request
            .send()
            .await
            .map_err(|err| classify("DescribeAddresses", err))?;
        Ok(output.addresses.unwrap_or_default())
    }

    async fn describe_owned(
        &self,
        gateway: &GatewayRef,
    ) -> Result<Vec<ManagedAddress>, ProviderError> {
        let addresses = self.describe(&[], &owner_tags(gateway)).await?;
        let mut owned = addresses
            .iter()
            .map(|address| to_managed(address, gateway))
            .collect::<Result<Vec<_>, _>>()?;
        owned.retain(|address| address.owned_by_egw);
        Ok(owned)
    }

    async fn allocate(
        &self,
        gateway: &GatewayRef,
        slot: u32,
    ) -> Result<ManagedAddress, ProviderError> {
        let mut tags = TagSpecification::builder().resource_type(ResourceType::ElasticIp);
        for (key, value) in owner_tags(gateway) {
            tags = tags.tags(Tag::builder().key(key).value(value).build());
        }
        tags = tags.tags(Tag::builder().key(TAG_SLOT).value(slot.to_string()).build());
        // Tagged in the same call, so no crash can leave an untagged (unfindable) allocation.
        let output = self
            .client
            .allocate_address()
            .domain(DomainType::Vpc)
            .tag_specifications(tags.build())
            .send()
            .await
            .map_err(|err| classify("AllocateAddress", err))?;
        let allocation_id =
            output
                .allocation_id
                .ok_or_else(|| ProviderError::UnexpectedResponse {
                    operation: "AllocateAddress",
                    detail: "no AllocationId".into(),
                })?;
        let public_ip = parse_ip("AllocateAddress", output.public_ip.as_deref())?;
        tracing::info!(cluster = %gateway.cluster, gateway = %gateway.gateway, slot, %allocation_id, %public_ip, "allocated Elastic IP");
        Ok(ManagedAddress {
            allocation_id,
            public_ip,
            association: None,
            owned_by_egw: true,
            slot: Some(slot),
        })
    }

    async fn disassociate_once(&self, association_id: &str) -> Result<(), ProviderError> {
        match self
            .client
            .disassociate_address()
            .association_id(association_id)
            .send()
            .await
            .map_err(|err| classify("DisassociateAddress", err))
        {
            Ok(_) | Err(ProviderError::NotFound { .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// Disassociates (when associated) and releases one owned address; gone already is fine.
    async fn release_one(&self, address: &ManagedAddress) -> Result<(), ProviderError> {
        if !address.owned_by_egw {
            return Err(ProviderError::InvalidIntent(format!(
                "refusing to release {}: not allocated by egw",
                address.allocation_id
            )));
        }
        if let Some(association) = &address.association {
            self.disassociate_once(&association.association_id).await?;
        }
        match self
            .client
            .release_address()
            .allocation_id(&address.allocation_id)
            .send()
            .await
            .map_err(|err| classify("ReleaseAddress", err))
        {
            Ok(_) | Err(ProviderError::NotFound { .. }) => {
                tracing::info!(allocation_id = %address.allocation_id, public_ip = %address.public_ip, "released Elastic IP");
                Ok(())
            }
            Err(other) => Err(other),
        }
    }

    /// One pass of "exactly `count` owned addresses": keep the first address of each slot,
    /// allocate empty slots, release duplicates and slots beyond `count`.
    async fn converge_owned(
        &self,
        gateway: &GatewayRef,
        count: u32,
    ) -> Result<Vec<ManagedAddress>, ProviderError> {
        let mut by_slot: BTreeMap<u32, ManagedAddress> = BTreeMap::new();
        let mut surplus = Vec::new();
        let mut existing = self.describe_owned(gateway).await?;
        // Of a duplicated slot, keep the one carrying traffic (associated), else the lowest
        // allocation ID: every pass and every controller replica picks the same one.
        existing.sort_by(|a, b| {
            (a.association.is_none(), &a.allocation_id)
                .cmp(&(b.association.is_none(), &b.allocation_id))
        });
        for address in existing {
            match address.slot {
                Some(slot) if slot < count && !by_slot.contains_key(&slot) => {
                    by_slot.insert(slot, address);
                }
                _ => surplus.push(address),
            }
        }
        for address in &surplus {
            tracing::warn!(allocation_id = %address.allocation_id, slot = ?address.slot, "releasing surplus egw Elastic IP");
            self.release_one(address).await?;
        }
        for slot in 0..count {
            if let Entry::Vacant(empty) = by_slot.entry(slot) {
                empty.insert(self.allocate(gateway, slot).await?);
            }
        }
        Ok(by_slot.into_values().collect())
    }

    async fn adopt(
        &self,
        gateway: &GatewayRef,
        source: &AddressSource,
    ) -> Result<Vec<ManagedAddress>, ProviderError> {
        let addresses = match source {
            AddressSource::AllocationIds(ids) => {
                if ids.is_empty() {
                    return Err(ProviderError::InvalidIntent(
                        "allocationIds is empty".into(),
                    ));
                }
                let found = self.describe(ids, &BTreeMap::new()).await?;
                if let Some(missing) = ids
                    .iter()
                    .find(|id| !found.iter().any(|a| a.allocation_id() == Some(id.as_str())))
                {
                    return Err(ProviderError::NotFound {
                        operation: "DescribeAddresses",
                        code: "InvalidAllocationID.NotFound".into(),
                        message: format!("allocation {missing} does not exist"),
                    });
                }
                found
            }
            AddressSource::Tags(tags) => {
                if tags.is_empty() {
                    return Err(ProviderError::InvalidIntent(
                        "tag filter is empty (it would adopt every address in the account)".into(),
                    ));
                }
                let found = self.describe(&[], tags).await?;
                if found.is_empty() {
                    return Err(ProviderError::NotFound {
                        operation: "DescribeAddresses",
                        code: "NoMatchingAddress".into(),
                        message: format!("no Elastic IP carries the tags {tags:?}"),
                    });
                }
                found
            }
            AddressSource::Allocate { .. } => {
                return Err(ProviderError::InvalidIntent(
                    "adopt called for an allocating intent".into(),
                ))
            }
        };
        let mut adopted = addresses
            .iter()
            .map(|address| to_managed(address, gateway))
            .collect::<Result<Vec<_>, _>>()?;
        adopted.sort_by(|a, b| a.allocation_id.cmp(&b.allocation_id));
        Ok(adopted)
    }

    async fn describe_one(
        &self,
        address: &ManagedAddress,
    ) -> Result<ManagedAddress, ProviderError> {
        let found = self
            .describe(
                std::slice::from_ref(&address.allocation_id),
                &BTreeMap::new(),
            )
            .await?;
        let current = found
            .iter()
            .find(|a| a.allocation_id() == Some(address.allocation_id.as_str()))
            .ok_or_else(|| ProviderError::NotFound {
                operation: "DescribeAddresses",
                code: "InvalidAllocationID.NotFound".into(),
                message: format!("allocation {} does not exist", address.allocation_id),
            })?;
        let mut managed = to_managed_untyped(current)?;
        // Ownership is the caller's view (it came from ensure_addresses for a gateway).
        managed.owned_by_egw = address.owned_by_egw;
        managed.slot = address.slot;
        Ok(managed)
    }

    async fn associate_pass(
        &self,
        address: &ManagedAddress,
        target: &AssociationTarget,
    ) -> Result<ManagedAddress, ProviderError> {
        let current = self.describe_one(address).await?;
        if let Some(association) = &current.association {
            if association.network_interface_id.as_deref()
                == Some(target.network_interface_id.as_str())
                && association.private_ip == Some(target.private_ip)
            {
                return Ok(current);
            }
        }
        let output = self
            .client
            .associate_address()
            .allocation_id(&address.allocation_id)
            .network_interface_id(&target.network_interface_id)
            .private_ip_address(target.private_ip.to_string())
            // Taking an address from wherever it is now is only right for addresses egw owns.
            .allow_reassociation(address.owned_by_egw)
            .send()
            .await
            .map_err(|err| classify("AssociateAddress", err))?;
        let association_id =
            output
                .association_id
                .ok_or_else(|| ProviderError::UnexpectedResponse {
                    operation: "AssociateAddress",
                    detail: "no AssociationId".into(),
                })?;
        tracing::info!(allocation_id = %address.allocation_id, %association_id, eni = %target.network_interface_id, private_ip = %target.private_ip, "associated Elastic IP");
        Ok(ManagedAddress {
            association: Some(Association {
                association_id,
                network_interface_id: Some(target.network_interface_id.clone()),
                private_ip: Some(target.private_ip),
                instance_id: current.association.and_then(|a| a.instance_id),
            }),
            ..current
        })
    }
}

impl AddressProvider for Ec2Provider {
    async fn ensure_addresses(
        &self,
        intent: &GatewayAddressIntent,
    ) -> Result<Vec<ManagedAddress>, ProviderError> {
        match &intent.source {
            AddressSource::Allocate { count } => {
                self.with_retries(|| self.converge_owned(&intent.gateway, *count))
                    .await
            }
            source => {
                self.with_retries(|| self.adopt(&intent.gateway, source))
                    .await
            }
        }
    }

    async fn associate(
        &self,
        address: &ManagedAddress,
        target: &AssociationTarget,
    ) -> Result<ManagedAddress, ProviderError> {
        self.with_retries(|| self.associate_pass(address, target))
            .await
    }

    async fn disassociate(&self, address: &ManagedAddress) -> Result<(), ProviderError> {
        self.with_retries(|| async {
            let current = self.describe_one(address).await?;
            match current.association {
                Some(association) => self.disassociate_once(&association.association_id).await,
                None => Ok(()),
            }
        })
        .await
    }

    async fn release_owned(&self, gateway: &GatewayRef) -> Result<Vec<String>, ProviderError> {
        self.with_retries(|| async {
            let owned = self.describe_owned(gateway).await?;
            for address in &owned {
                self.release_one(address).await?;
            }
            Ok(owned.into_iter().map(|a| a.allocation_id).collect())
        })
        .await
    }
}

pub(crate) fn owner_tags(gateway: &GatewayRef) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TAG_CLUSTER.to_string(), gateway.cluster.clone()),
        (TAG_GATEWAY.to_string(), gateway.gateway.clone()),
        (TAG_OWNER.to_string(), OWNER_TAG_VALUE.to_string()),
    ])
}

fn tag_value<'a>(address: &'a Address, key: &str) -> Option<&'a str> {
    address
        .tags()
        .iter()
        .find(|tag| tag.key() == Some(key))
        .and_then(|tag| tag.value())
}

fn parse_ip(operation: &'static str, value: Option<&str>) -> Result<Ipv4Addr, ProviderError> {
    let text = value.ok_or_else(|| ProviderError::UnexpectedResponse {
        operation,
        detail: "no PublicIp".into(),
    })?;
    text.parse().map_err(|_| ProviderError::UnexpectedResponse {
        operation,
        detail: format!("PublicIp {text:?} is not an IPv4 address"),
    })
}

fn to_managed_untyped(address: &Address) -> Result<ManagedAddress, ProviderError> {
    let allocation_id = address
        .allocation_id()
        .ok_or_else(|| ProviderError::UnexpectedResponse {
            operation: "DescribeAddresses",
            detail: "address without AllocationId (EC2-Classic addresses are not supported)".into(),
        })?
        .to_string();
    let public_ip = parse_ip("DescribeAddresses", address.public_ip())?;
    let association = address.association_id().map(|association_id| Association {
        association_id: association_id.to_string(),
        network_interface_id: address.network_interface_id().map(str::to_string),
        private_ip: address.private_ip_address().and_then(|ip| ip.parse().ok()),
        // EC2 (and moto) report an ENI without an instance as an empty InstanceId.
        instance_id: address
            .instance_id()
            .filter(|id| !id.is_empty())
            .map(str::to_string),
    });
    Ok(ManagedAddress {
        allocation_id,
        public_ip,
        association,
        owned_by_egw: false,
        slot: None,
    })
}

/// Owned means every egw tag names this gateway; anything else (adopted addresses, including
/// ones adopted by a filter on some egw tags) is never released.
fn to_managed(address: &Address, gateway: &GatewayRef) -> Result<ManagedAddress, ProviderError> {
    let mut managed = to_managed_untyped(address)?;
    managed.owned_by_egw = tag_value(address, TAG_OWNER) == Some(OWNER_TAG_VALUE)
        && tag_value(address, TAG_CLUSTER) == Some(gateway.cluster.as_str())
        && tag_value(address, TAG_GATEWAY) == Some(gateway.gateway.as_str());
    if managed.owned_by_egw {
        managed.slot = tag_value(address, TAG_SLOT).and_then(|slot| slot.parse().ok());
    }
    Ok(managed)
}

const THROTTLING_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
];
const SERVER_ERROR_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
];
const LIMIT_CODES: &[&str] = &["AddressLimitExceeded"];

/// Sorts an SDK failure into the provider's kinds, keeping AWS's code and message.
pub(crate) fn classify<E>(
    operation: &'static str,
    err: SdkError<E, aws_sdk_ec2::config::http::HttpResponse>,
) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::TimeoutError(_) => ProviderError::Retryable {
            operation,
            code: "Timeout".into(),
            message: detail,
            attempts: 1,
        },
        SdkError::DispatchFailure(_) => ProviderError::Retryable {
            operation,
            code: "DispatchFailure".into(),
            message: detail,
            attempts: 1,
        },
        SdkError::ResponseError(_) => ProviderError::Retryable {
            operation,
            code: "ResponseError".into(),
            message: detail,
            attempts: 1,
        },
        SdkError::ServiceError(service) => classify_service_error(
            operation,
            err.code().unwrap_or("Unknown").to_string(),
            err.message().unwrap_or_default().to_string(),
            service.raw().status().as_u16(),
        ),
        // Construction failures (invalid input, a failing interceptor) are not transient.
        _ => ProviderError::Permanent {
            operation,
            code: "ConstructionFailure".into(),
            message: detail,
        },
    }
}

/// Sorts an error EC2 answered with by its code and HTTP status.
fn classify_service_error(
    operation: &'static str,
    code: String,
    message: String,
    status: u16,
) -> ProviderError {
    if THROTTLING_CODES.contains(&code.as_str())
        || SERVER_ERROR_CODES.contains(&code.as_str())
        || status >= 500
        || status == 429
    {
        ProviderError::Retryable {
            operation,
            code,
            message,
            attempts: 1,
        }
    } else if LIMIT_CODES.contains(&code.as_str()) || code.ends_with("LimitExceeded") {
        ProviderError::LimitExceeded {
            operation,
            code,
            message,
        }
    } else if code.ends_with(".NotFound") {
        ProviderError::NotFound {
            operation,
            code,
            message,
        }
    } else {
        ProviderError::Permanent {
            operation,
            code,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        assert_eq!(policy.delay_before(2), Duration::from_millis(100));
        assert_eq!(policy.delay_before(3), Duration::from_millis(200));
        assert_eq!(policy.delay_before(4), Duration::from_millis(400));
        assert_eq!(policy.delay_before(5), Duration::from_millis(500));
        assert_eq!(policy.delay_before(40), Duration::from_millis(500));
    }

    fn kind(code: &str, status: u16) -> ProviderError {
        classify_service_error("AllocateAddress", code.into(), "msg".into(), status)
    }

    #[test]
    fn ec2_errors_are_sorted_by_code_and_status() {
        for throttled in ["RequestLimitExceeded", "Throttling", "RequestThrottled"] {
            assert!(kind(throttled, 400).is_retryable(), "{throttled}");
        }
        assert!(kind("InternalError", 500).is_retryable());
        assert!(kind("Unavailable", 503).is_retryable());
        assert!(
            kind("SomethingNew", 502).is_retryable(),
            "any 5xx is transient"
        );
        assert!(matches!(
            kind("AddressLimitExceeded", 400),
            ProviderError::LimitExceeded { .. }
        ));
        assert!(matches!(
            kind("InvalidAllocationID.NotFound", 400),
            ProviderError::NotFound { .. }
        ));
        let denied = kind("UnauthorizedOperation", 403);
        assert!(matches!(denied, ProviderError::Permanent { .. }));
        assert_eq!(denied.aws_code(), Some("UnauthorizedOperation"));
        assert_eq!(
            denied.to_string(),
            "AllocateAddress: AWS rejected the request: UnauthorizedOperation: msg"
        );
    }
}
