//! Which registered webhooks a request goes to: `rules` (operations, groups, versions,
//! resources with `*` and `/subresource` forms, scope), `namespaceSelector` (against the
//! namespace's labels) and `objectSelector` (against the object's, old or new).

use serde_json::Value;

use super::super::selectors::{LabelSelector, labels_of};
use super::Attributes;

fn listed(list: Option<&Value>, wanted: &str) -> bool {
    list.and_then(Value::as_array).is_some_and(|items| {
        items
            .iter()
            .any(|i| i.as_str().is_some_and(|i| i == "*" || i == wanted))
    })
}

fn resource_listed(list: Option<&Value>, resource: &str, subresource: &str) -> bool {
    list.and_then(Value::as_array).is_some_and(|items| {
        items.iter().filter_map(Value::as_str).any(|entry| {
            let (res, sub) = entry.split_once('/').unwrap_or((entry, ""));
            (res == "*" || res == resource) && (sub == "*" || sub == subresource)
        })
    })
}

fn rule_matches(rule: &Value, attributes: &Attributes<'_>) -> bool {
    let resource = attributes.resource;
    let scope_ok = match rule.get("scope").and_then(Value::as_str).unwrap_or("*") {
        "Cluster" => !resource.namespaced,
        "Namespaced" => resource.namespaced,
        _ => true,
    };
    scope_ok
        && listed(rule.get("operations"), attributes.operation.as_str())
        && listed(rule.get("apiGroups"), resource.group)
        && listed(rule.get("apiVersions"), resource.version)
        && resource_listed(
            rule.get("resources"),
            resource.plural,
            attributes.subresource.unwrap_or(""),
        )
}

pub fn rules_match(webhook: &Value, attributes: &Attributes<'_>) -> bool {
    webhook
        .get("rules")
        .and_then(Value::as_array)
        .is_some_and(|rules| rules.iter().any(|r| rule_matches(r, attributes)))
}

/// Whether the selectors let the webhook see this object. `namespace_labels` is the
/// labels of the object's namespace (or of the Namespace being written).
pub fn selectors_match(
    webhook: &Value,
    attributes: &Attributes<'_>,
    object: &Value,
    namespace_labels: Option<&Value>,
) -> Result<bool, String> {
    let namespace_selector = LabelSelector::from_object(webhook.get("namespaceSelector"))?;
    let applies_to_namespace =
        attributes.resource.namespaced || attributes.resource.plural == "namespaces";
    if applies_to_namespace && !namespace_selector.is_empty() {
        let labels = namespace_labels.map(labels_of).unwrap_or_default();
        if !namespace_selector.matches_labels(&labels) {
            return Ok(false);
        }
    }
    let object_selector = LabelSelector::from_object(webhook.get("objectSelector"))?;
    if object_selector.is_empty() {
        return Ok(true);
    }
    let new_matches = object_selector.matches_labels(&labels_of(object));
    let old_matches = attributes
        .old
        .is_some_and(|old| object_selector.matches_labels(&labels_of(old)));
    Ok(new_matches || old_matches)
}
