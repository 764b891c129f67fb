//! Status for the custom resources, computed from a [`Translation`](crate::translate::Translation)'s reports. Pure: the caller
//! passes the current time and the previous status, and writes the result (server-side apply).
//!
//! Conditions follow the Kubernetes conventions: `lastTransitionTime` changes only when a
//! condition's `status` changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{EgressGatewayPolicyStatus, EgressGatewayStatus, InstanceStatus};
use crate::translate::{GatewayReport, PolicyReport, Usage};

/// Longest condition message; the API server allows 32 KiB, `kubectl` readers far less.
pub const MAX_MESSAGE_LEN: usize = 1024;

fn bounded_message(parts: &[String]) -> String {
    let mut message = parts.join("; ");
    if message.len() > MAX_MESSAGE_LEN {
        let mut cut = MAX_MESSAGE_LEN - '…'.len_utf8();
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

/// Builds a condition, keeping the previous `lastTransitionTime` when the status is unchanged.
fn condition(
    previous: &[Condition],
    type_: &str,
    holds: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if holds { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|earlier| earlier.type_ == type_ && earlier.status == status)
        .map(|earlier| earlier.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn count(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn usage_fields(usage: &Usage) -> (u32, u32, Vec<String>, Vec<String>) {
    (
        count(usage.namespaces),
        count(usage.pods),
        usage.sample_namespaces.clone(),
        usage.sample_pods.clone(),
    )
}

/// Status of an EgressGatewayPolicy: usage, and conditions `Ready` (valid) and `Degraded` (some
/// rule denies because its gateway is missing or not Ready).
pub fn policy_status(
    report: &PolicyReport,
    generation: Option<i64>,
    previous: Option<&EgressGatewayPolicyStatus>,
    now: &Time,
) -> EgressGatewayPolicyStatus {
    let previous = previous
        .map(|status| status.conditions.as_slice())
        .unwrap_or_default();
    let ready = match &report.invalid {
        None => condition(
            previous,
            "Ready",
            true,
            "Valid",
            "policy is valid".to_owned(),
            generation,
            now,
        ),
        Some(why) => condition(
            previous,
            "Ready",
            false,
            "Invalid",
            bounded_message(&[format!("{why}; every pod using the policy is denied")]),
            generation,
            now,
        ),
    };
    let degraded = if report.problems.is_empty() {
        condition(
            previous,
            "Degraded",
            false,
            "AllRulesRoutable",
            String::new(),
            generation,
            now,
        )
    } else {
        condition(
            previous,
            "Degraded",
            true,
            "RulesDeny",
            bounded_message(&report.problems),
            generation,
            now,
        )
    };
    let (namespaces, pods, sample_namespaces, sample_pods) = usage_fields(&report.usage);
    EgressGatewayPolicyStatus {
        observed_generation: generation,
        namespaces,
        pods,
        sample_namespaces,
        sample_pods,
        conditions: vec![ready, degraded],
    }
}

/// Status of an EgressGateway: `mode`, counts, the `instances` observed by the caller (health
/// checks, cloud address management), and conditions `Ready` (some instance has a Ready
/// address) and `Degraded` (some instance or address is not Ready).
pub fn gateway_status(
    report: &GatewayReport,
    mode: &str,
    instances: Vec<InstanceStatus>,
    generation: Option<i64>,
    previous: Option<&EgressGatewayStatus>,
    now: &Time,
) -> EgressGatewayStatus {
    let previous = previous
        .map(|status| status.conditions.as_slice())
        .unwrap_or_default();
    let total = report.instances.len();
    let ready = if report.ready_instances > 0 {
        condition(
            previous,
            "Ready",
            true,
            "InstancesReady",
            format!(
                "{} of {total} instances have a Ready external address ({} addresses)",
                report.ready_instances, report.ready_addresses
            ),
            generation,
            now,
        )
    } else {
        condition(
            previous,
            "Ready",
            false,
            if total == 0 {
                "NoInstances"
            } else {
                "NoReadyAddress"
            },
            bounded_message(&report.problems),
            generation,
            now,
        )
    };
    let degraded = if report.problems.is_empty() {
        condition(
            previous,
            "Degraded",
            false,
            "AllInstancesReady",
            String::new(),
            generation,
            now,
        )
    } else {
        condition(
            previous,
            "Degraded",
            true,
            if report.ready_instances == 0 {
                "Unavailable"
            } else {
                "InstancesNotReady"
            },
            bounded_message(&report.problems),
            generation,
            now,
        )
    };
    EgressGatewayStatus {
        observed_generation: generation,
        mode: Some(mode.to_owned()),
        ready_instances: count(report.ready_instances),
        ready_addresses: count(report.ready_addresses),
        instances,
        routes: Vec::new(),
        failovers: Vec::new(),
        conditions: vec![ready, degraded],
    }
}

/// Folds an AWS gateway's address-management problem into its conditions. The problem always
/// makes the gateway `Degraded` (with the problem's reason); it is the `Ready` reason only when
/// no instance has a Ready address, because then it is why traffic is denied. An AWS problem
/// while addresses still carry traffic (a throttled call, an instance over its ENI limit) does
/// not make the gateway un-Ready.
pub fn with_aws_problem(
    mut status: EgressGatewayStatus,
    problem: Option<(&str, &str)>,
    warnings: &[String],
    previous: Option<&EgressGatewayStatus>,
    now: &Time,
) -> EgressGatewayStatus {
    let previous = previous
        .map(|status| status.conditions.as_slice())
        .unwrap_or_default();
    let generation = status.observed_generation;
    let Some((reason, message)) = problem else {
        if warnings.is_empty() {
            return status;
        }
        for condition_ in &mut status.conditions {
            if condition_.type_ == "Degraded" {
                let mut parts = vec![condition_.message.clone()];
                parts.retain(|part| !part.is_empty());
                parts.extend(warnings.iter().cloned());
                *condition_ = condition(
                    previous,
                    "Degraded",
                    true,
                    if condition_.status == "True" {
                        &condition_.reason
                    } else {
                        "AddressesUnavailable"
                    },
                    bounded_message(&parts),
                    generation,
                    now,
                );
            }
        }
        return status;
    };
    for condition_ in &mut status.conditions {
        let mut parts = vec![message.to_owned()];
        parts.extend(warnings.iter().cloned());
        match condition_.type_.as_str() {
            "Ready" if condition_.status == "False" => {
                parts.push(condition_.message.clone());
                parts.retain(|part| !part.is_empty());
                *condition_ = condition(
                    previous,
                    "Ready",
                    false,
                    reason,
                    bounded_message(&parts),
                    generation,
                    now,
                );
            }
            "Degraded" => {
                parts.push(condition_.message.clone());
                parts.retain(|part| !part.is_empty());
                *condition_ = condition(
                    previous,
                    "Degraded",
                    true,
                    reason,
                    bounded_message(&parts),
                    generation,
                    now,
                );
            }
            _ => {}
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str) -> Time {
        Time(text.parse().unwrap())
    }

    #[test]
    fn policy_conditions_reflect_validity_and_problems() {
        let now = time("2026-01-01T00:00:00Z");
        let report = PolicyReport {
            invalid: None,
            problems: vec!["rule #1 (203.0.113.0/24): gateway `ghost` not found".to_owned()],
            usage: Usage {
                pods: 3,
                namespaces: 2,
                sample_pods: vec!["a/p".to_owned()],
                sample_namespaces: vec!["a".to_owned()],
            },
        };
        let status = policy_status(&report, Some(4), None, &now);
        assert_eq!(status.pods, 3);
        assert_eq!(status.namespaces, 2);
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(status.conditions[0].type_, "Ready");
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(status.conditions[1].type_, "Degraded");
        assert_eq!(status.conditions[1].status, "True");
        assert_eq!(status.conditions[1].reason, "RulesDeny");
        assert!(status.conditions[1].message.contains("`ghost` not found"));

        let invalid = PolicyReport {
            invalid: Some("rule #1: destination `x` is not an IPv4 CIDR".to_owned()),
            ..PolicyReport::default()
        };
        let status = policy_status(&invalid, Some(5), Some(&status), &now);
        assert_eq!(status.conditions[0].status, "False");
        assert_eq!(status.conditions[0].reason, "Invalid");
        assert!(status.conditions[0]
            .message
            .contains("every pod using the policy is denied"));
    }

    #[test]
    fn transition_time_changes_only_with_the_status() {
        let first = time("2026-01-01T00:00:00Z");
        let later = time("2026-01-01T01:00:00Z");
        let report = GatewayReport {
            ready_instances: 1,
            ready_addresses: 2,
            instances: Vec::new(),
            problems: Vec::new(),
            usage: Usage::default(),
        };
        let initial = gateway_status(&report, "Static", Vec::new(), Some(1), None, &first);
        let same = gateway_status(
            &report,
            "Static",
            Vec::new(),
            Some(2),
            Some(&initial),
            &later,
        );
        assert_eq!(same.conditions[0].last_transition_time, first);
        assert_eq!(same.conditions[0].observed_generation, Some(2));

        let down = GatewayReport {
            ready_instances: 0,
            ready_addresses: 0,
            problems: vec!["instance `a` is not Ready".to_owned()],
            ..report
        };
        let changed = gateway_status(&down, "Static", Vec::new(), Some(2), Some(&same), &later);
        assert_eq!(changed.conditions[0].status, "False");
        assert_eq!(changed.conditions[0].last_transition_time, later);
        assert_eq!(changed.conditions[1].reason, "Unavailable");
    }

    #[test]
    fn aws_problems_degrade_and_explain_an_unready_gateway() {
        let now = time("2026-01-01T00:00:00Z");
        let serving = GatewayReport {
            ready_instances: 1,
            ready_addresses: 1,
            ..GatewayReport::default()
        };
        let base = gateway_status(&serving, "Aws", Vec::new(), Some(1), None, &now);
        let throttled = with_aws_problem(
            base.clone(),
            Some(("AwsError", "DescribeAddresses: RequestLimitExceeded")),
            &[],
            None,
            &now,
        );
        assert_eq!(throttled.conditions[0].status, "True");
        assert_eq!(throttled.conditions[0].reason, "InstancesReady");
        assert_eq!(throttled.conditions[1].status, "True");
        assert_eq!(throttled.conditions[1].reason, "AwsError");
        assert!(throttled.conditions[1]
            .message
            .contains("RequestLimitExceeded"));

        let down = GatewayReport {
            problems: vec!["gateway has no instances; pods using it are denied".to_owned()],
            ..GatewayReport::default()
        };
        let base = gateway_status(&down, "Aws", Vec::new(), Some(1), None, &now);
        let status = with_aws_problem(
            base.clone(),
            Some(("NoHealthyInstance", "no gateway pod is Ready")),
            &[],
            None,
            &now,
        );
        assert_eq!(status.conditions[0].status, "False");
        assert_eq!(status.conditions[0].reason, "NoHealthyInstance");
        assert!(status.conditions[0]
            .message
            .starts_with("no gateway pod is Ready; "));

        // Without a problem, warnings only degrade.
        let serving_base = gateway_status(&serving, "Aws", Vec::new(), Some(1), None, &now);
        let warned = with_aws_problem(
            serving_base.clone(),
            None,
            &["Elastic IP 198.51.100.1 is taken".to_owned()],
            None,
            &now,
        );
        assert_eq!(warned.conditions[0], serving_base.conditions[0]);
        assert_eq!(warned.conditions[1].status, "True");
        assert_eq!(warned.conditions[1].reason, "AddressesUnavailable");
        assert_eq!(
            with_aws_problem(serving_base.clone(), None, &[], None, &now),
            serving_base
        );
    }

    #[test]
    fn long_messages_are_bounded() {
        let problems: Vec<String> = (0..200)
            .map(|index| format!("instance `i{index}` is not Ready"))
            .collect();
        let message = bounded_message(&problems);
        assert!(message.len() <= MAX_MESSAGE_LEN);
        assert!(message.ends_with('…'));
    }
}
