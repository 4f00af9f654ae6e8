//! What a write checks: that the body is the URL's kind, that its namespace is the
//! URL's, that the namespace takes new objects (NamespaceLifecycle), and, once
//! admission has run, that the object is valid (422 `Invalid`).
//!
//! A body may leave `apiVersion`, `kind` and `metadata.namespace` out: they are filled
//! in from the URL, as kube-apiserver does. Objects the test handle writes name their
//! type themselves ([`resource_of`]).

use serde_json::{Value, json};

use super::super::Shared;
use super::super::meta;
use super::super::resources::{self, ResourceType};
use super::super::status::ApiError;
use super::super::validation;

/// Checks `apiVersion`/`kind` against the resource and fills them in when absent.
pub(super) fn check_type(resource: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
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
pub(super) fn check_namespace(
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
pub(super) fn ensure_namespace_accepts(
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

pub(super) fn invalid_unless_empty(
    resource: &ResourceType,
    object: &Value,
) -> Result<(), ApiError> {
    let errors = validation::validate(object, resource);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(resource, meta::name(object), &errors))
    }
}

/// The resource of an object given to the test handle.
pub(super) fn resource_of(object: &Value) -> Result<&'static ResourceType, ApiError> {
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
