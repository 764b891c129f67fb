//! `egw-lab demo`: probe every pod over TCP, UDP and ICMP and check each egress address.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};

use crate::error::Result;
use crate::topology::{IcmpObservation, Lab};

/// Probe results for one pod; errors are kept as text so one failure does not hide the rest.
#[derive(Debug, Clone)]
pub struct PodReport {
    pub pod: String,
    pub pod_ip: Ipv4Addr,
    pub expected_egress: Ipv4Addr,
    pub tcp: Result<SocketAddr, String>,
    pub udp: Result<SocketAddr, String>,
    pub icmp: Result<IcmpObservation, String>,
}

impl PodReport {
    /// Every probe answered and every egress address is the expected pool address.
    pub fn ok(&self) -> bool {
        let expected = std::net::IpAddr::V4(self.expected_egress);
        self.tcp.as_ref().is_ok_and(|seen| seen.ip() == expected)
            && self.udp.as_ref().is_ok_and(|seen| seen.ip() == expected)
            && self
                .icmp
                .as_ref()
                .is_ok_and(|seen| seen.egress == self.expected_egress)
    }
}

/// Runs all probes for all pods.
pub fn probe_all(lab: &Lab) -> Result<Vec<PodReport>> {
    let mut reports = Vec::new();
    for pod in &lab.config().pods {
        reports.push(PodReport {
            pod: pod.name.clone(),
            pod_ip: pod.address,
            expected_egress: lab.config().expected_egress(&pod.name)?,
            tcp: lab.probe_tcp(&pod.name).map_err(|error| error.to_string()),
            udp: lab.probe_udp(&pod.name).map_err(|error| error.to_string()),
            icmp: lab.probe_icmp(&pod.name).map_err(|error| error.to_string()),
        });
    }
    Ok(reports)
}

/// The demo table; failures are listed below it in full.
pub fn render(reports: &[PodReport]) -> String {
    let mut table = format!(
        "{:<8} {:<13} {:<21} {:<21} {:<16} {:<14} {}\n",
        "pod", "pod-ip", "tcp-egress", "udp-egress", "icmp", "expected", "result"
    );
    let mut failures = String::new();
    for report in reports {
        let mut cell = |result: &Result<String, String>, what: &str| match result {
            Ok(text) => text.clone(),
            Err(error) => {
                let _ = writeln!(failures, "  {} {what}: {error}", report.pod);
                "FAILED".to_owned()
            }
        };
        let tcp = cell(
            &report
                .tcp
                .as_ref()
                .map(ToString::to_string)
                .map_err(Clone::clone),
            "tcp",
        );
        let udp = cell(
            &report
                .udp
                .as_ref()
                .map(ToString::to_string)
                .map_err(Clone::clone),
            "udp",
        );
        let icmp = cell(
            &report
                .icmp
                .as_ref()
                .map(|seen| format!("ok {}", seen.egress))
                .map_err(Clone::clone),
            "icmp",
        );
        let verdict = if report.ok() { "ok" } else { "MISMATCH" };
        let _ = writeln!(
            table,
            "{:<8} {:<13} {:<21} {:<21} {:<16} {:<14} {}",
            report.pod, report.pod_ip, tcp, udp, icmp, report.expected_egress, verdict
        );
    }
    if !failures.is_empty() {
        table.push_str("failures:\n");
        table.push_str(&failures);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(tcp: &str, udp: &str, icmp: [u8; 4]) -> PodReport {
        PodReport {
            pod: "pod-a".to_owned(),
            pod_ip: Ipv4Addr::new(10, 244, 1, 10),
            expected_egress: Ipv4Addr::new(198, 51, 100, 1),
            tcp: Ok(tcp.parse().unwrap()),
            udp: Ok(udp.parse().unwrap()),
            icmp: Ok(IcmpObservation {
                reply_from: Ipv4Addr::new(203, 0, 113, 10),
                egress: Ipv4Addr::from(icmp),
            }),
        }
    }

    #[test]
    fn ok_only_when_every_protocol_used_the_expected_address() {
        assert!(report("198.51.100.1:1000", "198.51.100.1:2000", [198, 51, 100, 1]).ok());
        assert!(!report("198.51.100.2:1000", "198.51.100.1:2000", [198, 51, 100, 1]).ok());
        assert!(!report("198.51.100.1:1000", "10.244.1.10:2000", [198, 51, 100, 1]).ok());
        assert!(!report("198.51.100.1:1000", "198.51.100.1:2000", [198, 51, 100, 2]).ok());
        let mut failed = report("198.51.100.1:1000", "198.51.100.1:2000", [198, 51, 100, 1]);
        failed.udp = Err("no UDP reply".to_owned());
        assert!(!failed.ok());
        let table = render(&[failed]);
        assert!(table.contains("FAILED") && table.contains("MISMATCH"));
        assert!(table.contains("pod-a udp: no UDP reply"));
    }
}
