//! Label and field selectors, parsed from query strings and from `LabelSelector` objects.
//!
//! Discovery in sidelb lists and watches with `kubernetes.io/service-name=<svc>`,
//! kubectl deletes with `metadata.name=` field selectors, and webhooks are chosen by
//! `namespaceSelector`/`objectSelector`: all three are the same requirement matching.

use std::collections::BTreeMap;

use serde_json::Value;

use super::resources::ResourceType;
use super::status::ApiError;
use super::validation;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    GreaterThan(i64),
    LessThan(i64),
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Op::Equals(v) => value == Some(v),
            Op::NotEquals(v) => value != Some(v),
            Op::In(vs) => value.is_some_and(|x| vs.contains(x)),
            Op::NotIn(vs) => value.is_none_or(|x| !vs.contains(x)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::GreaterThan(n) => value
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            Op::LessThan(n) => value
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        }
    }
}

/// A set of label requirements, all of which must hold. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// Splits at commas outside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn parse_error(term: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {why} in {term:?}"))
}

fn checked_key(key: &str, term: &str) -> Result<String, ApiError> {
    validation::label_key_problem(key)
        .map_or(Ok(key.to_string()), |why| Err(parse_error(term, &why)))
}

fn checked_value(value: &str, term: &str) -> Result<String, ApiError> {
    let value = value.trim();
    validation::label_value_problem(value)
        .map_or(Ok(value.to_string()), |why| Err(parse_error(term, &why)))
}

/// `key in (a,b)` / `key notin (a,b)`, if the term has that shape.
fn parse_set_term(term: &str) -> Option<Result<Requirement, ApiError>> {
    let open = term.find('(')?;
    let head = term[..open].trim_end();
    let (key, negated) = if let Some(key) = head.strip_suffix(" notin") {
        (key, true)
    } else if let Some(key) = head.strip_suffix(" in") {
        (key, false)
    } else {
        return None;
    };
    let Some(inner) = term[open + 1..].strip_suffix(')') else {
        return Some(Err(parse_error(term, "expected ')'")));
    };
    let parsed = (|| {
        let key = checked_key(key.trim(), term)?;
        let values = inner
            .split(',')
            .map(|v| checked_value(v, term))
            .collect::<Result<Vec<_>, _>>()?;
        let op = if negated {
            Op::NotIn(values)
        } else {
            Op::In(values)
        };
        Ok(Requirement { key, op })
    })();
    Some(parsed)
}

fn parse_label_term(term: &str) -> Result<Requirement, ApiError> {
    if let Some(set) = parse_set_term(term) {
        return set;
    }
    if let Some(key) = term.strip_prefix('!') {
        let key = checked_key(key.trim(), term)?;
        return Ok(Requirement {
            key,
            op: Op::DoesNotExist,
        });
    }
    let binary = [("!=", 0), ("==", 1), ("=", 1), (">", 2), ("<", 3)];
    for (token, which) in binary {
        if let Some((key, value)) = term.split_once(token) {
            let key = checked_key(key.trim(), term)?;
            let op = match which {
                0 => Op::NotEquals(checked_value(value, term)?),
                1 => Op::Equals(checked_value(value, term)?),
                _ => {
                    let n = value.trim().parse::<i64>().map_err(|_| {
                        parse_error(
                            term,
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        )
                    })?;
                    if which == 2 {
                        Op::GreaterThan(n)
                    } else {
                        Op::LessThan(n)
                    }
                }
            };
            return Ok(Requirement { key, op });
        }
    }
    let key = checked_key(term, term)?;
    Ok(Requirement {
        key,
        op: Op::Exists,
    })
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax: `a=b,c!=d,e in (f,g),h notin (i),j,!k`.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(Self { requirements });
        }
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                return Err(parse_error(text, "empty requirement"));
            }
            requirements.push(parse_label_term(term)?);
        }
        Ok(Self { requirements })
    }

    /// Builds a selector from a `metav1.LabelSelector` object (`matchLabels`,
    /// `matchExpressions`). A missing selector matches everything, as in webhooks.
    pub fn from_object(selector: Option<&Value>) -> Result<Self, String> {
        let mut requirements = Vec::new();
        let Some(selector) = selector.filter(|s| !s.is_null()) else {
            return Ok(Self { requirements });
        };
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (key, value) in labels {
                let value = value.as_str().ok_or("matchLabels values must be strings")?;
                requirements.push(Requirement {
                    key: key.clone(),
                    op: Op::Equals(value.to_string()),
                });
            }
        }
        for expr in selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = expr
                .get("key")
                .and_then(Value::as_str)
                .ok_or("matchExpressions need a key")?;
            let values: Vec<String> = expr
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            let op = match expr.get("operator").and_then(Value::as_str) {
                Some("In") => Op::In(values),
                Some("NotIn") => Op::NotIn(values),
                Some("Exists") => Op::Exists,
                Some("DoesNotExist") => Op::DoesNotExist,
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            };
            requirements.push(Requirement {
                key: key.to_string(),
                op,
            });
        }
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.is_empty() || self.matches_labels(&labels_of(object))
    }
}

/// `metadata.labels` as a map (missing or malformed labels are no labels).
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.name=x,spec.nodeName!=y`: equality on the few fields a resource indexes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(text: &str, resource: &ResourceType) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        if text.trim().is_empty() {
            return Ok(Self { terms });
        }
        for term in text.split(',') {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            if !resource.supports_field(field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(Self { terms })
    }

    pub fn for_name(name: &str) -> Self {
        Self {
            terms: vec![("metadata.name".into(), true, name.into())],
        }
    }

    pub fn and(mut self, other: FieldSelector) -> Self {
        self.terms.extend(other.terms);
        self
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, equal, want)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = match object.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *want) == *equal
        })
    }
}

/// Both selectors of a list or watch request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.terms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator() {
        let s = LabelSelector::parse("a=1,b!=2,c in (x, y),d notin (z),e,!f,g==3").unwrap();
        assert!(s.matches_labels(&labels(&[("a", "1"), ("c", "y"), ("e", ""), ("g", "3")])));
        assert!(!s.matches_labels(&labels(&[
            ("a", "1"),
            ("c", "y"),
            ("e", ""),
            ("g", "3"),
            ("f", "")
        ])));
        assert!(!s.matches_labels(&labels(&[
            ("a", "1"),
            ("b", "2"),
            ("c", "y"),
            ("e", ""),
            ("g", "3")
        ])));
        assert!(!s.matches_labels(&labels(&[
            ("a", "1"),
            ("c", "y"),
            ("d", "z"),
            ("e", ""),
            ("g", "3")
        ])));
    }

    #[test]
    fn rejects_malformed_selectors_with_bad_request() {
        for bad in ["a in (x", "a=b c", "=x", "a,,b"] {
            let err = LabelSelector::parse(bad).unwrap_err();
            assert_eq!(err.code, 400, "{bad}");
        }
    }

    #[test]
    fn selector_objects_match_like_webhooks() {
        let sel = serde_json::json!({
            "matchLabels": {"team": "a"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]
        });
        let s = LabelSelector::from_object(Some(&sel)).unwrap();
        assert!(s.matches_labels(&labels(&[("team", "a")])));
        assert!(!s.matches_labels(&labels(&[("team", "a"), ("env", "prod")])));
        assert!(
            LabelSelector::from_object(None)
                .unwrap()
                .matches_labels(&labels(&[]))
        );
    }
}
