//! A long-lived TCP connection from a pod to the mirror (`egw-lab probe tcp-hold`), to show that
//! an established connection keeps its NAT mapping across gateway reconfiguration.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use egw_testbed::cmd;
use egw_testbed::topology::mirror_tcp;
use egw_testbed::{LabError, Result, ScopedChild};

use crate::lab::Lab;

/// A long-lived TCP connection from a pod to the mirror (see `probe tcp-hold`).
pub struct TcpHold {
    child: ScopedChild,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    first: SocketAddr,
    local: SocketAddr,
}

impl TcpHold {
    const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

    fn next_seen(
        lines: &mpsc::Receiver<String>,
        child: &ScopedChild,
    ) -> Result<(SocketAddr, SocketAddr)> {
        let line = lines
            .recv_timeout(Self::REPLY_TIMEOUT)
            .map_err(|_| LabError::NotReady {
                process: "tcp-hold probe".to_owned(),
                waited: Self::REPLY_TIMEOUT,
                detail: child.log_tail(2000),
            })?;
        let parse = || -> Option<(SocketAddr, SocketAddr)> {
            let mut fields = line.split_whitespace();
            let seen = fields.next()?.strip_prefix("seen=")?.parse().ok()?;
            let local = fields.next()?.strip_prefix("local=")?.parse().ok()?;
            Some((seen, local))
        };
        parse().ok_or_else(|| LabError::BadOutput {
            command: "egw-lab probe tcp-hold".to_owned(),
            output: line.clone(),
        })
    }

    /// Source the mirror saw when the connection was opened.
    pub fn first_seen(&self) -> SocketAddr {
        self.first
    }

    /// The pod-side (pre-NAT) address of the connection.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Asks again over the same connection.
    pub fn seen_now(&mut self) -> Result<SocketAddr> {
        self.stdin
            .write_all(b"again\n")
            .and_then(|()| self.stdin.flush())
            .map_err(|source| LabError::io("signalling tcp-hold probe", source))?;
        let (seen, local) = Self::next_seen(&self.lines, &self.child)?;
        if local != self.local {
            return Err(LabError::ProbeFailed(format!(
                "tcp-hold reconnected: local {local} != {}",
                self.local
            )));
        }
        Ok(seen)
    }
}

impl Lab {
    /// Opens one TCP connection from `pod` and keeps it for repeated queries.
    pub fn tcp_hold(&self, pod: &str) -> Result<TcpHold> {
        let namespace = self.pod_namespace(pod)?;
        let log_path = self.workdir().join(format!("tcp-hold-{pod}.log"));
        let log = File::create(&log_path)
            .map_err(|source| LabError::io(format!("creating {}", log_path.display()), source))?;
        let mut command: Command = cmd::in_netns(
            &namespace,
            &self.config().lab_binary,
            ["probe", "tcp-hold", &mirror_tcp().to_string()],
        );
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        let description = cmd::describe(&command);
        let mut child = command.spawn().map_err(|source| LabError::Spawn {
            command: description,
            source,
        })?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let child = ScopedChild::new(format!("tcp-hold {pod}"), child, Some(log_path));
        let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
            return Err(LabError::ProbeFailed(
                "tcp-hold probe has no stdio pipes".to_owned(),
            ));
        };
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let (first, local) = TcpHold::next_seen(&lines, &child)?;
        Ok(TcpHold {
            child,
            stdin,
            lines,
            first,
            local,
        })
    }
}
