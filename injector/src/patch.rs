//! The RFC 6902 JSON Patch that adds the sidecar to a pod.
//!
//! Only `add` operations, each for one thing the injector owns, so the app's
//! containers are never rewritten. An `add` needs its parent to exist and
//! inserts into arrays at an index, so each path is chosen from the pod as it
//! arrived: the whole array or map when it is missing (or `null`), an element
//! or key when it is there. Paths are built from tokens, which escapes `/` as
//! `~1` and `~` as `~0` (`/metadata/annotations/sidelb.io~1injected`).

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Container, Volume};
use serde_json::{Value, json};

/// What to add to one pod.
pub struct Additions<'a> {
    pub container: &'a Container,
    /// First init container (native sidecar) or first container (classic).
    pub native: bool,
    pub volume: Option<&'a Volume>,
    pub annotations: &'a [(&'a str, &'a str)],
}

/// The patch for `pod` (the object from the review, untouched).
pub fn build(pod: &Value, add: &Additions<'_>) -> Result<Patch, serde_json::Error> {
    let mut ops = Vec::new();
    let list = if add.native {
        "initContainers"
    } else {
        "containers"
    };
    let container = serde_json::to_value(add.container)?;
    ops.push(insert_first(pod, &["spec", list], container));
    if let Some(volume) = add.volume {
        ops.push(append(
            pod,
            &["spec", "volumes"],
            serde_json::to_value(volume)?,
        ));
    }
    ops.extend(set_keys(pod, &["metadata", "annotations"], add.annotations));
    Ok(Patch(ops))
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn lookup<'v>(pod: &'v Value, tokens: &[&str]) -> Option<&'v Value> {
    tokens
        .iter()
        .try_fold(pod, |v, t| v.get(t))
        .filter(|v| !v.is_null())
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

/// Adds `value` where the missing parts of `tokens` start, wrapping it in the
/// objects that are missing on the way (a pod without `metadata` gets one).
fn add_nested(pod: &Value, tokens: &[&str], value: Value) -> PatchOperation {
    let existing = (0..tokens.len())
        .rev()
        .find(|&n| n == 0 || lookup(pod, &tokens[..n]).is_some_and(Value::is_object))
        .unwrap_or(0);
    let wrapped = tokens[existing + 1..]
        .iter()
        .rev()
        .fold(value, |inner, key| json!({ *key: inner }));
    add(pointer(&tokens[..=existing]), wrapped)
}

fn insert_first(pod: &Value, array: &[&str], item: Value) -> PatchOperation {
    match lookup(pod, array) {
        Some(Value::Array(items)) if !items.is_empty() => {
            add(pointer(&[array, &["0"]].concat()), item)
        }
        _ => add_nested(pod, array, json!([item])),
    }
}

fn append(pod: &Value, array: &[&str], item: Value) -> PatchOperation {
    match lookup(pod, array) {
        Some(Value::Array(_)) => add(pointer(&[array, &["-"]].concat()), item),
        _ => add_nested(pod, array, json!([item])),
    }
}

fn set_keys(pod: &Value, map: &[&str], entries: &[(&str, &str)]) -> Vec<PatchOperation> {
    match lookup(pod, map) {
        Some(Value::Object(_)) => entries
            .iter()
            .map(|(key, value)| add(pointer(&[map, &[key]].concat()), json!(value)))
            .collect(),
        _ if entries.is_empty() => Vec::new(),
        _ => {
            let whole: serde_json::Map<String, Value> = entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect();
            vec![add_nested(pod, map, Value::Object(whole))]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(pod: Value, native: bool) -> Vec<String> {
        let container = Container {
            name: "sidelb-proxy".into(),
            ..Default::default()
        };
        let volume = Volume {
            name: "v".into(),
            ..Default::default()
        };
        let add = Additions {
            container: &container,
            native,
            volume: Some(&volume),
            annotations: &[("sidelb.io/injected", "1"), ("a~b/c", "x")],
        };
        let patch = build(&pod, &add).unwrap();
        let mut applied = pod.clone();
        json_patch::patch(&mut applied, &patch).unwrap();
        assert_eq!(
            applied["metadata"]["annotations"]["sidelb.io/injected"],
            "1"
        );
        assert_eq!(applied["metadata"]["annotations"]["a~b/c"], "x");
        patch
            .iter()
            .map(|op| match op {
                PatchOperation::Add(a) => a.path.to_string(),
                other => panic!("only adds: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn missing_arrays_and_maps_are_added_whole() {
        let pod = json!({"metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "app"}]}});
        assert_eq!(
            paths(pod, true),
            [
                "/spec/initContainers",
                "/spec/volumes",
                "/metadata/annotations"
            ]
        );
    }

    #[test]
    fn present_arrays_and_maps_get_elements() {
        let pod = json!({
            "metadata": {"annotations": {"x": "y"}},
            "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "app"}], "volumes": []}
        });
        assert_eq!(
            paths(pod.clone(), true),
            [
                "/spec/initContainers/0",
                "/spec/volumes/-",
                "/metadata/annotations/sidelb.io~1injected",
                "/metadata/annotations/a~0b~1c"
            ]
        );
        assert_eq!(paths(pod, false)[0], "/spec/containers/0");
    }

    #[test]
    fn null_and_missing_parents_are_replaced() {
        let pod = json!({"spec": {"containers": [{"name": "app"}], "initContainers": null, "volumes": null}});
        assert_eq!(
            paths(pod, true),
            ["/spec/initContainers", "/spec/volumes", "/metadata"]
        );
    }
}
