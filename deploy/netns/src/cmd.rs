//! Running external tools (ip, nft, ethtool, iperf3) with a hard time bound and errors that
//! quote the exact command line and its stderr.

use std::ffi::OsStr;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{NetnsError, Result};

/// How long one iproute2/nft/ethtool invocation may take. They normally finish in milliseconds;
/// the bound only exists so a wedged kernel or tool cannot hang a test forever.
pub const ADMIN_COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// Poll interval for bounded waits on child processes and files.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Captured output of a finished command.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub stdout: String,
    pub stderr: String,
}

/// Human-readable rendering of a command line, for error messages.
pub fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `command` to completion (stdin closed, stdout/stderr captured), failing if it exits
/// non-zero or runs longer than `timeout` (in which case it is killed).
pub fn run(mut command: Command, timeout: Duration) -> Result<CommandOutput> {
    let description = describe(&command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| NetnsError::Spawn {
        command: description.clone(),
        source,
    })?;
    let stdout_reader = spawn_pipe_reader(child.stdout.take());
    let stderr_reader = spawn_pipe_reader(child.stderr.take());
    let status = match wait_bounded(&mut child, timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            kill_and_reap(&mut child);
            return Err(NetnsError::Timeout {
                command: description,
                timeout,
            });
        }
        Err(source) => {
            kill_and_reap(&mut child);
            return Err(NetnsError::io(
                format!("waiting for `{description}`"),
                source,
            ));
        }
    };
    let stdout = stdout_reader.join().unwrap_or_default();
    let stderr = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(NetnsError::CommandFailed {
            command: description,
            status: status.to_string(),
            stderr: stderr.trim().to_owned(),
        });
    }
    Ok(CommandOutput { stdout, stderr })
}

/// Convenience: `run(program args...)` with [`ADMIN_COMMAND_TIMEOUT`].
pub fn run_args<I, S>(program: &str, args: I) -> Result<CommandOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command.args(args);
    run(command, ADMIN_COMMAND_TIMEOUT)
}

/// Builds `ip netns exec <namespace> <program> <args...>`.
pub fn in_netns<I, S>(namespace: &str, program: impl AsRef<OsStr>, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new("ip");
    command
        .arg("netns")
        .arg("exec")
        .arg(namespace)
        .arg(program)
        .args(args);
    command
}

/// Waits for `child` to exit for at most `timeout`; `Ok(None)` means it is still running.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// SIGKILLs a child we started and reaps it; errors are irrelevant because the goal is only
/// that it is gone (it may already have exited).
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn_pipe_reader<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
