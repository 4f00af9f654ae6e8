//! Patching an object: PATCH with a JSON patch, a JSON merge patch, a strategic merge
//! patch or a server-side apply, and the test handle's merge patch.
//!
//! A patch is an update whose new object is the stored one patched, so it runs the
//! update loop and, on a conflict, is applied again to the newer object. A patch that
//! sets `metadata.resourceVersion` makes that version a condition (409 if it is not the
//! stored one). A server-side apply of an object that does not exist creates it; it
//! needs a `fieldManager`.

use std::sync::Arc;

use http::HeaderMap;
use serde_json::{Value, json};

use super::super::Shared;
use super::super::meta;
use super::super::patch::{self, PatchKind};
use super::super::request::{Query, ResourcePath};
use super::super::resources::ResourceType;
use super::super::status::ApiError;
use super::create::create_object;
use super::update::{Proposal, replace_direct, update_with};
use super::{Answer, dry_run};

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
