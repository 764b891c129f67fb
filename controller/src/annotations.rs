//! Egress intent written as annotations on a Namespace or Pod.
//!
//! | annotation | meaning |
//! | --- | --- |
//! | `egw.dev/gateway: NAME` | leave through the EgressGateway `NAME` |
//! | `egw.dev/gateway: selector:EXPR` | leave through the EgressGateways whose labels match `EXPR` (kubectl `-l` syntax) |
//! | `egw.dev/policy: NAME` | use the EgressGatewayPolicy `NAME` |
//! | `egress.projectcalico.org/selector: EXPR` | Calico alias: EgressGateways whose labels match `EXPR` (Calico selector subset) |
//! | `egress.projectcalico.org/namespaceSelector: EXPR` | Calico alias: only gateways whose `spec.namespace` has labels matching `EXPR`; without it, only gateways whose `spec.namespace` is the client pod's namespace (Calico's default) |
//! | `egress.projectcalico.org/egressGatewayPolicy: NAME` | Calico alias of `egw.dev/policy` |
//!
//! Precedence: if a pod carries any of these annotations, its namespace's are ignored entirely
//! (the pod overrides, as in Calico). Within one object, a policy wins over gateway annotations,
//! as in Calico, and the ignored gateway annotation is reported. Both policy keys must agree, and
//! both gateway forms must select the same gateways; otherwise the pod is denied.

use std::collections::BTreeMap;

use kube::core::Selector;

use crate::selector::{self, SelectorError};

pub const GATEWAY: &str = "egw.dev/gateway";
pub const POLICY: &str = "egw.dev/policy";
pub const CALICO_SELECTOR: &str = "egress.projectcalico.org/selector";
pub const CALICO_NAMESPACE_SELECTOR: &str = "egress.projectcalico.org/namespaceSelector";
pub const CALICO_POLICY: &str = "egress.projectcalico.org/egressGatewayPolicy";
/// Prefix of the `egw.dev/gateway` value that introduces a label selector.
pub const SELECTOR_PREFIX: &str = "selector:";

/// Every annotation key that expresses egress intent.
pub const ALL_KEYS: [&str; 5] = [
    GATEWAY,
    POLICY,
    CALICO_SELECTOR,
    CALICO_NAMESPACE_SELECTOR,
    CALICO_POLICY,
];

/// Whether `annotations` express any egress intent.
pub fn has_intent(annotations: &BTreeMap<String, String>) -> bool {
    ALL_KEYS.iter().any(|key| annotations.contains_key(*key))
}

/// How an object's annotations pick gateways.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayChoice {
    /// `egw.dev/gateway: NAME`.
    Name(String),
    /// `egw.dev/gateway: selector:EXPR`, over EgressGateway labels.
    Selector { text: String, selector: Selector },
    /// Calico's selector over EgressGateway labels, and namespace selector over the labels of the
    /// gateway's `spec.namespace` (`None`: the gateway namespace must be the client's).
    Calico {
        text: String,
        selector: Selector,
        namespace_selector: Option<Selector>,
    },
}

/// Parsed egress intent of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// The policy named, if any; it takes precedence over `gateways`.
    pub policy: Option<String>,
    /// Gateway choices, one per annotation family present (egw, Calico); when there are two
    /// they must select the same gateways.
    pub gateways: Vec<GatewayChoice>,
    /// Annotation keys present but ignored, with why, for diagnostics.
    pub ignored: Vec<(&'static str, String)>,
}

/// Why annotations cannot be turned into intent; the affected pods are denied with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    #[error("annotation `{key}` is empty")]
    Empty { key: &'static str },
    #[error("annotations `{POLICY}` (`{egw}`) and `{CALICO_POLICY}` (`{calico}`) name different policies")]
    PolicyConflict { egw: String, calico: String },
    #[error("annotation `{key}`: {source}")]
    BadSelector {
        key: &'static str,
        #[source]
        source: SelectorError,
    },
    #[error("annotation `{CALICO_NAMESPACE_SELECTOR}` needs `{CALICO_SELECTOR}` beside it")]
    NamespaceSelectorAlone,
}

fn non_empty<'a>(
    annotations: &'a BTreeMap<String, String>,
    key: &'static str,
) -> Result<Option<&'a str>, AnnotationError> {
    match annotations.get(key).map(|value| value.trim()) {
        None => Ok(None),
        Some("") => Err(AnnotationError::Empty { key }),
        Some(value) => Ok(Some(value)),
    }
}

/// Parses the egress annotations of one object; `None` when it has none.
pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Option<Intent>, AnnotationError> {
    if !has_intent(annotations) {
        return Ok(None);
    }
    let egw_policy = non_empty(annotations, POLICY)?;
    let calico_policy = non_empty(annotations, CALICO_POLICY)?;
    let policy = match (egw_policy, calico_policy) {
        (Some(egw), Some(calico)) if egw != calico => {
            return Err(AnnotationError::PolicyConflict {
                egw: egw.to_owned(),
                calico: calico.to_owned(),
            })
        }
        (Some(name), _) | (None, Some(name)) => Some(name.to_owned()),
        (None, None) => None,
    };

    let mut gateways = Vec::new();
    if let Some(value) = non_empty(annotations, GATEWAY)? {
        gateways.push(match value.strip_prefix(SELECTOR_PREFIX) {
            Some(expression) => GatewayChoice::Selector {
                text: expression.trim().to_owned(),
                selector: selector::parse_kubernetes(expression).map_err(|source| {
                    AnnotationError::BadSelector {
                        key: GATEWAY,
                        source,
                    }
                })?,
            },
            None => GatewayChoice::Name(value.to_owned()),
        });
    }
    let calico_namespace_selector = non_empty(annotations, CALICO_NAMESPACE_SELECTOR)?
        .map(|text| {
            selector::parse_calico(text).map_err(|source| AnnotationError::BadSelector {
                key: CALICO_NAMESPACE_SELECTOR,
                source,
            })
        })
        .transpose()?;
    match non_empty(annotations, CALICO_SELECTOR)? {
        Some(text) => gateways.push(GatewayChoice::Calico {
            text: text.to_owned(),
            selector: selector::parse_calico(text).map_err(|source| {
                AnnotationError::BadSelector {
                    key: CALICO_SELECTOR,
                    source,
                }
            })?,
            namespace_selector: calico_namespace_selector,
        }),
        None if calico_namespace_selector.is_some() => {
            return Err(AnnotationError::NamespaceSelectorAlone)
        }
        None => {}
    }

    let mut ignored = Vec::new();
    if let Some(policy) = &policy {
        for key in [GATEWAY, CALICO_SELECTOR, CALICO_NAMESPACE_SELECTOR] {
            if annotations.contains_key(key) {
                ignored.push((key, format!("policy `{policy}` takes precedence")));
            }
        }
        gateways.clear();
    }
    Ok(Some(Intent {
        policy,
        gateways,
        ignored,
    }))
}
