//! Label selectors written as text: Kubernetes set-based syntax (`egw.dev/gateway: selector:...`)
//! and the subset of Calico's selector language that Calico egress annotations use.
//!
//! Both parse into [`kube::core::Selector`], whose `matches` evaluates them against a label map.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Expression, Selector, SelectorExt};

/// Why a selector could not be parsed or converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("empty selector term in `{selector}`")]
    EmptyTerm { selector: String },
    #[error("cannot parse selector term `{term}`: {why}")]
    BadTerm { term: String, why: &'static str },
    #[error(
        "Calico selector `{selector}` uses `{construct}`, which egw does not support; \
         use `&&`-joined terms of `k == 'v'`, `k != 'v'`, `has(k)`, `!has(k)`, \
         `k in {{'a', 'b'}}`, `k not in {{...}}` or `all()`"
    )]
    UnsupportedCalico {
        selector: String,
        construct: &'static str,
    },
    #[error("invalid label selector: {0}")]
    InvalidLabelSelector(String),
}

/// Whether `selector` selects a map of `labels`.
pub fn selects(selector: &Selector, labels: &BTreeMap<String, String>) -> bool {
    selector.matches(labels)
}

/// Converts a structured `LabelSelector` (from a CRD field). An empty selector selects everything.
pub fn from_label_selector(selector: &LabelSelector) -> Result<Selector, SelectorError> {
    Selector::try_from(selector.clone())
        .map_err(|error| SelectorError::InvalidLabelSelector(error.to_string()))
}

/// Parses Kubernetes label selector syntax, as `kubectl get -l` accepts it: comma-separated
/// terms `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`.
pub fn parse_kubernetes(text: &str) -> Result<Selector, SelectorError> {
    let mut expressions = Vec::new();
    for term in split_outside_parentheses(text) {
        let term = term.trim();
        if term.is_empty() {
            return Err(SelectorError::EmptyTerm {
                selector: text.to_owned(),
            });
        }
        expressions.push(parse_kubernetes_term(term)?);
    }
    Ok(Selector::from_iter(expressions))
}

fn split_outside_parentheses(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0_u32;
    let mut start = 0;
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn bad(term: &str, why: &'static str) -> SelectorError {
    SelectorError::BadTerm {
        term: term.to_owned(),
        why,
    }
}

fn parse_kubernetes_term(term: &str) -> Result<Expression, SelectorError> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(label_key(term, key)?));
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(Expression::NotEqual(
            label_key(term, key)?,
            label_value(term, value)?,
        ));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Expression::Equal(
            label_key(term, key)?,
            label_value(term, value)?,
        ));
    }
    if let Some((key, rest)) = split_keyword(term, "notin") {
        return Ok(Expression::NotIn(
            label_key(term, key)?,
            value_set(term, rest)?,
        ));
    }
    if let Some((key, rest)) = split_keyword(term, "in") {
        return Ok(Expression::In(
            label_key(term, key)?,
            value_set(term, rest)?,
        ));
    }
    Ok(Expression::Exists(label_key(term, term)?))
}

/// Splits `key <keyword> rest` where the keyword stands as a whitespace-separated word.
fn split_keyword<'a>(term: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let mut words = term.splitn(2, char::is_whitespace);
    let key = words.next()?;
    let rest = words.next()?.trim_start();
    let after = rest.strip_prefix(keyword)?;
    (after.starts_with(char::is_whitespace) || after.starts_with('(')).then_some((key, after))
}

fn value_set(term: &str, text: &str) -> Result<BTreeSet<String>, SelectorError> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| bad(term, "expected a parenthesised value list"))?;
    let values = inner
        .split(',')
        .map(|value| label_value(term, value))
        .collect::<Result<BTreeSet<_>, _>>()?;
    if values.iter().any(String::is_empty) {
        return Err(bad(term, "empty value in value list"));
    }
    Ok(values)
}

fn is_label_character(character: char) -> bool {
    character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.' | '/')
}

fn label_key(term: &str, key: &str) -> Result<String, SelectorError> {
    let key = key.trim();
    if key.is_empty() {
        return Err(bad(term, "missing label key"));
    }
    if !key.chars().all(is_label_character) {
        return Err(bad(
            term,
            "label key has characters other than [A-Za-z0-9-_./]",
        ));
    }
    Ok(key.to_owned())
}

fn label_value(term: &str, value: &str) -> Result<String, SelectorError> {
    let value = value.trim();
    if !value.chars().all(is_label_character) {
        return Err(bad(
            term,
            "label value has characters other than [A-Za-z0-9-_.]",
        ));
    }
    Ok(value.to_owned())
}

/// Parses the subset of Calico's selector language used in egress annotations: `&&`-joined terms
/// `k == 'v'`, `k != 'v'`, `has(k)`, `!has(k)`, `k in {'a','b'}`, `k not in {'a'}`, and `all()`
/// (selects everything). Quotes may be single or double. `||`, parentheses for grouping and
/// `!` before anything but `has` are refused, so a selector is never silently widened.
pub fn parse_calico(text: &str) -> Result<Selector, SelectorError> {
    let unsupported = |construct| SelectorError::UnsupportedCalico {
        selector: text.to_owned(),
        construct,
    };
    if text.contains("||") {
        return Err(unsupported("||"));
    }
    let mut expressions = Vec::new();
    for term in text.split("&&") {
        let term = term.trim();
        if term.is_empty() {
            return Err(SelectorError::EmptyTerm {
                selector: text.to_owned(),
            });
        }
        if term == "all()" {
            continue;
        }
        if let Some(inner) = term
            .strip_prefix("!has(")
            .and_then(|rest| rest.strip_suffix(')'))
        {
            expressions.push(Expression::DoesNotExist(label_key(term, inner)?));
            continue;
        }
        if let Some(inner) = term
            .strip_prefix("has(")
            .and_then(|rest| rest.strip_suffix(')'))
        {
            expressions.push(Expression::Exists(label_key(term, inner)?));
            continue;
        }
        if term.starts_with('(') {
            return Err(unsupported("parentheses"));
        }
        if term.starts_with('!') {
            return Err(unsupported("negation"));
        }
        if let Some((key, value)) = term.split_once("==") {
            expressions.push(Expression::Equal(
                label_key(term, key)?,
                calico_literal(term, value)?,
            ));
        } else if let Some((key, value)) = term.split_once("!=") {
            expressions.push(Expression::NotEqual(
                label_key(term, key)?,
                calico_literal(term, value)?,
            ));
        } else if let Some((key, set)) = term.split_once(" not in ") {
            expressions.push(Expression::NotIn(
                label_key(term, key)?,
                calico_set(term, set)?,
            ));
        } else if let Some((key, set)) = term.split_once(" in ") {
            expressions.push(Expression::In(
                label_key(term, key)?,
                calico_set(term, set)?,
            ));
        } else {
            return Err(bad(term, "expected ==, !=, in, not in, has() or all()"));
        }
    }
    Ok(Selector::from_iter(expressions))
}

fn calico_literal(term: &str, text: &str) -> Result<String, SelectorError> {
    let text = text.trim();
    let unquoted = text
        .strip_prefix('\'')
        .and_then(|rest| rest.strip_suffix('\''))
        .or_else(|| {
            text.strip_prefix('"')
                .and_then(|rest| rest.strip_suffix('"'))
        })
        .ok_or_else(|| bad(term, "Calico values must be quoted"))?;
    label_value(term, unquoted)
}

fn calico_set(term: &str, text: &str) -> Result<BTreeSet<String>, SelectorError> {
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or_else(|| bad(term, "expected a {braced} value set"))?;
    inner
        .split(',')
        .map(|value| calico_literal(term, value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (selector text, labels, whether it selects them)
    type MatchCase = (&'static str, &'static [(&'static str, &'static str)], bool);

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn kubernetes_syntax_matches_like_kubectl() {
        let cases: &[MatchCase] = &[
            ("tier=edge", &[("tier", "edge")], true),
            ("tier==edge", &[("tier", "core")], false),
            ("tier!=edge", &[], true),
            ("tier", &[("tier", "x")], true),
            ("!tier", &[("tier", "x")], false),
            (
                "zone in (a, b),tier=edge",
                &[("zone", "b"), ("tier", "edge")],
                true,
            ),
            ("zone in (a,b)", &[("zone", "c")], false),
            ("zone notin (a,b)", &[("zone", "c")], true),
            ("egw.dev/site=lab", &[("egw.dev/site", "lab")], true),
        ];
        for (text, pairs, expected) in cases {
            let selector = parse_kubernetes(text).unwrap();
            assert_eq!(selects(&selector, &labels(pairs)), *expected, "{text}");
        }
    }

    #[test]
    fn kubernetes_syntax_errors_name_the_term() {
        for text in ["", "a=b,", "zone in a,b", "a=b c", "=x"] {
            assert!(parse_kubernetes(text).is_err(), "{text:?} should not parse");
        }
    }

    #[test]
    fn calico_subset_matches() {
        let cases: &[MatchCase] = &[
            ("egress-code == 'red'", &[("egress-code", "red")], true),
            ("egress-code == \"red\"", &[("egress-code", "blue")], false),
            ("egress-code != 'red'", &[], true),
            ("has(egress-code)", &[("egress-code", "x")], true),
            ("!has(egress-code)", &[("egress-code", "x")], false),
            (
                "a in {'x', 'y'} && b == 'z'",
                &[("a", "y"), ("b", "z")],
                true,
            ),
            ("a not in {'x'}", &[("a", "x")], false),
            ("all()", &[], true),
        ];
        for (text, pairs, expected) in cases {
            let selector = parse_calico(text).unwrap();
            assert_eq!(selects(&selector, &labels(pairs)), *expected, "{text}");
        }
    }

    #[test]
    fn calico_constructs_outside_the_subset_are_refused() {
        for text in [
            "a == 'x' || b == 'y'",
            "(a == 'x')",
            "!(a == 'x')",
            "a == x",
            "a ~ 'x'",
        ] {
            assert!(parse_calico(text).is_err(), "{text:?} should be refused");
        }
    }
}
