//! An in-memory implementation of egw-aws's provider traits (our own traits, not the AWS SDK):
//! Elastic IPs, instances with a per-instance private-address limit, egw's private addresses
//! per (gateway, instance), and routes. It follows the EC2 rules the manager relies on: an
//! address associated elsewhere is moved only when egw owns it, unassigning a private IP drops
//! the association on it, and calls can be made to fail. Every call is logged.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use egw_aws::{
    AddressProvider, AddressSource, Association, AssociationTarget, GatewayAddressIntent,
    GatewayInterface, GatewayRef, InstanceDescription, InstanceState, InstanceTypeLimits,
    InterfaceMode, InterfaceProvider, ManagedAddress, NetworkInterface, PrivateAddressIntent,
    ProviderError, PrunedInterfaces, RouteIntent, RouteProvider, RouteState,
};

#[derive(Debug, Clone)]
pub struct FakeAddress {
    pub public_ip: Ipv4Addr,
    /// `Some(gateway)` when egw allocated it for that gateway.
    pub owner: Option<String>,
    pub slot: Option<u32>,
    pub tags: BTreeMap<String, String>,
    pub association: Option<Association>,
}

#[derive(Debug, Clone)]
pub struct FakeInstance {
    pub state: InstanceState,
    pub primary_eni: String,
    pub primary_ip: Ipv4Addr,
    /// Most egw private addresses the instance type can hold.
    pub limit: u32,
    /// Secondary private IPs that exist on `primary_eni` elsewhere (a moto ENI): egw's private
    /// addresses are taken from these, in order, instead of being made up.
    pub preset_private_ips: Option<Vec<Ipv4Addr>>,
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub addresses: BTreeMap<String, FakeAddress>,
    pub instances: BTreeMap<String, FakeInstance>,
    /// egw's private addresses per (gateway, instance ID).
    pub interfaces: BTreeMap<(String, String), GatewayInterface>,
    /// (table, CIDR) → (gateway, target ENI).
    pub routes: BTreeMap<(String, String), (String, String)>,
    /// Every call, as `operation args`.
    pub calls: Vec<String>,
    /// Errors the next calls of an operation return, in order.
    pub failures: BTreeMap<&'static str, VecDeque<ProviderError>>,
    next_id: u32,
}

/// Cheap to clone: clones share the state, so a test keeps a handle on what the manager owns.
#[derive(Debug, Clone, Default)]
pub struct FakeAws {
    pub state: Arc<Mutex<FakeState>>,
}

pub fn permanent(operation: &'static str, code: &str) -> ProviderError {
    ProviderError::Permanent {
        operation,
        code: code.to_owned(),
        message: format!("{code} (injected)"),
    }
}

pub fn retryable(operation: &'static str) -> ProviderError {
    ProviderError::Retryable {
        operation,
        code: "RequestLimitExceeded".to_owned(),
        message: "Request limit exceeded. (injected)".to_owned(),
        attempts: 4,
    }
}

impl FakeAws {
    pub fn new() -> FakeAws {
        FakeAws::default()
    }

    /// Adds a running instance whose type holds `limit` egw private addresses.
    pub fn add_instance(&self, instance_id: &str, index: u8, limit: u32) {
        let mut state = self.state.lock().unwrap();
        state.instances.insert(
            instance_id.to_owned(),
            FakeInstance {
                state: InstanceState::Running,
                primary_eni: format!("eni-primary-{index}"),
                primary_ip: Ipv4Addr::new(10, 0, index, 10),
                limit,
                preset_private_ips: None,
            },
        );
    }

    /// Adds a running instance whose primary ENI and secondary private IPs exist elsewhere
    /// (e.g. in moto), so that real Elastic IP associations can target them.
    pub fn add_instance_on(
        &self,
        instance_id: &str,
        eni: &str,
        primary_ip: Ipv4Addr,
        secondary_ips: Vec<Ipv4Addr>,
    ) {
        let mut state = self.state.lock().unwrap();
        state.instances.insert(
            instance_id.to_owned(),
            FakeInstance {
                state: InstanceState::Running,
                primary_eni: eni.to_owned(),
                primary_ip,
                limit: u32::try_from(secondary_ips.len()).unwrap(),
                preset_private_ips: Some(secondary_ips),
            },
        );
    }

    pub fn set_instance_state(&self, instance_id: &str, instance_state: InstanceState) {
        let mut state = self.state.lock().unwrap();
        state.instances.get_mut(instance_id).unwrap().state = instance_state;
    }

    /// An existing address egw did not allocate.
    pub fn add_foreign_address(&self, allocation_id: &str, last_octet: u8) {
        let mut state = self.state.lock().unwrap();
        state.addresses.insert(
            allocation_id.to_owned(),
            FakeAddress {
                public_ip: Ipv4Addr::new(203, 0, 113, last_octet),
                owner: None,
                slot: None,
                tags: BTreeMap::new(),
                association: None,
            },
        );
    }

    /// Associates an address outside egw (a person, another tool).
    pub fn associate_outside(&self, allocation_id: &str, eni: &str, private_ip: Ipv4Addr) {
        let mut state = self.state.lock().unwrap();
        let instance_id = state
            .instances
            .iter()
            .find(|(_, instance)| instance.primary_eni == eni)
            .map(|(id, _)| id.clone());
        state.addresses.get_mut(allocation_id).unwrap().association = Some(Association {
            association_id: "eipassoc-outside".to_owned(),
            network_interface_id: Some(eni.to_owned()),
            private_ip: Some(private_ip),
            instance_id,
        });
    }

    pub fn fail_next(&self, operation: &'static str, error: ProviderError) {
        let mut state = self.state.lock().unwrap();
        state
            .failures
            .entry(operation)
            .or_default()
            .push_back(error);
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Operation names of the calls after the first `from`.
    pub fn operations_since(&self, from: usize) -> Vec<String> {
        self.calls()[from..]
            .iter()
            .map(|call| call.split(' ').next().unwrap().to_owned())
            .collect()
    }

    /// Allocation ID → (instance, private IP) of every associated address.
    pub fn associations(&self) -> BTreeMap<String, (String, Ipv4Addr)> {
        let state = self.state.lock().unwrap();
        state
            .addresses
            .iter()
            .filter_map(|(id, address)| {
                let association = address.association.as_ref()?;
                Some((
                    id.clone(),
                    (
                        association.instance_id.clone().unwrap_or_default(),
                        association.private_ip?,
                    ),
                ))
            })
            .collect()
    }

    fn begin(&self, operation: &'static str, detail: String) -> Result<(), ProviderError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(format!("{operation} {detail}"));
        match state
            .failures
            .get_mut(operation)
            .and_then(VecDeque::pop_front)
        {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl FakeState {
    fn managed(&self, allocation_id: &str, gateway: &GatewayRef) -> ManagedAddress {
        let address = &self.addresses[allocation_id];
        ManagedAddress {
            allocation_id: allocation_id.to_owned(),
            public_ip: address.public_ip,
            association: address.association.clone(),
            owned_by_egw: address.owner.as_deref() == Some(gateway.gateway.as_str()),
            slot: address.slot,
        }
    }

    fn instance_of_eni(&self, eni: &str) -> Option<String> {
        self.instances
            .iter()
            .find(|(_, instance)| instance.primary_eni == eni)
            .map(|(id, _)| id.clone())
            .or_else(|| {
                self.interfaces
                    .iter()
                    .find(|(_, interface)| interface.network_interface_id == eni)
                    .map(|((_, instance), _)| instance.clone())
            })
    }

    /// Unassigning a private IP drops the association on it, as in EC2.
    fn drop_associations_on(&mut self, eni: &str, ips: &[Ipv4Addr]) {
        for address in self.addresses.values_mut() {
            let on_it = address.association.as_ref().is_some_and(|association| {
                association.network_interface_id.as_deref() == Some(eni)
                    && association.private_ip.is_some_and(|ip| ips.contains(&ip))
            });
            if on_it {
                address.association = None;
            }
        }
    }
}

impl AddressProvider for FakeAws {
    async fn ensure_addresses(
        &self,
        intent: &GatewayAddressIntent,
    ) -> Result<Vec<ManagedAddress>, ProviderError> {
        self.begin("ensure_addresses", intent.gateway.gateway.clone())?;
        let mut state = self.state.lock().unwrap();
        let ids: Vec<String> = match &intent.source {
            AddressSource::AllocationIds(ids) => {
                for id in ids {
                    if !state.addresses.contains_key(id) {
                        return Err(ProviderError::NotFound {
                            operation: "DescribeAddresses",
                            code: "InvalidAllocationID.NotFound".to_owned(),
                            message: format!("{id} does not exist"),
                        });
                    }
                }
                ids.clone()
            }
            AddressSource::Tags(tags) => state
                .addresses
                .iter()
                .filter(|(_, address)| {
                    tags.iter()
                        .all(|(key, value)| address.tags.get(key) == Some(value))
                })
                .map(|(id, _)| id.clone())
                .collect(),
            AddressSource::Allocate { count } => {
                for slot in 0..*count {
                    let exists = state.addresses.values().any(|address| {
                        address.owner.as_deref() == Some(intent.gateway.gateway.as_str())
                            && address.slot == Some(slot)
                    });
                    if !exists {
                        state.next_id += 1;
                        let id = format!("eipalloc-{:04}", state.next_id);
                        let octet = u8::try_from(state.next_id).unwrap();
                        state.addresses.insert(
                            id,
                            FakeAddress {
                                public_ip: Ipv4Addr::new(198, 51, 100, octet),
                                owner: Some(intent.gateway.gateway.clone()),
                                slot: Some(slot),
                                tags: BTreeMap::new(),
                                association: None,
                            },
                        );
                    }
                }
                state
                    .addresses
                    .iter()
                    .filter(|(_, address)| {
                        address.owner.as_deref() == Some(intent.gateway.gateway.as_str())
                    })
                    .map(|(id, _)| id.clone())
                    .collect()
            }
        };
        Ok(ids
            .iter()
            .map(|id| state.managed(id, &intent.gateway))
            .collect())
    }

    async fn associate(
        &self,
        address: &ManagedAddress,
        target: &AssociationTarget,
    ) -> Result<ManagedAddress, ProviderError> {
        self.begin(
            "associate",
            format!(
                "{} {} {}",
                address.allocation_id, target.network_interface_id, target.private_ip
            ),
        )?;
        let mut state = self.state.lock().unwrap();
        let instance_id = state.instance_of_eni(&target.network_interface_id);
        let stored = state.addresses.get_mut(&address.allocation_id).unwrap();
        if stored.association.is_some() && stored.owner.is_none() {
            return Err(ProviderError::Permanent {
                operation: "AssociateAddress",
                code: "Resource.AlreadyAssociated".to_owned(),
                message: format!("{} is already associated", address.allocation_id),
            });
        }
        stored.association = Some(Association {
            association_id: format!("eipassoc-{}", address.allocation_id),
            network_interface_id: Some(target.network_interface_id.clone()),
            private_ip: Some(target.private_ip),
            instance_id,
        });
        Ok(ManagedAddress {
            association: stored.association.clone(),
            ..address.clone()
        })
    }

    async fn disassociate(&self, address: &ManagedAddress) -> Result<(), ProviderError> {
        self.begin("disassociate", address.allocation_id.clone())?;
        let mut state = self.state.lock().unwrap();
        if let Some(stored) = state.addresses.get_mut(&address.allocation_id) {
            stored.association = None;
        }
        Ok(())
    }

    async fn release_owned(&self, gateway: &GatewayRef) -> Result<Vec<String>, ProviderError> {
        self.begin("release_owned", gateway.gateway.clone())?;
        let mut state = self.state.lock().unwrap();
        let owned: Vec<String> = state
            .addresses
            .iter()
            .filter(|(_, address)| address.owner.as_deref() == Some(gateway.gateway.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &owned {
            state.addresses.remove(id);
        }
        Ok(owned)
    }
}

impl InterfaceProvider for FakeAws {
    async fn describe_instance(
        &self,
        instance_id: &str,
    ) -> Result<Option<InstanceDescription>, ProviderError> {
        self.begin("describe_instance", instance_id.to_owned())?;
        let state = self.state.lock().unwrap();
        Ok(state.instances.get(instance_id).map(|instance| {
            let mut interfaces = vec![NetworkInterface {
                network_interface_id: instance.primary_eni.clone(),
                device_index: Some(0),
                subnet_id: "subnet-fake".to_owned(),
                security_group_ids: vec!["sg-fake".to_owned()],
                primary_private_ip: instance.primary_ip,
                secondary_private_ips: Vec::new(),
                source_dest_check: true,
                owned_by_egw: false,
            }];
            for ((_, instance_of), interface) in &state.interfaces {
                if instance_of == instance_id && interface.device_index != 0 {
                    interfaces.push(NetworkInterface {
                        network_interface_id: interface.network_interface_id.clone(),
                        device_index: Some(interface.device_index),
                        subnet_id: "subnet-fake".to_owned(),
                        security_group_ids: vec!["sg-fake".to_owned()],
                        primary_private_ip: interface.private_ips[0],
                        secondary_private_ips: interface.private_ips[1..].to_vec(),
                        source_dest_check: false,
                        owned_by_egw: true,
                    });
                }
            }
            InstanceDescription {
                instance_id: instance_id.to_owned(),
                state: instance.state.clone(),
                instance_type: "c6in.large".to_owned(),
                interfaces,
            }
        }))
    }

    async fn instance_type_limits(
        &self,
        instance_type: &str,
    ) -> Result<InstanceTypeLimits, ProviderError> {
        self.begin("instance_type_limits", instance_type.to_owned())?;
        Ok(InstanceTypeLimits {
            max_network_interfaces: 3,
            ipv4_addresses_per_interface: 10,
        })
    }

    async fn ensure_private_addresses(
        &self,
        intent: &PrivateAddressIntent,
    ) -> Result<GatewayInterface, ProviderError> {
        self.begin(
            "ensure_private_addresses",
            format!("{} {}", intent.instance_id, intent.count),
        )?;
        let mut state = self.state.lock().unwrap();
        let Some(instance) = state.instances.get(&intent.instance_id).cloned() else {
            return Err(ProviderError::NotFound {
                operation: "DescribeInstances",
                code: "InvalidInstanceID.NotFound".to_owned(),
                message: intent.instance_id.clone(),
            });
        };
        if intent.count > instance.limit {
            return Err(ProviderError::InstanceLimitExceeded {
                instance_id: intent.instance_id.clone(),
                instance_type: "c6in.large".to_owned(),
                what: "IPv4 addresses per network interface",
                wanted: intent.count,
                limit: instance.limit,
            });
        }
        let key = (intent.gateway.gateway.clone(), intent.instance_id.clone());
        let (eni, device_index) = match &intent.mode {
            InterfaceMode::SecondaryIp => (instance.primary_eni.clone(), 0),
            InterfaceMode::EniPerGateway { .. } => (
                format!("eni-egw-{}-{}", intent.gateway.gateway, intent.instance_id),
                1,
            ),
        };
        let mut ips = state
            .interfaces
            .get(&key)
            .map(|interface| interface.private_ips.clone())
            .unwrap_or_default();
        let count = usize::try_from(intent.count).unwrap();
        let removed: Vec<Ipv4Addr> = ips.iter().skip(count).copied().collect();
        ips.truncate(count);
        let third = instance.primary_ip.octets()[2];
        let mut host = 100;
        let mut preset = instance
            .preset_private_ips
            .clone()
            .unwrap_or_default()
            .into_iter();
        while ips.len() < count {
            let candidate = match &instance.preset_private_ips {
                Some(_) => preset.next().unwrap(),
                None => Ipv4Addr::new(10, 0, third, host),
            };
            if !ips.contains(&candidate) {
                ips.push(candidate);
            }
            host += 1;
        }
        ips.sort();
        state.drop_associations_on(&eni, &removed);
        let interface = GatewayInterface {
            network_interface_id: eni,
            device_index,
            private_ips: ips,
        };
        state.interfaces.insert(key, interface.clone());
        Ok(interface)
    }

    async fn prune_private_addresses(
        &self,
        gateway: &GatewayRef,
        keep_instance_ids: &[String],
    ) -> Result<PrunedInterfaces, ProviderError> {
        self.begin(
            "prune_private_addresses",
            format!("{} [{}]", gateway.gateway, keep_instance_ids.join(",")),
        )?;
        let mut state = self.state.lock().unwrap();
        let doomed: Vec<(String, String)> = state
            .interfaces
            .keys()
            .filter(|(owner, instance)| {
                *owner == gateway.gateway && !keep_instance_ids.contains(instance)
            })
            .cloned()
            .collect();
        let mut pruned = PrunedInterfaces::default();
        for key in doomed {
            if let Some(interface) = state.interfaces.remove(&key) {
                state.drop_associations_on(&interface.network_interface_id, &interface.private_ips);
                if interface.device_index != 0 {
                    pruned
                        .deleted_network_interface_ids
                        .push(interface.network_interface_id);
                } else {
                    pruned.unassigned_private_ips.extend(interface.private_ips);
                }
            }
        }
        Ok(pruned)
    }
}

impl RouteProvider for FakeAws {
    async fn ensure_routes(&self, intent: &RouteIntent) -> Result<Vec<RouteState>, ProviderError> {
        self.begin(
            "ensure_routes",
            format!(
                "{} -> {}",
                intent.route_table_ids.join(","),
                intent.target_network_interface_id
            ),
        )?;
        let mut state = self.state.lock().unwrap();
        let mut routes = Vec::new();
        for table in &intent.route_table_ids {
            for cidr in &intent.destination_cidrs {
                state.routes.insert(
                    (table.clone(), cidr.clone()),
                    (
                        intent.gateway.gateway.clone(),
                        intent.target_network_interface_id.clone(),
                    ),
                );
                routes.push(RouteState {
                    route_table_id: table.clone(),
                    destination_cidr: cidr.clone(),
                    target_network_interface_id: intent.target_network_interface_id.clone(),
                    previous_target: None,
                });
            }
        }
        Ok(routes)
    }

    async fn release_routes(
        &self,
        gateway: &GatewayRef,
        keep: &[(String, String)],
    ) -> Result<Vec<RouteState>, ProviderError> {
        self.begin(
            "release_routes",
            format!("{} keep {}", gateway.gateway, keep.len()),
        )?;
        let mut state = self.state.lock().unwrap();
        let doomed: Vec<(String, String)> = state
            .routes
            .iter()
            .filter(|(key, (owner, _))| *owner == gateway.gateway && !keep.contains(key))
            .map(|(key, _)| key.clone())
            .collect();
        let mut released = Vec::new();
        for key in doomed {
            if let Some((_, target)) = state.routes.remove(&key) {
                released.push(RouteState {
                    route_table_id: key.0,
                    destination_cidr: key.1,
                    target_network_interface_id: target,
                    previous_target: None,
                });
            }
        }
        Ok(released)
    }
}
