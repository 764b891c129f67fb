//! egw benchmarks. `pipeline`: the NAT engine alone, one core, no I/O.
#![forbid(unsafe_code)]

pub mod pipeline;
