//! Loader for the XDP steering program (`bpf/egw_steer.bpf.c`) and the typed
//! interface to its maps.

use std::collections::HashSet;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use aya::maps::lpm_trie::Key as LpmKey;
use aya::maps::{HashMap, LpmTrie, MapData, MapError, PerCpuArray, XskMap};
use aya::programs::links::FdLink;
use aya::programs::{loaded_links, loaded_programs, ProgramError, Xdp, XdpMode};
use aya::{Ebpf, EbpfError};
use ipnet::Ipv4Net;
use tracing::{debug, info, warn};

use crate::sys;

static PROGRAM_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egw_steer.bpf.o"));

/// The embedded BPF object (ELF) of the steering program, e.g. for
/// inspection with `bpftool` or `llvm-objdump`.
pub fn program_object() -> &'static [u8] {
    PROGRAM_OBJECT
}

/// Name of the XDP program in the object and in the kernel; also how a stale
/// egw program is recognised on an interface.
pub const PROGRAM_NAME: &str = "egw_steer";

/// Interfaces one program instance can serve (`EGW_MAX_IFACES` in the C code).
pub const MAX_INTERFACES: usize = 16;
/// XSKMAP slots reserved per interface (`EGW_MAX_QUEUES_PER_IFACE`).
pub const MAX_QUEUES_PER_INTERFACE: u32 = 64;

const MAP_IFACES: &str = "egw_ifaces";
const MAP_POD_CIDRS: &str = "egw_pod_cidrs";
const MAP_SNAT_ADDRS: &str = "egw_snat_addrs";
const MAP_LOCAL_ADDRS: &str = "egw_local_addrs";
const MAP_XSKS: &str = "egw_xsks";
const MAP_STATS: &str = "egw_stats";

/// Which traffic the program steers to AF_XDP on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterfaceRole {
    /// Pod-facing: IPv4 from a pod CIDR to a non-gateway address is steered.
    Inside,
    /// Internet-facing: IPv4 to one of the SNAT addresses is steered.
    Outside,
    /// Both roles on one interface.
    OneArmed,
}

impl InterfaceRole {
    fn bits(self) -> u32 {
        match self {
            Self::Inside => 1,
            Self::Outside => 2,
            Self::OneArmed => 3,
        }
    }
}

/// An interface to attach to, with its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSpec {
    /// Interface name in the calling thread's network namespace.
    pub name: String,
    /// Role of the interface.
    pub role: InterfaceRole,
}

impl InterfaceSpec {
    /// Convenience constructor.
    pub fn new(name: impl Into<String>, role: InterfaceRole) -> Self {
        Self {
            name: name.into(),
            role,
        }
    }
}

/// XDP execution mode an interface ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode.
    Native,
    /// Generic (skb) mode: the fallback when the driver has no XDP support.
    Generic,
}

/// An interface the program is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedInterface {
    /// Interface name.
    pub name: String,
    /// Interface index (in the namespace the loader ran in).
    pub ifindex: u32,
    /// Role configured in the program.
    pub role: InterfaceRole,
    /// Mode the kernel accepted.
    pub mode: AttachMode,
    /// True when attached through a BPF link (detached by the kernel when the
    /// process dies); false when aya had to fall back to netlink, in which
    /// case the program survives a crash until the next start removes it.
    pub bpf_link: bool,
    /// First XSKMAP slot of this interface; queue `q` uses `xsk_slot_base + q`.
    pub xsk_slot_base: u32,
}

/// Per-CPU counters of the steering program, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SteeringStats {
    /// Frames handed to the kernel (all `passed_*` reasons plus plain misses
    /// and failed redirects).
    pub passed: u64,
    /// Frames redirected to AF_XDP from an inside-role interface.
    pub redirected_inside: u64,
    /// Frames redirected to AF_XDP from an outside-role interface.
    pub redirected_outside: u64,
    /// Frames that should have been redirected but had no socket registered
    /// for their queue (they were passed to the kernel).
    pub redirect_failed: u64,
    /// Passed because not IPv4 (ARP, IPv6, ...).
    pub passed_not_ipv4: u64,
    /// Passed because the destination is a gateway-local address.
    pub passed_local_destination: u64,
    /// Passed because truncated or with an invalid IPv4 header.
    pub passed_malformed: u64,
    /// Passed because the interface is not configured in `egw_ifaces`.
    pub passed_unknown_interface: u64,
    /// Passed because the rx queue index exceeds [`MAX_QUEUES_PER_INTERFACE`].
    pub passed_queue_out_of_range: u64,
}

/// Errors of the loader and map updates.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The embedded object could not be parsed or its maps created.
    #[error("loading the embedded XDP object failed")]
    Load(#[source] Box<EbpfError>),
    /// The object does not contain what this code expects (build mismatch).
    #[error("the embedded XDP object has no {kind} named `{name}`")]
    MissingObject {
        /// "program" or "map".
        kind: &'static str,
        /// Name looked up.
        name: &'static str,
    },
    /// The verifier or the kernel rejected the program.
    #[error("the kernel rejected XDP program `{PROGRAM_NAME}`")]
    Program(#[source] Box<ProgramError>),
    /// The interface name does not resolve.
    #[error("interface `{interface}` not found")]
    UnknownInterface {
        /// Interface name.
        interface: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// Native and generic attachment both failed.
    #[error("attaching XDP to `{interface}` failed in native mode ({native}) and generic mode")]
    Attach {
        /// Interface name.
        interface: String,
        /// Why native mode failed.
        native: Box<ProgramError>,
        /// Why generic mode failed.
        #[source]
        generic: Box<ProgramError>,
    },
    /// Another tool's XDP program is attached; egw does not replace it.
    #[error("interface `{interface}` has a foreign XDP program (id {program_id}, name `{program_name}`); egw will not replace it")]
    ForeignProgram {
        /// Interface name.
        interface: String,
        /// Kernel program id.
        program_id: u32,
        /// Kernel program name.
        program_name: String,
    },
    /// Reading or changing the interface's XDP state failed.
    #[error("{action} on interface `{interface}` failed")]
    Interface {
        /// What was being done.
        action: &'static str,
        /// Interface name.
        interface: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// A stale egw program could not be removed.
    #[error("stale egw XDP program {program_id} is still attached to `{interface}` after removal")]
    StaleNotRemoved {
        /// Interface name.
        interface: String,
        /// Kernel program id.
        program_id: u32,
    },
    /// More interfaces than [`MAX_INTERFACES`].
    #[error("cannot attach to more than {MAX_INTERFACES} interfaces")]
    TooManyInterfaces,
    /// The interface is already attached by this loader.
    #[error("interface `{0}` is already attached")]
    AlreadyAttached(String),
    /// The interface is not attached by this loader.
    #[error("interface `{0}` is not attached by this loader")]
    NotAttached(String),
    /// Queue index beyond [`MAX_QUEUES_PER_INTERFACE`].
    #[error(
        "queue {queue} is out of range (at most {MAX_QUEUES_PER_INTERFACE} queues per interface)"
    )]
    QueueOutOfRange {
        /// Queue index asked for.
        queue: u32,
    },
    /// A map operation failed.
    #[error("updating map `{map}` failed")]
    Map {
        /// Map name.
        map: &'static str,
        /// Underlying error.
        #[source]
        source: Box<MapError>,
    },
}

#[derive(Debug)]
struct Attachment {
    info: AttachedInterface,
    handle: LinkHandle,
}

/// How to undo one attachment. Owned by us rather than by aya so detaching is
/// synchronous: closing a link fd only detaches once every holder (including
/// another thread or a `bpftool link list` that briefly opened it by id) has
/// closed it, whereas `BPF_LINK_DETACH` takes effect at once.
#[derive(Debug)]
enum LinkHandle {
    Bpf { link: FdLink, link_id: u32 },
    Netlink { mode_flag: u32 },
}

/// The loaded steering program, its maps and its attachments.
///
/// Dropping it detaches the program from every interface (BPF links close).
#[derive(Debug)]
pub struct SteeringProgram {
    // Field order: attachments are detached (Drop) before `ebpf` goes away.
    attachments: Vec<Attachment>,
    ebpf: Ebpf,
}

/// Map key for an IPv4 address exactly as the program reads it from a header.
fn wire_key(address: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(address.octets())
}

impl SteeringProgram {
    /// Loads the embedded object and verifies the program. Attaches nothing.
    pub fn load() -> Result<Self, LoaderError> {
        let mut ebpf = Ebpf::load(PROGRAM_OBJECT).map_err(|e| LoaderError::Load(Box::new(e)))?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(LoaderError::MissingObject {
                kind: "program",
                name: PROGRAM_NAME,
            })?
            .try_into()
            .map_err(program_error)?;
        program.load().map_err(program_error)?;
        Ok(Self {
            attachments: Vec::new(),
            ebpf,
        })
    }

    fn program_mut(&mut self) -> Result<&mut Xdp, LoaderError> {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(LoaderError::MissingObject {
                kind: "program",
                name: PROGRAM_NAME,
            })?
            .try_into()
            .map_err(program_error)
    }

    /// Kernel id of the loaded program.
    pub fn program_id(&mut self) -> Result<u32, LoaderError> {
        let info = self.program_mut()?.info().map_err(program_error)?;
        Ok(info.id())
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, LoaderError> {
        self.ebpf
            .map_mut(name)
            .ok_or(LoaderError::MissingObject { kind: "map", name })
    }

    /// Attaches to every interface in `interfaces`; see [`Self::attach`].
    pub fn attach_all(
        &mut self,
        interfaces: &[InterfaceSpec],
    ) -> Result<Vec<AttachedInterface>, LoaderError> {
        interfaces.iter().map(|spec| self.attach(spec)).collect()
    }

    /// Attaches to one interface: removes a stale egw program left there by an
    /// earlier run, then tries native mode and falls back (logged) to generic.
    pub fn attach(&mut self, spec: &InterfaceSpec) -> Result<AttachedInterface, LoaderError> {
        if self.attachments.iter().any(|a| a.info.name == spec.name) {
            return Err(LoaderError::AlreadyAttached(spec.name.clone()));
        }
        if self.attachments.len() >= MAX_INTERFACES {
            return Err(LoaderError::TooManyInterfaces);
        }
        let ifindex =
            sys::interface_index(&spec.name).map_err(|source| LoaderError::UnknownInterface {
                interface: spec.name.clone(),
                source,
            })?;
        remove_stale_program(&spec.name, ifindex)?;

        let slot = (0..MAX_INTERFACES as u32)
            .find(|slot| {
                !self
                    .attachments
                    .iter()
                    .any(|a| a.info.xsk_slot_base == slot * MAX_QUEUES_PER_INTERFACE)
            })
            .ok_or(LoaderError::TooManyInterfaces)?;
        let xsk_slot_base = slot * MAX_QUEUES_PER_INTERFACE;
        {
            let mut ifaces: HashMap<&mut MapData, u32, [u32; 2]> =
                HashMap::try_from(self.map_mut(MAP_IFACES)?).map_err(map_error(MAP_IFACES))?;
            ifaces
                .insert(ifindex, [spec.role.bits(), xsk_slot_base], 0)
                .map_err(map_error(MAP_IFACES))?;
        }

        let program = self.program_mut()?;
        let (link_id, mode) = match program.attach_to_if_index(ifindex, XdpMode::Driver) {
            Ok(link) => (link, AttachMode::Native),
            Err(native) => {
                warn!(interface = %spec.name, error = %native,
                    "native XDP attach failed; falling back to generic (skb) mode, expect lower performance");
                match program.attach_to_if_index(ifindex, XdpMode::Skb) {
                    Ok(link) => (link, AttachMode::Generic),
                    Err(generic) => {
                        self.forget_interface(ifindex);
                        return Err(LoaderError::Attach {
                            interface: spec.name.clone(),
                            native: Box::new(native),
                            generic: Box::new(generic),
                        });
                    }
                }
            }
        };
        let mode_flag = match mode {
            AttachMode::Native => sys::XDP_FLAGS_DRV_MODE,
            AttachMode::Generic => sys::XDP_FLAGS_SKB_MODE,
        };
        let link = program.take_link(link_id).map_err(program_error)?;
        // A netlink attachment (aya's fallback when bpf_link_create is not
        // supported) does not convert; it is detached through netlink.
        let handle = match FdLink::try_from(link) {
            Ok(link) => match link.info() {
                Ok(info) => LinkHandle::Bpf {
                    link_id: info.id(),
                    link,
                },
                Err(error) => {
                    drop(link);
                    self.forget_interface(ifindex);
                    return Err(LoaderError::Interface {
                        action: "reading the new BPF link",
                        interface: spec.name.clone(),
                        source: io::Error::other(error),
                    });
                }
            },
            Err(_) => LinkHandle::Netlink { mode_flag },
        };
        let bpf_link = matches!(handle, LinkHandle::Bpf { .. });
        if !bpf_link {
            warn!(interface = %spec.name,
                "XDP attached via netlink, not a BPF link: a crash leaves it attached until the next start removes it");
        }
        let info = AttachedInterface {
            name: spec.name.clone(),
            ifindex,
            role: spec.role,
            mode,
            bpf_link,
            xsk_slot_base,
        };
        info!(interface = %spec.name, ifindex, role = ?spec.role, mode = ?mode, bpf_link, "XDP steering attached");
        self.attachments.push(Attachment {
            info: info.clone(),
            handle,
        });
        Ok(info)
    }

    fn forget_interface(&mut self, ifindex: u32) {
        if let Ok(map) = self.map_mut(MAP_IFACES) {
            if let Ok(mut ifaces) = HashMap::<&mut MapData, u32, [u32; 2]>::try_from(map) {
                let _ignored_missing_entry = ifaces.remove(&ifindex);
            }
        }
    }

    /// Interfaces currently attached.
    pub fn attachments(&self) -> Vec<AttachedInterface> {
        self.attachments.iter().map(|a| a.info.clone()).collect()
    }

    /// Detaches from one interface.
    pub fn detach(&mut self, interface: &str) -> Result<(), LoaderError> {
        let position = self
            .attachments
            .iter()
            .position(|a| a.info.name == interface)
            .ok_or_else(|| LoaderError::NotAttached(interface.to_owned()))?;
        let attachment = self.attachments.remove(position);
        let ifindex = attachment.info.ifindex;
        let detached = match attachment.handle {
            LinkHandle::Bpf { link, link_id } => {
                let result = sys::force_detach_xdp_link(link_id, ifindex).map(drop);
                drop(link);
                result
            }
            LinkHandle::Netlink { mode_flag } => sys::netlink_detach_xdp(ifindex, mode_flag),
        };
        detached.map_err(|source| LoaderError::Interface {
            action: "detaching XDP",
            interface: interface.to_owned(),
            source,
        })?;
        self.forget_interface(ifindex);
        info!(interface, "XDP steering detached");
        Ok(())
    }

    /// Detaches from every interface; keeps going after a failure and returns
    /// the first error.
    pub fn detach_all(&mut self) -> Result<(), LoaderError> {
        let names: Vec<String> = self
            .attachments
            .iter()
            .map(|a| a.info.name.clone())
            .collect();
        let mut first_error = None;
        for name in names {
            if let Err(error) = self.detach(&name) {
                warn!(interface = %name, %error, "XDP detach failed");
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Replaces the set of pod CIDRs (sources steered on inside interfaces).
    /// New entries are added before old ones go, so no prefix present in both
    /// sets is ever missing.
    pub fn set_pod_cidrs(&mut self, cidrs: &[Ipv4Net]) -> Result<(), LoaderError> {
        let mut trie: LpmTrie<&mut MapData, u32, u8> =
            LpmTrie::try_from(self.map_mut(MAP_POD_CIDRS)?).map_err(map_error(MAP_POD_CIDRS))?;
        let wanted: HashSet<(u32, u32)> = cidrs
            .iter()
            .map(|net| (u32::from(net.prefix_len()), wire_key(net.network())))
            .collect();
        for &(prefix_len, network) in &wanted {
            trie.insert(&LpmKey::new(prefix_len, network), 1, 0)
                .map_err(map_error(MAP_POD_CIDRS))?;
        }
        let existing: Vec<LpmKey<u32>> = trie
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_error(MAP_POD_CIDRS))?;
        for key in existing {
            if !wanted.contains(&(key.prefix_len(), key.data())) {
                trie.remove(&key).map_err(map_error(MAP_POD_CIDRS))?;
            }
        }
        Ok(())
    }

    /// Replaces the set of SNAT addresses (destinations steered on outside
    /// interfaces).
    pub fn set_snat_addrs(&mut self, addresses: &[Ipv4Addr]) -> Result<(), LoaderError> {
        self.replace_address_set(MAP_SNAT_ADDRS, addresses)
    }

    /// Replaces the set of gateway-local addresses: pod traffic to them goes to
    /// the kernel (gRPC, management, health checks).
    pub fn set_local_addrs(&mut self, addresses: &[Ipv4Addr]) -> Result<(), LoaderError> {
        self.replace_address_set(MAP_LOCAL_ADDRS, addresses)
    }

    fn replace_address_set(
        &mut self,
        map_name: &'static str,
        addresses: &[Ipv4Addr],
    ) -> Result<(), LoaderError> {
        let mut map: HashMap<&mut MapData, u32, u8> =
            HashMap::try_from(self.map_mut(map_name)?).map_err(map_error(map_name))?;
        let wanted: HashSet<u32> = addresses.iter().copied().map(wire_key).collect();
        for &key in &wanted {
            map.insert(key, 1, 0).map_err(map_error(map_name))?;
        }
        let existing: Vec<u32> = map
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_error(map_name))?;
        for key in existing {
            if !wanted.contains(&key) {
                map.remove(&key).map_err(map_error(map_name))?;
            }
        }
        Ok(())
    }

    fn xsk_slot(&self, interface: &str, queue: u32) -> Result<u32, LoaderError> {
        if queue >= MAX_QUEUES_PER_INTERFACE {
            return Err(LoaderError::QueueOutOfRange { queue });
        }
        let attachment = self
            .attachments
            .iter()
            .find(|a| a.info.name == interface)
            .ok_or_else(|| LoaderError::NotAttached(interface.to_owned()))?;
        Ok(attachment.info.xsk_slot_base + queue)
    }

    /// Registers the AF_XDP socket bound to `interface`/`queue`, so steered
    /// frames of that queue reach it. The map holds its own reference to the
    /// socket until [`Self::unregister_xsk`] or program unload.
    pub fn register_xsk(
        &mut self,
        interface: &str,
        queue: u32,
        socket: &impl AsRawFd,
    ) -> Result<(), LoaderError> {
        let slot = self.xsk_slot(interface, queue)?;
        let mut xsks: XskMap<&mut MapData> =
            XskMap::try_from(self.map_mut(MAP_XSKS)?).map_err(map_error(MAP_XSKS))?;
        xsks.set(slot, socket.as_raw_fd(), 0)
            .map_err(map_error(MAP_XSKS))?;
        debug!(interface, queue, slot, "AF_XDP socket registered");
        Ok(())
    }

    /// Removes the socket of `interface`/`queue`; its frames go to the kernel.
    pub fn unregister_xsk(&mut self, interface: &str, queue: u32) -> Result<(), LoaderError> {
        let slot = self.xsk_slot(interface, queue)?;
        let mut xsks: XskMap<&mut MapData> =
            XskMap::try_from(self.map_mut(MAP_XSKS)?).map_err(map_error(MAP_XSKS))?;
        xsks.unset(slot).map_err(map_error(MAP_XSKS))
    }

    /// Reads the program's counters, summed over CPUs.
    pub fn stats(&self) -> Result<SteeringStats, LoaderError> {
        let map = self.ebpf.map(MAP_STATS).ok_or(LoaderError::MissingObject {
            kind: "map",
            name: MAP_STATS,
        })?;
        let stats: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(map_error(MAP_STATS))?;
        let read = |index: u32| -> Result<u64, LoaderError> {
            let values = stats.get(&index, 0).map_err(map_error(MAP_STATS))?;
            Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
        };
        Ok(SteeringStats {
            passed: read(0)?,
            redirected_inside: read(1)?,
            redirected_outside: read(2)?,
            redirect_failed: read(3)?,
            passed_not_ipv4: read(4)?,
            passed_local_destination: read(5)?,
            passed_malformed: read(6)?,
            passed_unknown_interface: read(7)?,
            passed_queue_out_of_range: read(8)?,
        })
    }
}

impl Drop for SteeringProgram {
    fn drop(&mut self) {
        if let Err(error) = self.detach_all() {
            warn!(%error, "XDP detach on shutdown failed");
        }
    }
}

fn map_error(map: &'static str) -> impl Fn(MapError) -> LoaderError {
    move |source| LoaderError::Map {
        map,
        source: Box::new(source),
    }
}

fn program_error(error: ProgramError) -> LoaderError {
    LoaderError::Program(Box::new(error))
}

fn program_name(program_id: u32) -> Option<String> {
    loaded_programs()
        .flatten()
        .find(|program| program.id() == program_id)
        .map(|program| program.name_as_str().unwrap_or_default().to_owned())
}

/// Removes an egw program attached to `ifindex` by an earlier run (netlink
/// attachment, or a BPF link still held by a leaked fd or a pin). Refuses to
/// touch another tool's program.
fn remove_stale_program(interface: &str, ifindex: u32) -> Result<(), LoaderError> {
    let query = |action| {
        sys::query_xdp_attachment(ifindex).map_err(|source| LoaderError::Interface {
            action,
            interface: interface.to_owned(),
            source,
        })
    };
    let state = query("querying XDP state")?;
    let attached = [
        (state.native_program_id, sys::XDP_FLAGS_DRV_MODE),
        (state.generic_program_id, sys::XDP_FLAGS_SKB_MODE),
    ];
    for (program_id, mode_flag) in attached {
        let Some(program_id) = program_id else {
            continue;
        };
        let name = program_name(program_id).unwrap_or_default();
        if name != PROGRAM_NAME {
            return Err(LoaderError::ForeignProgram {
                interface: interface.to_owned(),
                program_id,
                program_name: name,
            });
        }
        warn!(
            interface,
            program_id, "removing stale egw XDP program left by an earlier run"
        );
        match sys::netlink_detach_xdp(ifindex, mode_flag) {
            Ok(()) => {}
            // EBUSY: attached through a BPF link, which netlink cannot remove.
            Err(error) if error.raw_os_error() == Some(libc::EBUSY) => {
                for link in loaded_links().flatten() {
                    if link.program_id() != program_id {
                        continue;
                    }
                    sys::force_detach_xdp_link(link.id(), ifindex).map_err(|source| {
                        LoaderError::Interface {
                            action: "detaching stale BPF link",
                            interface: interface.to_owned(),
                            source,
                        }
                    })?;
                }
            }
            Err(source) => {
                return Err(LoaderError::Interface {
                    action: "detaching stale netlink XDP program",
                    interface: interface.to_owned(),
                    source,
                })
            }
        }
        let after = query("re-querying XDP state")?;
        if after.native_program_id == Some(program_id)
            || after.generic_program_id == Some(program_id)
        {
            return Err(LoaderError::StaleNotRemoved {
                interface: interface.to_owned(),
                program_id,
            });
        }
    }
    if state.hardware_attached {
        return Err(LoaderError::ForeignProgram {
            interface: interface.to_owned(),
            program_id: 0,
            program_name: "<hardware offload>".to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keys_hold_addresses_in_wire_order() {
        let key = wire_key(Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(key.to_ne_bytes(), [10, 77, 0, 2]);
    }

    #[test]
    fn steering_program_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<SteeringProgram>();
    }

    #[test]
    fn roles_match_the_bpf_bitmask() {
        assert_eq!(InterfaceRole::Inside.bits(), 1);
        assert_eq!(InterfaceRole::Outside.bits(), 2);
        assert_eq!(InterfaceRole::OneArmed.bits(), 3);
    }

    #[test]
    fn embedded_object_is_an_aligned_bpf_elf() {
        let object = program_object();
        assert_eq!(&object[..4], b"\x7fELF");
        assert_eq!(object.as_ptr() as usize % 8, 0);
        // e_machine EM_BPF (247)
        assert_eq!(u16::from_le_bytes([object[18], object[19]]), 247);
    }
}
