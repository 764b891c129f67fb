//! egw's I/O layer: the XDP steering program, its loader, and AF_XDP sockets.
//!
//! Most of egw's `unsafe` lives here (the others: `egw-natlog`'s io_uring writer and
//! `egw-netns`'s `setns` for tests). The crate opts down from the workspace's `forbid` to
//! `deny`; the modules that need it say `#![allow(unsafe_code)]` and every block carries a
//! `// SAFETY:` note. It is confined to:
//! - [`sys`]: raw netlink and `bpf(2)` calls aya 0.14 does not expose;
//! - [`xsk`]: the UMEM mapping, the four shared-memory rings, and socket
//!   setup. Frame ownership rules (who may touch a frame in which ring state)
//!   are the `# Frame ownership` section of `UmemArea` in `src/xsk/socket.rs`;
//!   [`xsk::FrameDesc`] is how the safe API enforces them.
//!
//! Everything exported is a safe API, and nothing on the packet path panics on what the
//! kernel hands back (clippy denies `unwrap`, `expect` and unchecked indexing here).
//!
//! # Pieces
//! - [`SteeringProgram`]: loads `bpf/egw_steer.bpf.c` (compiled by `build.rs`
//!   with clang and embedded), attaches it to interfaces with roles (native
//!   mode, logged fallback to generic), removes stale egw programs left by
//!   earlier runs, refuses to replace other tools' programs, and updates the
//!   steering maps.
//! - [`xsk::Worker`]: one worker's AF_XDP sockets (inside + outside queue, or
//!   one socket one-armed) over a shared UMEM, with a frame allocator and a
//!   batch API that never allocates per packet.
//!
//! # Requirements
//! - Build: `clang` and `libbpf-dev` (`bpf/bpf_helpers.h`), plus the kernel
//!   UAPI headers of `linux-libc-dev`. No download at build or run time.
//! - Run: `CAP_BPF`, `CAP_NET_ADMIN` and `CAP_NET_RAW` (or root), Linux 5.10+
//!   for shared UMEM across devices (5.9+ for BPF XDP links).
//! - Every call resolves interface names in the calling thread's network
//!   namespace; create the loader and the workers in the namespace of the
//!   interfaces.

#![warn(missing_docs)]

pub mod memory;
pub mod program;
pub mod sys;
pub mod xsk;

pub use program::{
    AttachMode, AttachedInterface, InterfaceRole, InterfaceSpec, LoaderError, SteeringProgram,
    SteeringStats,
};
pub use sys::{query_xdp_attachment, XdpAttachmentState};
