//! The injector's AdmissionReview handling (`injector/src/webhook.rs`,
//! `policy.rs`, `patch.rs`): what kube-apiserver sends it, and what a user's
//! annotations say.
//!
//! - any body (bytes, or the seed reviews mutated): no panic; an answer is a
//!   review for the request's uid, a refusal of the body says why;
//! - a Pod CREATE with random values in sidelb's annotations is refused
//!   exactly when one of them fails its setting's check, and the refusal
//!   names every such annotation; otherwise the patch applies to the pod,
//!   adds the proxy with each annotation's value in its variable, and a
//!   second call on the patched pod (reinvocation) adds nothing.

use base64::Engine;
use proptest::prelude::*;
use serde_json::{Value, json};
use sidelb_config::{SETTINGS, Setting, names};
use sidelb_fuzz::{config, corpus, mutated};
use sidelb_injector::config::{InjectorConfig, SidecarDefaults};
use sidelb_injector::webhook::mutate;
use std::collections::BTreeMap;
use std::sync::LazyLock;

const TARGET: &str = "admission";

static DEFAULTS: LazyLock<SidecarDefaults> = LazyLock::new(|| {
    InjectorConfig::parse_from([
        "sidelb-injector",
        "--tls-cert",
        "/c.pem",
        "--tls-key",
        "/k.pem",
    ])
    .expect("default configuration")
    .sidecar
});

/// Answers `body`; checks the answer's shape. Returns the response object.
fn answer(body: &[u8]) -> Option<Value> {
    match mutate(body, &DEFAULTS) {
        Ok(answer) => {
            let body = answer.encode().expect("the answer encodes");
            let review: Value = serde_json::from_slice(&body).expect("the answer is JSON");
            assert_eq!(review["kind"], "AdmissionReview");
            let response = review["response"].clone();
            assert!(response["uid"].as_str().is_some_and(|u| !u.is_empty()));
            Some(response)
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

#[test]
fn corpus_replays() {
    for (name, body) in corpus(TARGET) {
        let response = answer(&body);
        if name.starts_with("refuse-") {
            assert!(response.is_none(), "{name}: answered {response:?}");
        } else if name.starts_with("accept-") {
            assert!(response.is_some(), "{name}: not answered");
        }
    }
}

/// The annotations sidelb reads through its settings.
fn annotated() -> Vec<&'static Setting> {
    SETTINGS.iter().filter(|s| s.annotation.is_some()).collect()
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,16}",
        "[0-9]{1,6}(ms|s|m|h)?",
        "(p2c-ewma|round-robin|least-request|info|debug|json|plain)",
        "[a-z]{1,8}(\\.[a-z]{1,8})?:[0-9]{1,5}=[0-9]{1,5}",
        " [0-9]{1,3} ",
    ]
}

fn pod(annotations: &BTreeMap<String, String>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "generateName": "app-", "namespace": "shop", "annotations": annotations },
        "spec": { "containers": [{ "name": "app", "image": "registry.example/app:1" }] },
    })
}

fn review(object: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "shop",
            "operation": "CREATE",
            "object": object,
        },
    }))
    .expect("JSON")
}

fn proxy_env(pod: &Value) -> Option<BTreeMap<String, String>> {
    let spec = &pod["spec"];
    let containers = spec["initContainers"]
        .as_array()
        .into_iter()
        .chain(spec["containers"].as_array())
        .flatten();
    let proxy = containers
        .into_iter()
        .find(|c| c["name"] == "sidelb-proxy")?;
    Some(
        proxy["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_owned(),
                    e["value"].as_str()?.to_owned(),
                ))
            })
            .collect(),
    )
}

proptest! {
    #![proptest_config(config(TARGET, 300))]

    #[test]
    fn any_body(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        answer(&body);
    }

    #[test]
    fn mutated_corpus(body in mutated(TARGET, 8)) {
        answer(&body);
    }

    #[test]
    fn annotations_are_refused_exactly_when_invalid_and_injected_faithfully(
        chosen in proptest::collection::btree_map(0..annotated().len(), value(), 0..4),
        typo in any::<bool>(),
    ) {
        let settings = annotated();
        let mut annotations: BTreeMap<String, String> = chosen
            .iter()
            .map(|(i, v)| (settings[*i].annotation.unwrap_or_default().to_owned(), v.clone()))
            .collect();
        if typo {
            annotations.insert("sidelb.io/balancerr".into(), "round-robin".into());
        }
        // TLS services need their CAs named too, a rule across two
        // annotations rather than of either value: name them whenever TLS is chosen.
        let tls = settings
            .iter()
            .find(|s| s.env == sidelb_config::settings::BACKEND_TLS)
            .and_then(|s| s.annotation);
        if tls.is_some_and(|key| annotations.contains_key(key)) {
            annotations.insert(names::BACKEND_TLS_CA.into(), "secret:backend-ca".into());
        }
        let object = pod(&annotations);
        let response = answer(&review(&object)).expect("a Pod CREATE is answered");
        let invalid: Vec<&str> = chosen
            .iter()
            .filter_map(|(i, v)| {
                let s = settings[*i];
                let key = s.annotation?;
                s.check(key, v.trim()).is_err().then_some(key)
            })
            .collect();
        if !invalid.is_empty() {
            prop_assert_eq!(&response["allowed"], false, "{:?}", response);
            let message = response["status"]["message"].as_str().unwrap_or_default();
            for key in invalid {
                prop_assert!(message.contains(key), "{} not in {}", key, message);
            }
            return Ok(());
        }
        prop_assert_eq!(&response["allowed"], true, "{:?}", response);
        let patch = response["patch"].as_str().expect("a patch");
        let patch = base64::engine::general_purpose::STANDARD.decode(patch).expect("base64");
        let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("a JSON patch");
        let mut patched = object.clone();
        json_patch::patch(&mut patched, &patch).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let env = proxy_env(&patched).expect("the proxy container");
        for (i, v) in &chosen {
            let s = settings[*i];
            prop_assert_eq!(env.get(s.env).map(String::as_str), Some(v.trim()), "{}", s.env);
        }
        if typo {
            let warnings = response["warnings"].to_string();
            prop_assert!(warnings.contains("sidelb.io/balancerr"), "{}", warnings);
        }
        // Reinvocation: the patched pod gets nothing more.
        let again = answer(&review(&patched)).expect("answered");
        prop_assert_eq!(&again["allowed"], true);
        prop_assert!(again.get("patch").is_none_or(Value::is_null), "{:?}", again);
    }
}
