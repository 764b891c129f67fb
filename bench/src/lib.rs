//! egw benchmarks.
//!
//! - `pipeline`: the NAT engine alone, one core, no I/O.
//! - `generate` / `receive`: the AF_XDP load generator (run in a pod namespace) and receiver
//!   (run in the internet namespace) of the `egw-bench` binary.
//! - `compare`: builds the lab's test bed (egw-testbed) and runs the same load through egw-gateway, the kernel's
//!   nftables SNAT and the AF_XDP I/O ceiling; `results` holds what it found, `report` renders it
//!   as JSON, Markdown and SVG.
#![forbid(unsafe_code)]

pub mod compare;
pub mod cpu;
pub mod generate;
pub mod netinfo;
pub mod pipeline;
pub mod receive;
pub mod report;
pub mod results;
pub mod stats;
pub mod wire;
