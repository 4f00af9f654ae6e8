//! Validation that answers 422 `Invalid` where kube-apiserver would.
//!
//! Only what a test of sidelb could trip over: names, labels, and the few required
//! fields of the kinds sidelb reads (Service ports, EndpointSlice address type,
//! webhook configurations). Messages are the real ones, so a test that expects a
//! rejection reads the same text a cluster would give.

use serde_json::Value;

use super::resources::{NameRule, ResourceType};
use super::status::FieldError;

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_1123_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const LABEL_1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_label_1123(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.starts_with(is_lower_alnum)
        && s.ends_with(is_lower_alnum)
}

fn is_subdomain(s: &str) -> bool {
    s.split('.').all(is_label_1123)
}

fn is_label_1035(s: &str) -> bool {
    is_label_1123(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// What is wrong with an object name under `rule`, as the real validators word it.
pub fn name_problems(name: &str, rule: NameRule) -> Vec<String> {
    let (ok, max, msg) = match rule {
        NameRule::Subdomain => (is_subdomain(name), 253, SUBDOMAIN_MSG),
        NameRule::Label1123 => (is_label_1123(name), 63, LABEL_1123_MSG),
        NameRule::Label1035 => (is_label_1035(name), 63, LABEL_1035_MSG),
    };
    let mut problems = Vec::new();
    if name.len() > max {
        problems.push(format!("must be no more than {max} characters"));
    }
    if !ok {
        problems.push(msg.to_string());
    }
    problems
}

fn is_qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Why `key` is not a valid label key (`[prefix/]name`), if it is not.
pub fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && (prefix.len() > 253 || !is_subdomain(prefix))
    {
        return Some(format!("prefix part {SUBDOMAIN_MSG}"));
    }
    if !is_qualified_name_part(name) {
        return Some(QUALIFIED_NAME_MSG.to_string());
    }
    None
}

/// Why `value` is not a valid label value, if it is not.
pub fn label_value_problem(value: &str) -> Option<String> {
    if value.len() > 63 {
        return Some("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        return Some(LABEL_VALUE_MSG.to_string());
    }
    None
}

fn validate_metadata(object: &Value, resource: &ResourceType, errors: &mut Vec<FieldError>) {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for problem in name_problems(name, resource.name_rule) {
            errors.push(FieldError::invalid("metadata.name", name, problem));
        }
    }
    match object.pointer("/metadata/labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (key, value) in labels {
                if let Some(problem) = label_key_problem(key) {
                    errors.push(FieldError::invalid("metadata.labels", key, problem));
                }
                match value.as_str() {
                    Some(v) => {
                        if let Some(problem) = label_value_problem(v) {
                            errors.push(FieldError::invalid("metadata.labels", v, problem));
                        }
                    }
                    None => errors.push(FieldError::invalid(
                        "metadata.labels",
                        value.to_string(),
                        "must be a string",
                    )),
                }
            }
        }
        Some(other) => errors.push(FieldError::invalid(
            "metadata.labels",
            other.to_string(),
            "must be an object",
        )),
    }
}

fn validate_port(field: String, port: Option<&Value>, errors: &mut Vec<FieldError>) {
    match port.and_then(Value::as_i64) {
        None => errors.push(FieldError::required(field, "")),
        Some(p) if !(1..=65535).contains(&p) => errors.push(FieldError::invalid(
            field,
            p.to_string(),
            "must be between 1 and 65535, inclusive",
        )),
        Some(_) => {}
    }
}

fn validate_service(object: &Value, errors: &mut Vec<FieldError>) {
    let headless = object.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let external = object.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName");
    let ports = object.pointer("/spec/ports").and_then(Value::as_array);
    if ports.is_none_or(Vec::is_empty) && !headless && !external {
        errors.push(FieldError::required("spec.ports", ""));
    }
    for (i, port) in ports.into_iter().flatten().enumerate() {
        validate_port(format!("spec.ports[{i}].port"), port.get("port"), errors);
        if ports.is_some_and(|p| p.len() > 1)
            && port
                .get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            errors.push(FieldError::required(format!("spec.ports[{i}].name"), ""));
        }
    }
}

fn validate_endpoint_slice(object: &Value, errors: &mut Vec<FieldError>) {
    match object.get("addressType").and_then(Value::as_str) {
        None => errors.push(FieldError::required("addressType", "")),
        Some("IPv4" | "IPv6" | "FQDN") => {}
        Some(other) => errors.push(FieldError::not_supported(
            "addressType",
            other,
            &["FQDN", "IPv4", "IPv6"],
        )),
    }
    for (i, endpoint) in object
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let count = endpoint
            .get("addresses")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if count == 0 || count > 100 {
            errors.push(FieldError::required(
                format!("endpoints[{i}].addresses"),
                "must contain at least 1 address",
            ));
        }
    }
}

fn validate_webhooks(object: &Value, errors: &mut Vec<FieldError>) {
    for (i, hook) in object
        .get("webhooks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = |f: &str| format!("webhooks[{i}].{f}");
        if hook
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errors.push(FieldError::required(at("name"), ""));
        }
        match hook.get("sideEffects").and_then(Value::as_str) {
            None => errors.push(FieldError::required(
                at("sideEffects"),
                "must specify one of None, NoneOnDryRun",
            )),
            Some("None" | "NoneOnDryRun") => {}
            Some(other) => errors.push(FieldError::not_supported(
                at("sideEffects"),
                other,
                &["None", "NoneOnDryRun"],
            )),
        }
        if hook
            .get("admissionReviewVersions")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            errors.push(FieldError::required(
                at("admissionReviewVersions"),
                "must specify one of v1, v1beta1",
            ));
        }
        let config = hook.get("clientConfig");
        let url = config.and_then(|c| c.get("url")).and_then(Value::as_str);
        let service = config
            .and_then(|c| c.get("service"))
            .filter(|s| !s.is_null());
        match (url, service) {
            (Some(_), Some(_)) => errors.push(FieldError::required(
                at("clientConfig"),
                "exactly one of url or service is required",
            )),
            (None, None) => errors.push(FieldError::required(
                at("clientConfig"),
                "exactly one of url or service is required",
            )),
            (Some(url), None) if !url.starts_with("https://") => errors.push(FieldError::invalid(
                at("clientConfig.url"),
                url,
                "'https' is the only allowed URL scheme",
            )),
            _ => {}
        }
    }
}

/// Every validation failure of an object about to be stored.
pub fn validate(object: &Value, resource: &ResourceType) -> Vec<FieldError> {
    let mut errors = Vec::new();
    validate_metadata(object, resource, &mut errors);
    match resource.kind {
        "Service" => validate_service(object, &mut errors),
        "EndpointSlice" => validate_endpoint_slice(object, &mut errors),
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
            validate_webhooks(object, &mut errors)
        }
        _ => {}
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_dns_rules() {
        assert!(name_problems("my-svc", NameRule::Label1035).is_empty());
        assert!(!name_problems("1svc", NameRule::Label1035).is_empty());
        assert!(name_problems("a.b-c", NameRule::Subdomain).is_empty());
        assert!(!name_problems("Bad_Name", NameRule::Subdomain).is_empty());
        assert!(!name_problems(&"a".repeat(64), NameRule::Label1123).is_empty());
    }

    #[test]
    fn label_keys_and_values() {
        assert!(label_key_problem("kubernetes.io/service-name").is_none());
        assert!(label_key_problem("bad/key/x").is_some());
        assert!(label_value_problem("").is_none());
        assert!(label_value_problem("-x").is_some());
    }
}
