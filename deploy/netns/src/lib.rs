//! Test networks made of Linux network namespaces, for every egw test that sends real packets
//! (the XDP and gateway tests, the lab, the bench).
//!
//! - [`Netns`]: a namespace that is deleted (processes inside killed first) when dropped, also
//!   while a test unwinds from a panic; [`Netns::unique`] names it uniquely per process and
//!   per call, so tests running in parallel, and two suites running at once, never collide.
//! - [`link`]: veth pairs, addresses and MACs, via iproute2.
//! - [`mod@enter`]: run a closure on a thread that has entered a namespace (setns).
//! - [`cmd`]: external commands with a hard time bound, and errors that quote the command line.
//!
//! Traffic only ever flows inside the namespaces a test created.

pub mod cmd;
pub mod enter;
pub mod error;
pub mod link;
pub mod namespace;

pub use enter::{enter, in_netns};
pub use error::{NetnsError, Result};
pub use namespace::Netns;
