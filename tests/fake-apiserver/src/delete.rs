//! DELETE of one object or a collection.
//!
//! Preconditions (uid, resourceVersion) are checked, an object with finalizers is only
//! marked (`deletionTimestamp`) until an update removes them, and a Namespace takes
//! everything in it along at once (there is no namespace controller). Pods, Services
//! and Namespaces answer with the deleted object, other resources with a `Status` of
//! success, as their real registries do.

use http::StatusCode;
use serde_json::{Value, json};

use super::Shared;
use super::crud::{self, Answer};
use super::list_watch;
use super::meta;
use super::request::{Query, ResourcePath};
use super::resources::{self, ResourceType};
use super::status::ApiError;

/// `DeleteOptions` from the body or the query.
struct DeleteOptions {
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

fn delete_options(query: &Query, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    let text = |pointer: &str| {
        options
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let body_dry_run = options
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|d| d.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        uid: text("/preconditions/uid"),
        resource_version: text("/preconditions/resourceVersion"),
        dry_run: body_dry_run || crud::dry_run(query),
    })
}

fn success_status(resource: &ResourceType, object: &Value) -> Value {
    let mut details = json!({ "name": meta::name(object), "kind": resource.plural, "uid": meta::uid(object).unwrap_or("") });
    if !resource.group.is_empty() {
        details["group"] = json!(resource.group);
    }
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details })
}

/// Deletes one object, honouring preconditions and finalizers. A Namespace takes its
/// contents with it (at once; there is no namespace controller).
fn delete_one(
    shared: &Shared,
    resource: &'static ResourceType,
    namespace: &str,
    name: &str,
    options: &DeleteOptions,
) -> Result<Answer, ApiError> {
    let old = shared
        .store
        .get(resource, namespace, name)
        .ok_or_else(|| ApiError::not_found(resource, name))?;
    if let Some(uid) = &options.uid
        && Some(uid.as_str()) != meta::uid(&old)
    {
        return Err(ApiError::conflict(
            resource,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta::uid(&old).unwrap_or("")
            ),
        ));
    }
    if let Some(rv) = &options.resource_version
        && Some(rv.as_str())
            != old
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
    {
        return Err(ApiError::conflict(
            resource,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                old.pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            ),
        ));
    }
    let expected = meta::resource_version(&old);
    if options.dry_run {
        return Ok(Answer::new(StatusCode::OK, old));
    }
    if !crud::finalizers_empty(&old) {
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(Answer::new(StatusCode::ACCEPTED, old));
        }
        let mut marked = old.clone();
        let metadata = meta::metadata_mut(&mut marked);
        metadata.insert("deletionTimestamp".into(), json!(meta::now()));
        metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
        let marked = shared
            .store
            .update(resource, namespace, marked, expected.unwrap_or(0))?;
        return Ok(Answer::new(StatusCode::ACCEPTED, marked));
    }
    if resource.plural == "namespaces" {
        for contained in resources::RESOURCES.iter().filter(|r| r.namespaced) {
            for object in shared.store.list(contained, Some(name)).0 {
                let _ = shared
                    .store
                    .delete(contained, name, meta::name(&object), None);
            }
        }
    }
    let mut deleted = shared.store.delete(resource, namespace, name, expected)?;
    if resource.returns_deleted_object {
        if resource.plural == "namespaces" {
            meta::metadata_mut(&mut deleted).insert("deletionTimestamp".into(), json!(meta::now()));
            deleted["status"] = json!({ "phase": "Terminating" });
        }
        Ok(Answer::new(StatusCode::OK, deleted))
    } else {
        Ok(Answer::new(
            StatusCode::OK,
            success_status(resource, &deleted),
        ))
    }
}

pub fn delete(
    shared: &Shared,
    path: &ResourcePath,
    query: &Query,
    body: &[u8],
) -> Result<Answer, ApiError> {
    let options = delete_options(query, body)?;
    let namespace = path.namespace.as_deref().unwrap_or("");
    match path.name.as_deref() {
        Some(name) => delete_one(shared, path.resource, namespace, name, &options),
        None => {
            let selectors = list_watch::selectors(path, query)?;
            let (objects, rv) = shared.store.list(path.resource, path.namespace.as_deref());
            let mut deleted = Vec::new();
            for object in objects.iter().filter(|o| selectors.matches(o)) {
                let ns = meta::namespace(object).unwrap_or("");
                match delete_one(shared, path.resource, ns, meta::name(object), &options) {
                    Ok(answer) => deleted.push(meta::without_type_meta(&answer.object)),
                    Err(err) if err.code == 404 => {}
                    Err(err) => return Err(err),
                }
            }
            let list = json!({
                "kind": path.resource.list_kind(),
                "apiVersion": path.resource.api_version(),
                "metadata": { "resourceVersion": rv.to_string() },
                "items": deleted,
            });
            Ok(Answer::new(StatusCode::OK, list))
        }
    }
}

pub fn delete_direct(
    shared: &Shared,
    resource: &'static ResourceType,
    namespace: &str,
    name: &str,
) -> Result<Value, ApiError> {
    let options = DeleteOptions {
        uid: None,
        resource_version: None,
        dry_run: false,
    };
    delete_one(shared, resource, namespace, name, &options).map(|answer| answer.object)
}
