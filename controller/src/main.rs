//! `egw-controller`: today, local mode only (`--local DIR --print`): translate a directory of
//! manifests and print the route tables the controller would push.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "egw-controller", version, about = "egw Kubernetes controller")]
struct Args {
    /// Read EgressGateway, EgressGatewayPolicy, Namespace and Pod manifests from this directory
    /// instead of a Kubernetes API server.
    #[arg(long, value_name = "DIR")]
    local: PathBuf,
    /// Print the route table of every gateway instance as YAML (diagnostics go to stderr).
    #[arg(long, requires = "local")]
    print: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.print {
        eprintln!("egw-controller: local mode only supports --print so far");
        return ExitCode::from(2);
    }
    let input = match egw_controller::local::load_dir(&args.local) {
        Ok(input) => input,
        Err(error) => {
            eprintln!("egw-controller: {}", error_chain(&error));
            return ExitCode::FAILURE;
        }
    };
    for skipped in &input.skipped {
        eprintln!(
            "skipped {} document #{} ({} {})",
            skipped.path.display(),
            skipped.document,
            skipped.api_version,
            skipped.kind
        );
    }
    let translation = egw_controller::translate::translate(&input.snapshot);
    for line in egw_controller::print::diagnostic_lines(&translation) {
        eprintln!("{line}");
    }
    match egw_controller::print::tables_yaml(&translation) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("egw-controller: cannot render tables: {error}");
            ExitCode::FAILURE
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
