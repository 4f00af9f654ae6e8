//! Updating an object: PUT, the loop every update and patch runs, and the test
//! handle's replace.
//!
//! An update reads the stored object, computes the new one from it (the body of a PUT,
//! or the stored object patched), runs admission and writes with the stored
//! resourceVersion as the condition. If another write got in between (409 `Conflict`)
//! and the client did not insist on a resourceVersion, it starts over from the new
//! stored object, a few times; a client that did insist gets the 409. The `status`
//! subresource changes only `status`, a Namespace's `finalize` only `spec`. An update
//! that releases the last finalizer of an object being deleted deletes it.

use std::sync::Arc;

use http::StatusCode;
use serde_json::Value;

use super::super::Shared;
use super::super::admission::{self, Operation};
use super::super::defaults;
use super::super::meta;
use super::super::request::{Query, ResourcePath};
use super::super::resources::ResourceType;
use super::super::status::ApiError;
use super::checks::{check_namespace, check_type, invalid_unless_empty, resource_of};
use super::{Answer, dry_run, finalizers_empty};

const CONFLICT_RETRIES: usize = 5;

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
pub(super) type Proposal = (Value, Option<u64>);

pub(super) async fn update_with(
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
