//! `egw-lab demo`: probe every pod over TCP, UDP and ICMP and check each egress address.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};

use egw_testbed::Result;

use crate::lab::Lab;
use crate::observe::IcmpObservation;

/// What a pod's egress should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// Leaves with this source address.
    Egress(Ipv4Addr),
    /// Gets no egress at all (fail closed), for this reason.
    Denied(String),
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expectation::Egress(address) => write!(f, "{address}"),
            Expectation::Denied(_) => f.write_str("denied"),
        }
    }
}

/// Probe results for one pod; errors are kept as text so one failure does not hide the rest.
#[derive(Debug, Clone)]
pub struct PodReport {
    pub pod: String,
    pub pod_ip: Ipv4Addr,
    pub expected: Expectation,
    pub tcp: Result<SocketAddr, String>,
    pub udp: Result<SocketAddr, String>,
    pub icmp: Result<IcmpObservation, String>,
}

impl PodReport {
    /// Every probe answered with the expected egress address, or, for a denied pod, none did.
    pub fn ok(&self) -> bool {
        match &self.expected {
            Expectation::Egress(address) => {
                let expected = std::net::IpAddr::V4(*address);
                self.tcp.as_ref().is_ok_and(|seen| seen.ip() == expected)
                    && self.udp.as_ref().is_ok_and(|seen| seen.ip() == expected)
                    && self.icmp.as_ref().is_ok_and(|seen| seen.egress == *address)
            }
            Expectation::Denied(_) => self.tcp.is_err() && self.udp.is_err() && self.icmp.is_err(),
        }
    }
}

/// Where the demo takes each pod's expected egress from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectationSource {
    /// The lab's pod → pool assignment (a route table or nftables rules the lab wrote).
    LabConfig,
    /// The route table the gateway serves (pushed by egw-controller from the manifests).
    ServedTable,
}

fn expectation(lab: &Lab, pod: &str, source: ExpectationSource) -> Result<Expectation> {
    Ok(match source {
        ExpectationSource::LabConfig => Expectation::Egress(lab.config().expected_egress(pod)?),
        ExpectationSource::ServedTable => match lab.expected_egress_from_table(pod)? {
            Ok(addresses) if addresses.len() == 1 => Expectation::Egress(addresses[0]),
            Ok(addresses) => {
                return Err(egw_testbed::LabError::Config(format!(
                    "{pod} may leave through any of {addresses:?}: the demo needs a paired pool"
                )))
            }
            Err(reason) => Expectation::Denied(reason),
        },
    })
}

/// Runs all probes for all pods.
pub fn probe_all(lab: &Lab, source: ExpectationSource) -> Result<Vec<PodReport>> {
    let mut reports = Vec::new();
    for pod in &lab.config().pods {
        reports.push(PodReport {
            pod: pod.name.clone(),
            pod_ip: pod.address,
            expected: expectation(lab, &pod.name, source)?,
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
        // A pod that must get no egress is expected to fail every probe: not worth listing.
        let expected_to_fail = matches!(report.expected, Expectation::Denied(_));
        let mut cell = |result: &Result<String, String>, what: &str| match result {
            Ok(text) => text.clone(),
            Err(error) => {
                if !expected_to_fail {
                    let _ = writeln!(failures, "  {} {what}: {error}", report.pod);
                }
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
        let verdict = match (&report.expected, report.ok()) {
            (Expectation::Denied(reason), true) => format!("ok (no egress: {reason})"),
            (_, true) => "ok".to_owned(),
            (_, false) => "MISMATCH".to_owned(),
        };
        let _ = writeln!(
            table,
            "{:<8} {:<13} {:<21} {:<21} {:<16} {:<14} {}",
            report.pod,
            report.pod_ip,
            tcp,
            udp,
            icmp,
            report.expected.to_string(),
            verdict
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
            expected: Expectation::Egress(Ipv4Addr::new(198, 51, 100, 1)),
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

    #[test]
    fn a_denied_pod_is_ok_only_when_nothing_got_through() {
        let mut denied = report("198.51.100.1:1000", "198.51.100.1:2000", [198, 51, 100, 1]);
        denied.expected = Expectation::Denied("no policy".to_owned());
        assert!(!denied.ok(), "traffic got through a deny");
        denied.tcp = Err("timeout".to_owned());
        denied.udp = Err("timeout".to_owned());
        denied.icmp = Err("timeout".to_owned());
        assert!(denied.ok());
        let table = render(&[denied]);
        assert!(table.contains("ok (no egress: no policy)"), "{table}");
        assert!(
            !table.contains("failures:"),
            "expected refusals are not failures: {table}"
        );
    }
}
