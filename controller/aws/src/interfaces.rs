//! [`InterfaceProvider`] on the EC2 API: instance facts, instance-type limits, and the private
//! addresses a gateway's Elastic IPs map to, held either as secondary IPs on the node's primary
//! ENI (`SecondaryIp`) or on a dedicated ENI egw creates and attaches (`EniPerGateway`).
//!
//! Every public method runs one read-then-write pass under [`Ec2Provider::with_retries`], and
//! every pass starts from what EC2 says now, so a crash or lost response between any two calls
//! converges on the next pass instead of leaking or duplicating.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use aws_sdk_ec2::types::{
    AttachmentStatus, AttributeBooleanValue, Filter, InstanceStateName, InstanceType,
    NetworkInterfaceAttachmentChanges, NetworkInterfaceStatus, ResourceType, Tag, TagSpecification,
};

use crate::ec2::{classify, owner_tags, Ec2Provider};
use crate::provider::{
    GatewayInterface, GatewayRef, InstanceDescription, InstanceState, InstanceTypeLimits,
    InterfaceMode, InterfaceProvider, NetworkInterface, PrivateAddressIntent, ProviderError,
    PrunedInterfaces, OWNER_TAG_VALUE, TAG_INSTANCE, TAG_OWNER,
};

/// Prefix of the tag that records, on the ENI holding them, the secondary IPs egw assigned for
/// one gateway: `egw.dev/ips:<cluster>/<gateway>` = `10.0.1.7,10.0.1.9`. Secondary IPs cannot be
/// tagged themselves, and the primary ENI also holds the node's and the VPC CNI's addresses.
pub const TAG_SECONDARY_IPS_PREFIX: &str = "egw.dev/ips:";

/// EC2 tag values are at most 256 characters: 16 dotted addresses (15 characters and a comma
/// each, at most) fit one record.
const MAX_RECORDED_ADDRESSES: u32 = 16;

/// AWS error codes for "this private address is taken" (by another ENI, or reserved).
const ADDRESS_IN_USE_CODES: &[&str] = &["InvalidIPAddress.InUse", "PrivateIpAddressInUse"];

/// Rounds of "pick free addresses, record, assign" before an address race is reported as
/// transient (the retry then starts a fresh pass).
const MAX_ADDRESS_PICK_ROUNDS: usize = 8;

/// A detached ENI becomes `available` within seconds; how long egw waits for it before deleting.
const DETACH_POLL_INTERVAL: Duration = Duration::from_secs(1);
const DETACH_POLL_ATTEMPTS: u32 = 60;

/// The tag key recording `gateway`'s secondary IPs on an ENI.
pub fn secondary_ips_tag_key(gateway: &GatewayRef) -> String {
    format!(
        "{TAG_SECONDARY_IPS_PREFIX}{}/{}",
        gateway.cluster, gateway.gateway
    )
}

/// The tags on an ENI egw creates for `gateway` on `instance_id`.
fn eni_tags(gateway: &GatewayRef, instance_id: &str) -> BTreeMap<String, String> {
    let mut tags = owner_tags(gateway);
    tags.insert(TAG_INSTANCE.to_string(), instance_id.to_string());
    tags
}

fn tag_filters(tags: &BTreeMap<String, String>) -> Vec<Filter> {
    tags.iter()
        .map(|(key, value)| {
            Filter::builder()
                .name(format!("tag:{key}"))
                .values(value)
                .build()
        })
        .collect()
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// An attachment of an ENI to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attachment {
    attachment_id: String,
    instance_id: Option<String>,
    device_index: Option<i32>,
    delete_on_termination: bool,
    /// `attaching` or `attached` (not `detaching` / `detached`).
    active: bool,
}

/// One ENI as EC2 describes it, with what egw needs of it.
#[derive(Debug, Clone)]
struct Eni {
    id: String,
    subnet_id: String,
    security_group_ids: Vec<String>,
    primary_ip: Ipv4Addr,
    /// Sorted.
    secondary_ips: Vec<Ipv4Addr>,
    source_dest_check: bool,
    tags: BTreeMap<String, String>,
    attachment: Option<Attachment>,
    available: bool,
}

impl Eni {
    fn from_sdk(eni: &aws_sdk_ec2::types::NetworkInterface) -> Result<Eni, ProviderError> {
        const OP: &str = "DescribeNetworkInterfaces";
        let id = eni
            .network_interface_id()
            .ok_or_else(|| unexpected(OP, "network interface without NetworkInterfaceId"))?
            .to_string();
        let primary_ip = parse_private_ip(OP, eni.private_ip_address())?;
        let mut secondary_ips = Vec::new();
        for address in eni.private_ip_addresses() {
            let ip = parse_private_ip(OP, address.private_ip_address())?;
            if address.primary() != Some(true) && ip != primary_ip {
                secondary_ips.push(ip);
            }
        }
        secondary_ips.sort();
        secondary_ips.dedup();
        let attachment = eni.attachment().and_then(|attachment| {
            Some(Attachment {
                attachment_id: attachment.attachment_id()?.to_string(),
                // EC2 (and moto) report an unattached instance as an empty InstanceId.
                instance_id: attachment
                    .instance_id()
                    .filter(|id| !id.is_empty())
                    .map(str::to_string),
                device_index: attachment.device_index(),
                delete_on_termination: attachment.delete_on_termination() == Some(true),
                active: matches!(
                    attachment.status(),
                    None | Some(AttachmentStatus::Attached) | Some(AttachmentStatus::Attaching)
                ),
            })
        });
        Ok(Eni {
            id,
            subnet_id: eni.subnet_id().unwrap_or_default().to_string(),
            security_group_ids: eni
                .groups()
                .iter()
                .filter_map(|group| group.group_id().map(str::to_string))
                .collect(),
            primary_ip,
            secondary_ips,
            source_dest_check: eni.source_dest_check() != Some(false),
            tags: eni
                .tag_set()
                .iter()
                .filter_map(|tag| Some((tag.key()?.to_string(), tag.value()?.to_string())))
                .collect(),
            attachment,
            available: eni.status() == Some(&NetworkInterfaceStatus::Available),
        })
    }

    /// The active attachment, if any.
    fn active_attachment(&self) -> Option<&Attachment> {
        self.attachment.as_ref().filter(|a| a.active)
    }

    fn attached_to(&self, instance_id: &str) -> bool {
        self.active_attachment()
            .is_some_and(|a| a.instance_id.as_deref() == Some(instance_id))
    }

    fn holds(&self, ip: Ipv4Addr) -> bool {
        self.primary_ip == ip || self.secondary_ips.binary_search(&ip).is_ok()
    }

    fn address_count(&self) -> u32 {
        u32::try_from(1 + self.secondary_ips.len()).unwrap_or(u32::MAX)
    }

    fn to_network_interface(&self) -> NetworkInterface {
        NetworkInterface {
            network_interface_id: self.id.clone(),
            device_index: self.active_attachment().and_then(|a| a.device_index),
            subnet_id: self.subnet_id.clone(),
            security_group_ids: self.security_group_ids.clone(),
            primary_private_ip: self.primary_ip,
            secondary_private_ips: self.secondary_ips.clone(),
            source_dest_check: self.source_dest_check,
            // Without a gateway to compare with, "owned" means created by egw (any gateway).
            owned_by_egw: self.tags.get(TAG_OWNER).map(String::as_str) == Some(OWNER_TAG_VALUE),
        }
    }
}

/// An instance with its attached ENIs (described with tags, which DescribeInstances lacks).
#[derive(Debug, Clone)]
struct Instance {
    id: String,
    state: InstanceState,
    instance_type: String,
    /// Attached ENIs, sorted by device index.
    enis: Vec<Eni>,
}

impl Instance {
    fn primary(&self) -> Result<&Eni, ProviderError> {
        self.enis
            .iter()
            .find(|eni| eni.active_attachment().and_then(|a| a.device_index) == Some(0))
            .ok_or_else(|| {
                unexpected(
                    "DescribeNetworkInterfaces",
                    &format!("instance {} has no ENI at device index 0", self.id),
                )
            })
    }

    /// The lowest device index (≥ 1) no ENI uses, below the type's interface limit.
    fn free_device_index(&self, limits: &InstanceTypeLimits) -> Option<i32> {
        let used: BTreeSet<i32> = self
            .enis
            .iter()
            .filter_map(|eni| eni.active_attachment().and_then(|a| a.device_index))
            .collect();
        let limit = i32::try_from(limits.max_network_interfaces).unwrap_or(i32::MAX);
        (1..limit).find(|index| !used.contains(index))
    }
}

fn unexpected(operation: &'static str, detail: &str) -> ProviderError {
    ProviderError::UnexpectedResponse {
        operation,
        detail: detail.to_string(),
    }
}

fn parse_private_ip(
    operation: &'static str,
    text: Option<&str>,
) -> Result<Ipv4Addr, ProviderError> {
    let text = text.ok_or_else(|| unexpected(operation, "no PrivateIpAddress"))?;
    text.parse()
        .map_err(|_| unexpected(operation, &format!("{text:?} is not an IPv4 address")))
}

fn instance_state(name: Option<&InstanceStateName>) -> InstanceState {
    match name {
        Some(InstanceStateName::Pending) => InstanceState::Pending,
        Some(InstanceStateName::Running) => InstanceState::Running,
        Some(InstanceStateName::ShuttingDown) => InstanceState::ShuttingDown,
        Some(InstanceStateName::Terminated) => InstanceState::Terminated,
        Some(InstanceStateName::Stopping) => InstanceState::Stopping,
        Some(InstanceStateName::Stopped) => InstanceState::Stopped,
        Some(other) => InstanceState::Other(other.as_str().to_string()),
        None => InstanceState::Other(String::new()),
    }
}

/// The record tag's value: sorted, comma-separated addresses. Unparsable entries are dropped
/// (egw never unassigns an address it cannot name).
fn parse_record(value: &str) -> BTreeSet<Ipv4Addr> {
    value
        .split(',')
        .filter_map(|part| part.trim().parse().ok())
        .collect()
}

fn format_record(addresses: &BTreeSet<Ipv4Addr>) -> String {
    addresses
        .iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A subnet's IPv4 CIDR as (network, prefix length).
fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u32)> {
    let (address, prefix) = text.split_once('/')?;
    let address: Ipv4Addr = address.parse().ok()?;
    let prefix: u32 = prefix.parse().ok()?;
    (prefix <= 32).then_some((address, prefix))
}

/// `wanted` addresses of the subnet that nothing holds, skipping what AWS reserves (the first
/// four and the last address of every subnet) and `excluded`. The scan starts at `start`
/// (taken modulo the usable range) and wraps: egw starts at a point derived from the gateway
/// and instance rather than at the bottom, where EC2's own picks for the VPC CNI would collide
/// with it more often.
fn pick_free_addresses(
    cidr: (Ipv4Addr, u32),
    in_use: &BTreeSet<Ipv4Addr>,
    excluded: &BTreeSet<Ipv4Addr>,
    wanted: usize,
    start: u64,
) -> Vec<Ipv4Addr> {
    let (network, prefix) = cidr;
    let size: u64 = 1u64 << (32 - prefix);
    if size < 8 {
        return Vec::new();
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    let first_usable = u64::from(u32::from(network) & mask) + 4;
    let usable = size - 5;
    let offset = start % usable;
    (0..usable)
        .map(|step| first_usable + (offset + step) % usable)
        .filter_map(|raw| u32::try_from(raw).ok().map(Ipv4Addr::from))
        .filter(|ip| !in_use.contains(ip) && !excluded.contains(ip))
        .take(wanted)
        .collect()
}

/// Where in the subnet a gateway's picks on an instance start (see [`pick_free_addresses`]).
fn pick_start(gateway: &GatewayRef, instance_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&gateway.cluster, &gateway.gateway, instance_id).hash(&mut hasher);
    hasher.finish()
}

/// EC2 is eventually consistent: an ENI created or attached a moment ago can still be unknown
/// (`InvalidNetworkInterfaceID.NotFound`) or not yet in the state the next call needs
/// (`IncorrectState`). Both settle within seconds, so they are retried (the retry re-reads).
fn settling(err: ProviderError) -> ProviderError {
    match err {
        ProviderError::NotFound {
            operation,
            code,
            message,
        } => ProviderError::Retryable {
            operation,
            code,
            message,
            attempts: 1,
        },
        ProviderError::Permanent {
            operation,
            code,
            message,
        } if code == "IncorrectState" => ProviderError::Retryable {
            operation,
            code,
            message,
            attempts: 1,
        },
        other => other,
    }
}

fn is_address_in_use(err: &ProviderError) -> bool {
    matches!(err, ProviderError::Permanent { code, .. } if ADDRESS_IN_USE_CODES.contains(&code.as_str()))
}

/// One SecondaryIp assignment: the intent, where it goes and the record it keeps.
struct SecondaryAssignment<'a> {
    intent: &'a PrivateAddressIntent,
    instance: &'a Instance,
    /// The instance's primary ENI.
    eni: &'a Eni,
    record_key: &'a str,
    /// The record as read before this assignment.
    recorded: &'a BTreeSet<Ipv4Addr>,
    /// Secondary IPs wanted.
    count: usize,
}

/// Checks, before changing anything, that the instance's primary ENI can hold the gateway's
/// addresses (`present` of them are there already) and that the record tag can name them.
fn check_secondary_fit(
    intent: &PrivateAddressIntent,
    instance: &Instance,
    limits: &InstanceTypeLimits,
    eni: &Eni,
    present: &[Ipv4Addr],
    record_key: &str,
) -> Result<(), ProviderError> {
    let egw_on_eni = u32::try_from(present.len()).unwrap_or(u32::MAX);
    let wanted_total = (eni.address_count() - egw_on_eni).saturating_add(intent.count);
    if wanted_total > limits.ipv4_addresses_per_interface {
        return Err(too_many_addresses(
            instance,
            wanted_total,
            limits.ipv4_addresses_per_interface,
        ));
    }
    if intent.count > MAX_RECORDED_ADDRESSES {
        return Err(ProviderError::InvalidIntent(format!(
            "{} secondary IPs do not fit the {record_key} record tag: SecondaryIp mode holds at most {MAX_RECORDED_ADDRESSES} per gateway and instance (use EniPerGateway)",
            intent.count
        )));
    }
    Ok(())
}

/// `shortfall` free addresses of the subnet for the assignment, none of them in the record
/// (old or new) or rejected before; an error when the subnet has too few.
fn pick_shortfall(
    assignment: &SecondaryAssignment<'_>,
    cidr: (Ipv4Addr, u32),
    in_use: &BTreeSet<Ipv4Addr>,
    record: &BTreeSet<Ipv4Addr>,
    rejected: &BTreeSet<Ipv4Addr>,
    shortfall: usize,
) -> Result<Vec<Ipv4Addr>, ProviderError> {
    let mut excluded = rejected.clone();
    excluded.extend(record.iter().copied());
    excluded.extend(assignment.recorded.iter().copied());
    let picked = pick_free_addresses(
        cidr,
        in_use,
        &excluded,
        shortfall,
        pick_start(&assignment.intent.gateway, &assignment.instance.id),
    );
    if picked.len() < shortfall {
        return Err(ProviderError::LimitExceeded {
            operation: "AssignPrivateIpAddresses",
            code: "InsufficientFreeAddressesInSubnet".into(),
            message: format!(
                "subnet {} has {} free addresses, {} needed",
                assignment.eni.subnet_id,
                picked.len(),
                shortfall
            ),
        });
    }
    Ok(picked)
}

/// The instance has no free device index for one more ENI.
fn no_free_device_index(instance: &Instance, limits: &InstanceTypeLimits) -> ProviderError {
    ProviderError::InstanceLimitExceeded {
        instance_id: instance.id.clone(),
        instance_type: instance.instance_type.clone(),
        what: "network interfaces",
        wanted: u32::try_from(instance.enis.len() + 1).unwrap_or(u32::MAX),
        limit: limits.max_network_interfaces,
    }
}

fn too_many_addresses(instance: &Instance, wanted: u32, limit: u32) -> ProviderError {
    ProviderError::InstanceLimitExceeded {
        instance_id: instance.id.clone(),
        instance_type: instance.instance_type.clone(),
        what: "IPv4 addresses per network interface",
        wanted,
        limit,
    }
}

impl Ec2Provider {
    async fn describe_enis(&self, filters: Vec<Filter>) -> Result<Vec<Eni>, ProviderError> {
        let mut pages = self
            .client
            .describe_network_interfaces()
            .set_filters(Some(filters))
            .into_paginator()
            .send();
        let mut enis = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| classify("DescribeNetworkInterfaces", err))?;
            for eni in page.network_interfaces() {
                enis.push(Eni::from_sdk(eni)?);
            }
        }
        enis.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(enis)
    }

    async fn describe_eni(&self, eni_id: &str) -> Result<Option<Eni>, ProviderError> {
        let output = match self
            .client
            .describe_network_interfaces()
            .network_interface_ids(eni_id)
            .send()
            .await
            .map_err(|err| classify("DescribeNetworkInterfaces", err))
        {
            Ok(output) => output,
            Err(ProviderError::NotFound { .. }) => return Ok(None),
            Err(other) => return Err(other),
        };
        output
            .network_interfaces()
            .iter()
            .find(|eni| eni.network_interface_id() == Some(eni_id))
            .map(Eni::from_sdk)
            .transpose()
    }

    async fn describe_instance_once(
        &self,
        instance_id: &str,
    ) -> Result<Option<Instance>, ProviderError> {
        let output = match self
            .client
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|err| classify("DescribeInstances", err))
        {
            Ok(output) => output,
            Err(ProviderError::NotFound { .. }) => return Ok(None),
            Err(other) => return Err(other),
        };
        let Some(described) = output
            .reservations()
            .iter()
            .flat_map(|reservation| reservation.instances())
            .find(|instance| instance.instance_id() == Some(instance_id))
        else {
            return Ok(None);
        };
        let state = instance_state(described.state().and_then(|s| s.name()));
        let instance_type = described
            .instance_type()
            .map(|t| t.as_str().to_string())
            .ok_or_else(|| unexpected("DescribeInstances", "instance without InstanceType"))?;
        // DescribeInstances has no ENI tags, so the ENIs come from DescribeNetworkInterfaces.
        let mut enis = self
            .describe_enis(vec![filter("attachment.instance-id", instance_id)])
            .await?;
        enis.retain(|eni| eni.attached_to(instance_id));
        enis.sort_by_key(|eni| eni.active_attachment().and_then(|a| a.device_index));
        Ok(Some(Instance {
            id: instance_id.to_string(),
            state,
            instance_type,
            enis,
        }))
    }

    async fn require_instance(&self, instance_id: &str) -> Result<Instance, ProviderError> {
        self.describe_instance_once(instance_id)
            .await?
            .ok_or_else(|| ProviderError::NotFound {
                operation: "DescribeInstances",
                code: "InvalidInstanceID.NotFound".into(),
                message: format!("instance {instance_id} does not exist"),
            })
    }

    async fn instance_type_limits_once(
        &self,
        instance_type: &str,
    ) -> Result<InstanceTypeLimits, ProviderError> {
        const OP: &str = "DescribeInstanceTypes";
        if let Some(limits) = self.cached_limits(instance_type) {
            return Ok(limits);
        }
        let output = self
            .client
            .describe_instance_types()
            .instance_types(InstanceType::from(instance_type))
            .send()
            .await
            .map_err(|err| classify(OP, err))?;
        let network = output
            .instance_types()
            .iter()
            .find(|info| info.instance_type().map(InstanceType::as_str) == Some(instance_type))
            .and_then(|info| info.network_info())
            .ok_or_else(|| ProviderError::NotFound {
                operation: OP,
                code: "InvalidInstanceType".into(),
                message: format!("no network limits for instance type {instance_type}"),
            })?;
        let field = |value: Option<i32>, name: &str| {
            value
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| unexpected(OP, &format!("{instance_type}: no {name}")))
        };
        let limits = InstanceTypeLimits {
            max_network_interfaces: field(
                network.maximum_network_interfaces(),
                "MaximumNetworkInterfaces",
            )?,
            ipv4_addresses_per_interface: field(
                network.ipv4_addresses_per_interface(),
                "Ipv4AddressesPerInterface",
            )?,
        };
        if let Ok(mut cache) = self.instance_type_limits.lock() {
            cache.insert(instance_type.to_string(), limits);
        }
        Ok(limits)
    }

    fn cached_limits(&self, instance_type: &str) -> Option<InstanceTypeLimits> {
        self.instance_type_limits
            .lock()
            .ok()
            .and_then(|cache| cache.get(instance_type).copied())
    }

    async fn subnet_cidr(&self, subnet_id: &str) -> Result<(Ipv4Addr, u32), ProviderError> {
        const OP: &str = "DescribeSubnets";
        let output = self
            .client
            .describe_subnets()
            .subnet_ids(subnet_id)
            .send()
            .await
            .map_err(|err| classify(OP, err))?;
        let text = output
            .subnets()
            .iter()
            .find(|subnet| subnet.subnet_id() == Some(subnet_id))
            .and_then(|subnet| subnet.cidr_block())
            .ok_or_else(|| unexpected(OP, &format!("subnet {subnet_id} without CidrBlock")))?;
        parse_cidr(text).ok_or_else(|| unexpected(OP, &format!("CidrBlock {text:?} is not IPv4")))
    }

    async fn set_tag(&self, eni_id: &str, key: &str, value: &str) -> Result<(), ProviderError> {
        self.client
            .create_tags()
            .resources(eni_id)
            .tags(Tag::builder().key(key).value(value).build())
            .send()
            .await
            .map_err(|err| classify("CreateTags", err))?;
        Ok(())
    }

    async fn delete_tag(&self, eni_id: &str, key: &str) -> Result<(), ProviderError> {
        match self
            .client
            .delete_tags()
            .resources(eni_id)
            .tags(Tag::builder().key(key).build())
            .send()
            .await
            .map_err(|err| classify("DeleteTags", err))
        {
            Ok(_) | Err(ProviderError::NotFound { .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }

    async fn unassign(&self, eni_id: &str, addresses: &[Ipv4Addr]) -> Result<(), ProviderError> {
        if addresses.is_empty() {
            return Ok(());
        }
        let mut request = self
            .client
            .unassign_private_ip_addresses()
            .network_interface_id(eni_id);
        for ip in addresses {
            request = request.private_ip_addresses(ip.to_string());
        }
        request
            .send()
            .await
            .map_err(|err| classify("UnassignPrivateIpAddresses", err))?;
        tracing::info!(eni = %eni_id, ?addresses, "unassigned private IPs");
        Ok(())
    }

    async fn disable_source_dest_check(&self, eni: &Eni) -> Result<(), ProviderError> {
        if !eni.source_dest_check {
            return Ok(());
        }
        self.client
            .modify_network_interface_attribute()
            .network_interface_id(&eni.id)
            .source_dest_check(AttributeBooleanValue::builder().value(false).build())
            .send()
            .await
            .map_err(|err| settling(classify("ModifyNetworkInterfaceAttribute", err)))?;
        tracing::info!(eni = %eni.id, "disabled source/dest check");
        Ok(())
    }

    /// Unassigns the addresses `gateway`'s record on `eni` names that are still there, then
    /// drops the record. In that order, so a crash in between cannot orphan an address.
    async fn release_record(
        &self,
        eni: &Eni,
        record_key: &str,
    ) -> Result<Vec<Ipv4Addr>, ProviderError> {
        let Some(value) = eni.tags.get(record_key) else {
            return Ok(Vec::new());
        };
        let still_there: Vec<Ipv4Addr> = parse_record(value)
            .into_iter()
            .filter(|ip| *ip != eni.primary_ip && eni.holds(*ip))
            .collect();
        self.unassign(&eni.id, &still_there).await?;
        self.delete_tag(&eni.id, record_key).await?;
        Ok(still_there)
    }

    // -----------------------------------------------------------------------------------------
    // SecondaryIp
    // -----------------------------------------------------------------------------------------

    /// SecondaryIp: `intent.count` secondary private IPs on the instance's primary ENI,
    /// recorded in a tag of that ENI before they are assigned. Addresses already there are kept
    /// (the lowest first); new ones are picked in the subnet, and picked again when another
    /// assigner (the VPC CNI) takes them first.
    async fn ensure_secondary_ips(
        &self,
        intent: &PrivateAddressIntent,
    ) -> Result<GatewayInterface, ProviderError> {
        let instance = self.require_instance(&intent.instance_id).await?;
        let limits = self
            .instance_type_limits_once(&instance.instance_type)
            .await?;
        let eni = instance.primary()?.clone();
        let record_key = secondary_ips_tag_key(&intent.gateway);
        let recorded = eni
            .tags
            .get(&record_key)
            .map(|value| parse_record(value))
            .unwrap_or_default();
        let count = usize::try_from(intent.count).unwrap_or(usize::MAX);

        let present: Vec<Ipv4Addr> = recorded
            .iter()
            .copied()
            .filter(|ip| *ip != eni.primary_ip && eni.holds(*ip))
            .collect();
        check_secondary_fit(intent, &instance, &limits, &eni, &present, &record_key)?;

        // The gateway's ENI on this instance from an earlier EniPerGateway intent goes.
        for stale in self
            .describe_enis(tag_filters(&eni_tags(&intent.gateway, &instance.id)))
            .await?
        {
            tracing::info!(eni = %stale.id, instance = %instance.id, "deleting the gateway's ENI: the gateway now uses secondary IPs");
            self.delete_eni(&stale).await?;
        }

        // Keep the lowest addresses already on the ENI, then the recorded ones still to assign.
        let missing: Vec<Ipv4Addr> = recorded
            .iter()
            .copied()
            .filter(|ip| !present.contains(ip) && *ip != eni.primary_ip)
            .collect();
        let kept_present: Vec<Ipv4Addr> = present.iter().copied().take(count).collect();
        let surplus_present: Vec<Ipv4Addr> = present.iter().copied().skip(count).collect();
        let kept_missing: Vec<Ipv4Addr> = missing
            .iter()
            .copied()
            .take(count - kept_present.len())
            .collect();

        // Unassign before dropping from the record: a crash in between leaves a record naming
        // an address that is gone (dropped next pass), never an assigned address egw forgot.
        self.unassign(&eni.id, &surplus_present).await?;
        let mut record: BTreeSet<Ipv4Addr> = kept_present.iter().copied().collect();
        record.extend(kept_missing.iter().copied());
        let assignment = SecondaryAssignment {
            intent,
            instance: &instance,
            eni: &eni,
            record_key: &record_key,
            recorded: &recorded,
            count,
        };
        let on_eni = self
            .assign_secondaries(&assignment, record, kept_present, kept_missing)
            .await?;
        self.disable_source_dest_check(&eni).await?;
        Ok(GatewayInterface {
            network_interface_id: eni.id,
            device_index: 0,
            private_ips: on_eni.into_iter().collect(),
        })
    }

    /// Rounds of: pick addresses for the shortfall, write the record, assign. Ends when a round
    /// assigns everything (the addresses now on the ENI), or after [`MAX_ADDRESS_PICK_ROUNDS`].
    async fn assign_secondaries(
        &self,
        assignment: &SecondaryAssignment<'_>,
        mut record: BTreeSet<Ipv4Addr>,
        kept_present: Vec<Ipv4Addr>,
        kept_missing: Vec<Ipv4Addr>,
    ) -> Result<BTreeSet<Ipv4Addr>, ProviderError> {
        let eni = assignment.eni;
        let mut on_eni: BTreeSet<Ipv4Addr> = kept_present.into_iter().collect();
        let mut to_assign: Vec<Ipv4Addr> = kept_missing;
        let mut rejected: BTreeSet<Ipv4Addr> = BTreeSet::new();
        let mut subnet: Option<((Ipv4Addr, u32), BTreeSet<Ipv4Addr>)> = None;
        let mut written_record = assignment.recorded.clone();
        for _round in 0..MAX_ADDRESS_PICK_ROUNDS {
            let shortfall = assignment.count - record.len();
            if shortfall > 0 {
                if subnet.is_none() {
                    subnet = Some(self.subnet_in_use(&eni.subnet_id).await?);
                }
                if let Some((cidr, in_use)) = &subnet {
                    let picked =
                        pick_shortfall(assignment, *cidr, in_use, &record, &rejected, shortfall)?;
                    record.extend(picked.iter().copied());
                    to_assign.extend(picked);
                }
            }
            // The record names every address before it is assigned: a crash after the
            // assignment cannot leave an address egw does not know it holds.
            if record != written_record {
                if record.is_empty() {
                    self.delete_tag(&eni.id, assignment.record_key).await?;
                } else {
                    self.set_tag(&eni.id, assignment.record_key, &format_record(&record))
                        .await?;
                }
                written_record = record.clone();
            }
            let mut raced = false;
            for ip in std::mem::take(&mut to_assign) {
                if self.assign_secondary(assignment, ip).await? {
                    on_eni.insert(ip);
                } else {
                    record.remove(&ip);
                    rejected.insert(ip);
                    raced = true;
                }
            }
            if !raced {
                return Ok(on_eni);
            }
        }
        Err(ProviderError::Retryable {
            operation: "AssignPrivateIpAddresses",
            code: "AddressRace".into(),
            message: format!(
                "addresses picked in subnet {} kept being taken: {rejected:?}",
                eni.subnet_id
            ),
            attempts: 1,
        })
    }

    /// The subnet's CIDR and every address its ENIs hold.
    async fn subnet_in_use(
        &self,
        subnet_id: &str,
    ) -> Result<((Ipv4Addr, u32), BTreeSet<Ipv4Addr>), ProviderError> {
        let cidr = self.subnet_cidr(subnet_id).await?;
        let in_use: BTreeSet<Ipv4Addr> = self
            .describe_enis(vec![filter("subnet-id", subnet_id)])
            .await?
            .iter()
            .flat_map(|other| {
                std::iter::once(other.primary_ip).chain(other.secondary_ips.iter().copied())
            })
            .collect();
        Ok((cidr, in_use))
    }

    /// Assigns `ip` to the ENI; `false` when another assigner took it meanwhile.
    async fn assign_secondary(
        &self,
        assignment: &SecondaryAssignment<'_>,
        ip: Ipv4Addr,
    ) -> Result<bool, ProviderError> {
        let eni = assignment.eni;
        match self
            .client
            .assign_private_ip_addresses()
            .network_interface_id(&eni.id)
            .private_ip_addresses(ip.to_string())
            .allow_reassignment(false)
            .send()
            .await
            .map_err(|err| classify("AssignPrivateIpAddresses", err))
        {
            Ok(_) => {
                tracing::info!(eni = %eni.id, %ip, gateway = %assignment.intent.gateway.gateway, "assigned secondary private IP");
                Ok(true)
            }
            Err(err) if is_address_in_use(&err) => {
                tracing::warn!(eni = %eni.id, %ip, "address taken meanwhile (VPC CNI?); picking another");
                Ok(false)
            }
            Err(other) => Err(other),
        }
    }

    // -----------------------------------------------------------------------------------------
    // EniPerGateway
    // -----------------------------------------------------------------------------------------

    /// EniPerGateway: one egw ENI per (gateway, instance), attached, deleted with the
    /// instance, without source/dest check, with `intent.count` private IPs (its primary and
    /// `count - 1` secondaries). Everything is checked before anything changes.
    async fn ensure_gateway_eni(
        &self,
        intent: &PrivateAddressIntent,
        subnet_id: Option<&str>,
        security_group_ids: &[String],
    ) -> Result<GatewayInterface, ProviderError> {
        if intent.count == 0 {
            return Err(ProviderError::InvalidIntent(
                "EniPerGateway needs at least one address (the ENI's primary); prune removes the ENI".into(),
            ));
        }
        let instance = self.require_instance(&intent.instance_id).await?;
        let limits = self
            .instance_type_limits_once(&instance.instance_type)
            .await?;
        let tags = eni_tags(&intent.gateway, &instance.id);
        let candidates = self.describe_enis(tag_filters(&tags)).await?;

        // Check before changing anything.
        if intent.count > limits.ipv4_addresses_per_interface {
            return Err(too_many_addresses(
                &instance,
                intent.count,
                limits.ipv4_addresses_per_interface,
            ));
        }
        let already_attached = candidates.iter().any(|eni| eni.attached_to(&instance.id));
        let free_index = instance.free_device_index(&limits);
        if !already_attached && free_index.is_none() {
            return Err(no_free_device_index(&instance, &limits));
        }

        // Secondary IPs of an earlier SecondaryIp intent of this gateway on this node go.
        let primary = instance.primary()?;
        self.release_record(primary, &secondary_ips_tag_key(&intent.gateway))
            .await?;

        let mut eni = match self.keep_one_eni(candidates, &instance).await? {
            Some(eni) => eni,
            None => {
                self.create_eni(intent, &instance, subnet_id, security_group_ids)
                    .await?
            }
        };
        let mut changed = false;
        if !eni.attached_to(&instance.id) {
            let device_index =
                free_index.ok_or_else(|| no_free_device_index(&instance, &limits))?;
            self.attach_eni(&mut eni, &instance, device_index).await?;
            changed = true;
        }
        changed |= self.delete_on_termination(&eni).await?;
        if eni.source_dest_check {
            self.disable_source_dest_check(&eni).await?;
            changed = true;
        }
        let wanted_secondaries = usize::try_from(intent.count - 1).unwrap_or(usize::MAX);
        changed |= self.size_secondaries(&eni, wanted_secondaries).await?;
        if changed {
            eni = self
                .reread_converged(&eni.id, &instance, wanted_secondaries)
                .await?;
        }
        let device_index = eni
            .active_attachment()
            .and_then(|a| a.device_index)
            .ok_or_else(|| {
                unexpected(
                    "DescribeNetworkInterfaces",
                    "attachment without DeviceIndex",
                )
            })?;
        let mut private_ips = vec![eni.primary_ip];
        private_ips.extend(eni.secondary_ips.iter().copied());
        Ok(GatewayInterface {
            network_interface_id: eni.id,
            device_index,
            private_ips,
        })
    }

    /// Of duplicates (a lost CreateNetworkInterface response, a racing replica), keeps the
    /// attached one, else the lowest ID: every pass and replica picks the same. The others are
    /// deleted.
    async fn keep_one_eni(
        &self,
        mut candidates: Vec<Eni>,
        instance: &Instance,
    ) -> Result<Option<Eni>, ProviderError> {
        candidates.sort_by(|a, b| {
            (!a.attached_to(&instance.id), &a.id).cmp(&(!b.attached_to(&instance.id), &b.id))
        });
        let mut candidates = candidates.into_iter();
        let kept = candidates.next();
        for duplicate in candidates {
            tracing::warn!(eni = %duplicate.id, instance = %instance.id, "deleting duplicate egw ENI");
            self.delete_eni(&duplicate).await?;
        }
        Ok(kept)
    }

    /// Attaches `eni` to `instance` at `device_index`, after taking it back from wherever it
    /// is attached, and records the attachment in `eni`.
    async fn attach_eni(
        &self,
        eni: &mut Eni,
        instance: &Instance,
        device_index: i32,
    ) -> Result<(), ProviderError> {
        if eni.active_attachment().is_some() || !eni.available {
            // Tagged for this instance but attached elsewhere (take it back), still being
            // detached, or still pending after its creation: wait until it can be attached.
            self.detach_and_wait(eni).await?;
        }
        let output = self
            .client
            .attach_network_interface()
            .network_interface_id(&eni.id)
            .instance_id(&instance.id)
            .device_index(device_index)
            .send()
            .await
            .map_err(|err| settling(classify("AttachNetworkInterface", err)))?;
        let attachment_id = output
            .attachment_id()
            .ok_or_else(|| unexpected("AttachNetworkInterface", "no AttachmentId"))?;
        tracing::info!(eni = %eni.id, instance = %instance.id, device_index, attachment = %attachment_id, "attached egw ENI");
        eni.attachment = Some(Attachment {
            attachment_id: attachment_id.to_string(),
            instance_id: Some(instance.id.clone()),
            device_index: Some(device_index),
            delete_on_termination: false,
            active: true,
        });
        Ok(())
    }

    /// Marks the attachment delete-on-termination: a terminated instance then takes its egw
    /// ENI with it instead of leaking it. `true` when it changed something.
    async fn delete_on_termination(&self, eni: &Eni) -> Result<bool, ProviderError> {
        let Some(attachment) = eni.active_attachment() else {
            return Ok(false);
        };
        if attachment.delete_on_termination {
            return Ok(false);
        }
        self.client
            .modify_network_interface_attribute()
            .network_interface_id(&eni.id)
            .attachment(
                NetworkInterfaceAttachmentChanges::builder()
                    .attachment_id(&attachment.attachment_id)
                    .delete_on_termination(true)
                    .build(),
            )
            .send()
            .await
            .map_err(|err| settling(classify("ModifyNetworkInterfaceAttribute", err)))?;
        Ok(true)
    }

    /// Gives `eni` exactly `wanted` secondary IPs (EC2 picks new ones; the highest go).
    /// `true` when it changed something.
    async fn size_secondaries(&self, eni: &Eni, wanted: usize) -> Result<bool, ProviderError> {
        let have = eni.secondary_ips.len();
        if have < wanted {
            let add = i32::try_from(wanted - have).unwrap_or(i32::MAX);
            self.client
                .assign_private_ip_addresses()
                .network_interface_id(&eni.id)
                .secondary_private_ip_address_count(add)
                .send()
                .await
                .map_err(|err| settling(classify("AssignPrivateIpAddresses", err)))?;
            tracing::info!(eni = %eni.id, add, "assigned secondary private IPs");
            Ok(true)
        } else if have > wanted {
            // The highest go, so the addresses the gateway keeps (and their EIPs) stay put.
            let surplus = eni.secondary_ips[wanted..].to_vec();
            self.unassign(&eni.id, &surplus).await?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// The ENI as EC2 has it after changes; a retryable error until it shows them (EC2 applies
    /// some changes asynchronously; the retry re-reads and finishes).
    async fn reread_converged(
        &self,
        eni_id: &str,
        instance: &Instance,
        wanted_secondaries: usize,
    ) -> Result<Eni, ProviderError> {
        let eni = self.describe_eni(eni_id).await?.ok_or_else(|| {
            unexpected(
                "DescribeNetworkInterfaces",
                &format!("egw ENI {eni_id} vanished while being set up"),
            )
        })?;
        if eni.secondary_ips.len() != wanted_secondaries || !eni.attached_to(&instance.id) {
            return Err(ProviderError::Retryable {
                operation: "DescribeNetworkInterfaces",
                code: "NotYetConverged".into(),
                message: format!(
                    "egw ENI {} has {} secondaries (want {wanted_secondaries}), attached here: {}",
                    eni.id,
                    eni.secondary_ips.len(),
                    eni.attached_to(&instance.id)
                ),
                attempts: 1,
            });
        }
        Ok(eni)
    }

    async fn create_eni(
        &self,
        intent: &PrivateAddressIntent,
        instance: &Instance,
        subnet_id: Option<&str>,
        security_group_ids: &[String],
    ) -> Result<Eni, ProviderError> {
        const OP: &str = "CreateNetworkInterface";
        let primary = instance.primary()?;
        let subnet_id = subnet_id.unwrap_or(&primary.subnet_id);
        let groups = if security_group_ids.is_empty() {
            &primary.security_group_ids
        } else {
            security_group_ids
        };
        let mut spec = TagSpecification::builder().resource_type(ResourceType::NetworkInterface);
        for (key, value) in eni_tags(&intent.gateway, &instance.id) {
            spec = spec.tags(Tag::builder().key(key).value(value).build());
        }
        let mut request = self
            .client
            .create_network_interface()
            .subnet_id(subnet_id)
            .description(format!(
                "egw gateway {}/{} on {}",
                intent.gateway.cluster, intent.gateway.gateway, instance.id
            ))
            // Tagged in the same call, so no crash can leave an ENI egw cannot find.
            .tag_specifications(spec.build());
        for group in groups {
            request = request.groups(group);
        }
        if intent.count > 1 {
            request = request.secondary_private_ip_address_count(
                i32::try_from(intent.count - 1).unwrap_or(i32::MAX),
            );
        }
        let output = request.send().await.map_err(|err| classify(OP, err))?;
        let created = output
            .network_interface()
            .ok_or_else(|| unexpected(OP, "no NetworkInterface"))?;
        let eni = Eni::from_sdk(created)?;
        tracing::info!(eni = %eni.id, subnet = %subnet_id, instance = %instance.id, gateway = %intent.gateway.gateway, "created egw ENI");
        Ok(eni)
    }

    /// Detaches `eni` (when attached) and waits, bounded, until EC2 reports it available.
    async fn detach_and_wait(&self, eni: &Eni) -> Result<(), ProviderError> {
        if let Some(attachment) = eni.active_attachment() {
            if attachment.device_index == Some(0) {
                return Err(ProviderError::InvalidIntent(format!(
                    "refusing to detach {}: it is its instance's primary ENI",
                    eni.id
                )));
            }
            match self
                .client
                .detach_network_interface()
                .attachment_id(&attachment.attachment_id)
                .send()
                .await
                .map_err(|err| classify("DetachNetworkInterface", err))
            {
                Ok(_) | Err(ProviderError::NotFound { .. }) => {
                    tracing::info!(eni = %eni.id, attachment = %attachment.attachment_id, "detached egw ENI");
                }
                Err(other) => return Err(other),
            }
        } else if eni.available {
            return Ok(());
        }
        for poll in 0..DETACH_POLL_ATTEMPTS {
            match self.describe_eni(&eni.id).await? {
                None => return Ok(()),
                Some(current) if current.available && current.active_attachment().is_none() => {
                    return Ok(())
                }
                Some(_) if poll + 1 < DETACH_POLL_ATTEMPTS => {
                    tokio::time::sleep(DETACH_POLL_INTERVAL).await
                }
                Some(_) => {}
            }
        }
        Err(ProviderError::Retryable {
            operation: "DetachNetworkInterface",
            code: "DetachTimeout".into(),
            message: format!("{} did not become available after detaching", eni.id),
            attempts: 1,
        })
    }

    /// Detaches (when attached) and deletes an egw ENI; gone already is fine.
    async fn delete_eni(&self, eni: &Eni) -> Result<(), ProviderError> {
        self.detach_and_wait(eni).await?;
        match self
            .client
            .delete_network_interface()
            .network_interface_id(&eni.id)
            .send()
            .await
            .map_err(|err| classify("DeleteNetworkInterface", err))
        {
            Ok(_) | Err(ProviderError::NotFound { .. }) => {
                tracing::info!(eni = %eni.id, "deleted egw ENI");
                Ok(())
            }
            Err(other) => Err(other),
        }
    }

    async fn prune_once(
        &self,
        gateway: &GatewayRef,
        keep_instance_ids: &[String],
    ) -> Result<PrunedInterfaces, ProviderError> {
        let kept = |instance: Option<&str>| {
            instance.is_some_and(|id| keep_instance_ids.iter().any(|keep| keep == id))
        };
        let mut pruned = PrunedInterfaces::default();

        for eni in self
            .describe_enis(tag_filters(&owner_tags(gateway)))
            .await?
        {
            if kept(eni.tags.get(TAG_INSTANCE).map(String::as_str)) {
                continue;
            }
            self.delete_eni(&eni).await?;
            pruned.deleted_network_interface_ids.push(eni.id);
        }

        let record_key = secondary_ips_tag_key(gateway);
        for eni in self
            .describe_enis(vec![filter("tag-key", &record_key)])
            .await?
        {
            let attached_instance = eni
                .active_attachment()
                .and_then(|a| a.instance_id.as_deref());
            if kept(attached_instance) {
                continue;
            }
            let released = self.release_record(&eni, &record_key).await?;
            pruned.unassigned_private_ips.extend(released);
        }
        pruned.deleted_network_interface_ids.sort();
        pruned.unassigned_private_ips.sort();
        Ok(pruned)
    }
}

impl InterfaceProvider for Ec2Provider {
    async fn describe_instance(
        &self,
        instance_id: &str,
    ) -> Result<Option<InstanceDescription>, ProviderError> {
        let instance = self
            .with_retries(|| self.describe_instance_once(instance_id))
            .await?;
        Ok(instance.map(|instance| InstanceDescription {
            instance_id: instance.id,
            state: instance.state,
            instance_type: instance.instance_type,
            interfaces: instance
                .enis
                .iter()
                .map(Eni::to_network_interface)
                .collect(),
        }))
    }

    async fn instance_type_limits(
        &self,
        instance_type: &str,
    ) -> Result<InstanceTypeLimits, ProviderError> {
        self.with_retries(|| self.instance_type_limits_once(instance_type))
            .await
    }

    async fn ensure_private_addresses(
        &self,
        intent: &PrivateAddressIntent,
    ) -> Result<GatewayInterface, ProviderError> {
        match &intent.mode {
            InterfaceMode::SecondaryIp => {
                self.with_retries(|| self.ensure_secondary_ips(intent))
                    .await
            }
            InterfaceMode::EniPerGateway {
                subnet_id,
                security_group_ids,
            } => {
                self.with_retries(|| {
                    self.ensure_gateway_eni(intent, subnet_id.as_deref(), security_group_ids)
                })
                .await
            }
        }
    }

    async fn prune_private_addresses(
        &self,
        gateway: &GatewayRef,
        keep_instance_ids: &[String],
    ) -> Result<PrunedInterfaces, ProviderError> {
        self.with_retries(|| self.prune_once(gateway, keep_instance_ids))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_addresses_skip_the_reserved_and_the_taken() {
        let cidr = parse_cidr("10.0.1.0/28").unwrap();
        let in_use = BTreeSet::from([Ipv4Addr::new(10, 0, 1, 4), Ipv4Addr::new(10, 0, 1, 6)]);
        let excluded = BTreeSet::from([Ipv4Addr::new(10, 0, 1, 7)]);
        assert_eq!(
            pick_free_addresses(cidr, &in_use, &excluded, 2, 0),
            vec![Ipv4Addr::new(10, 0, 1, 5), Ipv4Addr::new(10, 0, 1, 8)]
        );
        // .0-.3 and .15 (the last) are reserved by AWS: 11 usable.
        let all = pick_free_addresses(cidr, &BTreeSet::new(), &BTreeSet::new(), 100, 0);
        assert_eq!(all.first(), Some(&Ipv4Addr::new(10, 0, 1, 4)));
        assert_eq!(all.last(), Some(&Ipv4Addr::new(10, 0, 1, 14)));
        assert_eq!(all.len(), 11);
        // A start near the end wraps to the beginning; any start covers every usable address.
        assert_eq!(
            pick_free_addresses(cidr, &in_use, &excluded, 3, 9),
            vec![
                Ipv4Addr::new(10, 0, 1, 13),
                Ipv4Addr::new(10, 0, 1, 14),
                Ipv4Addr::new(10, 0, 1, 5)
            ]
        );
        for start in [1, 11, 12, u64::MAX] {
            let mut wrapped =
                pick_free_addresses(cidr, &BTreeSet::new(), &BTreeSet::new(), 100, start);
            wrapped.sort();
            assert_eq!(wrapped, all, "start {start}");
        }
        // A CIDR written with host bits still yields addresses of its network.
        let sloppy = parse_cidr("10.0.1.9/28").unwrap();
        assert_eq!(
            pick_free_addresses(sloppy, &BTreeSet::new(), &BTreeSet::new(), 1, 0),
            vec![Ipv4Addr::new(10, 0, 1, 4)]
        );
        // Too small to hold anything after the reserved addresses.
        let tiny = parse_cidr("10.0.1.0/30").unwrap();
        assert!(pick_free_addresses(tiny, &BTreeSet::new(), &BTreeSet::new(), 1, 0).is_empty());
    }

    #[test]
    fn eventual_consistency_is_retried_and_real_rejections_are_not() {
        let not_yet = settling(ProviderError::NotFound {
            operation: "AttachNetworkInterface",
            code: "InvalidNetworkInterfaceID.NotFound".into(),
            message: "m".into(),
        });
        assert!(not_yet.is_retryable());
        assert_eq!(
            not_yet.aws_code(),
            Some("InvalidNetworkInterfaceID.NotFound")
        );
        let settling_state = settling(ProviderError::Permanent {
            operation: "AttachNetworkInterface",
            code: "IncorrectState".into(),
            message: "m".into(),
        });
        assert!(settling_state.is_retryable());
        let denied = settling(ProviderError::Permanent {
            operation: "AttachNetworkInterface",
            code: "UnauthorizedOperation".into(),
            message: "m".into(),
        });
        assert!(matches!(denied, ProviderError::Permanent { .. }));
    }

    #[test]
    fn the_record_round_trips_sorted_and_ignores_garbage() {
        let record = parse_record("10.0.1.9, 10.0.1.7,not-an-ip,");
        assert_eq!(
            record,
            BTreeSet::from([Ipv4Addr::new(10, 0, 1, 7), Ipv4Addr::new(10, 0, 1, 9)])
        );
        assert_eq!(format_record(&record), "10.0.1.7,10.0.1.9");
        assert_eq!(
            secondary_ips_tag_key(&GatewayRef {
                cluster: "prod".into(),
                gateway: "web".into()
            }),
            "egw.dev/ips:prod/web"
        );
    }
}
