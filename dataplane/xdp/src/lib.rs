//! egw's I/O layer: the XDP steering program, its loader, and AF_XDP sockets.
//!
//! This is the only egw crate allowed to use `unsafe`. It is confined to:
//! - [`sys`]: raw netlink and `bpf(2)` calls aya 0.14 does not expose;
//! - [`xsk`]: the UMEM mapping, the four shared-memory rings, and socket
//!   setup. Frame ownership rules are documented on [`xsk::Umem`].
//!
//! Everything exported is a safe API.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod program;
pub mod sys;
pub mod xsk;

pub use program::{
    AttachMode, AttachedInterface, InterfaceRole, InterfaceSpec, LoaderError, SteeringProgram,
    SteeringStats,
};
pub use sys::{query_xdp_attachment, XdpAttachmentState};
