//! The egw.v1 gRPC API shared by egw-gateway, egwctl and the controller.
//!
//! - [`v1`]: the generated prost messages and tonic client/server for
//!   `proto/egw/v1/gateway.proto`. The code is generated ahead of time and
//!   committed (no `protoc`, no build script); `tests/codegen_drift.rs` fails
//!   when it no longer matches the `.proto` files and explains how to
//!   regenerate.
//! - [`spec`]: wire route table ↔ the NAT engine's `RouteTableSpec` (whose
//!   `CompiledRouteTable::compile` is the one validator of a table's meaning).
//! - [`yaml`]: the human-written YAML form of a route table, used by
//!   `egwctl routes apply -f` and by the gateway's configuration file.
#![forbid(unsafe_code)]

/// Generated code for the `egw.v1` package.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!("gen/egw.v1.rs");

    /// The encoded `google.protobuf.FileDescriptorSet` of the `egw.v1`
    /// package, with source comments, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/egw.v1.fds.bin");
}

pub mod spec;
pub mod yaml;
