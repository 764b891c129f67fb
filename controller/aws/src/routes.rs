//! [`RouteProvider`] on the EC2 API: VPC routes pointed at a gateway ENI (the NAT-instance
//! pattern), with the route each one replaced recorded in a tag on its route table.
//!
//! Routes cannot be tagged, so before egw changes a route it writes one tag per managed route on
//! the route table: key [`route_record_key`] (`egw.dev/route:<cluster>/<gateway>:<cidr>`), value
//! the target the route had before egw ([`NO_PREVIOUS_ROUTE`] when there was no route). The
//! record is written once and never overwritten, so a crash at any point leaves enough on EC2 to
//! restore the original route.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Mutex;

use aws_sdk_ec2::operation::replace_route::builders::ReplaceRouteFluentBuilder;
use aws_sdk_ec2::types::{
    Filter, Route, RouteOrigin, RouteState as Ec2RouteState, RouteTable, Tag,
};
use ipnet::Ipv4Net;

use crate::ec2::{classify, Ec2Provider};
use crate::provider::{GatewayRef, ProviderError, RouteIntent, RouteProvider, RouteState};

/// Every route record tag key starts with this.
pub const ROUTE_RECORD_TAG_PREFIX: &str = "egw.dev/route:";

/// Record value for a route that did not exist before egw created it (released by deleting it).
pub const NO_PREVIOUS_ROUTE: &str = "none";

/// EC2 tag keys are at most 128 characters.
const MAX_TAG_KEY_LEN: usize = 128;

/// The tag key recording that `gateway` manages the route to `cidr` in a route table:
/// `egw.dev/route:<cluster>/<gateway>:<cidr>`. Fails when the names hold a character that
/// would make the key ambiguous or invalid, or the key would exceed 128 characters.
pub fn route_record_key(gateway: &GatewayRef, cidr: &Ipv4Net) -> Result<String, ProviderError> {
    let key = format!("{ROUTE_RECORD_TAG_PREFIX}{}:{cidr}", record_owner(gateway)?);
    if key.len() > MAX_TAG_KEY_LEN {
        return Err(ProviderError::InvalidIntent(format!(
            "route record tag key {key:?} is {} characters, EC2 allows {MAX_TAG_KEY_LEN}: \
             shorten the cluster or gateway name",
            key.len()
        )));
    }
    Ok(key)
}

/// `<cluster>/<gateway>`, the part of a record key naming its gateway. `/` and `:` separate the
/// parts of the key, and `*`/`?` are filter wildcards, so the names may hold neither; only the
/// characters EC2 accepts in tag keys on every resource are allowed.
fn record_owner(gateway: &GatewayRef) -> Result<String, ProviderError> {
    for (what, name) in [("cluster", &gateway.cluster), ("gateway", &gateway.gateway)] {
        let valid = !name.is_empty()
            && name.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '=' | '@')
            });
        if !valid {
            return Err(ProviderError::InvalidIntent(format!(
                "{what} name {name:?} cannot be part of a route record tag key: \
                 use letters, digits and . _ - + = @ only"
            )));
        }
    }
    Ok(format!("{}/{}", gateway.cluster, gateway.gateway))
}

/// Splits a record key into its owner (`<cluster>/<gateway>`) and destination; `None` for tags
/// that are not route records.
fn parse_record_key(key: &str) -> Option<(&str, Ipv4Net)> {
    let (owner, cidr) = key
        .strip_prefix(ROUTE_RECORD_TAG_PREFIX)?
        .rsplit_once(':')?;
    Some((owner, cidr.parse().ok()?))
}

/// An IPv4 destination, as EC2 writes it: no host bits.
fn parse_destination(cidr: &str) -> Result<Ipv4Net, ProviderError> {
    let net = Ipv4Net::from_str(cidr).map_err(|_| {
        ProviderError::InvalidIntent(format!(
            "destination {cidr:?} is not an IPv4 CIDR (a.b.c.d/len)"
        ))
    })?;
    if net.trunc() != net {
        return Err(ProviderError::InvalidIntent(format!(
            "destination {cidr:?} has host bits set (did you mean {}?)",
            net.trunc()
        )));
    }
    Ok(net)
}

/// What a route can point at, by the ID prefix EC2 gives each kind of target. Each kind is set
/// with its own CreateRoute/ReplaceRoute parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    /// `igw-…`, `vgw-…`: `GatewayId`.
    Gateway,
    /// `vpce-…` (Gateway Load Balancer endpoint; described as `GatewayId`): `VpcEndpointId`.
    VpcEndpoint,
    /// `nat-…`: `NatGatewayId`.
    NatGateway,
    /// `eni-…`: `NetworkInterfaceId`.
    NetworkInterface,
    /// `i-…`: `InstanceId`.
    Instance,
    /// `pcx-…`: `VpcPeeringConnectionId`.
    PeeringConnection,
    /// `tgw-…`: `TransitGatewayId`.
    TransitGateway,
    /// `lgw-…` (Outposts): `LocalGatewayId`.
    LocalGateway,
    /// `cagw-…` (Wavelength): `CarrierGatewayId`.
    CarrierGateway,
    /// `eigw-…`: `EgressOnlyInternetGatewayId`.
    EgressOnlyInternetGateway,
    /// `arn:…:networkmanager:…` (Cloud WAN): `CoreNetworkArn`.
    CoreNetwork,
    /// `arn:…:odb:…` (Oracle Database@AWS): `OdbNetworkArn`.
    OdbNetwork,
}

impl TargetKind {
    fn of(target: &str) -> Option<TargetKind> {
        if let Some(arn) = target.strip_prefix("arn:") {
            return match arn.split(':').nth(1) {
                Some("networkmanager") => Some(TargetKind::CoreNetwork),
                Some("odb") => Some(TargetKind::OdbNetwork),
                _ => None,
            };
        }
        let (prefix, rest) = target.split_once('-')?;
        if rest.is_empty() {
            return None;
        }
        Some(match prefix {
            "igw" | "vgw" => TargetKind::Gateway,
            "vpce" => TargetKind::VpcEndpoint,
            "nat" => TargetKind::NatGateway,
            "eni" => TargetKind::NetworkInterface,
            "i" => TargetKind::Instance,
            "pcx" => TargetKind::PeeringConnection,
            "tgw" => TargetKind::TransitGateway,
            "lgw" => TargetKind::LocalGateway,
            "cagw" => TargetKind::CarrierGateway,
            "eigw" => TargetKind::EgressOnlyInternetGateway,
            _ => return None,
        })
    }

    fn set_on(self, request: ReplaceRouteFluentBuilder, target: &str) -> ReplaceRouteFluentBuilder {
        match self {
            TargetKind::Gateway => request.gateway_id(target),
            TargetKind::VpcEndpoint => request.vpc_endpoint_id(target),
            TargetKind::NatGateway => request.nat_gateway_id(target),
            TargetKind::NetworkInterface => request.network_interface_id(target),
            TargetKind::Instance => request.instance_id(target),
            TargetKind::PeeringConnection => request.vpc_peering_connection_id(target),
            TargetKind::TransitGateway => request.transit_gateway_id(target),
            TargetKind::LocalGateway => request.local_gateway_id(target),
            TargetKind::CarrierGateway => request.carrier_gateway_id(target),
            TargetKind::EgressOnlyInternetGateway => {
                request.egress_only_internet_gateway_id(target)
            }
            TargetKind::CoreNetwork => request.core_network_arn(target),
            TargetKind::OdbNetwork => request.odb_network_arn(target),
        }
    }
}

/// The VPC's own route for its CIDR (`GatewayId: local`).
const LOCAL_TARGET: &str = "local";

/// The target a route points at, as the ID to restore it with. A route to an instance reports
/// both `InstanceId` and the instance's `NetworkInterfaceId`; the ENI is the precise one (an
/// instance with several ENIs cannot be a route target by instance ID), so it comes first.
fn current_target(route: &Route) -> Option<&str> {
    [
        route.gateway_id(),
        route.nat_gateway_id(),
        route.transit_gateway_id(),
        route.vpc_peering_connection_id(),
        route.local_gateway_id(),
        route.carrier_gateway_id(),
        route.egress_only_internet_gateway_id(),
        route.core_network_arn(),
        route.odb_network_arn(),
        route.network_interface_id(),
        route.instance_id(),
    ]
    .into_iter()
    .flatten()
    .find(|id| !id.is_empty())
}

/// The table's static route to `cidr`. Routes propagated from a virtual private gateway are not
/// it: a static route to the same destination takes priority over them, and they come back by
/// themselves when the static route is deleted.
fn static_route<'a>(table: &'a RouteTable, cidr: &Ipv4Net) -> Option<&'a Route> {
    table.routes().iter().find(|route| {
        route.origin() != Some(&RouteOrigin::EnableVgwRoutePropagation)
            && route
                .destination_cidr_block()
                .and_then(|block| block.parse::<Ipv4Net>().ok())
                .as_ref()
                == Some(cidr)
    })
}

/// What [`RouteProvider::ensure_routes`] has to do to one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteChange {
    /// It already forwards to the ENI.
    None,
    /// It points elsewhere (or at the ENI, but as a blackhole): ReplaceRoute.
    Replace,
    /// There is no such route: CreateRoute.
    Create,
}

fn planned_change(route: Option<&Route>, network_interface_id: &str) -> RouteChange {
    match route {
        None => RouteChange::Create,
        Some(route)
            if current_target(route) == Some(network_interface_id)
                && route.state() != Some(&Ec2RouteState::Blackhole) =>
        {
            RouteChange::None
        }
        Some(_) => RouteChange::Replace,
    }
}

fn table_tags(table: &RouteTable) -> BTreeMap<&str, &str> {
    table
        .tags()
        .iter()
        .filter_map(|tag| Some((tag.key()?, tag.value().unwrap_or_default())))
        .collect()
}

/// A record that is not a restorable target was written by someone other than egw.
fn check_recorded_target(table_id: &str, key: &str, previous: &str) -> Result<(), ProviderError> {
    if previous == NO_PREVIOUS_ROUTE || TargetKind::of(previous).is_some() {
        Ok(())
    } else {
        Err(ProviderError::UnexpectedResponse {
            operation: "DescribeRouteTables",
            detail: format!(
                "route table {table_id} tag {key}={previous:?} does not name a route target; \
                 set it to the route's original target (or {NO_PREVIOUS_ROUTE:?})"
            ),
        })
    }
}

fn route_state(
    table_id: &str,
    cidr: &Ipv4Net,
    network_interface_id: &str,
    previous: &str,
) -> RouteState {
    RouteState {
        route_table_id: table_id.to_string(),
        destination_cidr: cidr.to_string(),
        target_network_interface_id: network_interface_id.to_string(),
        previous_target: (previous != NO_PREVIOUS_ROUTE).then(|| previous.to_string()),
    }
}

/// Sends a failure that means "the route changed between our read and our write" back through
/// the retry loop, which re-reads the table.
fn retry_on_race(error: ProviderError, race_code: &str) -> ProviderError {
    match error {
        ProviderError::Permanent {
            operation,
            code,
            message,
        } if code == race_code => ProviderError::Retryable {
            operation,
            code,
            message,
            attempts: 1,
        },
        other => other,
    }
}

impl Ec2Provider {
    async fn describe_route_table(&self, table_id: &str) -> Result<RouteTable, ProviderError> {
        let output = self
            .client
            .describe_route_tables()
            .route_table_ids(table_id)
            .send()
            .await
            .map_err(|err| classify("DescribeRouteTables", err))?;
        output
            .route_tables
            .unwrap_or_default()
            .into_iter()
            .find(|table| table.route_table_id() == Some(table_id))
            .ok_or_else(|| ProviderError::NotFound {
                operation: "DescribeRouteTables",
                code: "InvalidRouteTableID.NotFound".into(),
                message: format!("route table {table_id} does not exist"),
            })
    }

    /// Every route table carrying a route record of `owner`. The `tag-key` filter takes
    /// wildcards, so EC2 selects the tables by key prefix; keys are checked again here.
    async fn describe_tables_with_records(
        &self,
        owner: &str,
    ) -> Result<Vec<RouteTable>, ProviderError> {
        let mut pages = self
            .client
            .describe_route_tables()
            .filters(
                Filter::builder()
                    .name("tag-key")
                    .values(format!("{ROUTE_RECORD_TAG_PREFIX}{owner}:*"))
                    .build(),
            )
            .into_paginator()
            .send();
        let mut tables = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| classify("DescribeRouteTables", err))?;
            tables.extend(page.route_tables.unwrap_or_default());
        }
        Ok(tables)
    }

    /// One read-then-write pass over one table: record what is not recorded yet (one CreateTags
    /// before any route changes), then point each route at the ENI.
    async fn ensure_table_pass(
        &self,
        gateway: &GatewayRef,
        table_id: &str,
        destinations: &[Ipv4Net],
        network_interface_id: &str,
    ) -> Result<Vec<RouteState>, ProviderError> {
        let owner = record_owner(gateway)?;
        let table = self.describe_route_table(table_id).await?;
        let tags = table_tags(&table);
        let mut new_records: BTreeMap<String, String> = BTreeMap::new();
        let mut plan = Vec::with_capacity(destinations.len());
        for cidr in destinations {
            if let Some((other, _)) = tags
                .keys()
                .filter_map(|key| parse_record_key(key))
                .find(|(other, recorded)| recorded == cidr && *other != owner)
            {
                return Err(ProviderError::InvalidIntent(format!(
                    "route {cidr} in {table_id} is managed by egw gateway {other}; \
                     release it there first"
                )));
            }
            let route = static_route(&table, cidr);
            let current = route.and_then(current_target);
            if current == Some(LOCAL_TARGET) {
                return Err(ProviderError::InvalidIntent(format!(
                    "{cidr} in {table_id} is the VPC's local route; egw does not take it over"
                )));
            }
            let key = route_record_key(gateway, cidr)?;
            let previous = match tags.get(key.as_str()) {
                Some(recorded) => {
                    check_recorded_target(table_id, &key, recorded)?;
                    recorded.to_string()
                }
                None => {
                    let previous = match (route, current) {
                        (None, _) => NO_PREVIOUS_ROUTE.to_string(),
                        (Some(_), Some(target)) if TargetKind::of(target).is_some() => {
                            target.to_string()
                        }
                        (Some(_), target) => {
                            return Err(ProviderError::InvalidIntent(format!(
                                "route {cidr} in {table_id} points at {target:?}, a target egw \
                                 could not restore; it is left alone"
                            )))
                        }
                    };
                    new_records.insert(key, previous.clone());
                    previous
                }
            };
            plan.push((cidr, planned_change(route, network_interface_id), previous));
        }

        if !new_records.is_empty() {
            let mut request = self.client.create_tags().resources(table_id);
            for (key, value) in &new_records {
                request = request.tags(Tag::builder().key(key).value(value).build());
            }
            request
                .send()
                .await
                .map_err(|err| classify("CreateTags", err))?;
            tracing::info!(route_table = table_id, records = ?new_records, "recorded routes before taking them over");
        }

        let mut states = Vec::with_capacity(plan.len());
        for (cidr, change, previous) in plan {
            match change {
                RouteChange::None => {}
                RouteChange::Replace => {
                    self.client
                        .replace_route()
                        .route_table_id(table_id)
                        .destination_cidr_block(cidr.to_string())
                        .network_interface_id(network_interface_id)
                        .send()
                        .await
                        .map_err(|err| classify("ReplaceRoute", err))?;
                    tracing::info!(route_table = table_id, %cidr, eni = network_interface_id, previous = %previous, "pointed route at gateway ENI");
                }
                RouteChange::Create => {
                    self.client
                        .create_route()
                        .route_table_id(table_id)
                        .destination_cidr_block(cidr.to_string())
                        .network_interface_id(network_interface_id)
                        .send()
                        .await
                        .map_err(|err| {
                            retry_on_race(classify("CreateRoute", err), "RouteAlreadyExists")
                        })?;
                    tracing::info!(route_table = table_id, %cidr, eni = network_interface_id, "created route to gateway ENI");
                }
            }
            states.push(route_state(table_id, cidr, network_interface_id, &previous));
        }
        Ok(states)
    }

    /// Puts one route back as the record says, if egw's ENI still holds it. Returns the ENI it
    /// was taken from; empty when the route was left alone.
    async fn restore_route(
        &self,
        table: &RouteTable,
        table_id: &str,
        cidr: &Ipv4Net,
        previous: &str,
    ) -> Result<String, ProviderError> {
        let route = static_route(table, cidr);
        let Some(eni) = route
            .and_then(current_target)
            .filter(|target| TargetKind::of(target) == Some(TargetKind::NetworkInterface))
        else {
            tracing::warn!(route_table = table_id, %cidr, current = ?route.and_then(current_target), "route no longer points at an ENI; leaving it as it is");
            return Ok(String::new());
        };
        if previous == NO_PREVIOUS_ROUTE {
            match self
                .client
                .delete_route()
                .route_table_id(table_id)
                .destination_cidr_block(cidr.to_string())
                .send()
                .await
                .map_err(|err| classify("DeleteRoute", err))
            {
                Ok(_) | Err(ProviderError::NotFound { .. }) => {}
                Err(other) => return Err(other),
            }
            tracing::info!(route_table = table_id, %cidr, eni, "deleted the route egw created");
        } else if previous != eni {
            let kind = TargetKind::of(previous).ok_or_else(|| ProviderError::UnexpectedResponse {
                operation: "DescribeRouteTables",
                detail: format!("route table {table_id}: recorded target {previous:?} for {cidr} is not a route target"),
            })?;
            kind.set_on(
                self.client
                    .replace_route()
                    .route_table_id(table_id)
                    .destination_cidr_block(cidr.to_string()),
                previous,
            )
            .send()
            .await
            .map_err(|err| classify("ReplaceRoute", err))?;
            tracing::info!(route_table = table_id, %cidr, eni, restored = previous, "restored route");
        }
        Ok(eni.to_string())
    }

    /// One pass of release: give back every recorded route not kept, then drop its record.
    /// Released routes go into `released` as soon as the route is back, so what an earlier,
    /// failed pass did is still reported.
    /// Turns the ENI's source/dest check off unless it already is.
    async fn ensure_forwarding(&self, network_interface_id: &str) -> Result<(), ProviderError> {
        let described = self
            .client
            .describe_network_interfaces()
            .network_interface_ids(network_interface_id)
            .send()
            .await
            .map_err(|error| classify("DescribeNetworkInterfaces", error))?;
        let interface = described
            .network_interfaces
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::NotFound {
                operation: "DescribeNetworkInterfaces",
                code: "InvalidNetworkInterfaceID.NotFound".into(),
                message: format!("route target {network_interface_id} does not exist"),
            })?;
        if interface.source_dest_check == Some(false) {
            return Ok(());
        }
        self.client
            .modify_network_interface_attribute()
            .network_interface_id(network_interface_id)
            .source_dest_check(
                aws_sdk_ec2::types::AttributeBooleanValue::builder()
                    .value(false)
                    .build(),
            )
            .send()
            .await
            .map_err(|error| classify("ModifyNetworkInterfaceAttribute", error))?;
        tracing::info!(eni = %network_interface_id, "turned off source/dest check: routes point at it");
        Ok(())
    }

    async fn release_pass(
        &self,
        owner: &str,
        keep: &BTreeSet<(String, Ipv4Net)>,
        released: &Mutex<BTreeMap<(String, Ipv4Net), RouteState>>,
    ) -> Result<(), ProviderError> {
        for table in self.describe_tables_with_records(owner).await? {
            let Some(table_id) = table.route_table_id() else {
                continue;
            };
            let records: Vec<(String, Ipv4Net, String)> = table_tags(&table)
                .into_iter()
                .filter_map(|(key, previous)| {
                    let (recorded_owner, cidr) = parse_record_key(key)?;
                    (recorded_owner == owner && !keep.contains(&(table_id.to_string(), cidr)))
                        .then(|| (key.to_string(), cidr, previous.to_string()))
                })
                .collect();
            if records.is_empty() {
                continue;
            }
            for (key, cidr, previous) in &records {
                check_recorded_target(table_id, key, previous)?;
                let taken_from = self.restore_route(&table, table_id, cidr, previous).await?;
                if let Ok(mut released) = released.lock() {
                    released.insert(
                        (table_id.to_string(), *cidr),
                        route_state(table_id, cidr, &taken_from, previous),
                    );
                }
            }
            let mut request = self.client.delete_tags().resources(table_id);
            for (key, _, _) in &records {
                request = request.tags(Tag::builder().key(key).build());
            }
            request
                .send()
                .await
                .map_err(|err| classify("DeleteTags", err))?;
        }
        Ok(())
    }
}

impl RouteProvider for Ec2Provider {
    async fn ensure_routes(&self, intent: &RouteIntent) -> Result<Vec<RouteState>, ProviderError> {
        if TargetKind::of(&intent.target_network_interface_id) != Some(TargetKind::NetworkInterface)
        {
            return Err(ProviderError::InvalidIntent(format!(
                "route target {:?} is not an ENI ID (eni-…)",
                intent.target_network_interface_id
            )));
        }
        let mut destinations: Vec<Ipv4Net> = Vec::new();
        for cidr in &intent.destination_cidrs {
            let net = parse_destination(cidr)?;
            if !destinations.contains(&net) {
                destinations.push(net);
            }
            route_record_key(&intent.gateway, &net)?;
        }
        let mut tables: Vec<&str> = Vec::new();
        for table_id in &intent.route_table_ids {
            if !tables.contains(&table_id.as_str()) {
                tables.push(table_id);
            }
        }
        if destinations.is_empty() {
            return Ok(Vec::new());
        }
        // EC2 delivers packets addressed elsewhere to an ENI only when its source/dest check
        // is off; pointing routes at an ENI that still checks would blackhole them.
        self.with_retries(|| self.ensure_forwarding(&intent.target_network_interface_id))
            .await?;
        let mut states = Vec::new();
        for table_id in tables {
            states.extend(
                self.with_retries(|| {
                    self.ensure_table_pass(
                        &intent.gateway,
                        table_id,
                        &destinations,
                        &intent.target_network_interface_id,
                    )
                })
                .await?,
            );
        }
        Ok(states)
    }

    async fn release_routes(
        &self,
        gateway: &GatewayRef,
        keep: &[(String, String)],
    ) -> Result<Vec<RouteState>, ProviderError> {
        let owner = record_owner(gateway)?;
        let keep = keep
            .iter()
            .map(|(table_id, cidr)| Ok((table_id.clone(), parse_destination(cidr)?)))
            .collect::<Result<BTreeSet<_>, ProviderError>>()?;
        let released = Mutex::new(BTreeMap::new());
        self.with_retries(|| self.release_pass(&owner, &keep, &released))
            .await?;
        Ok(released
            .into_inner()
            .map(BTreeMap::into_values)
            .map(Iterator::collect)
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(cluster: &str, name: &str) -> GatewayRef {
        GatewayRef {
            cluster: cluster.into(),
            gateway: name.into(),
        }
    }

    fn net(cidr: &str) -> Ipv4Net {
        cidr.parse().unwrap()
    }

    #[test]
    fn record_keys_round_trip_and_respect_ec2_limits() {
        let key = route_record_key(&gateway("prod-eu", "web"), &net("0.0.0.0/0")).unwrap();
        assert_eq!(key, "egw.dev/route:prod-eu/web:0.0.0.0/0");
        assert_eq!(
            parse_record_key(&key),
            Some(("prod-eu/web", net("0.0.0.0/0")))
        );
        assert_eq!(parse_record_key("egw.dev/cluster"), None);
        assert_eq!(parse_record_key("egw.dev/route:a/b:not-a-cidr"), None);

        for bad in ["", "a/b", "a:b", "a*", "a?b", "a b", "ä"] {
            assert!(
                matches!(
                    route_record_key(&gateway(bad, "web"), &net("10.0.0.0/8")),
                    Err(ProviderError::InvalidIntent(_))
                ),
                "cluster {bad:?}"
            );
            assert!(
                route_record_key(&gateway("c", bad), &net("10.0.0.0/8")).is_err(),
                "gateway {bad:?}"
            );
        }
        // 14 (prefix) + 1 + 1 (separators) + 18 (widest CIDR) leaves 94 for the names.
        let longest = route_record_key(
            &gateway(&"c".repeat(47), &"g".repeat(47)),
            &net("255.255.255.255/32"),
        )
        .unwrap();
        assert_eq!(longest.len(), MAX_TAG_KEY_LEN);
        assert!(route_record_key(
            &gateway(&"c".repeat(48), &"g".repeat(47)),
            &net("255.255.255.255/32"),
        )
        .is_err());
    }

    #[test]
    fn destinations_are_ipv4_cidrs_without_host_bits() {
        assert_eq!(
            parse_destination("10.1.0.0/16").unwrap(),
            net("10.1.0.0/16")
        );
        for bad in [
            "10.1.0.1/16",
            "10.1.0.0",
            "::/0",
            "10.1.0.0/33",
            "default",
            "",
        ] {
            assert!(
                matches!(parse_destination(bad), Err(ProviderError::InvalidIntent(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn targets_are_recognised_by_id_prefix() {
        let cases = [
            ("igw-0abc", TargetKind::Gateway),
            ("vgw-0abc", TargetKind::Gateway),
            ("vpce-0abc", TargetKind::VpcEndpoint),
            ("nat-0abc", TargetKind::NatGateway),
            ("eni-0abc", TargetKind::NetworkInterface),
            ("i-0abc", TargetKind::Instance),
            ("pcx-0abc", TargetKind::PeeringConnection),
            ("tgw-0abc", TargetKind::TransitGateway),
            ("lgw-0abc", TargetKind::LocalGateway),
            ("cagw-0abc", TargetKind::CarrierGateway),
            ("eigw-0abc", TargetKind::EgressOnlyInternetGateway),
            (
                "arn:aws:networkmanager::123456789012:core-network/core-network-0abc",
                TargetKind::CoreNetwork,
            ),
            (
                "arn:aws:odb:us-east-1:123456789012:odb-network/odbnet_abc",
                TargetKind::OdbNetwork,
            ),
        ];
        for (target, kind) in cases {
            assert_eq!(TargetKind::of(target), Some(kind), "{target}");
        }
        for unknown in ["local", "none", "eni-", "x-123", "", "arn:aws:s3:::bucket"] {
            assert_eq!(TargetKind::of(unknown), None, "{unknown:?}");
        }
    }

    fn route(cidr: &str) -> aws_sdk_ec2::types::builders::RouteBuilder {
        Route::builder()
            .destination_cidr_block(cidr)
            .origin(RouteOrigin::CreateRoute)
            .state(Ec2RouteState::Active)
    }

    #[test]
    fn plans_create_replace_or_nothing() {
        let eni = "eni-0aaa";
        assert_eq!(planned_change(None, eni), RouteChange::Create);
        let on_eni = route("0.0.0.0/0").network_interface_id(eni).build();
        assert_eq!(planned_change(Some(&on_eni), eni), RouteChange::None);
        // An instance route reports the instance's ENI too.
        let on_instance = route("0.0.0.0/0")
            .instance_id("i-0aaa")
            .network_interface_id(eni)
            .build();
        assert_eq!(current_target(&on_instance), Some(eni));
        assert_eq!(planned_change(Some(&on_instance), eni), RouteChange::None);
        let blackhole = route("0.0.0.0/0")
            .network_interface_id(eni)
            .state(Ec2RouteState::Blackhole)
            .build();
        assert_eq!(planned_change(Some(&blackhole), eni), RouteChange::Replace);
        let other_eni = route("0.0.0.0/0").network_interface_id("eni-0bbb").build();
        assert_eq!(planned_change(Some(&other_eni), eni), RouteChange::Replace);
        let igw = route("0.0.0.0/0").gateway_id("igw-0aaa").build();
        assert_eq!(current_target(&igw), Some("igw-0aaa"));
        assert_eq!(planned_change(Some(&igw), eni), RouteChange::Replace);
    }

    #[test]
    fn a_route_created_meanwhile_sends_the_step_back_to_a_fresh_read() {
        let exists = ProviderError::Permanent {
            operation: "CreateRoute",
            code: "RouteAlreadyExists".into(),
            message: "m".into(),
        };
        assert!(retry_on_race(exists, "RouteAlreadyExists").is_retryable());
        let denied = ProviderError::Permanent {
            operation: "CreateRoute",
            code: "UnauthorizedOperation".into(),
            message: "m".into(),
        };
        assert!(!retry_on_race(denied, "RouteAlreadyExists").is_retryable());
    }

    #[test]
    fn propagated_routes_are_not_the_static_route() {
        let table = RouteTable::builder()
            .routes(
                route("10.9.0.0/16")
                    .gateway_id("vgw-0aaa")
                    .origin(RouteOrigin::EnableVgwRoutePropagation)
                    .build(),
            )
            .routes(route("10.8.0.0/16").nat_gateway_id("nat-0aaa").build())
            .build();
        assert!(static_route(&table, &net("10.9.0.0/16")).is_none());
        assert_eq!(
            static_route(&table, &net("10.8.0.0/16")).and_then(current_target),
            Some("nat-0aaa")
        );
    }
}
