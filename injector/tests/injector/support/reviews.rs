//! AdmissionReview fixtures (as kube-apiserver sends them) and the variations
//! the tests make of them.

use serde_json::{Value, json};
use std::collections::BTreeMap;

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A Deployment's pod: one container, no init containers, annotations or volumes.
pub fn bare() -> Value {
    fixture("pod-create-bare")
}

/// A Job's pod with an init container, volumes (the service-account one
/// included) and annotations.
pub fn job() -> Value {
    fixture("pod-create-job")
}

/// Sets the value at `pointer`, creating objects on the way (an index one
/// past the end, or `-`, appends).
pub fn set(review: &mut Value, pointer: &str, value: Value) {
    let mut target = review;
    let tokens: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    for token in &tokens {
        if target.is_null() {
            *target = json!({});
        }
        target = match target {
            Value::Object(map) => map.entry(token.clone()).or_insert(Value::Null),
            Value::Array(items) => {
                let index = match token.as_str() {
                    "-" => items.len(),
                    n => n.parse::<usize>().expect("an index"),
                };
                if index == items.len() {
                    items.push(Value::Null);
                }
                &mut items[index]
            }
            other => panic!("cannot descend into {other}"),
        };
    }
    *target = value;
}

pub fn with_annotations(mut review: Value, annotations: &[(&str, &str)]) -> Value {
    for (k, v) in annotations {
        let key = k.replace('~', "~0").replace('/', "~1");
        set(
            &mut review,
            &format!("/request/object/metadata/annotations/{key}"),
            json!(v),
        );
    }
    review
}

pub fn with_labels(mut review: Value, labels: &[(&str, &str)]) -> Value {
    for (k, v) in labels {
        let key = k.replace('~', "~0").replace('/', "~1");
        set(
            &mut review,
            &format!("/request/object/metadata/labels/{key}"),
            json!(v),
        );
    }
    review
}

/// The same pod as an UPDATE (a label change), as the API server sends it.
pub fn update_of(mut review: Value) -> Value {
    set(&mut review, "/request/operation", json!("UPDATE"));
    set(&mut review, "/request/name", json!("web-7d9f8c6b5d-x2k9p"));
    set(
        &mut review,
        "/request/object/metadata/name",
        json!("web-7d9f8c6b5d-x2k9p"),
    );
    let old = review["request"]["object"].clone();
    set(&mut review, "/request/oldObject", old);
    set(
        &mut review,
        "/request/object/metadata/labels/tier",
        json!("frontend"),
    );
    set(
        &mut review,
        "/request/options",
        json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}),
    );
    review
}

/// A review for `pod` (a pod object that went through admission already).
pub fn readmission(mut review: Value, pod: Value, uid: &str) -> Value {
    set(&mut review, "/request/uid", json!(uid));
    set(&mut review, "/request/object", pod);
    review
}

/// The `sidelb-proxy` container and whether it is an init container.
pub fn proxy(pod: &Value) -> (&Value, bool) {
    for (list, native) in [("initContainers", true), ("containers", false)] {
        let found = pod["spec"][list]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == "sidelb-proxy");
        if let Some(c) = found {
            return (c, native);
        }
    }
    panic!("no sidelb-proxy container in {pod:#}")
}

/// A container's plain `value` variables.
pub fn env_values(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

pub fn names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}
