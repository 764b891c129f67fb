//! What the lab's probes observe, asked from the test's side: each runs `egw-lab probe ...`
//! inside a pod's namespace and reports what the mirror saw, i.e. the post-NAT source.

use std::net::{Ipv4Addr, SocketAddr};
use std::thread;
use std::time::Duration;

use egw_testbed::topology::{
    mirror_tcp, mirror_udp, MIRROR_ADDRESS, PROBE_TIMEOUT, UPLOAD_TIMEOUT,
};
use egw_testbed::{LabError, Result};

use crate::lab::Lab;
use crate::probe::{IcmpEcho, UploadReport};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpObservation {
    pub reply_from: Ipv4Addr,
    pub egress: Ipv4Addr,
}

impl Lab {
    /// What the mirror saw for one TCP connection from `pod`.
    pub fn probe_tcp(&self, pod: &str) -> Result<SocketAddr> {
        let out = self.pod_probe(pod, &["tcp", &mirror_tcp().to_string()], PROBE_TIMEOUT)?;
        Self::parse_addr(&out, "egw-lab probe tcp")
    }

    /// What the mirror saw for one UDP datagram from `pod`.
    pub fn probe_udp(&self, pod: &str) -> Result<SocketAddr> {
        let out = self.pod_probe(pod, &["udp", &mirror_udp().to_string()], PROBE_TIMEOUT)?;
        Self::parse_addr(&out, "egw-lab probe udp")
    }

    /// Whether a UDP datagram from `pod` to `target` (a closed port) comes back as a translated
    /// ICMP port-unreachable (see `probe::udp_refused`).
    pub fn probe_udp_refused(&self, pod: &str, target: SocketAddr) -> Result<bool> {
        let out = self.pod_probe(pod, &["udp-refused", &target.to_string()], PROBE_TIMEOUT)?;
        Ok(out == "refused")
    }

    /// Pings the mirror from `pod` and asks the mirror (from inside the internet namespace,
    /// not through the gateway) which source the echo request had.
    pub fn probe_icmp(&self, pod: &str) -> Result<IcmpObservation> {
        let out = self.pod_probe(pod, &["icmp", &MIRROR_ADDRESS.to_string()], PROBE_TIMEOUT)?;
        let echo = parse_icmp_probe_output(&out)?;
        let query = vec![
            "probe".to_owned(),
            "get".to_owned(),
            mirror_tcp().to_string(),
            format!("/icmp-seen?token={}", echo.token),
        ];
        // The mirror records requests from a separate thread; the reply can beat it.
        let mut last_error = None;
        for _ in 0..50 {
            match self.lab_probe(&self.inet_namespace(), &query, PROBE_TIMEOUT) {
                Ok(seen) => {
                    return Ok(IcmpObservation {
                        reply_from: echo.reply_from,
                        egress: Self::parse_addr(&seen, "icmp-seen")?,
                    });
                }
                Err(error) => last_error = Some(error),
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err(last_error
            .unwrap_or_else(|| LabError::ProbeFailed("icmp-seen never answered".to_owned())))
    }

    /// Uploads `bytes` from `pod` to the mirror and compares SHA-256 on both sides.
    pub fn probe_upload(&self, pod: &str, bytes: u64) -> Result<UploadReport> {
        let out = self.pod_probe(
            pod,
            &[
                "tcp-upload",
                &mirror_tcp().to_string(),
                "--bytes",
                &bytes.to_string(),
            ],
            UPLOAD_TIMEOUT,
        )?;
        parse_upload_output(&out)
    }

    /// Downloads `bytes` from the mirror into `pod`, verifying every byte; returns bytes received.
    pub fn probe_download(&self, pod: &str, bytes: u64) -> Result<u64> {
        let out = self.pod_probe(
            pod,
            &[
                "tcp-download",
                &mirror_tcp().to_string(),
                "--bytes",
                &bytes.to_string(),
            ],
            UPLOAD_TIMEOUT,
        )?;
        out.strip_prefix("verified=").map_or_else(
            || {
                Err(LabError::BadOutput {
                    command: "egw-lab probe tcp-download".to_owned(),
                    output: out.clone(),
                })
            },
            |count| Self::parse_addr(count, "egw-lab probe tcp-download"),
        )
    }
}

/// Parses `reply-from=<ip> token=<hex>`.
pub fn parse_icmp_probe_output(text: &str) -> Result<IcmpEcho> {
    let parse = || -> Option<IcmpEcho> {
        let mut fields = text.split_whitespace();
        let reply_from = fields.next()?.strip_prefix("reply-from=")?.parse().ok()?;
        let token = fields.next()?.strip_prefix("token=")?.to_owned();
        Some(IcmpEcho { reply_from, token })
    };
    parse().ok_or_else(|| LabError::BadOutput {
        command: "egw-lab probe icmp".to_owned(),
        output: text.to_owned(),
    })
}

/// Parses `bytes=<n> sha256=<hex> remote-sha256=<hex>`.
pub fn parse_upload_output(text: &str) -> Result<UploadReport> {
    let parse = || -> Option<UploadReport> {
        let mut fields = text.split_whitespace();
        let bytes = fields.next()?.strip_prefix("bytes=")?.parse().ok()?;
        let local_sha256 = fields.next()?.strip_prefix("sha256=")?.to_owned();
        let remote_sha256 = fields.next()?.strip_prefix("remote-sha256=")?.to_owned();
        Some(UploadReport {
            bytes,
            local_sha256,
            remote_sha256,
        })
    };
    parse().ok_or_else(|| LabError::BadOutput {
        command: "egw-lab probe tcp-upload".to_owned(),
        output: text.to_owned(),
    })
}
