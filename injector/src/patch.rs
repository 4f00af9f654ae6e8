//! The RFC 6902 JSON Patch that adds the sidecar to a pod.
//!
//! Only `add` operations, each for one thing the injector owns, so the app's
//! containers are never rewritten. An `add` needs its parent to exist and
//! inserts into arrays at an index, so each path is chosen from the pod as it
//! arrived: the whole array or map when it is missing (or `null`), an element
//! or key when it is there (an empty list of containers is added whole). Paths are built from tokens, which escapes `/` as
//! `~1` and `~` as `~0` (`/metadata/annotations/sidelb.io~1injected`).

use crate::review::PodObject;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Container, Volume};
use serde_json::{Value, json};

/// What to add to one pod.
pub struct Additions<'a> {
    pub container: &'a Container,
    /// First init container (native sidecar) or first container (classic).
    pub native: bool,
    pub volumes: &'a [Volume],
    pub annotations: &'a [(&'a str, &'a str)],
}

/// The patch for `pod` (the object from the review, as read).
pub fn build(pod: &PodObject, add: &Additions<'_>) -> Result<Patch, serde_json::Error> {
    let spec = pod.spec.as_ref();
    let mut ops = Vec::new();
    let (list, present) = if add.native {
        (
            "initContainers",
            spec.and_then(|s| s.init_containers.as_deref()),
        )
    } else {
        ("containers", spec.map(|s| &s.containers[..]))
    };
    let container = serde_json::to_value(add.container)?;
    ops.push(match present {
        Some(items) if !items.is_empty() => op(&["spec", list, "0"], container),
        _ => add_under(spec.is_some(), "spec", list, json!([container])),
    });
    if !add.volumes.is_empty() {
        match spec.and_then(|s| s.volumes.as_ref()) {
            Some(_) => {
                for volume in add.volumes {
                    ops.push(op(&["spec", "volumes", "-"], serde_json::to_value(volume)?));
                }
            }
            None => ops.push(add_under(
                spec.is_some(),
                "spec",
                "volumes",
                serde_json::to_value(add.volumes)?,
            )),
        }
    }
    let metadata = pod.metadata.as_ref();
    match metadata.and_then(|m| m.annotations.as_ref()) {
        Some(_) => ops.extend(
            add.annotations
                .iter()
                .map(|(key, value)| op(&["metadata", "annotations", key], json!(value))),
        ),
        None if add.annotations.is_empty() => {}
        None => {
            let whole: serde_json::Map<String, Value> = add
                .annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect();
            let whole = Value::Object(whole);
            ops.push(add_under(
                metadata.is_some(),
                "metadata",
                "annotations",
                whole,
            ));
        }
    }
    Ok(Patch(ops))
}

fn op(tokens: &[&str], value: Value) -> PatchOperation {
    let path = PointerBuf::from_tokens(tokens.iter().copied());
    PatchOperation::Add(AddOperation { path, value })
}

/// Adds `key` under the top-level `parent`, or the parent itself with it
/// when the pod has none (a pod without `metadata` gets one).
fn add_under(parent_exists: bool, parent: &str, key: &str, value: Value) -> PatchOperation {
    if parent_exists {
        op(&[parent, key], value)
    } else {
        op(&[parent], json!({ key: value }))
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
        let volumes = [
            Volume {
                name: "v".into(),
                ..Default::default()
            },
            Volume {
                name: "w".into(),
                ..Default::default()
            },
        ];
        let add = Additions {
            container: &container,
            native,
            volumes: &volumes,
            annotations: &[("sidelb.io/injected", "1"), ("a~b/c", "x")],
        };
        let typed: PodObject = serde_json::from_value(pod.clone()).unwrap();
        let patch = build(&typed, &add).unwrap();
        let mut applied = pod.clone();
        json_patch::patch(&mut applied, &patch).unwrap();
        assert_eq!(
            applied["metadata"]["annotations"]["sidelb.io/injected"],
            "1"
        );
        assert_eq!(applied["metadata"]["annotations"]["a~b/c"], "x");
        let names: Vec<&str> = applied["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(names, ["v", "w"]);
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
