//! Memory mappings and the single-producer/single-consumer rings AF_XDP shares
//! with the kernel.
//!
//! Protocol (see Documentation/networking/af_xdp.rst): each ring has a
//! producer and a consumer index (free-running `u32`, masked on access). The
//! producer writes entries, then publishes them with a release store of the
//! producer index; the consumer reads the producer index with acquire, reads
//! the entries, then hands the slots back with a release store of the consumer
//! index. Userspace is producer of FILL and TX and consumer of RX and
//! COMPLETION; the kernel plays the other side.
#![allow(unsafe_code)] // rings shared with the kernel; every block says why it is sound.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};

/// An owned `mmap(2)` region, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a mapping belongs to the process, not a thread; `Mmap` only hands
// out its base pointer, and every access through it is governed by the
// ownership rules of the type that owns the `Mmap` (rings, `UmemArea`).
unsafe impl Send for Mmap {}

impl Mmap {
    /// Private anonymous read/write memory, page aligned, pre-faulted.
    pub(crate) fn anonymous(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping aliases nothing; arguments are
        // valid constants and a length the caller sized.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        Self::from_result(ptr, len)
    }

    /// Shared mapping of one of an AF_XDP socket's rings.
    pub(crate) fn socket_ring(
        fd: BorrowedFd<'_>,
        len: usize,
        page_offset: u64,
    ) -> io::Result<Self> {
        let offset = libc::off_t::try_from(page_offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ring offset out of range"))?;
        // SAFETY: maps kernel ring memory of an open AF_XDP socket; the
        // kernel validates offset and length against the ring it created.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                offset,
            )
        };
        Self::from_result(ptr, len)
    }

    fn from_result(ptr: *mut libc::c_void, len: usize) -> io::Result<Self> {
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Self { ptr, len })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and still
        // owns; nothing derived from it outlives `self` (owners drop users
        // first by field order).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Offsets of one ring inside its mapping (`struct xdp_ring_offset`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingOffsets {
    pub producer: u64,
    pub consumer: u64,
    pub desc: u64,
    pub flags: u64,
}

impl From<libc::xdp_ring_offset> for RingOffsets {
    fn from(offsets: libc::xdp_ring_offset) -> Self {
        Self {
            producer: offsets.producer,
            consumer: offsets.consumer,
            desc: offsets.desc,
            flags: offsets.flags,
        }
    }
}

/// A mapped ring: pointers into a [`Mmap`] it keeps alive.
#[derive(Debug)]
struct RawRing<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<T>,
    mask: u32,
    size: u32,
    _mapping: Mmap,
}

// SAFETY: the pointers point into `_mapping`, which is `Send`; the ring is
// used through `&mut self` only, so one thread at a time drives our side.
unsafe impl<T: Send> Send for RawRing<T> {}

impl<T: Copy> RawRing<T> {
    fn map(
        fd: BorrowedFd<'_>,
        size: u32,
        offsets: RingOffsets,
        page_offset: u64,
    ) -> io::Result<Self> {
        if !size.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring size must be a power of two",
            ));
        }
        let desc_offset = usize::try_from(offsets.desc).map_err(io::Error::other)?;
        let len = desc_offset + size as usize * std::mem::size_of::<T>();
        let mapping = Mmap::socket_ring(fd, len, page_offset)?;
        let at = |offset: u64, what: &str| -> io::Result<NonNull<u8>> {
            let offset = usize::try_from(offset).map_err(io::Error::other)?;
            if offset + 4 > mapping.len() {
                return Err(io::Error::other(format!(
                    "ring {what} offset outside mapping"
                )));
            }
            // SAFETY: `offset + 4 <= len`, so the result stays inside the mapping.
            let ptr = unsafe { mapping.as_ptr().add(offset) };
            NonNull::new(ptr).ok_or_else(|| io::Error::other("null ring pointer"))
        };
        let producer = at(offsets.producer, "producer")?.cast::<AtomicU32>();
        let consumer = at(offsets.consumer, "consumer")?.cast::<AtomicU32>();
        let flags = at(offsets.flags, "flags")?.cast::<AtomicU32>();
        let entries = at(offsets.desc, "descriptor")?.cast::<T>();
        for ptr in [
            producer.as_ptr() as usize,
            consumer.as_ptr() as usize,
            flags.as_ptr() as usize,
        ] {
            if ptr % std::mem::align_of::<AtomicU32>() != 0 {
                return Err(io::Error::other("misaligned ring index"));
            }
        }
        if entries.as_ptr() as usize % std::mem::align_of::<T>() != 0 {
            return Err(io::Error::other("misaligned ring descriptors"));
        }
        Ok(Self {
            producer,
            consumer,
            flags,
            entries,
            mask: size - 1,
            size,
            _mapping: mapping,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: aligned, inside the live mapping (checked in `map`), and
        // only ever accessed atomically by us and by the kernel.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }
    }

    fn needs_wakeup(&self) -> bool {
        // Order our preceding index store before reading the flag the kernel
        // sets when it goes to sleep, so a wakeup cannot be missed.
        fence(Ordering::SeqCst);
        self.flags().load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }
}

/// A ring userspace produces into (FILL, TX).
#[derive(Debug)]
pub(crate) struct ProducerRing<T> {
    ring: RawRing<T>,
    cached_producer: u32,
    cached_consumer: u32,
}

impl<T: Copy> ProducerRing<T> {
    pub(crate) fn map(
        fd: BorrowedFd<'_>,
        size: u32,
        offsets: RingOffsets,
        page_offset: u64,
    ) -> io::Result<Self> {
        let ring = RawRing::map(fd, size, offsets, page_offset)?;
        let cached_producer = ring.producer().load(Ordering::Relaxed);
        let cached_consumer = ring.consumer().load(Ordering::Acquire);
        Ok(Self {
            ring,
            cached_producer,
            cached_consumer,
        })
    }

    /// Slots free for writing, refreshing the kernel's consumer index only
    /// when the cached view shows fewer than `wanted`.
    pub(crate) fn free_slots(&mut self, wanted: u32) -> u32 {
        let free = self.ring.size - self.cached_producer.wrapping_sub(self.cached_consumer);
        if free >= wanted {
            return free;
        }
        self.cached_consumer = self.ring.consumer().load(Ordering::Acquire);
        self.ring.size - self.cached_producer.wrapping_sub(self.cached_consumer)
    }

    /// Writes one entry into the next free slot (not yet visible to the
    /// kernel); returns false when the ring is full.
    pub(crate) fn push(&mut self, entry: T) -> bool {
        if self.free_slots(1) == 0 {
            return false;
        }
        let index = (self.cached_producer & self.ring.mask) as usize;
        // SAFETY: `index <= mask < size`, inside the descriptor array; the
        // slot lies between the kernel's consumer and our producer + size, so
        // the kernel does not read it until we publish the producer index.
        unsafe { self.ring.entries.as_ptr().add(index).write(entry) };
        self.cached_producer = self.cached_producer.wrapping_add(1);
        true
    }

    /// Entries written but not yet published.
    pub(crate) fn unpublished(&self) -> u32 {
        self.cached_producer
            .wrapping_sub(self.ring.producer().load(Ordering::Relaxed))
    }

    /// Publishes every pushed entry to the kernel.
    pub(crate) fn publish(&mut self) {
        self.ring
            .producer()
            .store(self.cached_producer, Ordering::Release);
    }

    /// Published entries the kernel has not consumed yet.
    pub(crate) fn in_flight(&self) -> u32 {
        self.ring
            .producer()
            .load(Ordering::Relaxed)
            .wrapping_sub(self.ring.consumer().load(Ordering::Acquire))
    }

    pub(crate) fn needs_wakeup(&self) -> bool {
        self.ring.needs_wakeup()
    }
}

/// A ring userspace consumes from (RX, COMPLETION).
#[derive(Debug)]
pub(crate) struct ConsumerRing<T> {
    ring: RawRing<T>,
    cached_producer: u32,
    cached_consumer: u32,
}

impl<T: Copy> ConsumerRing<T> {
    pub(crate) fn map(
        fd: BorrowedFd<'_>,
        size: u32,
        offsets: RingOffsets,
        page_offset: u64,
    ) -> io::Result<Self> {
        let ring = RawRing::map(fd, size, offsets, page_offset)?;
        let cached_producer = ring.producer().load(Ordering::Acquire);
        let cached_consumer = ring.consumer().load(Ordering::Relaxed);
        Ok(Self {
            ring,
            cached_producer,
            cached_consumer,
        })
    }

    /// Reads up to `max` entries, handing each to `consume`, then returns the
    /// slots to the kernel. Returns how many were consumed.
    pub(crate) fn consume(&mut self, max: u32, mut consume: impl FnMut(T)) -> u32 {
        let mut available = self.cached_producer.wrapping_sub(self.cached_consumer);
        if available < max {
            self.cached_producer = self.ring.producer().load(Ordering::Acquire);
            available = self.cached_producer.wrapping_sub(self.cached_consumer);
        }
        let count = available.min(max);
        for step in 0..count {
            let index = (self.cached_consumer.wrapping_add(step) & self.ring.mask) as usize;
            // SAFETY: `index < size`; the slot lies between our consumer and
            // the producer index read with acquire, so the kernel finished
            // writing it and will not touch it until we release it below.
            let entry = unsafe { self.ring.entries.as_ptr().add(index).read() };
            consume(entry);
        }
        if count > 0 {
            self.cached_consumer = self.cached_consumer.wrapping_add(count);
            self.ring
                .consumer()
                .store(self.cached_consumer, Ordering::Release);
        }
        count
    }
}
