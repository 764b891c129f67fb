//! UMEM registration and AF_XDP socket setup (ring sizing, mapping, binding).
#![allow(unsafe_code)] // the UMEM mapping and socket set-up; every block says why it is sound.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::ring::{ConsumerRing, Mmap, ProducerRing, RingOffsets};

/// The packet buffer area shared with the kernel: `frame_count` frames of
/// `frame_size` bytes, page aligned.
///
/// # Frame ownership
///
/// At any moment each frame is owned by exactly one party, and only the owner
/// may read or write its bytes:
/// - **userspace** while its address is on the worker's free list or inside a
///   live [`super::FrameDesc`];
/// - **the kernel** from the moment its address is published on a FILL ring
///   until it comes back on that socket's RX ring, and from the moment it is
///   published on a TX ring until it comes back on the COMPLETION ring.
///
/// The kernel writes FILL frames (packet reception) at any time, so touching
/// a frame userspace has given away is a data race. The worker upholds the
/// rules by moving addresses, never copying them: a `FrameDesc` is neither
/// `Clone` nor `Copy`, and giving one to the kernel consumes it.
#[derive(Debug)]
pub(crate) struct UmemArea {
    mapping: Mmap,
    frame_size: u32,
    frame_count: u32,
}

impl UmemArea {
    pub(crate) fn new(frame_size: u32, frame_count: u32) -> io::Result<Self> {
        let len = frame_size as usize * frame_count as usize;
        let mapping = Mmap::anonymous(len)?;
        Ok(Self {
            mapping,
            frame_size,
            frame_count,
        })
    }

    pub(crate) fn frame_size(&self) -> u32 {
        self.frame_size
    }

    pub(crate) fn frame_count(&self) -> u32 {
        self.frame_count
    }

    /// The bytes of the frame starting at `base`, read-only.
    ///
    /// # Safety
    ///
    /// `base` must be a frame start inside this area (`base % frame_size == 0`
    /// and `base < frame_size * frame_count`), and the frame must currently be
    /// owned by userspace (see the type's ownership rules). Shared slices of
    /// the same or other frames may coexist; `&self` keeps any `&mut` slice
    /// from [`Self::frame_mut`] from existing at the same time.
    pub(crate) unsafe fn frame(&self, base: u64) -> &[u8] {
        debug_assert!(base % u64::from(self.frame_size) == 0);
        debug_assert!(base < u64::from(self.frame_size) * u64::from(self.frame_count));
        // SAFETY: the caller guarantees `base` is an in-bounds frame start, so
        // `base + frame_size <= len`; userspace ownership means the kernel does
        // not write it concurrently; `&self` excludes writers in userspace.
        unsafe {
            std::slice::from_raw_parts(
                self.mapping.as_ptr().add(base as usize),
                self.frame_size as usize,
            )
        }
    }

    /// The bytes of the frame starting at `base`.
    ///
    /// # Safety
    ///
    /// `base` must be a frame start inside this area (`base % frame_size == 0`
    /// and `base < frame_size * frame_count`), the frame must currently be
    /// owned by userspace (see the type's ownership rules), and no other slice
    /// of the same frame may be alive for the returned lifetime.
    pub(crate) unsafe fn frame_mut(&mut self, base: u64) -> &mut [u8] {
        debug_assert!(base % u64::from(self.frame_size) == 0);
        debug_assert!(base < u64::from(self.frame_size) * u64::from(self.frame_count));
        // SAFETY: the caller guarantees `base` is an in-bounds frame start, so
        // `base + frame_size <= len`; userspace ownership means the kernel does
        // not write it concurrently; exclusivity is guaranteed by the caller
        // and by `&mut self`.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.mapping.as_ptr().add(base as usize),
                self.frame_size as usize,
            )
        }
    }

    /// Copies `len` bytes at `offset` from frame `from` to frame `to`; false
    /// (nothing copied) when `offset + len` does not fit a frame.
    ///
    /// # Safety
    ///
    /// Both frames must satisfy [`Self::frame_mut`]'s requirements and be
    /// distinct.
    pub(crate) unsafe fn copy_between(
        source: &mut Self,
        from: u64,
        target: &mut Self,
        to: u64,
        offset: usize,
        len: usize,
    ) -> bool {
        // SAFETY: forwarded from this function's contract; the areas are
        // distinct mappings (or distinct frames), so the slices do not overlap.
        let source_bytes = unsafe { source.frame_mut(from) };
        // SAFETY: as above.
        let target_bytes = unsafe { target.frame_mut(to) };
        let Some(end) = offset.checked_add(len) else {
            return false;
        };
        match (
            target_bytes.get_mut(offset..end),
            source_bytes.get(offset..end),
        ) {
            (Some(target), Some(source)) => {
                target.copy_from_slice(source);
                true
            }
            _ => false,
        }
    }
}

/// How a socket is bound.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BindKind<'a> {
    /// Own UMEM, zero-copy forced.
    ZeroCopy,
    /// Own UMEM, copy mode forced.
    Copy,
    /// Share the UMEM of an already bound socket (inherits its mode).
    Shared(BorrowedFd<'a>),
}

/// Ring sizes (entries, powers of two).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingSizes {
    pub fill: u32,
    pub completion: u32,
    pub rx: u32,
    pub tx: u32,
}

/// Outcome of a TX wakeup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxKick {
    /// The kernel processed the ring (copy mode) or was woken (zero-copy).
    Done,
    /// Progress was made but descriptors remain (copy-mode budget).
    MoreToSend,
    /// Transient refusal: busy, no buffers, device down. Retried next flush.
    Refused,
}

/// An AF_XDP socket with its four mapped rings.
#[derive(Debug)]
pub(crate) struct XskSocket {
    // Rings are unmapped before the socket closes (field order).
    pub(crate) rx: ConsumerRing<libc::xdp_desc>,
    pub(crate) tx: ProducerRing<libc::xdp_desc>,
    pub(crate) fill: ProducerRing<u64>,
    pub(crate) completion: ConsumerRing<u64>,
    pub(crate) zero_copy: bool,
    fd: OwnedFd,
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_option<T>(fd: BorrowedFd<'_>, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live, initialised `T` of the length passed;
    // the kernel only reads it.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
}

fn get_option<T: Copy>(fd: BorrowedFd<'_>, name: libc::c_int, mut value: T) -> io::Result<T> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is a live, writable `T` and `len` its size; the kernel
    // writes at most `len` bytes and reports how many.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

impl XskSocket {
    /// Creates a socket, sizes and maps its rings, and binds it to
    /// `ifindex`/`queue`. With `BindKind::ZeroCopy`/`Copy` the socket
    /// registers `umem` itself; with `Shared` it reuses the other socket's
    /// registration (same `umem` area) and brings its own FILL/COMPLETION.
    pub(crate) fn open(
        umem: &UmemArea,
        headroom: u32,
        sizes: RingSizes,
        ifindex: u32,
        queue: u32,
        kind: BindKind<'_>,
    ) -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        check(raw)?;
        // SAFETY: `raw` is a new descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let borrowed = fd.as_fd();

        if !matches!(kind, BindKind::Shared(_)) {
            let registration = libc::xdp_umem_reg {
                addr: umem.mapping.as_ptr() as u64,
                len: umem.mapping.len() as u64,
                chunk_size: umem.frame_size,
                headroom,
                flags: 0,
                tx_metadata_len: 0,
            };
            set_option(borrowed, libc::XDP_UMEM_REG, &registration)?;
        }
        set_option(borrowed, libc::XDP_UMEM_FILL_RING, &sizes.fill)?;
        set_option(borrowed, libc::XDP_UMEM_COMPLETION_RING, &sizes.completion)?;
        set_option(borrowed, libc::XDP_RX_RING, &sizes.rx)?;
        set_option(borrowed, libc::XDP_TX_RING, &sizes.tx)?;

        let zeroed_ring = libc::xdp_ring_offset {
            producer: 0,
            consumer: 0,
            desc: 0,
            flags: 0,
        };
        let offsets = get_option(
            borrowed,
            libc::XDP_MMAP_OFFSETS,
            libc::xdp_mmap_offsets {
                rx: zeroed_ring,
                tx: zeroed_ring,
                fr: zeroed_ring,
                cr: zeroed_ring,
            },
        )?;
        // FILL/COMPLETION must be mapped before bind: binding moves them from
        // the socket into the buffer pool, after which they cannot be mapped.
        let rx = ConsumerRing::map(
            borrowed,
            sizes.rx,
            offsets.rx.into(),
            libc::XDP_PGOFF_RX_RING as u64,
        )?;
        let tx = ProducerRing::map(
            borrowed,
            sizes.tx,
            offsets.tx.into(),
            libc::XDP_PGOFF_TX_RING as u64,
        )?;
        let fill = ProducerRing::map(
            borrowed,
            sizes.fill,
            RingOffsets::from(offsets.fr),
            libc::XDP_UMEM_PGOFF_FILL_RING,
        )?;
        let completion = ConsumerRing::map(
            borrowed,
            sizes.completion,
            RingOffsets::from(offsets.cr),
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )?;

        let (flags, shared_fd) = match kind {
            BindKind::ZeroCopy => (libc::XDP_ZEROCOPY | libc::XDP_USE_NEED_WAKEUP, 0),
            BindKind::Copy => (libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP, 0),
            // A sharing socket may not pass mode flags: it inherits them.
            BindKind::Shared(owner) => (libc::XDP_SHARED_UMEM, owner.as_raw_fd() as u32),
        };
        let address = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: shared_fd,
        };
        // SAFETY: `address` is a live, initialised sockaddr_xdp of the length
        // passed; the kernel only reads it.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&address as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        })?;
        let options = get_option(borrowed, libc::XDP_OPTIONS, libc::xdp_options { flags: 0 })?;
        Ok(Self {
            rx,
            tx,
            fill,
            completion,
            zero_copy: options.flags & libc::XDP_OPTIONS_ZEROCOPY != 0,
            fd,
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Asks the kernel to process the TX ring.
    pub(crate) fn kick_tx(&self) -> TxKick {
        // SAFETY: zero-length send with null buffer and address, which the
        // kernel accepts as a pure TX wakeup for AF_XDP sockets.
        let result = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if result >= 0 {
            return TxKick::Done;
        }
        match io::Error::last_os_error().raw_os_error() {
            // Copy mode sends a bounded budget per call and reports EAGAIN
            // when descriptors remain.
            Some(libc::EAGAIN) => TxKick::MoreToSend,
            _ => TxKick::Refused,
        }
    }

    /// Wakes the kernel to refill from the FILL ring.
    pub(crate) fn kick_fill(&self) {
        // SAFETY: zero-length receive with null buffer and address: an AF_XDP
        // wakeup that writes nothing to userspace.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
    }

    pub(crate) fn statistics(&self) -> io::Result<libc::xdp_statistics> {
        get_option(
            self.fd.as_fd(),
            libc::XDP_STATISTICS,
            libc::xdp_statistics {
                rx_dropped: 0,
                rx_invalid_descs: 0,
                tx_invalid_descs: 0,
                rx_ring_full: 0,
                rx_fill_ring_empty_descs: 0,
                tx_ring_empty_descs: 0,
            },
        )
    }
}
