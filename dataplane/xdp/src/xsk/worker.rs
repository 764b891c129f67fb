//! The safe per-worker API over AF_XDP sockets and their UMEM.
#![allow(unsafe_code)] // UMEM frame access and poll(2); every block says why it is sound.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use super::socket::{BindKind, RingSizes, TxKick, UmemArea, XskSocket};

/// Headroom the kernel reserves in front of every received packet
/// (`XDP_PACKET_HEADROOM`), on top of [`WorkerConfig::headroom`].
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// Bounded number of TX wakeups per flush in copy mode, where each wakeup
/// sends at most a kernel budget's worth (32) of frames.
const MAX_COPY_MODE_KICKS: u32 = 64;

static NEXT_WORKER_ID: AtomicU32 = AtomicU32::new(1);

/// UMEM frame size. Aligned-chunk mode needs a power of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSize {
    /// 2048-byte frames: twice the frames per MiB; fits a 1500-byte MTU.
    Bytes2048,
    /// 4096-byte frames: one per page; room to grow packets.
    Bytes4096,
}

impl FrameSize {
    /// Size in bytes.
    pub fn bytes(self) -> u32 {
        match self {
            Self::Bytes2048 => 2048,
            Self::Bytes4096 => 4096,
        }
    }
}

/// Worker socket and UMEM settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Size of each UMEM frame.
    pub frame_size: FrameSize,
    /// Frames per UMEM (one UMEM when shared, one per socket otherwise).
    pub frame_count: u32,
    /// Entries of each ring (FILL, COMPLETION, RX, TX); a power of two.
    pub ring_size: u32,
    /// Extra headroom before each received packet, in addition to
    /// [`XDP_PACKET_HEADROOM`].
    pub headroom: u32,
    /// Try zero-copy first (falls back to copy mode, logged).
    pub prefer_zero_copy: bool,
    /// Share one UMEM between the inside and outside sockets (falls back to
    /// separate UMEMs plus a copy per forwarded frame, logged).
    pub share_umem: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            frame_size: FrameSize::Bytes4096,
            frame_count: 4096,
            ring_size: 1024,
            headroom: 0,
            prefer_zero_copy: true,
            share_umem: true,
        }
    }
}

/// Which of the worker's two sockets. In one-armed mode both name the same
/// socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Pod-facing socket.
    Inside,
    /// Internet-facing socket.
    Outside,
}

/// Ownership of one UMEM frame plus the packet's position in it.
///
/// Holding a `FrameDesc` means userspace owns the frame: it is neither `Clone`
/// nor `Copy`, and [`Worker::transmit`] / [`Worker::recycle`] consume it.
/// Dropping one leaks its frame until the worker is dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct FrameDesc {
    base: u64,
    offset: u32,
    len: u32,
    capacity: u32,
    umem: u8,
    worker: u32,
}

/// A packet position that does not fit in its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("packet at offset {offset} with length {len} does not fit a {capacity}-byte frame")]
pub struct FrameBoundsError {
    /// Requested offset.
    pub offset: usize,
    /// Requested length.
    pub len: usize,
    /// Frame size.
    pub capacity: usize,
}

impl FrameDesc {
    /// Offset of the packet's first byte within the frame.
    pub fn offset(&self) -> usize {
        self.offset as usize
    }

    /// Packet length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when the packet is empty (a freshly allocated frame).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Frame size: the most `offset + len` can be.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Moves the packet window, e.g. after growing it in place (prepend a
    /// header: lower `offset`; build an ICMP error: rewrite and set `len`).
    pub fn set_packet(&mut self, offset: usize, len: usize) -> Result<(), FrameBoundsError> {
        let error = FrameBoundsError {
            offset,
            len,
            capacity: self.capacity as usize,
        };
        let end = offset.checked_add(len).ok_or(error)?;
        if end > self.capacity as usize {
            return Err(error);
        }
        // Both fit in u32: bounded by capacity (a u32).
        self.offset = offset as u32;
        self.len = len as u32;
        Ok(())
    }
}

/// Result of [`Worker::transmit`]. Dropped frames are already recycled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// On the TX ring; goes out at the next [`Worker::flush`].
    Queued,
    /// TX ring full even after a wakeup.
    DroppedRingFull,
    /// Separate-UMEM fallback needed a frame in the target UMEM; none free.
    DroppedNoFrame,
    /// Empty packet.
    DroppedEmpty,
}

/// How a socket came up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketInfo {
    /// Interface name.
    pub interface: String,
    /// Interface index.
    pub ifindex: u32,
    /// Queue index.
    pub queue: u32,
    /// True in zero-copy mode, false in copy mode.
    pub zero_copy: bool,
    /// True when this socket shares the worker's other socket's UMEM.
    pub shared_umem: bool,
}

/// Userspace counters of a worker. Plain integers: the worker is
/// single-threaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// Frames received.
    pub rx: u64,
    /// RX descriptors outside the UMEM (kernel bug); dropped.
    pub rx_invalid: u64,
    /// Frames queued for transmission.
    pub tx: u64,
    /// Frames copied between separate UMEMs (shared-UMEM fallback).
    pub tx_copied: u64,
    /// Frames dropped because a TX ring was full.
    pub tx_ring_full: u64,
    /// Frames dropped because the target UMEM had no free frame.
    pub tx_no_frame: u64,
    /// Empty frames refused by `transmit`.
    pub tx_empty: u64,
    /// TX wakeups (`sendto`) issued because the kernel asked for one.
    pub tx_kicks: u64,
    /// TX wakeups refused transiently (busy, no buffers, device down).
    pub tx_kick_refused: u64,
    /// Transmitted frames returned through COMPLETION rings.
    pub tx_completed: u64,
    /// FILL wakeups issued because the kernel asked for one.
    pub fill_wakeups: u64,
    /// Flushes that found a FILL ring with room but no free frame to give.
    pub fill_empty: u64,
    /// `alloc_frame` calls that found no free frame.
    pub alloc_failed: u64,
}

/// Kernel-side counters of one socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketStatistics {
    /// Dropped for reasons other than invalid descriptors.
    pub rx_dropped: u64,
    /// Dropped because of invalid descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the FILL ring was empty when a frame arrived.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
}

/// Errors setting up or polling a worker's sockets.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// The configuration cannot work.
    #[error("invalid AF_XDP worker configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// The interface name does not resolve.
    #[error("interface `{interface}` not found")]
    UnknownInterface {
        /// Interface name.
        interface: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The UMEM could not be allocated.
    #[error("allocating a {bytes}-byte UMEM failed")]
    Umem {
        /// Requested size.
        bytes: usize,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// Socket creation, ring setup or bind failed (in copy mode, after any
    /// zero-copy attempt).
    #[error("opening an AF_XDP socket on `{interface}` queue {queue} failed")]
    Open {
        /// Interface name.
        interface: String,
        /// Queue index.
        queue: u32,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// `poll(2)` failed.
    #[error("polling AF_XDP sockets failed")]
    Poll(#[source] io::Error),
    /// `XDP_STATISTICS` could not be read.
    #[error("reading AF_XDP statistics of `{interface}` failed")]
    Statistics {
        /// Interface name.
        interface: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
}

#[derive(Debug)]
struct Port {
    socket: XskSocket,
    umem: usize,
    info: SocketInfo,
}

#[derive(Debug)]
struct Pool {
    area: UmemArea,
    /// Frame start addresses owned by userspace and not in any `FrameDesc`.
    free: Vec<u64>,
    /// Frames kept out of FILL rings so `alloc_frame` and the copy fallback
    /// find some.
    reserve: usize,
}

impl Pool {
    fn new(config: &WorkerConfig) -> Result<Self, XskError> {
        let frame_size = config.frame_size.bytes();
        let area =
            UmemArea::new(frame_size, config.frame_count).map_err(|source| XskError::Umem {
                bytes: frame_size as usize * config.frame_count as usize,
                source,
            })?;
        let free = (0..u64::from(config.frame_count))
            .map(|frame| frame * u64::from(frame_size))
            .collect();
        Ok(Self {
            area,
            free,
            reserve: config.frame_count as usize / 8,
        })
    }
}

/// One dataplane worker's AF_XDP sockets, UMEM(s) and frame allocator.
///
/// Single-threaded by design (`&mut self` everywhere); move it to the worker
/// thread (it is `Send`).
#[derive(Debug)]
pub struct Worker {
    // Sockets close before the UMEM areas unmap (field order).
    ports: Vec<Port>,
    pools: Vec<Pool>,
    side_port: [usize; 2],
    id: u32,
    rx_offset: u32,
    ring_size: u32,
    counters: WorkerCounters,
}

fn validate(config: &WorkerConfig) -> Result<(), XskError> {
    let invalid = |reason| Err(XskError::InvalidConfig { reason });
    if !config.ring_size.is_power_of_two() || config.ring_size < 8 {
        return invalid("ring_size must be a power of two of at least 8");
    }
    if config.frame_count < 2 * config.ring_size {
        return invalid("frame_count must be at least twice ring_size");
    }
    if u64::from(config.frame_count) * u64::from(config.frame_size.bytes()) > 1 << 40 {
        return invalid("UMEM larger than 1 TiB");
    }
    if config.headroom + XDP_PACKET_HEADROOM + 128 > config.frame_size.bytes() {
        return invalid("headroom leaves less than 128 bytes of packet space");
    }
    Ok(())
}

fn resolve(interface: &str) -> Result<u32, XskError> {
    crate::sys::interface_index(interface).map_err(|source| XskError::UnknownInterface {
        interface: interface.to_owned(),
        source,
    })
}

fn ring_sizes(config: &WorkerConfig) -> RingSizes {
    RingSizes {
        fill: config.ring_size,
        completion: config.ring_size,
        rx: config.ring_size,
        tx: config.ring_size,
    }
}

/// Opens a socket with its own UMEM registration: zero-copy first (when
/// preferred), then copy mode.
fn open_own_umem(
    pool: &Pool,
    interface: &str,
    ifindex: u32,
    queue: u32,
    config: &WorkerConfig,
) -> Result<XskSocket, XskError> {
    let sizes = ring_sizes(config);
    if config.prefer_zero_copy {
        // A failed zero-copy bind leaves the socket unusable, so copy mode
        // gets a fresh socket.
        match XskSocket::open(
            &pool.area,
            config.headroom,
            sizes,
            ifindex,
            queue,
            BindKind::ZeroCopy,
        ) {
            Ok(socket) => return Ok(socket),
            Err(error) => warn!(interface, queue, %error,
                "AF_XDP zero-copy bind failed; falling back to copy mode"),
        }
    }
    XskSocket::open(
        &pool.area,
        config.headroom,
        sizes,
        ifindex,
        queue,
        BindKind::Copy,
    )
    .map_err(|source| XskError::Open {
        interface: interface.to_owned(),
        queue,
        source,
    })
}

impl Worker {
    fn new(
        ports: Vec<Port>,
        pools: Vec<Pool>,
        side_port: [usize; 2],
        config: &WorkerConfig,
    ) -> Self {
        for port in &ports {
            info!(interface = %port.info.interface, queue = port.info.queue,
                zero_copy = port.info.zero_copy, shared_umem = port.info.shared_umem,
                "AF_XDP socket bound");
        }
        let mut worker = Self {
            ports,
            pools,
            side_port,
            id: NEXT_WORKER_ID.fetch_add(1, Ordering::Relaxed),
            rx_offset: config.headroom + XDP_PACKET_HEADROOM,
            ring_size: config.ring_size,
            counters: WorkerCounters::default(),
        };
        worker.flush();
        worker
    }

    /// One socket on `interface`/`queue` serving both sides (one-armed mode).
    pub fn one_armed(interface: &str, queue: u32, config: &WorkerConfig) -> Result<Self, XskError> {
        validate(config)?;
        let ifindex = resolve(interface)?;
        let pool = Pool::new(config)?;
        let socket = open_own_umem(&pool, interface, ifindex, queue, config)?;
        let info = SocketInfo {
            interface: interface.to_owned(),
            ifindex,
            queue,
            zero_copy: socket.zero_copy,
            shared_umem: false,
        };
        Ok(Self::new(
            vec![Port {
                socket,
                umem: 0,
                info,
            }],
            vec![pool],
            [0, 0],
            config,
        ))
    }

    /// Sockets on `queue` of `inside` and of `outside`, sharing one UMEM when
    /// the kernel allows (Linux 5.10+), else each with its own (logged).
    pub fn two_armed(
        inside: &str,
        outside: &str,
        queue: u32,
        config: &WorkerConfig,
    ) -> Result<Self, XskError> {
        validate(config)?;
        let inside_index = resolve(inside)?;
        let outside_index = resolve(outside)?;
        let first = Pool::new(config)?;
        let inside_socket = open_own_umem(&first, inside, inside_index, queue, config)?;

        let mut shared = None;
        if config.share_umem {
            match XskSocket::open(
                &first.area,
                config.headroom,
                ring_sizes(config),
                outside_index,
                queue,
                BindKind::Shared(inside_socket.fd()),
            ) {
                Ok(socket) => shared = Some(socket),
                Err(error) => warn!(inside, outside, queue, %error,
                    "sharing the UMEM between inside and outside sockets failed; using separate UMEMs, forwarded frames will be copied"),
            }
        }
        let (outside_socket, pools) = match shared {
            Some(socket) => (socket, vec![first]),
            None => {
                let second = Pool::new(config)?;
                let socket = open_own_umem(&second, outside, outside_index, queue, config)?;
                (socket, vec![first, second])
            }
        };
        let outside_umem = pools.len() - 1;
        let shared_umem = outside_umem == 0;
        let ports = vec![
            Port {
                info: SocketInfo {
                    interface: inside.to_owned(),
                    ifindex: inside_index,
                    queue,
                    zero_copy: inside_socket.zero_copy,
                    shared_umem,
                },
                socket: inside_socket,
                umem: 0,
            },
            Port {
                info: SocketInfo {
                    interface: outside.to_owned(),
                    ifindex: outside_index,
                    queue,
                    zero_copy: outside_socket.zero_copy,
                    shared_umem,
                },
                socket: outside_socket,
                umem: outside_umem,
            },
        ];
        Ok(Self::new(ports, pools, [0, 1], config))
    }

    /// Index in `ports` of the socket serving `side`.
    fn port_index(&self, side: Side) -> usize {
        let [inside, outside] = self.side_port;
        match side {
            Side::Inside => inside,
            Side::Outside => outside,
        }
    }

    /// The socket serving `side`.
    #[allow(
        clippy::indexing_slicing,
        reason = "side_port holds indices of `ports` only (set with them by the constructors)"
    )]
    fn port(&self, side: Side) -> &Port {
        &self.ports[self.port_index(side)]
    }

    /// The frames of UMEM `umem`.
    #[allow(
        clippy::indexing_slicing,
        reason = "every `umem` of a Port or of a FrameDesc this worker issued (see check_owner) \
                  indexes `pools`: both are set from it by the constructors and `alloc_frame`/`rx_batch`"
    )]
    fn pool(&self, umem: usize) -> &Pool {
        &self.pools[umem]
    }

    /// [`Self::pool`], mutable.
    #[allow(
        clippy::indexing_slicing,
        reason = "as `pool`: the index comes from this worker's own Port or FrameDesc"
    )]
    fn pool_mut(&mut self, umem: usize) -> &mut Pool {
        &mut self.pools[umem]
    }

    /// How the socket of `side` came up.
    pub fn socket_info(&self, side: Side) -> &SocketInfo {
        &self.port(side).info
    }

    /// The socket of `side`, for [`crate::SteeringProgram::register_xsk`] or
    /// an external event loop.
    pub fn socket_fd(&self, side: Side) -> BorrowedFd<'_> {
        self.port(side).socket.fd()
    }

    /// Userspace counters.
    pub fn counters(&self) -> WorkerCounters {
        self.counters
    }

    /// Kernel counters of the socket of `side`.
    pub fn socket_statistics(&self, side: Side) -> Result<SocketStatistics, XskError> {
        let port = self.port(side);
        let stats = port
            .socket
            .statistics()
            .map_err(|source| XskError::Statistics {
                interface: port.info.interface.clone(),
                source,
            })?;
        Ok(SocketStatistics {
            rx_dropped: stats.rx_dropped,
            rx_invalid_descs: stats.rx_invalid_descs,
            tx_invalid_descs: stats.tx_invalid_descs,
            rx_ring_full: stats.rx_ring_full,
            rx_fill_ring_empty_descs: stats.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: stats.tx_ring_empty_descs,
        })
    }

    /// Free frames in the UMEM that `side` transmits from.
    pub fn free_frames(&self, side: Side) -> usize {
        self.pool(self.port(side).umem).free.len()
    }

    /// Appends up to `max` received frames of `side` to `out`; returns how
    /// many. Reuse `out` across calls so no allocation happens.
    pub fn rx_batch(&mut self, side: Side, out: &mut Vec<FrameDesc>, max: usize) -> usize {
        let port_index = self.port_index(side);
        // Both exist (see `port`, `pool`); the fields are borrowed apart, hence no helpers.
        let Some(port) = self.ports.get_mut(port_index) else {
            return 0;
        };
        let Some(area) = self.pools.get(port.umem).map(|pool| &pool.area) else {
            return 0;
        };
        let frame_size = area.frame_size();
        let umem_len = u64::from(frame_size) * u64::from(area.frame_count());
        let frame_mask = !(u64::from(frame_size) - 1);
        let umem = port.umem as u8;
        let worker = self.id;
        let mut invalid = 0;
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        let received = port.socket.rx.consume(max, |desc| {
            let base = desc.addr & frame_mask;
            let offset = desc.addr - base;
            // The kernel only hands back frames we gave it; a descriptor
            // outside the UMEM would make `frame_mut` unsound, so drop it.
            if base >= umem_len || offset + u64::from(desc.len) > u64::from(frame_size) {
                invalid += 1;
                return;
            }
            out.push(FrameDesc {
                base,
                offset: offset as u32,
                len: desc.len,
                capacity: frame_size,
                umem,
                worker,
            });
        });
        self.counters.rx += u64::from(received - invalid);
        self.counters.rx_invalid += u64::from(invalid);
        (received - invalid) as usize
    }

    fn check_owner(&self, desc: &FrameDesc) {
        assert_eq!(
            desc.worker, self.id,
            "FrameDesc used with a Worker that did not issue it"
        );
    }

    /// The whole frame of `desc` (its capacity), so a packet can grow in place.
    ///
    /// # Panics
    ///
    /// If `desc` was issued by another `Worker`.
    pub fn frame_mut(&mut self, desc: &FrameDesc) -> &mut [u8] {
        self.check_owner(desc);
        // SAFETY: `desc` was issued by this worker (checked above), so `base`
        // is an in-bounds frame start of `pools[umem]` (checked at RX, or taken
        // from the free list). A live `FrameDesc` means userspace owns the
        // frame: it is unique (not Clone) and is consumed when the frame goes
        // back to the kernel. `&mut self` makes the returned slice exclusive.
        unsafe {
            self.pool_mut(usize::from(desc.umem))
                .area
                .frame_mut(desc.base)
        }
    }

    /// The packet bytes of `desc`, read-only: lets a caller look at a whole batch at once
    /// (e.g. to prefetch what processing it will need) before taking frames one by one.
    ///
    /// # Panics
    ///
    /// If `desc` was issued by another `Worker`.
    pub fn packet(&self, desc: &FrameDesc) -> &[u8] {
        self.check_owner(desc);
        let range = desc.offset()..desc.offset() + desc.len();
        // SAFETY: as in `frame_mut`: `desc` comes from this worker, so `base` is
        // an in-bounds frame start of `pools[umem]` and userspace owns the frame
        // while `desc` lives; `&self` rules out a concurrent `&mut` slice.
        let frame = unsafe { self.pool(usize::from(desc.umem)).area.frame(desc.base) };
        // `FrameDesc` keeps offset + len <= capacity, so this is the whole packet.
        frame.get(range).unwrap_or_default()
    }

    /// The packet bytes of `desc` (`offset..offset + len` of its frame).
    ///
    /// # Panics
    ///
    /// If `desc` was issued by another `Worker`.
    pub fn packet_mut(&mut self, desc: &FrameDesc) -> &mut [u8] {
        let range = desc.offset()..desc.offset() + desc.len();
        // In bounds: `FrameDesc` keeps offset + len <= capacity.
        self.frame_mut(desc).get_mut(range).unwrap_or_default()
    }

    /// A frame for a packet the worker builds itself, from the UMEM `side`
    /// transmits from; the packet window starts empty at the RX headroom.
    pub fn alloc_frame(&mut self, side: Side) -> Option<FrameDesc> {
        let umem = self.port(side).umem;
        let rx_offset = self.rx_offset;
        let id = self.id;
        let pool = self.pool_mut(umem);
        let Some(base) = pool.free.pop() else {
            self.counters.alloc_failed += 1;
            return None;
        };
        Some(FrameDesc {
            base,
            offset: rx_offset,
            len: 0,
            capacity: pool.area.frame_size(),
            umem: umem as u8,
            worker: id,
        })
    }

    /// Returns a frame to the free list (drop the packet, or done with it).
    ///
    /// # Panics
    ///
    /// If `desc` was issued by another `Worker`.
    pub fn recycle(&mut self, desc: FrameDesc) {
        self.check_owner(&desc);
        self.pool_mut(usize::from(desc.umem)).free.push(desc.base);
    }

    /// Queues the packet of `desc` for transmission on `side`; it leaves at
    /// the next [`Self::flush`]. Zero-copy when `desc`'s frame lives in the
    /// UMEM of `side` (shared UMEM), else copied into a frame of that UMEM.
    ///
    /// # Panics
    ///
    /// If `desc` was issued by another `Worker`.
    pub fn transmit(&mut self, side: Side, desc: FrameDesc) -> TxStatus {
        self.check_owner(&desc);
        if desc.is_empty() {
            self.counters.tx_empty += 1;
            self.recycle(desc);
            return TxStatus::DroppedEmpty;
        }
        let port_index = self.port_index(side);
        let target_umem = self.port(side).umem;
        let desc = if desc.umem as usize == target_umem {
            desc
        } else {
            let Some(target_base) = self.pool_mut(target_umem).free.pop() else {
                self.counters.tx_no_frame += 1;
                self.recycle(desc);
                return TxStatus::DroppedNoFrame;
            };
            // Two UMEMs (this branch): pool 0 and pool 1, one of them the target.
            let [first, second] = self.pools.as_mut_slice() else {
                self.pool_mut(target_umem).free.push(target_base);
                self.counters.tx_no_frame += 1;
                self.recycle(desc);
                return TxStatus::DroppedNoFrame;
            };
            let (source, target) = if target_umem == 0 {
                (second, first)
            } else {
                (first, second)
            };
            // SAFETY: `desc.base` is owned by userspace (live FrameDesc of this
            // worker) and `target_base` was just taken off the free list, so
            // both are in-bounds, userspace-owned frame starts of their
            // (distinct) areas; `offset + len <= capacity` is a FrameDesc
            // invariant and both areas use the same frame size.
            let copied = unsafe {
                UmemArea::copy_between(
                    &mut source.area,
                    desc.base,
                    &mut target.area,
                    target_base,
                    desc.offset(),
                    desc.len(),
                )
            };
            if !copied {
                // Unreachable while FrameDesc keeps offset + len <= capacity.
                self.pool_mut(target_umem).free.push(target_base);
                self.counters.tx_no_frame += 1;
                self.recycle(desc);
                return TxStatus::DroppedNoFrame;
            }
            self.counters.tx_copied += 1;
            let copied = FrameDesc {
                base: target_base,
                umem: target_umem as u8,
                ..desc
            };
            self.recycle(desc);
            copied
        };

        let entry = libc::xdp_desc {
            addr: desc.base + u64::from(desc.offset),
            len: desc.len,
            options: 0,
        };
        // `port_index` names a port (see `port`); the counters are borrowed beside it.
        let Some(port) = self.ports.get_mut(port_index) else {
            self.recycle(desc);
            return TxStatus::DroppedRingFull;
        };
        if !port.socket.tx.push(entry) {
            // Let the kernel drain what is queued, then retry once.
            port.socket.tx.publish();
            if port.socket.tx.needs_wakeup() {
                self.counters.tx_kicks += 1;
                if port.socket.kick_tx() == TxKick::Refused {
                    self.counters.tx_kick_refused += 1;
                }
            }
            if !port.socket.tx.push(entry) {
                self.counters.tx_ring_full += 1;
                self.recycle(desc);
                return TxStatus::DroppedRingFull;
            }
        }
        // The frame now belongs to the kernel until it shows up on the
        // COMPLETION ring; `desc` is consumed here.
        self.counters.tx += 1;
        TxStatus::Queued
    }

    /// Publishes queued TX frames (waking the kernel when it asks), returns
    /// completed TX frames to the free list, and refills the FILL rings.
    /// Call once per loop iteration after processing a batch.
    pub fn flush(&mut self) {
        let Self {
            ports,
            pools,
            counters,
            ring_size,
            ..
        } = self;
        for port in ports.iter_mut() {
            let tx = &mut port.socket.tx;
            if tx.unpublished() > 0 {
                tx.publish();
            }
            // Copy mode transmits synchronously, a bounded budget per wakeup;
            // zero-copy drivers transmit asynchronously after one wakeup.
            let max_kicks = if port.socket.zero_copy {
                1
            } else {
                MAX_COPY_MODE_KICKS
            };
            for _ in 0..max_kicks {
                if port.socket.tx.in_flight() == 0 || !port.socket.tx.needs_wakeup() {
                    break;
                }
                counters.tx_kicks += 1;
                match port.socket.kick_tx() {
                    TxKick::Done | TxKick::MoreToSend => {}
                    TxKick::Refused => {
                        counters.tx_kick_refused += 1;
                        break;
                    }
                }
            }
        }
        for port in ports.iter_mut() {
            let Some(pool) = pools.get_mut(port.umem) else {
                continue;
            };
            let frame_mask = !(u64::from(pool.area.frame_size()) - 1);
            let completed = port.socket.completion.consume(*ring_size, |address| {
                pool.free.push(address & frame_mask);
            });
            counters.tx_completed += u64::from(completed);
        }
        for port in ports.iter_mut() {
            let Some(pool) = pools.get_mut(port.umem) else {
                continue;
            };
            let room = port.socket.fill.free_slots(*ring_size);
            let spare = pool.free.len().saturating_sub(pool.reserve);
            let count = spare.min(room as usize);
            if count == 0 && room > 0 {
                counters.fill_empty += 1;
            }
            for _ in 0..count {
                // `count <= spare <= free.len()`, so pop always yields.
                let Some(base) = pool.free.pop() else { break };
                // `count <= room`: the push cannot fail.
                if !port.socket.fill.push(base) {
                    pool.free.push(base);
                    break;
                }
            }
            if count > 0 {
                port.socket.fill.publish();
            }
            if port.socket.fill.needs_wakeup() {
                counters.fill_wakeups += 1;
                port.socket.kick_fill();
            }
        }
    }

    /// Waits up to `timeout` for received frames on any socket; returns
    /// whether some are ready.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, XskError> {
        let mut fds = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; 2];
        for (slot, port) in fds.iter_mut().zip(&self.ports) {
            slot.fd = port.socket.fd().as_raw_fd();
            slot.events = libc::POLLIN;
        }
        let timeout_ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a live array of initialised pollfd entries whose
        // length is passed; entries with fd -1 are ignored by poll(2).
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(XskError::Poll(error));
        }
        Ok(ready > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(offset: u32, len: u32) -> FrameDesc {
        FrameDesc {
            base: 0,
            offset,
            len,
            capacity: 2048,
            umem: 0,
            worker: 0,
        }
    }

    #[test]
    fn packet_window_must_fit_the_frame() {
        let mut frame = desc(256, 60);
        frame.set_packet(100, 1948).unwrap();
        assert_eq!((frame.offset(), frame.len()), (100, 1948));
        assert!(frame.set_packet(100, 1949).is_err());
        assert!(frame.set_packet(usize::MAX, 2).is_err());
        assert_eq!(
            (frame.offset(), frame.len()),
            (100, 1948),
            "failed set keeps window"
        );
        frame.set_packet(0, 0).unwrap();
        assert!(frame.is_empty());
    }

    #[test]
    fn configuration_is_validated() {
        assert!(validate(&WorkerConfig::default()).is_ok());
        let bad_ring = WorkerConfig {
            ring_size: 1000,
            ..WorkerConfig::default()
        };
        assert!(matches!(
            validate(&bad_ring),
            Err(XskError::InvalidConfig { .. })
        ));
        let too_few_frames = WorkerConfig {
            frame_count: 1024,
            ring_size: 1024,
            ..WorkerConfig::default()
        };
        assert!(validate(&too_few_frames).is_err());
        let no_room = WorkerConfig {
            frame_size: FrameSize::Bytes2048,
            headroom: 1800,
            ..WorkerConfig::default()
        };
        assert!(validate(&no_room).is_err());
    }

    #[test]
    fn worker_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Worker>();
    }
}
