//! Mutating admission, as kube-apiserver runs it on writes.
//!
//! Built-in plugins run first (here: ServiceAccount, on Pod CREATE), then every
//! matching webhook of every MutatingWebhookConfiguration, ordered by configuration
//! name. Each gets an `admission.k8s.io/v1` AdmissionReview over HTTPS and may answer
//! with a base64 JSONPatch. If a webhook changes the object, the chain runs once more:
//! the built-in plugins, then the webhooks that asked for `reinvocationPolicy:
//! IfNeeded` and were called before a later change: a later webhook's patch, or the
//! built-in plugins' second run (the ServiceAccount plugin mounting its token into a
//! container a webhook added). `failurePolicy: Ignore` skips a webhook that cannot
//! be called; `Fail` turns that into the real 500 `failed calling webhook` error.
//! A webhook that denies is never ignored.

mod client;
mod rules;

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};

use super::Shared;
use super::defaults;
use super::meta;
use super::resources::{self, ResourceType};
use super::status::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
        }
    }
}

/// The request being admitted.
pub struct Attributes<'a> {
    pub resource: &'static ResourceType,
    pub subresource: Option<&'a str>,
    pub namespace: &'a str,
    pub operation: Operation,
    pub old: Option<&'a Value>,
    pub dry_run: bool,
}

/// The object after admission and the warnings webhooks returned.
pub struct Admitted {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// One webhook of one configuration, in call order.
struct Webhook {
    id: String,
    name: String,
    spec: Value,
}

fn registered_webhooks(shared: &Shared) -> Vec<Webhook> {
    let Some(configs) = resources::by_kind(
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
    ) else {
        return Vec::new();
    };
    let mut hooks = Vec::new();
    for config in shared.store.list(configs, None).0 {
        let config_name = meta::name(&config).to_string();
        for spec in config
            .get("webhooks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = spec
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            hooks.push(Webhook {
                id: format!("{config_name}/{name}"),
                name,
                spec: spec.clone(),
            });
        }
    }
    hooks
}

fn builtin_plugins(shared: &Shared, attributes: &Attributes<'_>, object: &mut Value) {
    let is_pod_create = attributes.resource.kind == "Pod"
        && attributes.subresource.is_none()
        && attributes.operation == Operation::Create;
    if is_pod_create && shared.settings.service_account_admission {
        defaults::service_account_admission(object);
    }
}

pub async fn mutate(
    shared: &Shared,
    attributes: &Attributes<'_>,
    mut object: Value,
) -> Result<Admitted, ApiError> {
    builtin_plugins(shared, attributes, &mut object);
    let hooks = registered_webhooks(shared);
    let mut warnings = Vec::new();
    let mut reinvocable: HashSet<String> = HashSet::new();
    let mut to_reinvoke: HashSet<String> = HashSet::new();
    let mut changed_by_webhook = false;
    for hook in &hooks {
        let Some(changed) =
            call_if_matching(shared, attributes, hook, &mut object, &mut warnings).await?
        else {
            continue;
        };
        if changed {
            changed_by_webhook = true;
            to_reinvoke.extend(reinvocable.iter().cloned());
        }
        // Only webhooks that were called (even if the call failed and was ignored)
        // are "previously invoked", as in kube-apiserver's dispatcher.
        if hook.spec.get("reinvocationPolicy").and_then(Value::as_str) == Some("IfNeeded") {
            reinvocable.insert(hook.id.clone());
        }
    }
    if changed_by_webhook {
        let last_webhook_output = object.clone();
        builtin_plugins(shared, attributes, &mut object);
        if object != last_webhook_output {
            // The built-in plugins changed what the webhooks last saw: kube-apiserver
            // then reinvokes every IfNeeded webhook called so far.
            to_reinvoke.extend(reinvocable.iter().cloned());
        }
        for hook in hooks.iter().filter(|h| to_reinvoke.contains(&h.id)) {
            call_if_matching(shared, attributes, hook, &mut object, &mut warnings).await?;
        }
    }
    Ok(Admitted { object, warnings })
}

/// Calls `hook` if it applies: `None` if it does not, else whether its patch
/// changed the object.
async fn call_if_matching(
    shared: &Shared,
    attributes: &Attributes<'_>,
    hook: &Webhook,
    object: &mut Value,
    warnings: &mut Vec<String>,
) -> Result<Option<bool>, ApiError> {
    if !rules::rules_match(&hook.spec, attributes) {
        return Ok(None);
    }
    let namespace_labels = if attributes.resource.plural == "namespaces" {
        object.get("metadata").map(|m| json!({ "metadata": m }))
    } else {
        shared
            .store
            .get(resources::namespaces(), "", attributes.namespace)
    };
    match rules::selectors_match(&hook.spec, attributes, object, namespace_labels.as_ref()) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(why) => {
            return Err(ApiError::internal(format!(
                "failed calling webhook \"{}\": {why}",
                hook.name
            )));
        }
    }
    let side_effects = hook
        .spec
        .get("sideEffects")
        .and_then(Value::as_str)
        .unwrap_or("Unknown");
    if attributes.dry_run && !matches!(side_effects, "None" | "NoneOnDryRun") {
        return Err(ApiError::bad_request(format!(
            "admission webhook \"{}\" does not support dry run",
            hook.name
        )));
    }
    call_matching(shared, attributes, hook, object, warnings)
        .await
        .map(Some)
}

/// Calls `hook`, which applies; returns whether its patch changed the object.
async fn call_matching(
    shared: &Shared,
    attributes: &Attributes<'_>,
    hook: &Webhook,
    object: &mut Value,
    warnings: &mut Vec<String>,
) -> Result<bool, ApiError> {
    let ignore_failures = hook.spec.get("failurePolicy").and_then(Value::as_str) == Some("Ignore");
    match call(shared, attributes, hook, object).await {
        Ok(outcome) => {
            warnings.extend(outcome.warnings);
            match outcome.verdict {
                Verdict::Denied(err) => Err(err),
                Verdict::Allowed(None) => Ok(false),
                Verdict::Allowed(Some(patched)) => {
                    let changed = patched != *object;
                    *object = patched;
                    Ok(changed)
                }
            }
        }
        Err(CallError::Calling(_)) if ignore_failures => Ok(false),
        Err(CallError::Calling(why)) => Err(ApiError::internal(format!(
            "failed calling webhook \"{}\": failed to call webhook: {why}",
            hook.name
        ))),
        Err(CallError::Response(why)) if ignore_failures => {
            let _ = why;
            Ok(false)
        }
        Err(CallError::Response(why)) => Err(ApiError::internal(format!(
            "failed calling webhook \"{}\": {why}",
            hook.name
        ))),
        Err(CallError::Patch(why)) => Err(ApiError::internal(why)),
    }
}

enum Verdict {
    Allowed(Option<Value>),
    Denied(ApiError),
}

struct Outcome {
    verdict: Verdict,
    warnings: Vec<String>,
}

/// Why a call produced no verdict. `failurePolicy` applies to the first two.
enum CallError {
    Calling(String),
    Response(String),
    Patch(String),
}

fn review(attributes: &Attributes<'_>, uid: &str, object: &Value, user: &str) -> Value {
    let resource = attributes.resource;
    let kind =
        json!({ "group": resource.group, "version": resource.version, "kind": resource.kind });
    let gvr = json!({ "group": resource.group, "version": resource.version, "resource": resource.plural });
    let options_kind = match attributes.operation {
        Operation::Create => "CreateOptions",
        Operation::Update => "UpdateOptions",
    };
    let mut request = json!({
        "uid": uid,
        "kind": kind,
        "resource": gvr,
        "requestKind": kind,
        "requestResource": gvr,
        "operation": attributes.operation.as_str(),
        "userInfo": { "username": user, "groups": ["system:masters", "system:authenticated"] },
        "object": object,
        "oldObject": attributes.old.cloned().unwrap_or(Value::Null),
        "dryRun": attributes.dry_run,
        "options": { "kind": options_kind, "apiVersion": "meta.k8s.io/v1" },
    });
    if let Some(sub) = attributes.subresource {
        request["subResource"] = json!(sub);
    }
    if resource.namespaced {
        request["namespace"] = json!(attributes.namespace);
    }
    let name = meta::name(object);
    if !name.is_empty() {
        request["name"] = json!(name);
    }
    json!({ "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request })
}

async fn call(
    shared: &Shared,
    attributes: &Attributes<'_>,
    hook: &Webhook,
    object: &Value,
) -> Result<Outcome, CallError> {
    let accepts_v1 = hook
        .spec
        .get("admissionReviewVersions")
        .and_then(Value::as_array)
        .is_some_and(|versions| versions.iter().any(|v| v == "v1"));
    if !accepts_v1 {
        return Err(CallError::Response(
            "webhook does not accept known AdmissionReview versions (v1)".into(),
        ));
    }
    let timeout = Duration::from_secs(
        hook.spec
            .get("timeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(10)
            .clamp(1, 30),
    );
    let services = |ns: &str, name: &str, port: u16| {
        shared
            .webhook_services
            .lock()
            .ok()
            .and_then(|map| map.get(&(ns.to_string(), name.to_string(), port)).copied())
    };
    let config = hook
        .spec
        .get("clientConfig")
        .cloned()
        .unwrap_or(Value::Null);
    let target = client::target(&config, timeout, services).map_err(CallError::Calling)?;
    let uid = meta::new_uid();
    let body = serde_json::to_vec(&review(attributes, &uid, object, &shared.settings.user))
        .unwrap_or_default();
    let answer = client::post(&target, Bytes::from(body), timeout)
        .await
        .map_err(CallError::Calling)?;
    interpret(&hook.name, &uid, &answer, object)
}

fn interpret(
    hook_name: &str,
    uid: &str,
    answer: &[u8],
    object: &Value,
) -> Result<Outcome, CallError> {
    let review: Value = serde_json::from_slice(answer)
        .map_err(|e| CallError::Response(format!("received invalid webhook response: {e}")))?;
    let kind = review.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = review
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if kind != "AdmissionReview" || api_version != "admission.k8s.io/v1" {
        return Err(CallError::Response(format!(
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {api_version}, Kind={kind}"
        )));
    }
    let response = review
        .get("response")
        .filter(|r| r.is_object())
        .ok_or_else(|| CallError::Response("webhook response was absent".into()))?;
    let got_uid = response.get("uid").and_then(Value::as_str).unwrap_or("");
    if got_uid != uid {
        return Err(CallError::Response(format!(
            "expected response.uid=\"{uid}\", got \"{got_uid}\""
        )));
    }
    let warnings = response
        .get("warnings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str().map(str::to_string))
        .collect();
    if response.get("allowed") != Some(&json!(true)) {
        return Ok(Outcome {
            verdict: Verdict::Denied(denial(hook_name, response.get("status"))),
            warnings,
        });
    }
    let Some(patch) = response
        .get("patch")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
    else {
        return Ok(Outcome {
            verdict: Verdict::Allowed(None),
            warnings,
        });
    };
    let patch_type = response
        .get("patchType")
        .and_then(Value::as_str)
        .unwrap_or("");
    if patch_type != "JSONPatch" {
        return Err(CallError::Patch(format!(
            "unsupported patch type {patch_type:?}"
        )));
    }
    let bytes = STANDARD
        .decode(patch)
        .map_err(|e| CallError::Patch(format!("failed to decode webhook patch: {e}")))?;
    let operations: json_patch::Patch = serde_json::from_slice(&bytes)
        .map_err(|e| CallError::Patch(format!("failed to decode webhook patch: {e}")))?;
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &operations).map_err(|e| {
        CallError::Patch(format!(
            "failed to apply patch from webhook \"{hook_name}\": {e}"
        ))
    })?;
    Ok(Outcome {
        verdict: Verdict::Allowed(Some(patched)),
        warnings,
    })
}

/// The error a denying webhook's `status` becomes (never below 400, never `Success`).
fn denial(hook_name: &str, status: Option<&Value>) -> ApiError {
    let denied_by = format!("admission webhook \"{hook_name}\" denied the request");
    let text = |k: &str| {
        status
            .and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let message = match (text("message"), text("reason")) {
        (m, _) if !m.is_empty() => format!("{denied_by}: {m}"),
        (_, r) if !r.is_empty() => format!("{denied_by}: {r}"),
        _ => format!("{denied_by} without explanation"),
    };
    let code = status
        .and_then(|s| s.get("code"))
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .unwrap_or(400);
    let reason = match text("reason").as_str() {
        "" => "BadRequest",
        "Forbidden" => "Forbidden",
        "Invalid" => "Invalid",
        "NotFound" => "NotFound",
        "Conflict" => "Conflict",
        _ => "BadRequest",
    };
    ApiError {
        code,
        reason,
        message,
        details: status.and_then(|s| s.get("details")).cloned(),
    }
}
