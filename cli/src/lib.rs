//! egwctl: the operator's client for egw gateways.
//!
//! `main.rs` only parses arguments and calls [`run`]; everything else lives
//! here so tests can drive commands against a real server and compare output.
#![forbid(unsafe_code)]

pub mod args;
mod commands;
pub mod connect;
pub mod error;
pub mod natlog;
pub mod options;
pub mod render;
pub mod views;

pub use args::Cli;
pub use commands::run;
pub use error::CliError;
