//! egwctl entry point: argument parsing and exit codes only.
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = egwctl::Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match egwctl::run(cli, &mut stdout).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(egwctl::CliError::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("egwctl: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
