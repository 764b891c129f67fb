//! Test support (feature `testing`): a moto server (a real EC2 API emulator) on 127.0.0.1, the
//! real SDK pointed at it with static fake credentials, fault-injecting interceptors and
//! describe helpers. Used by egw-aws's and the controller's tests; never by the controller itself.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Ec2Provider, RetryPolicy, OWNER_TAG_VALUE, TAG_OWNER};
use aws_sdk_ec2::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeDeserializationInterceptorContextRef,
    BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextMut,
};
use aws_sdk_ec2::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents,
    SharedInterceptor,
};
use aws_sdk_ec2::error::BoxError;
use aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput;
use aws_sdk_ec2::types::{DomainType, Filter, ResourceType, Tag, TagSpecification};
use aws_sdk_ec2::Client;

/// The SDK, for tests outside this crate that describe what EC2 holds (the controller keeps no
/// SDK dependency of its own).
pub use aws_sdk_ec2;

const MOTO_MISSING: &str = "moto server is required for the egw-aws tests and is not installed: \
run deploy/scripts/setup.sh (or `python3 -m pip install 'moto[server]==5.*'`)";

/// A moto server child process; killed when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
    log: tempfile::NamedTempFile,
}

impl Moto {
    pub fn start() -> Moto {
        let has_moto = Command::new("python3")
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|status| status.success())
            .unwrap_or(false);
        assert!(has_moto, "{MOTO_MISSING}");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect(MOTO_MISSING);
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        };
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = moto.child.try_wait().unwrap() {
                let mut stderr = String::new();
                moto.log
                    .reopen()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .unwrap();
                panic!("moto server exited ({status}) before answering: {stderr}\n{MOTO_MISSING}");
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return moto;
            }
            assert!(
                Instant::now() < deadline,
                "moto server did not answer on {address} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The real SDK client's configuration, pointed at this moto server.
    pub fn config(&self) -> aws_sdk_ec2::config::Builder {
        aws_sdk_ec2::Config::builder()
            .http_client(crate::https_client())
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "egw-tests",
            ))
            .endpoint_url(&self.endpoint)
    }

    pub fn client(&self) -> Client {
        Client::from_conf(self.config().build())
    }

    pub fn provider(&self) -> Ec2Provider {
        Ec2Provider::from_client(self.client(), fast_retries())
    }

    /// A provider whose client runs `interceptor` on every request.
    pub fn provider_with(&self, interceptor: impl Intercept + 'static) -> Ec2Provider {
        let client = Client::from_conf(self.config().interceptor(interceptor).build());
        Ec2Provider::from_client(client, fast_retries())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
    }
}

/// Lets `delivered` responses through, then drops every later response after the request has
/// reached EC2 (so its effect happened): a controller crashing mid-way.
#[derive(Debug)]
pub struct LoseResponsesAfter {
    pub delivered: usize,
    pub seen: Arc<AtomicUsize>,
}

impl Intercept for LoseResponsesAfter {
    fn name(&self) -> &'static str {
        "LoseResponsesAfter"
    }

    fn read_before_deserialization(
        &self,
        _context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.seen.fetch_add(1, Ordering::SeqCst) >= self.delivered {
            Err("injected: response lost after the request reached EC2".into())
        } else {
            Ok(())
        }
    }
}

/// Fails the first `failures` requests before they are sent, as a dropped connection would.
#[derive(Debug)]
pub struct FailFirstSends {
    pub failures: usize,
    pub seen: Arc<AtomicUsize>,
}

impl Intercept for FailFirstSends {
    fn name(&self) -> &'static str {
        "FailFirstSends"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.seen.fetch_add(1, Ordering::SeqCst) < self.failures {
            Err("injected: connection reset".into())
        } else {
            Ok(())
        }
    }
}

/// Records the body of every request as it is sent.
#[derive(Debug)]
pub struct RecordRequests {
    pub bodies: Arc<Mutex<Vec<String>>>,
}

impl Intercept for RecordRequests {
    fn name(&self) -> &'static str {
        "RecordRequests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context.request().body().bytes().unwrap_or_default();
        self.bodies
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(body).into_owned());
        Ok(())
    }
}

/// moto gap: moto has no Elastic IP quota, so it never answers `AddressLimitExceeded`. This
/// replaces the answer to every AllocateAddress (after moto has handled it) with the error EC2
/// returns at the quota, recorded from EC2's documented error format, for the real SDK to parse.
#[derive(Debug, Default)]
pub struct AllocationQuotaReached {
    allocating: AtomicBool,
}

const ADDRESS_LIMIT_EXCEEDED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<Response><Errors><Error><Code>AddressLimitExceeded</Code>\
<Message>The maximum number of addresses has been reached.</Message></Error></Errors>\
<RequestID>5f8c1a2e-7f0a-4c3e-9c55-6d1d6b0a2b11</RequestID></Response>";

impl Intercept for AllocationQuotaReached {
    fn name(&self) -> &'static str {
        "AllocationQuotaReached"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context.request().body().bytes().unwrap_or_default();
        let allocating = String::from_utf8_lossy(body).contains("Action=AllocateAddress");
        self.allocating.store(allocating, Ordering::SeqCst);
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.allocating.load(Ordering::SeqCst) {
            let response = context.response_mut();
            *response.status_mut() = 400u16.try_into()?;
            response.headers_mut().remove("content-length");
            *response.body_mut() = ADDRESS_LIMIT_EXCEEDED.into();
        }
        Ok(())
    }
}

/// Every address moto holds that carries the egw owner tag.
pub async fn describe_egw_owned(client: &Client) -> Vec<aws_sdk_ec2::types::Address> {
    client
        .describe_addresses()
        .filters(
            Filter::builder()
                .name(format!("tag:{TAG_OWNER}"))
                .values(OWNER_TAG_VALUE)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .addresses
        .unwrap_or_default()
}

pub async fn all_allocation_ids(client: &Client) -> Vec<String> {
    let mut ids: Vec<String> = client
        .describe_addresses()
        .send()
        .await
        .unwrap()
        .addresses
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a.allocation_id().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// An address allocated outside egw (by an operator), with the given tags.
pub async fn allocate_foreign(client: &Client, tags: &[(&str, &str)]) -> String {
    let mut request = client.allocate_address().domain(DomainType::Vpc);
    if !tags.is_empty() {
        let mut spec = TagSpecification::builder().resource_type(ResourceType::ElasticIp);
        for (key, value) in tags {
            spec = spec.tags(Tag::builder().key(*key).value(*value).build());
        }
        request = request.tag_specifications(spec.build());
    }
    request.send().await.unwrap().allocation_id.unwrap()
}

/// A VPC and a subnet (10.0.1.0/24) in it; returns the subnet ID.
pub async fn create_subnet(client: &Client) -> String {
    let vpc = client
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc_id = vpc.vpc.unwrap().vpc_id.unwrap();
    let subnet = client
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.0.1.0/24")
        .send()
        .await
        .unwrap();
    subnet.subnet.unwrap().subnet_id.unwrap()
}

/// An ENI in `subnet_id` with the given primary private IP and one secondary; returns (ENI ID,
/// primary IP, secondary IP).
pub async fn create_eni(
    client: &Client,
    subnet_id: &str,
    private_ip: &str,
) -> (String, std::net::Ipv4Addr, std::net::Ipv4Addr) {
    let eni = client
        .create_network_interface()
        .subnet_id(subnet_id)
        .private_ip_address(private_ip)
        .secondary_private_ip_address_count(1)
        .send()
        .await
        .unwrap()
        .network_interface
        .unwrap();
    let secondary = eni
        .private_ip_addresses()
        .iter()
        .find(|p| p.primary() != Some(true))
        .and_then(|p| p.private_ip_address())
        .unwrap()
        .parse()
        .unwrap();
    (
        eni.network_interface_id.unwrap(),
        eni.private_ip_address.unwrap().parse().unwrap(),
        secondary,
    )
}

// ---------------------------------------------------------------------------------------------
// Instances and ENIs
// ---------------------------------------------------------------------------------------------

impl Moto {
    /// A provider whose client runs every one of `interceptors` on every request, in order.
    pub fn provider_with_all(
        &self,
        interceptors: impl IntoIterator<Item = SharedInterceptor>,
    ) -> Ec2Provider {
        let client = Client::from_conf(self.config_with_all(interceptors).build());
        Ec2Provider::from_client(client, fast_retries())
    }

    /// A plain SDK client (for the test's own describes) running `interceptors`.
    pub fn client_with_all(
        &self,
        interceptors: impl IntoIterator<Item = SharedInterceptor>,
    ) -> Client {
        Client::from_conf(self.config_with_all(interceptors).build())
    }

    fn config_with_all(
        &self,
        interceptors: impl IntoIterator<Item = SharedInterceptor>,
    ) -> aws_sdk_ec2::config::Builder {
        let mut config = self.config();
        for interceptor in interceptors {
            config.push_interceptor(interceptor);
        }
        config
    }
}

/// A VPC (10.0.0.0/16) with two subnets and a security group.
#[derive(Debug, Clone)]
pub struct Network {
    pub vpc_id: String,
    /// 10.0.1.0/24: where instances run.
    pub subnet_id: String,
    /// 10.0.2.0/24: for ENIs placed in another subnet.
    pub other_subnet_id: String,
    /// The group instances run with.
    pub security_group_id: String,
    /// A second group, for ENIs given other groups.
    pub other_security_group_id: String,
}

pub async fn create_network(client: &Client) -> Network {
    let vpc_id = client
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc
        .unwrap()
        .vpc_id
        .unwrap();
    let mut subnets = Vec::new();
    for cidr in ["10.0.1.0/24", "10.0.2.0/24"] {
        subnets.push(
            client
                .create_subnet()
                .vpc_id(&vpc_id)
                .cidr_block(cidr)
                .send()
                .await
                .unwrap()
                .subnet
                .unwrap()
                .subnet_id
                .unwrap(),
        );
    }
    let mut groups = Vec::new();
    for name in ["nodes", "egress"] {
        groups.push(
            client
                .create_security_group()
                .vpc_id(&vpc_id)
                .group_name(name)
                .description(name)
                .send()
                .await
                .unwrap()
                .group_id
                .unwrap(),
        );
    }
    Network {
        vpc_id,
        subnet_id: subnets.remove(0),
        other_subnet_id: subnets.remove(0),
        security_group_id: groups.remove(0),
        other_security_group_id: groups.remove(0),
    }
}

/// Runs one instance of `instance_type` in the network's first subnet; returns its ID.
pub async fn run_instance(client: &Client, network: &Network, instance_type: &str) -> String {
    client
        .run_instances()
        .image_id("ami-12c6146b")
        .min_count(1)
        .max_count(1)
        .instance_type(aws_sdk_ec2::types::InstanceType::from(instance_type))
        .subnet_id(&network.subnet_id)
        .security_group_ids(&network.security_group_id)
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_string()
}

/// Every ENI attached to `instance_id`, sorted by device index.
pub async fn instance_enis(
    client: &Client,
    instance_id: &str,
) -> Vec<aws_sdk_ec2::types::NetworkInterface> {
    let mut enis = client
        .describe_network_interfaces()
        .filters(
            Filter::builder()
                .name("attachment.instance-id")
                .values(instance_id)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .network_interfaces
        .unwrap_or_default();
    enis.sort_by_key(|eni| eni.attachment().and_then(|a| a.device_index()));
    enis
}

/// Every ENI moto holds that carries the egw owner tag.
pub async fn egw_enis(client: &Client) -> Vec<aws_sdk_ec2::types::NetworkInterface> {
    client
        .describe_network_interfaces()
        .filters(
            Filter::builder()
                .name(format!("tag:{TAG_OWNER}"))
                .values(OWNER_TAG_VALUE)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .network_interfaces
        .unwrap_or_default()
}

/// The secondary (non-primary) private IPs of an ENI, sorted and distinct.
///
/// moto gap: when asked for a count of secondaries (CreateNetworkInterface,
/// AssignPrivateIpAddresses), moto draws random addresses without checking the ENI's own, so an
/// ENI can list one address twice, or its primary again as a secondary. EC2 never does; an
/// ENI's addresses are a set, and egw reads them as one, so the tests do too.
pub fn secondary_ips(eni: &aws_sdk_ec2::types::NetworkInterface) -> Vec<std::net::Ipv4Addr> {
    let primary: Option<std::net::Ipv4Addr> =
        eni.private_ip_address().map(|ip| ip.parse().unwrap());
    let mut ips: Vec<std::net::Ipv4Addr> = eni
        .private_ip_addresses()
        .iter()
        .filter(|p| p.primary() != Some(true))
        .map(|p| p.private_ip_address().unwrap().parse().unwrap())
        .filter(|ip| Some(*ip) != primary)
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// The value of tag `key` on an ENI.
pub fn eni_tag(eni: &aws_sdk_ec2::types::NetworkInterface, key: &str) -> Option<String> {
    eni.tag_set()
        .iter()
        .find(|tag| tag.key() == Some(key))
        .and_then(|tag| tag.value())
        .map(str::to_string)
}

/// Assigns `ip` to `eni_id` as a secondary, as the VPC CNI does for pods.
pub async fn assign_as_cni(client: &Client, eni_id: &str, ip: &str) {
    client
        .assign_private_ip_addresses()
        .network_interface_id(eni_id)
        .private_ip_addresses(ip)
        .send()
        .await
        .unwrap();
}

/// moto gap: moto accepts ModifyNetworkInterfaceAttribute with `Attachment.DeleteOnTermination`
/// but ignores it, so every described attachment keeps `DeleteOnTermination=false`. This stands
/// in for EC2: it remembers each attachment the modification reached moto for, and sets
/// `DeleteOnTermination=true` on that attachment in every later DescribeNetworkInterfaces
/// output. Clones share what they remember (give one to the provider, one to the test's client).
#[derive(Debug, Clone, Default)]
pub struct MotoDeleteOnTermination {
    attachments: Arc<Mutex<std::collections::BTreeSet<String>>>,
}

impl MotoDeleteOnTermination {
    /// The attachment IDs a DeleteOnTermination=true modification was sent for.
    pub fn modified_attachments(&self) -> Vec<String> {
        self.attachments.lock().unwrap().iter().cloned().collect()
    }
}

/// The value of `name` in a form-encoded EC2 query body.
pub fn query_param(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.to_string())
    })
}

/// Every value of `Name.1`, `Name.2`, ... in a form-encoded EC2 query body.
pub fn query_list(body: &str, name: &str) -> Vec<String> {
    body.split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let index = key.strip_prefix(name)?.strip_prefix('.')?;
            index
                .parse::<u32>()
                .is_ok()
                .then(|| value.replace("%2C", ","))
        })
        .collect()
}

impl Intercept for MotoDeleteOnTermination {
    fn name(&self) -> &'static str {
        "MotoDeleteOnTermination"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context.request().body().bytes().unwrap_or_default();
        let body = String::from_utf8_lossy(body);
        if query_param(&body, "Action").as_deref() == Some("ModifyNetworkInterfaceAttribute")
            && query_param(&body, "Attachment.DeleteOnTermination").as_deref() == Some("true")
        {
            if let Some(attachment) = query_param(&body, "Attachment.AttachmentId") {
                self.attachments.lock().unwrap().insert(attachment);
            }
        }
        Ok(())
    }

    fn modify_before_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Ok(output)) = context.output_or_error_mut() else {
            return Ok(());
        };
        let Some(described) = output.downcast_mut::<DescribeNetworkInterfacesOutput>() else {
            return Ok(());
        };
        let modified = self.attachments.lock().unwrap();
        for eni in described.network_interfaces.iter_mut().flatten() {
            if let Some(attachment) = eni.attachment.as_mut() {
                if attachment
                    .attachment_id
                    .as_ref()
                    .is_some_and(|id| modified.contains(id))
                {
                    attachment.delete_on_termination = Some(true);
                }
            }
        }
        Ok(())
    }
}

/// moto gap: moto assigns any requested private IP, even one another ENI holds, so it never
/// answers `InvalidIPAddress.InUse`. This stands in for the VPC CNI winning a race for an
/// address: the first `rejections` AssignPrivateIpAddresses requests naming explicit addresses
/// never reach moto (they are turned into a harmless DescribeRegions) and are answered with the
/// error EC2 returns, recorded from EC2's documented error format. The addresses they named are
/// kept in `rejected`.
#[derive(Debug)]
pub struct AssignRacesWithCni {
    pub rejections: AtomicUsize,
    pub rejected: Arc<Mutex<Vec<std::net::Ipv4Addr>>>,
    rejecting: AtomicBool,
}

impl AssignRacesWithCni {
    pub fn new(rejections: usize, rejected: Arc<Mutex<Vec<std::net::Ipv4Addr>>>) -> Self {
        AssignRacesWithCni {
            rejections: AtomicUsize::new(rejections),
            rejected,
            rejecting: AtomicBool::new(false),
        }
    }
}

fn address_in_use(ip: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
<Code>InvalidIPAddress.InUse</Code><Message>Address {ip} is in use.</Message></Error></Errors>\
<RequestID>0b5e4c1d-3f7a-4e2b-8d61-2a9c7e5f1b30</RequestID></Response>"
    )
}

impl Intercept for AssignRacesWithCni {
    fn name(&self) -> &'static str {
        "AssignRacesWithCni"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let body = String::from_utf8_lossy(request.body().bytes().unwrap_or_default()).into_owned();
        let addresses = query_list(&body, "PrivateIpAddress");
        let rejecting = query_param(&body, "Action").as_deref() == Some("AssignPrivateIpAddresses")
            && !addresses.is_empty()
            && self
                .rejections
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                })
                .is_ok();
        self.rejecting.store(rejecting, Ordering::SeqCst);
        if rejecting {
            self.rejected.lock().unwrap().extend(
                addresses
                    .iter()
                    .map(|ip| ip.parse::<std::net::Ipv4Addr>().unwrap()),
            );
            let harmless = "Action=DescribeRegions&Version=2016-11-15";
            *request.body_mut() = harmless.into();
            request
                .headers_mut()
                .insert("content-length", harmless.len().to_string());
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.rejecting.load(Ordering::SeqCst) {
            let ips = self.rejected.lock().unwrap();
            let ip = ips.last().map(ToString::to_string).unwrap_or_default();
            let response = context.response_mut();
            *response.status_mut() = 400u16.try_into()?;
            response.headers_mut().remove("content-length");
            *response.body_mut() = address_in_use(&ip).into();
        }
        Ok(())
    }
}

// --- routes ---

/// A VPC (10.0.0.0/16) with a subnet (10.0.1.0/24), an attached internet gateway and a route
/// table of its own whose default route goes to that gateway (a public subnet's table).
#[derive(Debug, Clone)]
pub struct RouteLab {
    pub vpc_id: String,
    pub subnet_id: String,
    pub internet_gateway_id: String,
    pub route_table_id: String,
}

pub async fn create_route_lab(client: &Client) -> RouteLab {
    let vpc_id = client
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc
        .unwrap()
        .vpc_id
        .unwrap();
    let subnet_id = client
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.0.1.0/24")
        .send()
        .await
        .unwrap()
        .subnet
        .unwrap()
        .subnet_id
        .unwrap();
    let (route_table_id, internet_gateway_id) = public_route_table(client, &vpc_id).await;
    RouteLab {
        vpc_id,
        subnet_id,
        internet_gateway_id,
        route_table_id,
    }
}

/// An internet gateway attached to `vpc_id` and a new route table whose default route goes to
/// it (a public subnet's table); returns (route table ID, internet gateway ID).
pub async fn public_route_table(client: &Client, vpc_id: &str) -> (String, String) {
    let internet_gateway_id = client
        .create_internet_gateway()
        .send()
        .await
        .unwrap()
        .internet_gateway
        .unwrap()
        .internet_gateway_id
        .unwrap();
    client
        .attach_internet_gateway()
        .internet_gateway_id(&internet_gateway_id)
        .vpc_id(vpc_id)
        .send()
        .await
        .unwrap();
    let route_table_id = create_route_table(client, vpc_id).await;
    client
        .create_route()
        .route_table_id(&route_table_id)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&internet_gateway_id)
        .send()
        .await
        .unwrap();
    (route_table_id, internet_gateway_id)
}

pub async fn create_route_table(client: &Client, vpc_id: &str) -> String {
    client
        .create_route_table()
        .vpc_id(vpc_id)
        .send()
        .await
        .unwrap()
        .route_table
        .unwrap()
        .route_table_id
        .unwrap()
}

/// A NAT gateway in `subnet_id` (with a fresh Elastic IP); returns its ID.
pub async fn create_nat_gateway(client: &Client, subnet_id: &str) -> String {
    let allocation_id = allocate_foreign(client, &[]).await;
    client
        .create_nat_gateway()
        .subnet_id(subnet_id)
        .allocation_id(allocation_id)
        .send()
        .await
        .unwrap()
        .nat_gateway
        .unwrap()
        .nat_gateway_id
        .unwrap()
}

/// A table's routes (every field, by destination) and tags, to compare before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTableSnapshot {
    pub routes: std::collections::BTreeMap<String, String>,
    pub tags: std::collections::BTreeMap<String, String>,
}

impl RouteTableSnapshot {
    /// The target of the route to `cidr` (the first ID set), if there is such a route.
    pub fn target(&self, cidr: &str) -> Option<&str> {
        self.routes.get(cidr).map(String::as_str)
    }
}

pub async fn route_table_snapshot(client: &Client, route_table_id: &str) -> RouteTableSnapshot {
    let table = client
        .describe_route_tables()
        .route_table_ids(route_table_id)
        .send()
        .await
        .unwrap()
        .route_tables
        .unwrap()
        .remove(0);
    let routes = table
        .routes()
        .iter()
        .map(|route| {
            let target = [
                route.gateway_id(),
                route.nat_gateway_id(),
                route.transit_gateway_id(),
                route.vpc_peering_connection_id(),
                route.network_interface_id(),
                route.instance_id(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("+");
            (
                route
                    .destination_cidr_block()
                    .unwrap_or_default()
                    .to_string(),
                target,
            )
        })
        .collect();
    let tags = table
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
        .collect();
    RouteTableSnapshot { routes, tags }
}

/// moto gap: moto reports every route as `active`. This marks every route in DescribeRouteTables
/// answers as a `blackhole`, as EC2 does when the target ENI's instance is stopped.
#[derive(Debug)]
pub struct RoutesAreBlackholes;

impl Intercept for RoutesAreBlackholes {
    fn name(&self) -> &'static str {
        "RoutesAreBlackholes"
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut aws_sdk_ec2::config::interceptors::FinalizerInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let described = context
            .output_or_error_mut()
            .and_then(|result| result.as_mut().ok())
            .and_then(|output| {
                output.downcast_mut::<aws_sdk_ec2::operation::describe_route_tables::DescribeRouteTablesOutput>()
            });
        if let Some(output) = described {
            for table in output.route_tables.iter_mut().flatten() {
                for route in table.routes.iter_mut().flatten() {
                    route.state = Some(aws_sdk_ec2::types::RouteState::Blackhole);
                }
            }
        }
        Ok(())
    }
}
