//! Appending to a file through io_uring with a fixed pool of buffers.
//!
//! This is the only module of the crate with `unsafe`: io_uring reads a write's
//! bytes from our memory *after* the submission call returns, so the memory must
//! stay allocated and unchanged until the kernel reports the write complete. The
//! pool enforces that: a buffer handed to the kernel is "in flight" and is neither
//! filled, moved nor freed until its completion has been reaped; [`UringFile`]'s
//! `Drop` waits for every in-flight write and, if it cannot, leaks the buffers
//! rather than free memory the kernel may still read.
// Why unsafe: pushing a submission entry is unsafe in io-uring, as the kernel reads our buffers later.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use io_uring::{opcode, squeue, types, IoUring};

/// `user_data` of the fsync operation; buffer operations carry their index.
const FSYNC_USER_DATA: u64 = u64::MAX;

/// One fixed-size buffer. `data` is allocated once and never reallocated, so a
/// pointer into it stays valid for as long as the `UringFile` owns it.
struct Buffer {
    data: Box<[u8]>,
    /// Bytes filled.
    len: usize,
    /// File offset of `data[0]`.
    offset: u64,
    /// Bytes the kernel has confirmed written (only meaningful in flight).
    written: usize,
    in_flight: bool,
}

/// A file appended to through io_uring, with at most `buffer_count` buffers of
/// `buffer_size` bytes in memory, filled one at a time and written in order of
/// file offset (completions may arrive in any order; each buffer has its own
/// offset range, so the file content does not depend on it).
pub(crate) struct UringFile {
    ring: IoUring,
    file: File,
    buffers: Vec<Buffer>,
    /// The buffer being filled, if any.
    filling: Option<usize>,
    /// File offset where the next filled byte will land.
    next_offset: u64,
    in_flight: usize,
    fsync_in_flight: bool,
    /// Operations the kernel failed since the last `take_failures`, and the last reason.
    failures: u64,
    last_failure: Option<io::Error>,
    /// Bytes the kernel confirmed written over the file's life.
    bytes_completed: u64,
}

impl UringFile {
    /// Sets up a ring for `file`, appending from `start_offset` (the file's current length).
    pub(crate) fn new(
        file: File,
        start_offset: u64,
        ring_entries: u32,
        buffer_count: usize,
        buffer_size: usize,
    ) -> io::Result<Self> {
        if buffer_count == 0 || buffer_size == 0 || buffer_size > u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "io_uring buffer count and size must be positive (size below 4 GiB)",
            ));
        }
        let ring = IoUring::new(ring_entries)?;
        // Every buffer plus the fsync can be in flight at once: the submission queue
        // must hold them all so that `push` never fails for lack of room.
        if (ring.params().sq_entries() as usize) < buffer_count + 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "io_uring with {} entries cannot hold {buffer_count} buffers plus an fsync",
                    ring.params().sq_entries()
                ),
            ));
        }
        let buffers = (0..buffer_count)
            .map(|_| Buffer {
                data: vec![0u8; buffer_size].into_boxed_slice(),
                len: 0,
                offset: 0,
                written: 0,
                in_flight: false,
            })
            .collect();
        Ok(Self {
            ring,
            file,
            buffers,
            filling: None,
            next_offset: start_offset,
            in_flight: 0,
            fsync_in_flight: false,
            failures: 0,
            last_failure: None,
            bytes_completed: 0,
        })
    }

    /// Copies `bytes` into the pool, submitting buffers as they fill and waiting for
    /// a completion when every buffer is in flight. An error here is the ring's (the
    /// bytes may be lost); writes the kernel fails are reported by [`Self::take_failures`].
    pub(crate) fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let index = match self.filling {
                Some(index) => index,
                None => {
                    let index = self.free_buffer()?;
                    let buffer = &mut self.buffers[index];
                    buffer.len = 0;
                    buffer.offset = self.next_offset;
                    self.filling = Some(index);
                    index
                }
            };
            let buffer = &mut self.buffers[index];
            let room = buffer.data.len() - buffer.len;
            let take = room.min(bytes.len());
            buffer.data[buffer.len..buffer.len + take].copy_from_slice(&bytes[..take]);
            buffer.len += take;
            self.next_offset += take as u64;
            bytes = &bytes[take..];
            if buffer.len == buffer.data.len() {
                self.submit_filling()?;
            }
        }
        Ok(())
    }

    /// Submits the partly filled buffer without waiting, and collects finished writes.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.submit_filling()?;
        self.reap(0)
    }

    /// Writes everything out and waits until it is on disk (fsync).
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.submit_filling()?;
        self.wait_idle()?;
        let fsync = opcode::Fsync::new(types::Fd(self.file.as_raw_fd()))
            .build()
            .user_data(FSYNC_USER_DATA);
        self.push(&fsync)?;
        self.fsync_in_flight = true;
        self.wait_idle()
    }

    /// Bytes the kernel has confirmed written.
    #[cfg(test)]
    pub(crate) fn bytes_completed(&self) -> u64 {
        self.bytes_completed
    }

    /// How many writes or fsyncs the kernel failed since the last call, and why the
    /// last one failed. Their bytes are lost (the file has a hole of zeros there).
    pub(crate) fn take_failures(&mut self) -> Option<(u64, io::Error)> {
        let failures = std::mem::take(&mut self.failures);
        let error = self.last_failure.take()?;
        Some((failures, error))
    }

    /// A buffer that is neither in flight nor being filled, waiting for one if needed.
    fn free_buffer(&mut self) -> io::Result<usize> {
        loop {
            if let Some(index) = self
                .buffers
                .iter()
                .position(|buffer| !buffer.in_flight)
                .filter(|index| Some(*index) != self.filling)
            {
                return Ok(index);
            }
            self.reap(1)?;
        }
    }

    fn submit_filling(&mut self) -> io::Result<()> {
        let Some(index) = self.filling.take() else {
            return Ok(());
        };
        if self.buffers[index].len == 0 {
            return Ok(());
        }
        self.buffers[index].written = 0;
        self.submit_remainder(index)
    }

    /// Queues a write of the not-yet-written part of buffer `index`.
    fn submit_remainder(&mut self, index: usize) -> io::Result<()> {
        let buffer = &self.buffers[index];
        let remaining = &buffer.data[buffer.written..buffer.len];
        let write = opcode::Write::new(
            types::Fd(self.file.as_raw_fd()),
            remaining.as_ptr(),
            // `new` bounds buffer sizes to u32.
            remaining.len() as u32,
        )
        .offset(buffer.offset + buffer.written as u64)
        .build()
        .user_data(index as u64);
        self.push(&write)?;
        self.buffers[index].in_flight = true;
        self.in_flight += 1;
        Ok(())
    }

    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: the entry is either an fsync of `self.file` (no memory) or a write
        // whose pointer and length lie inside `self.buffers[i].data`, which the caller
        // marks in flight right after this push. An in-flight buffer is not written
        // to (`write` fills only the `filling` buffer, chosen among buffers not in
        // flight), never reallocated (a boxed slice allocated in `new`), and not freed
        // before its completion is reaped (`Drop` waits for all or leaks them).
        // `self.file` outlives the operation for the same reason.
        let pushed = unsafe { self.ring.submission().push(entry) };
        if pushed.is_err() {
            // The queue was sized in `new` for every buffer plus the fsync; a full
            // queue therefore means its entries are not yet submitted: submit them.
            self.ring.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(entry) }
                .map_err(|_| io::Error::other("io_uring submission queue stayed full"))?;
        }
        self.ring.submit()?;
        Ok(())
    }

    /// Submits pending entries, waits for at least `want` completions, and handles
    /// every completion available.
    fn reap(&mut self, want: usize) -> io::Result<()> {
        let want = want.min(self.in_flight + usize::from(self.fsync_in_flight));
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        }
        let completions: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|entry| (entry.user_data(), entry.result()))
            .collect();
        // Every completion is accounted for before any error is returned: a skipped one
        // would leave its buffer marked in flight forever.
        let mut outcome = Ok(());
        for (user_data, result) in completions {
            if let Err(error) = self.complete(user_data, result) {
                if outcome.is_ok() {
                    outcome = Err(error);
                }
            }
        }
        outcome
    }

    fn complete(&mut self, user_data: u64, result: i32) -> io::Result<()> {
        if user_data == FSYNC_USER_DATA {
            self.fsync_in_flight = false;
            if result < 0 {
                self.record_failure(io::Error::from_raw_os_error(-result));
            }
            return Ok(());
        }
        let Some(index) = usize::try_from(user_data)
            .ok()
            .filter(|index| *index < self.buffers.len())
        else {
            // Only this module submits to the ring, always with a buffer index or the
            // fsync marker; anything else is a bug worth reporting, not a reason to stop.
            self.record_failure(io::Error::other(format!(
                "unknown io_uring completion {user_data}"
            )));
            return Ok(());
        };
        let buffer = &mut self.buffers[index];
        self.in_flight -= 1;
        buffer.in_flight = false;
        if result < 0 {
            self.record_failure(io::Error::from_raw_os_error(-result));
            return Ok(());
        }
        let written = result as usize;
        self.bytes_completed += written as u64;
        buffer.written += written;
        if written == 0 {
            self.record_failure(io::Error::new(
                io::ErrorKind::WriteZero,
                "io_uring write wrote nothing",
            ));
        } else if buffer.written < buffer.len {
            // A short write (e.g. a signal, or a nearly full disk): write the rest.
            self.submit_remainder(index)?;
        }
        Ok(())
    }

    fn record_failure(&mut self, error: io::Error) {
        self.failures += 1;
        self.last_failure = Some(error);
    }

    fn wait_idle(&mut self) -> io::Result<()> {
        while self.in_flight > 0 || self.fsync_in_flight {
            self.reap(1)?;
        }
        Ok(())
    }
}

impl Drop for UringFile {
    fn drop(&mut self) {
        if let Err(error) = self.submit_filling() {
            tracing::warn!(%error, "natlog: final io_uring write could not be submitted");
        }
        if let Err(error) = self.wait_idle() {
            // The kernel may still read the in-flight buffers: never free them.
            tracing::error!(%error, "natlog: io_uring writes could not be awaited; leaking their buffers");
            std::mem::forget(std::mem::take(&mut self.buffers));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn writes_land_in_order_across_many_small_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let file = File::create(&path).unwrap();
        let mut uring = UringFile::new(file, 0, 8, 3, 7).unwrap();
        let mut expected = Vec::new();
        for line in 0..500 {
            let text = format!("line {line}\n");
            uring.write(text.as_bytes()).unwrap();
            expected.extend_from_slice(text.as_bytes());
            if line % 37 == 0 {
                uring.flush().unwrap();
            }
        }
        uring.sync().unwrap();
        assert_eq!(uring.bytes_completed(), expected.len() as u64);
        drop(uring);
        let mut written = Vec::new();
        File::open(&path)
            .unwrap()
            .read_to_end(&mut written)
            .unwrap();
        assert_eq!(written, expected);
    }

    #[test]
    fn appends_after_the_start_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, b"kept\n").unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut uring = UringFile::new(file, 5, 4, 2, 64).unwrap();
        uring.write(b"added\n").unwrap();
        uring.sync().unwrap();
        drop(uring);
        assert_eq!(std::fs::read(&path).unwrap(), b"kept\nadded\n");
    }

    #[test]
    fn a_failed_write_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, b"").unwrap();
        // Opened read-only: the kernel rejects the write with EBADF.
        let file = File::open(&path).unwrap();
        let mut uring = UringFile::new(file, 0, 4, 2, 64).unwrap();
        uring.write(b"never\n").unwrap();
        uring.sync().unwrap();
        let (failures, error) = uring.take_failures().unwrap();
        // The write, and the fsync of a read-only descriptor, both fail.
        assert!(failures >= 1, "{failures}");
        assert_eq!(error.raw_os_error(), Some(libc_ebadf()));
        assert!(uring.take_failures().is_none());
    }

    /// EBADF on Linux.
    fn libc_ebadf() -> i32 {
        9
    }

    #[test]
    fn too_small_a_ring_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("out")).unwrap();
        assert!(UringFile::new(file, 0, 2, 8, 64).is_err());
    }
}
