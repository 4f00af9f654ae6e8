//! get, create, update (PUT), patch and delete of single objects and collections.
//!
//! Each write follows kube-apiserver's order: decode and default, check the namespace
//! exists (NamespaceLifecycle), run mutating admission, set the system fields
//! (`generateName`, uid, creationTimestamp), validate (422), then store with optimistic
//! concurrency (409). An update that changes nothing is not written, so it makes no
//! watch event, as on the real server. Objects with finalizers are only marked deleted
//! until their finalizers are removed.
//!
//! The `*_direct` functions are the same paths without admission, for the test
//! handle's synchronous helpers. Deletion is in `delete`.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::{Value, json};

use super::Shared;
use super::admission::{self, Operation};
use super::defaults;
use super::meta;
use super::patch::{self, PatchKind};
use super::protobuf;
use super::request::{Output, Query, ResourcePath};
use super::resources::{self, ResourceType};
use super::response::{self, Body};
use super::status::ApiError;
use super::table;
use super::validation;

const CONFLICT_RETRIES: usize = 5;

/// An object answer plus the webhook warnings that go in `Warning` headers.
pub struct Answer {
    pub code: StatusCode,
    pub object: Value,
    pub warnings: Vec<String>,
}

impl Answer {
    pub fn new(code: StatusCode, object: Value) -> Self {
        Self {
            code,
            object,
            warnings: Vec::new(),
        }
    }

    pub fn into_response(self, resource: &ResourceType, output: Output) -> Response<Body> {
        let body = render(resource, &self.object, output);
        let mut response = response::encoded(self.code, &body, output);
        for warning in &self.warnings {
            let text = format!(
                "299 - {}",
                serde_json::to_string(warning).unwrap_or_default()
            );
            if let Ok(value) = HeaderValue::from_str(&text) {
                response.headers_mut().append("warning", value);
            }
        }
        response
    }
}

fn render(resource: &ResourceType, object: &Value, output: Output) -> Value {
    let is_object = object.get("kind").and_then(Value::as_str) == Some(resource.kind);
    match output {
        Output::Table if is_object => table::table(
            resource,
            std::slice::from_ref(object),
            meta::resource_version(object).unwrap_or(0),
            true,
        ),
        Output::PartialMetadata if is_object => table::metadata_only(object),
        _ => object.clone(),
    }
}

pub fn dry_run(query: &Query) -> bool {
    query.get("dryRun") == Some("All")
}

/// Decodes a request body (JSON, YAML, or protobuf for a few kinds) into an object.
pub fn decode_body(body: &[u8], headers: &HeaderMap) -> Result<Value, ApiError> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let value: Value = match essence {
        "application/json" | "*/*" | "" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))?,
        "application/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
        protobuf::CONTENT_TYPE => protobuf::decode(body)?,
        _ => {
            return Err(ApiError::unsupported_media_type(
                content_type,
                "application/json, application/yaml",
            ));
        }
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

/// Checks `apiVersion`/`kind` against the resource and fills them in when absent.
fn check_type(resource: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    let api_version = resource.api_version();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or(resource.kind)
        .to_string();
    let version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or(&api_version)
        .to_string();
    if kind != resource.kind || version != api_version {
        return Err(ApiError::bad_request(format!(
            "{kind} in version {version:?} cannot be handled as a {}: the object's kind or apiVersion does not match the request",
            resource.kind
        )));
    }
    object["kind"] = json!(resource.kind);
    object["apiVersion"] = json!(api_version);
    Ok(())
}

/// The object's namespace: the URL's, which a namespace in the body must agree with.
fn check_namespace(
    resource: &ResourceType,
    url_namespace: Option<&str>,
    object: &mut Value,
) -> Result<String, ApiError> {
    if !resource.namespaced {
        meta::metadata_mut(object).remove("namespace");
        return Ok(String::new());
    }
    let Some(url_namespace) = url_namespace else {
        return Err(ApiError::method_not_allowed());
    };
    if let Some(body_namespace) = meta::namespace(object)
        && body_namespace != url_namespace
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    meta::metadata_mut(object).insert("namespace".into(), json!(url_namespace));
    Ok(url_namespace.to_string())
}

/// NamespaceLifecycle: no new objects in a namespace that is missing or terminating.
fn ensure_namespace_accepts(
    shared: &Shared,
    resource: &ResourceType,
    namespace: &str,
    name: &str,
) -> Result<(), ApiError> {
    if !resource.namespaced {
        return Ok(());
    }
    match shared.store.get(resources::namespaces(), "", namespace) {
        None => Err(ApiError::not_found(resources::namespaces(), namespace)),
        Some(ns) if ns.pointer("/metadata/deletionTimestamp").is_some() => {
            Err(ApiError::forbidden_message(
                format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                    resource.qualified()
                ),
                resource,
                name,
            ))
        }
        Some(_) => Ok(()),
    }
}

fn invalid_unless_empty(resource: &ResourceType, object: &Value) -> Result<(), ApiError> {
    let errors = validation::validate(object, resource);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(resource, meta::name(object), &errors))
    }
}

/// The end of a create: system fields, validation, store.
fn commit_create(
    shared: &Shared,
    resource: &'static ResourceType,
    namespace: &str,
    mut object: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    defaults::prepare_for_create(resource, &mut object, &shared.cluster_ips);
    invalid_unless_empty(resource, &object)?;
    if dry_run {
        if shared
            .store
            .get(resource, namespace, meta::name(&object))
            .is_some()
        {
            return Err(ApiError::already_exists(resource, meta::name(&object)));
        }
        return Ok(object);
    }
    shared.store.create(resource, namespace, object)
}

/// Everything before admission of a create; returns the object and its namespace.
fn prepare_create(
    shared: &Shared,
    resource: &'static ResourceType,
    url_namespace: Option<&str>,
    mut object: Value,
) -> Result<(Value, String), ApiError> {
    check_type(resource, &mut object)?;
    let namespace = check_namespace(resource, url_namespace, &mut object)?;
    ensure_namespace_accepts(shared, resource, &namespace, meta::name(&object))?;
    defaults::apply_scheme_defaults(resource, &mut object);
    Ok((object, namespace))
}

pub async fn create(
    shared: &Arc<Shared>,
    path: &ResourcePath,
    query: &Query,
    object: Value,
) -> Result<Answer, ApiError> {
    if path.name.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    create_object(
        shared,
        path.resource,
        path.namespace.as_deref(),
        object,
        dry_run(query),
    )
    .await
}

async fn create_object(
    shared: &Arc<Shared>,
    resource: &'static ResourceType,
    url_namespace: Option<&str>,
    object: Value,
    dry_run: bool,
) -> Result<Answer, ApiError> {
    let (object, namespace) = prepare_create(shared, resource, url_namespace, object)?;
    let attributes = admission::Attributes {
        resource,
        subresource: None,
        namespace: &namespace,
        operation: Operation::Create,
        old: None,
        dry_run,
    };
    let admitted = admission::mutate(shared, &attributes, object).await?;
    let stored = commit_create(shared, resource, &namespace, admitted.object, dry_run)?;
    Ok(Answer {
        code: StatusCode::CREATED,
        object: stored,
        warnings: admitted.warnings,
    })
}

pub fn create_direct(shared: &Shared, object: Value) -> Result<Value, ApiError> {
    let resource = resource_of(&object)?;
    let namespace = meta::namespace(&object).unwrap_or("default").to_string();
    let (mut object, namespace) = prepare_create(shared, resource, Some(&namespace), object)?;
    if resource.kind == "Pod" && shared.settings.service_account_admission {
        defaults::service_account_admission(&mut object);
    }
    commit_create(shared, resource, &namespace, object, false)
}

/// The resource of an object given to the test handle.
pub fn resource_of(object: &Value) -> Result<&'static ResourceType, ApiError> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    resources::by_kind(api_version, kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "no kind {kind:?} is registered for version {api_version:?}"
        ))
    })
}

pub fn finalizers_empty(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
}

/// The end of an update: validation, finalizer release, no-op detection, store.
fn commit_update(
    shared: &Shared,
    resource: &'static ResourceType,
    namespace: &str,
    new: Value,
    old: &Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    invalid_unless_empty(resource, &new)?;
    let expected = meta::resource_version(old).unwrap_or(0);
    if new.pointer("/metadata/deletionTimestamp").is_some() && finalizers_empty(&new) {
        if dry_run {
            return Ok(new);
        }
        return shared
            .store
            .delete(resource, namespace, meta::name(old), Some(expected));
    }
    let mut unchanged = new.clone();
    meta::set_resource_version(&mut unchanged, expected);
    if unchanged == *old || dry_run {
        return Ok(unchanged);
    }
    shared.store.update(resource, namespace, new, expected)
}

/// The object an update writes, given what the client sent and what is stored.
fn next_version(
    resource: &ResourceType,
    subresource: Option<&str>,
    provided: Value,
    old: &Value,
) -> Value {
    match subresource {
        Some("status") => {
            let mut next = old.clone();
            next["status"] = provided.get("status").cloned().unwrap_or(Value::Null);
            next
        }
        Some(_) => {
            let mut next = old.clone();
            next["spec"] = provided.get("spec").cloned().unwrap_or(Value::Null);
            next
        }
        None => {
            let mut next = provided;
            defaults::prepare_for_update(resource, &mut next, old);
            next
        }
    }
}

/// What an update sends: the new object, and the resourceVersion it insists on.
type Proposal = (Value, Option<u64>);

async fn update_with(
    shared: &Arc<Shared>,
    path: &ResourcePath,
    dry_run: bool,
    propose: impl Fn(&Value) -> Result<Proposal, ApiError>,
) -> Result<Answer, ApiError> {
    let resource = path.resource;
    let Some(name) = path.name.as_deref() else {
        return Err(ApiError::method_not_allowed());
    };
    let namespace = path.namespace.clone().unwrap_or_default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let old = shared
            .store
            .get(resource, &namespace, name)
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        let (mut provided, precondition) = propose(&old)?;
        if precondition.is_some() && precondition != meta::resource_version(&old) {
            return Err(ApiError::modified(resource, name));
        }
        check_type(resource, &mut provided)?;
        let provided_name = meta::name(&provided);
        if provided_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({provided_name}) does not match the name on the URL ({name})"
            )));
        }
        check_namespace(resource, path.namespace.as_deref(), &mut provided)?;
        defaults::apply_scheme_defaults(resource, &mut provided);
        let new = next_version(resource, path.subresource.as_deref(), provided, &old);
        let attributes = admission::Attributes {
            resource,
            subresource: path.subresource.as_deref(),
            namespace: &namespace,
            operation: Operation::Update,
            old: Some(&old),
            dry_run,
        };
        let admitted = admission::mutate(shared, &attributes, new).await?;
        match commit_update(shared, resource, &namespace, admitted.object, &old, dry_run) {
            Err(err)
                if err.reason == "Conflict"
                    && precondition.is_none()
                    && attempt < CONFLICT_RETRIES =>
            {
                continue;
            }
            Err(err) => return Err(err),
            Ok(object) => {
                return Ok(Answer {
                    code: StatusCode::OK,
                    object,
                    warnings: admitted.warnings,
                });
            }
        }
    }
}

pub async fn replace(
    shared: &Arc<Shared>,
    path: &ResourcePath,
    query: &Query,
    provided: Value,
) -> Result<Answer, ApiError> {
    let precondition = meta::resource_version(&provided);
    if provided
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|rv| !rv.is_empty())
        && precondition.is_none()
    {
        return Err(ApiError::bad_request(
            "invalid resourceVersion in the request body",
        ));
    }
    update_with(shared, path, dry_run(query), |_| {
        Ok((provided.clone(), precondition))
    })
    .await
}

pub fn replace_direct(shared: &Shared, provided: Value) -> Result<Value, ApiError> {
    let resource = resource_of(&provided)?;
    let namespace = if resource.namespaced {
        meta::namespace(&provided).unwrap_or("default").to_string()
    } else {
        String::new()
    };
    let name = meta::name(&provided).to_string();
    let precondition = meta::resource_version(&provided);
    for _ in 0..CONFLICT_RETRIES {
        let old = shared
            .store
            .get(resource, &namespace, &name)
            .ok_or_else(|| ApiError::not_found(resource, &name))?;
        if precondition.is_some() && precondition != meta::resource_version(&old) {
            return Err(ApiError::modified(resource, &name));
        }
        let mut provided = provided.clone();
        check_type(resource, &mut provided)?;
        let url_namespace = resource.namespaced.then_some(namespace.as_str());
        check_namespace(resource, url_namespace, &mut provided)?;
        defaults::apply_scheme_defaults(resource, &mut provided);
        let new = next_version(resource, None, provided, &old);
        match commit_update(shared, resource, &namespace, new, &old, false) {
            Err(err) if err.reason == "Conflict" && precondition.is_none() => continue,
            other => return other,
        }
    }
    Err(ApiError::modified(resource, &name))
}

fn patch_sets_resource_version(kind: PatchKind, patch: &Value) -> bool {
    match kind {
        PatchKind::Json => patch.as_array().is_some_and(|ops| {
            ops.iter().any(|op| {
                op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion")
            })
        }),
        _ => patch
            .pointer("/metadata/resourceVersion")
            .is_some_and(|rv| !rv.is_null()),
    }
}

pub async fn patch(
    shared: &Arc<Shared>,
    path: &ResourcePath,
    query: &Query,
    body: &[u8],
    headers: &HeaderMap,
) -> Result<Answer, ApiError> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let kind = PatchKind::from_content_type(content_type)?;
    let resource = path.resource;
    let patch_value: Value = match kind {
        PatchKind::Apply => patch::parse_apply_body(body)?,
        _ => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
    };
    if kind == PatchKind::Apply {
        if query.get("fieldManager").is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let name = path.name.as_deref().unwrap_or("");
        let namespace = path.namespace.clone().unwrap_or_default();
        if shared.store.get(resource, &namespace, name).is_none() {
            let mut object = patch_value;
            meta::metadata_mut(&mut object).insert("name".into(), json!(name));
            return create_object(
                shared,
                resource,
                path.namespace.as_deref(),
                object,
                dry_run(query),
            )
            .await;
        }
    }
    let sets_rv = patch_sets_resource_version(kind, &patch_value);
    let propose = |old: &Value| -> Result<Proposal, ApiError> {
        let patched = match kind {
            PatchKind::Json => patch::json_patch(old, body)?,
            PatchKind::Merge => patch::merge_patch(old, &patch_value)?,
            PatchKind::StrategicMerge | PatchKind::Apply => {
                patch::strategic_merge(old, &patch_value, resource.kind)?
            }
        };
        let precondition = if sets_rv {
            meta::resource_version(&patched).or(Some(0))
        } else {
            None
        };
        Ok((patched, precondition))
    };
    update_with(shared, path, dry_run(query), propose).await
}

pub fn merge_patch_direct(
    shared: &Shared,
    resource: &'static ResourceType,
    namespace: &str,
    name: &str,
    patch_value: &Value,
) -> Result<Value, ApiError> {
    let old = shared
        .store
        .get(resource, namespace, name)
        .ok_or_else(|| ApiError::not_found(resource, name))?;
    let mut patched = patch::merge_patch(&old, patch_value)?;
    meta::set_resource_version(&mut patched, meta::resource_version(&old).unwrap_or(0));
    replace_direct(shared, patched)
}

pub fn get(
    shared: &Shared,
    path: &ResourcePath,
    output: Output,
) -> Result<Response<Body>, ApiError> {
    let name = path.name.as_deref().unwrap_or("");
    let object = shared
        .store
        .get(path.resource, path.namespace.as_deref().unwrap_or(""), name)
        .ok_or_else(|| ApiError::not_found(path.resource, name))?;
    Ok(Answer::new(StatusCode::OK, object).into_response(path.resource, output))
}
