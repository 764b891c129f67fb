//! Keeps the committed generated code in `src/gen/` in sync with `egw/v1/*.proto`.
//!
//! The generated Rust and the encoded file descriptor set are committed so that
//! building egw needs neither `protoc` nor a build script. This test compiles
//! the `.proto` files with `protox` (pure Rust) and generates code with
//! `tonic-prost-build` into a temporary directory, then compares the result
//! with the committed files.
//!
//! To regenerate after editing a `.proto` file:
//!
//! ```text
//! EGW_REGEN=1 cargo test -p egw-proto --test codegen_drift
//! ```

use std::path::{Path, PathBuf};

/// Files under `src/gen/` produced by the generator, compared byte for byte.
const GENERATED_RUST: &str = "egw.v1.rs";
const GENERATED_DESCRIPTOR: &str = "egw.v1.fds.bin";
const PROTO_FILES: &[&str] = &["egw/v1/gateway.proto"];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Generates the Rust code and the descriptor set into `out_dir`.
fn generate(out_dir: &Path) {
    let include_dir = crate_dir();
    let mut compiler = protox::Compiler::new([&include_dir]).expect("protox include dir");
    compiler.include_source_info(true).include_imports(true);
    for file in PROTO_FILES {
        compiler
            .open_file(file)
            .unwrap_or_else(|error| panic!("protox failed to compile {file}: {error}"));
    }
    let descriptor_bytes = compiler.encode_file_descriptor_set();
    let descriptor_set = compiler.file_descriptor_set();

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .emit_rerun_if_changed(false)
        .out_dir(out_dir)
        .compile_fds(descriptor_set)
        .expect("tonic-prost-build code generation");
    std::fs::write(out_dir.join(GENERATED_DESCRIPTOR), descriptor_bytes)
        .expect("write descriptor set");
}

#[test]
fn committed_generated_code_matches_proto_files() {
    let committed_dir = crate_dir().join("src").join("gen");
    if std::env::var_os("EGW_REGEN").is_some_and(|value| value == "1") {
        generate(&committed_dir);
        return;
    }

    let scratch = tempfile::tempdir().expect("tempdir");
    generate(scratch.path());
    let mut stale = Vec::new();
    for name in [GENERATED_RUST, GENERATED_DESCRIPTOR] {
        let fresh = std::fs::read(scratch.path().join(name)).expect("read fresh output");
        let committed = std::fs::read(committed_dir.join(name)).unwrap_or_default();
        if fresh != committed {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "generated code in proto/src/gen is out of date with proto/egw/v1 (stale: {stale:?}).\n\
         Regenerate with: EGW_REGEN=1 cargo test -p egw-proto --test codegen_drift\n\
         and commit the result."
    );
}
