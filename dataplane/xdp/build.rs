//! Compiles the XDP steering program with clang into OUT_DIR; the crate embeds
//! the object with `include_bytes!`, so nothing is fetched at build or run time.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "bpf/egw_steer.bpf.c";
const APT_HINT: &str = "apt-get install -y clang llvm libbpf-dev";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=EGW_CLANG");

    // A build script reports failure by panicking (as below for clang); cargo always sets it.
    #[allow(clippy::expect_used, reason = "build scripts fail by panicking")]
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out_dir.join("egw_steer.bpf.o");
    let clang = env::var("EGW_CLANG").unwrap_or_else(|_| "clang".to_owned());

    // Userspace headers such as <asm/types.h> live under the multiarch
    // directory on Debian; the bpf target does not search it by default.
    let host_arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match host_arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => other,
    };

    let output = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .arg("-c")
        .arg(SOURCE)
        .arg("-o")
        .arg(&object)
        .output();

    match output {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "clang failed to compile {SOURCE} (status {}):\n{}\nIf headers are missing: {APT_HINT}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!(
            "cannot run `{clang}` to build the XDP program ({error}). Install it with: {APT_HINT}"
        ),
    }
}
