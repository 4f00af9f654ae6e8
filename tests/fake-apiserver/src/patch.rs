//! PATCH bodies: JSON patch, JSON merge patch, strategic merge patch and (a plain
//! stand-in for) server-side apply.
//!
//! kubectl's `apply` and `label` and kube's `Patch::*` send these. Strategic merge is
//! done for the simple cases that matter: lists of named things (containers, env,
//! volumes, ports, conditions...) merge by their key, other lists are replaced, and the
//! `$patch`, `$retainKeys`, `$setElementOrder/` and `$deleteFromPrimitiveList/`
//! directives kubectl emits are understood.

use serde_json::{Map, Value};

use super::status::ApiError;

pub const JSON_PATCH: &str = "application/json-patch+json";
pub const MERGE_PATCH: &str = "application/merge-patch+json";
pub const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";
const ACCEPTED: &str = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    StrategicMerge,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        match essence {
            JSON_PATCH => Ok(PatchKind::Json),
            MERGE_PATCH => Ok(PatchKind::Merge),
            STRATEGIC_MERGE_PATCH => Ok(PatchKind::StrategicMerge),
            APPLY_PATCH => Ok(PatchKind::Apply),
            _ => Err(ApiError::unsupported_media_type(content_type, ACCEPTED)),
        }
    }
}

/// Applies a JSON patch (RFC 6902).
pub fn json_patch(target: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: json_patch::Patch = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut out = target.clone();
    json_patch::patch(&mut out, &patch).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    Ok(out)
}

/// Applies a JSON merge patch (RFC 7386).
pub fn merge_patch(target: &Value, patch: &Value) -> Result<Value, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request("the patch must be a JSON object"));
    }
    let mut out = target.clone();
    json_patch::merge(&mut out, patch);
    Ok(out)
}

/// The key that lists at `path` (field names from the root, indices left out) merge
/// on, as the Kubernetes types' `patchMergeKey` tags say; `None` means replace.
fn merge_key(kind: &str, path: &[String]) -> Option<&'static str> {
    let last = path.last()?.as_str();
    let parent = path
        .len()
        .checked_sub(2)
        .and_then(|i| path.get(i))
        .map(String::as_str);
    let in_container = matches!(
        parent,
        Some("containers" | "initContainers" | "ephemeralContainers")
    );
    match last {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "env" if in_container => Some("name"),
        "volumeMounts" | "volumeDevices" if in_container => Some("mountPath"),
        "ports" if in_container => Some("containerPort"),
        "ports" if kind == "Service" && path.len() == 2 => Some("port"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

/// Primitive lists whose patch strategy is merge (union) rather than replace.
fn merges_primitives(path: &[String]) -> bool {
    path == ["metadata", "finalizers"]
}

/// Applies a strategic merge patch to an object of `kind`.
pub fn strategic_merge(target: &Value, patch: &Value, kind: &str) -> Result<Value, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request("the patch must be a JSON object"));
    }
    let mut path = Vec::new();
    Ok(merge_value(target, patch, kind, &mut path))
}

fn merge_value(target: &Value, patch: &Value, kind: &str, path: &mut Vec<String>) -> Value {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => Value::Object(merge_map(t, p, kind, path)),
        (_, Value::Object(p)) => Value::Object(merge_map(&Map::new(), p, kind, path)),
        _ => patch.clone(),
    }
}

fn merge_map(
    target: &Map<String, Value>,
    patch: &Map<String, Value>,
    kind: &str,
    path: &mut Vec<String>,
) -> Map<String, Value> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove("$patch");
            return replaced;
        }
        Some("delete") => return Map::new(),
        _ => {}
    }
    let mut out = target.clone();
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) = (out.get_mut(field), value) {
                list.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if value.is_null() {
            out.remove(key);
            continue;
        }
        path.push(key.clone());
        let merged = match (out.get(key), value) {
            (Some(Value::Array(current)), Value::Array(items)) => {
                Value::Array(merge_list(current, items, kind, path))
            }
            (Some(current), _) => merge_value(current, value, kind, path),
            (None, _) => strip_directives(value),
        };
        path.pop();
        out.insert(key.clone(), merged);
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        out.retain(|k, _| keep.iter().any(|kept| kept.as_str() == Some(k.as_str())));
    }
    out
}

fn merge_list(
    current: &[Value],
    patch: &[Value],
    kind: &str,
    path: &mut Vec<String>,
) -> Vec<Value> {
    if merges_primitives(path) {
        let mut out = current.to_vec();
        for item in patch {
            if !out.contains(item) {
                out.push(item.clone());
            }
        }
        return out;
    }
    let Some(key) = merge_key(kind, path) else {
        return patch.iter().map(strip_directives).collect();
    };
    let mut out = current.to_vec();
    for item in patch {
        let id = item.get(key);
        let position = id.and_then(|id| {
            out.iter()
                .position(|existing| existing.get(key) == Some(id))
        });
        let directive = item.get("$patch").and_then(Value::as_str);
        match (position, directive) {
            (Some(i), Some("delete")) => {
                out.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => {
                let merged = merge_value(&out[i], item, kind, path);
                out[i] = merged;
            }
            (None, _) => out.push(strip_directives(item)),
        }
    }
    out
}

fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Parses a server-side apply body (YAML or JSON).
pub fn parse_apply_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_saphyr::from_slice::<Value>(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_and_other_lists_replace() {
        let pod = json!({ "spec": { "containers": [ { "name": "a", "image": "1", "env": [ { "name": "X", "value": "1" } ] } ], "tolerations": [ { "key": "t" } ] } });
        let patch = json!({ "spec": { "containers": [ { "name": "a", "image": "2", "env": [ { "name": "Y", "value": "2" } ] }, { "name": "b", "image": "3" } ], "tolerations": [] } });
        let out = strategic_merge(&pod, &patch, "Pod").unwrap();
        assert_eq!(out["spec"]["containers"][0]["image"], "2");
        assert_eq!(
            out["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(out["spec"]["containers"][1]["name"], "b");
        assert_eq!(out["spec"]["tolerations"], json!([]));
    }

    #[test]
    fn directives_from_kubectl_apply() {
        let svc = json!({ "metadata": { "labels": { "a": "1", "b": "2" }, "finalizers": ["x"] }, "spec": { "ports": [ { "port": 80, "name": "http" }, { "port": 81, "name": "alt" } ] } });
        let patch = json!({
            "metadata": { "labels": { "b": null }, "finalizers": ["y"] },
            "spec": { "$setElementOrder/ports": [ { "port": 80 } ], "ports": [ { "port": 81, "$patch": "delete" } ] }
        });
        let out = strategic_merge(&svc, &patch, "Service").unwrap();
        assert_eq!(out["metadata"]["labels"], json!({ "a": "1" }));
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(
            out["spec"]["ports"],
            json!([ { "port": 80, "name": "http" } ])
        );
    }

    #[test]
    fn bad_json_patch_is_a_client_error() {
        let err = json_patch(&json!({}), b"{\"op\":1}").unwrap_err();
        assert_eq!(err.code, 400);
        let err = json_patch(
            &json!({}),
            br#"[{"op":"replace","path":"/missing","value":1}]"#,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
    }
}
