//! Writes the CRD manifests into `deploy/crds/` (or the directory given as the only argument).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let out_dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds"));
    let manifests = match egw_controller::crdgen::crd_manifests() {
        Ok(manifests) => manifests,
        Err(error) => {
            eprintln!("crdgen: {error}: {:?}", std::error::Error::source(&error));
            return ExitCode::FAILURE;
        }
    };
    for (file, yaml) in manifests {
        let path = out_dir.join(file);
        if let Err(error) = std::fs::write(&path, yaml) {
            eprintln!("crdgen: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
