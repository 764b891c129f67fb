//! Option values shared by the argument parser ([`crate::args`]) and the commands that read them
//! ([`crate::natlog`] among them): a leaf, so that `args` can name the `nat-log` subcommand while
//! `natlog` names these values, without the two modules using each other.

use clap::ValueEnum;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned tables for people.
    Table,
    /// JSON (one document per line for streams).
    Json,
    /// YAML (documents separated by `---` for streams).
    Yaml,
}

/// Protocol filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP echo.
    Icmp,
}
