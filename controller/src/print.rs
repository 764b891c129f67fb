//! Human- and diff-friendly YAML rendering of translated route tables (`--print`).

use std::net::Ipv4Addr;

use egw_policy::{ActionSpec, RouteTableSpec};
use serde::Serialize;

use crate::translate::{InstanceKey, InstanceTable, Translation};

/// One instance's table as printed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrintedTable {
    pub gateway: String,
    pub instance: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub generation: u64,
    pub default_action: PrintedAction,
    pub pools: Vec<PrintedPool>,
    pub policies: Vec<PrintedPolicy>,
    pub sources: Vec<PrintedSource>,
}

/// An action with exactly one field set.
#[derive(Debug, Serialize)]
pub struct PrintedAction {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snat: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bypass: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PrintedPool {
    pub name: String,
    pub addresses: Vec<Ipv4Addr>,
    pub pairing: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrintedPolicy {
    pub name: String,
    pub rules: Vec<PrintedRule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_action: Option<PrintedAction>,
}

#[derive(Debug, Serialize)]
pub struct PrintedRule {
    pub destination: String,
    pub action: PrintedAction,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
}

#[derive(Debug, Serialize)]
pub struct PrintedSource {
    pub cidr: String,
    pub policy: String,
}

fn action(spec: &ActionSpec) -> PrintedAction {
    let mut printed = PrintedAction {
        snat: None,
        bypass: None,
        deny: None,
    };
    match spec {
        ActionSpec::Snat { pool } => printed.snat = Some(pool.clone()),
        ActionSpec::Bypass => printed.bypass = Some(true),
        ActionSpec::Deny { reason } => printed.deny = Some(reason.clone()),
    }
    printed
}

/// The printable form of one table.
pub fn printed_table(key: &InstanceKey, table: &InstanceTable) -> PrintedTable {
    let spec: &RouteTableSpec = &table.spec;
    PrintedTable {
        gateway: key.gateway.clone(),
        instance: key.instance.clone(),
        endpoint: table.endpoint.clone(),
        generation: spec.generation,
        default_action: action(&spec.default_action),
        pools: spec
            .pools
            .iter()
            .map(|pool| PrintedPool {
                name: pool.name.clone(),
                addresses: pool.addresses.clone(),
                pairing: pool.pairing,
            })
            .collect(),
        policies: spec
            .policies
            .iter()
            .map(|policy| PrintedPolicy {
                name: policy.name.clone(),
                rules: policy
                    .rules
                    .iter()
                    .map(|rule| PrintedRule {
                        destination: rule.destination.to_string(),
                        action: action(&rule.action),
                        description: rule.description.clone(),
                    })
                    .collect(),
                default_action: policy.default_action.as_ref().map(action),
            })
            .collect(),
        sources: spec
            .sources
            .iter()
            .map(|source| PrintedSource {
                cidr: source.cidr.to_string(),
                policy: source.policy.clone(),
            })
            .collect(),
    }
}

/// Every table as a YAML stream, one document per instance, in instance order.
pub fn tables_yaml(translation: &Translation) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for (key, table) in &translation.tables {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&printed_table(key, table))?);
    }
    Ok(out)
}

/// One line per diagnostic: `Severity Kind namespace/name Reason: message`.
pub fn diagnostic_lines(translation: &Translation) -> Vec<String> {
    translation
        .diagnostics
        .iter()
        .map(|diagnostic| {
            let object = match &diagnostic.object.namespace {
                Some(namespace) => format!("{namespace}/{}", diagnostic.object.name),
                None => diagnostic.object.name.clone(),
            };
            format!(
                "{:?} {:?} {object} {}: {}",
                diagnostic.severity, diagnostic.object.kind, diagnostic.reason, diagnostic.message
            )
        })
        .collect()
}

/// `egw-controller --local DIR --print`: loads, translates, prints the tables on stdout and the
/// skipped documents and diagnostics on stderr.
pub fn print_local(dir: &std::path::Path) -> std::process::ExitCode {
    use std::process::ExitCode;
    let input = match crate::local::load_dir(dir) {
        Ok(input) => input,
        Err(error) => {
            eprintln!("egw-controller: {}", crate::error_chain(&error));
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
    let translation = crate::translate::translate(&input.snapshot);
    for line in diagnostic_lines(&translation) {
        eprintln!("{line}");
    }
    match tables_yaml(&translation) {
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
