//! The per-core packet pipeline: parse → steer → look up / create a flow → translate → verdict.
//!
//! One [`Engine`] per core. It owns its flow table, its block of every external address's ports
//! and its counters, so the per-packet path takes no lock and touches no atomic. The route table
//! is an `Arc` swapped between batches by the caller: flows keep the mapping they were created
//! with, new flows see the new table.
//!
//! One module per step of the pipeline: [`dispatch`] (entry points, classification), [`fast_path`]
//! (established flows), [`outbound`] (new flows: endpoint reuse, address and port choice, room in
//! a full table), [`inbound`], [`icmp_errors`], [`fragments`], [`expiry`] and [`introspection`]
//! (listing, usage, flow events); [`config`] and [`verdict`] hold the types callers exchange with
//! the engine. This module holds the [`Engine`] itself and the helpers every step shares.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::conntrack::{FlowKey, FlowTable, KeyHasher};
use crate::counters::{Counters, DropReason};
use crate::frag::{FragmentAction, Fragments};
use crate::packet::{Parsed, Protocol};
use crate::ports::{ExternalAddress, PortPartition};
use egw_policy::CompiledRouteTable;

mod config;
mod dispatch;
mod expiry;
mod fast_path;
mod fragments;
mod icmp_errors;
mod inbound;
mod introspection;
mod outbound;
mod verdict;

#[cfg(test)]
mod tests;

pub use config::{ConfigError, EngineConfig, Filtering, MAX_FLOWS_PER_CORE};
pub use dispatch::PREFETCH_BATCH;
pub use introspection::{ExternalUsage, FlowEvent, FlowFilter, FlowInfo};
pub use verdict::{Ingress, Side, Verdict};

use icmp_errors::IcmpRateLimit;

/// One core's NAT engine.
pub struct Engine {
    config: EngineConfig,
    partition: PortPartition,
    steering: KeyHasher,
    table: Arc<CompiledRouteTable>,
    /// External addresses this core knows: those of the current table plus any still leased.
    externals: Vec<Rc<ExternalAddress>>,
    draining: HashSet<Ipv4Addr>,
    flows: FlowTable,
    fragments: Fragments,
    counters: Counters,
    icmp_limit: IcmpRateLimit,
    probe_state: u64,
    events: Option<Vec<FlowEvent>>,
    event_capacity: usize,
    events_dropped: u64,
    /// Whether [`process`](Self::process) tries the established-flow fast path first. Always
    /// on outside tests, which turn it off to compare it with the full path.
    fast_path: bool,
    /// The external ports this core allocates (its block of the SNAT range).
    own_ports: std::ops::RangeInclusive<u16>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Result<Self, ConfigError> {
        if config.core >= config.cores {
            return Err(ConfigError::CoreOutOfRange {
                core: config.core,
                cores: config.cores,
            });
        }
        let (first, last) = config.port_range;
        let partition =
            PortPartition::new(first, last, config.cores).ok_or(ConfigError::PortRange {
                first,
                last,
                cores: config.cores,
            })?;
        if config.flow_capacity == 0 || config.flow_capacity > MAX_FLOWS_PER_CORE {
            return Err(ConfigError::FlowCapacity {
                got: config.flow_capacity,
                max: MAX_FLOWS_PER_CORE,
            });
        }
        config.timeouts.validate().map_err(ConfigError::Timeouts)?;
        for mtu in [config.inside_mtu, config.outside_mtu] {
            if mtu < 68 {
                return Err(ConfigError::Mtu(mtu));
            }
        }
        let own_ports = partition.range(config.core);
        Ok(Self {
            partition,
            steering: KeyHasher::new(config.steering_seed),
            table: Arc::new(CompiledRouteTable::empty_deny_all()),
            externals: Vec::new(),
            draining: HashSet::new(),
            flows: FlowTable::new(
                config.flow_capacity,
                config.timeouts,
                config.table_seed,
                config.udp_filtering != Filtering::AddressAndPortDependent,
            ),
            fragments: Fragments::new(config.fragments),
            counters: Counters::default(),
            icmp_limit: IcmpRateLimit {
                tokens: config.icmp_errors_per_second,
                per_second: config.icmp_errors_per_second,
                last_refill_ms: 0,
            },
            probe_state: config.table_seed | 1,
            events: None,
            event_capacity: 0,
            events_dropped: 0,
            fast_path: true,
            own_ports,
            config,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn core(&self) -> u16 {
        self.config.core
    }

    /// Installs a new route table. Existing flows keep their mapping; new flows use `table`.
    pub fn set_route_table(&mut self, table: Arc<CompiledRouteTable>) {
        // Keep addresses still leased by live flows; add the new table's addresses.
        self.externals.retain(|e| {
            Rc::strong_count(e) > 1 || table.snat_addresses().any(|a| a == e.address())
        });
        for address in table.snat_addresses() {
            if !self.externals.iter().any(|e| e.address() == address) {
                let ext = ExternalAddress::new(
                    address,
                    &self.partition,
                    self.config.core,
                    self.config.table_seed,
                );
                ext.set_draining(self.draining.contains(&address));
                self.externals.push(ext);
            }
        }
        self.externals.sort_by_key(|e| e.address());
        self.table = table;
    }

    pub fn route_table(&self) -> &Arc<CompiledRouteTable> {
        &self.table
    }

    /// Stops (or resumes) new flows on an external address; existing flows finish normally.
    pub fn set_draining(&mut self, address: Ipv4Addr, draining: bool) {
        if draining {
            self.draining.insert(address);
        } else {
            self.draining.remove(&address);
        }
        if let Some(ext) = self.external(address) {
            ext.set_draining(draining);
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    fn external(&self, address: Ipv4Addr) -> Option<&Rc<ExternalAddress>> {
        self.externals
            .binary_search_by_key(&address, |e| e.address())
            .ok()
            .and_then(|i| self.externals.get(i))
    }

    /// The core that owns a pod endpoint (every flow of one pod endpoint lives on one core, which
    /// is what makes its mapping endpoint-independent).
    #[inline]
    pub fn outbound_owner(&self, protocol: Protocol, pod_ip: Ipv4Addr, pod_port: u16) -> u16 {
        if self.config.cores == 1 {
            return 0;
        }
        let key = FlowKey::new(protocol, pod_ip, pod_port, Ipv4Addr::UNSPECIFIED, 0);
        (self.steering.flow(&key) % u64::from(self.config.cores)) as u16
    }

    /// The core that allocated an external port (`None`: outside the SNAT port range).
    #[inline]
    pub fn inbound_owner(&self, external_port: u16) -> Option<u16> {
        self.partition.owner(external_port)
    }

    #[inline]
    fn drop(&mut self, reason: DropReason) -> Verdict {
        self.counters.drops.record(reason);
        Verdict::Drop(reason)
    }

    fn hand_off(&mut self, p: &Parsed, owner: u16, now: Duration) -> Verdict {
        if p.frag.more_fragments {
            // This core will receive the datagram's later fragments (RSS hashes fragments on
            // addresses only): remember where to send them.
            self.record_fragment(p, FragmentAction::HandOff(owner), now);
        }
        self.counters.handoffs += 1;
        Verdict::Handoff { core: owner }
    }
}

#[inline]
fn secs(now: Duration) -> u32 {
    now.as_secs() as u32
}

#[inline]
fn millis(now: Duration) -> u64 {
    now.as_millis() as u64
}
