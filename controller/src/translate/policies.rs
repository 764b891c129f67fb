//! Step 2 of the translation: every EgressGatewayPolicy (sorted by name, the first of each
//! name) compiled into a program, or reported invalid; rules whose gateway is missing or not
//! Ready are reported and deny.

use std::collections::BTreeMap;

use super::names::bounded_reason;
use super::output::{
    cluster_ref, Diagnostic, DiagnosticReason, ObjectKind, PolicyReport, Severity,
};
use super::resolver::{Program, Resolver};
use super::usage::UsageBuilder;
use crate::input::{PolicyInfo, Snapshot};

/// The compiled policies.
#[derive(Default)]
pub(super) struct Policies {
    /// Every program, policies' first; the clients step appends the gateway annotations'.
    pub(super) programs: Vec<Program>,
    /// Policy name → index into `programs`, or the (bounded) reason it is invalid.
    pub(super) compiled: BTreeMap<String, Result<usize, String>>,
    /// Who uses each policy (filled by the clients step).
    pub(super) usage: BTreeMap<String, UsageBuilder>,
    /// Every policy's report, by name.
    pub(super) reports: BTreeMap<String, PolicyReport>,
}

/// Compiles every policy of `snapshot`.
pub(super) fn policies(
    snapshot: &Snapshot,
    resolver: &mut Resolver<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Policies {
    let mut output = Policies::default();
    let mut policies: Vec<&PolicyInfo> = snapshot.policies.iter().collect();
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    for policy in policies {
        if output.compiled.contains_key(&policy.name) {
            continue;
        }
        let mut report = PolicyReport::default();
        let compiled = compile(
            &mut output.programs,
            resolver,
            policy,
            &mut report,
            diagnostics,
        );
        output.compiled.insert(policy.name.clone(), compiled);
        output
            .usage
            .insert(policy.name.clone(), UsageBuilder::default());
        output.reports.insert(policy.name.clone(), report);
    }
    output
}

/// Compiles one policy into `programs`: its index, or why every pod using it is denied.
fn compile(
    programs: &mut Vec<Program>,
    resolver: &mut Resolver<'_>,
    policy: &PolicyInfo,
    report: &mut PolicyReport,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<usize, String> {
    let object = cluster_ref(ObjectKind::EgressGatewayPolicy, &policy.name);
    match resolver.compile_policy(policy) {
        Ok((program, problems)) => {
            for problem in &problems {
                diagnostics.push(Diagnostic {
                    object: object.clone(),
                    severity: Severity::Warning,
                    reason: DiagnosticReason::RuleDenies,
                    message: problem.clone(),
                });
            }
            report.problems = problems;
            programs.push(program);
            Ok(programs.len() - 1)
        }
        Err(why) => {
            diagnostics.push(Diagnostic {
                object,
                severity: Severity::Error,
                reason: DiagnosticReason::PolicyInvalid,
                message: why.clone(),
            });
            report.invalid = Some(why.clone());
            Err(bounded_reason(format!(
                "policy `{}` is invalid: {why}",
                policy.name
            )))
        }
    }
}
