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
//!
//! - `checks`: what a write checks before admission: the type, the namespace, and
//!   whether the namespace takes new objects; validation after it.
//! - `create`: POST, and the handle's create.
//! - `update`: PUT, the read-modify-write loop every update runs, and the handle's
//!   replace.
//! - `patch`: PATCH in its four flavours (server-side apply creates when absent), and
//!   the handle's merge patch.
//!
//! This file holds what every verb shares: the answer with its `Warning` headers, the
//! request body's decoding, dry runs, and get.

mod checks;
mod create;
mod patch;
mod update;

pub use create::{create, create_direct};
pub use patch::{merge_patch_direct, patch};
pub use update::{replace, replace_direct};

use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::Value;

use super::Shared;
use super::meta;
use super::protobuf;
use super::request::{Output, Query, ResourcePath};
use super::resources::ResourceType;
use super::response::{self, Body};
use super::status::ApiError;
use super::table;

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
        "application/yaml" => serde_saphyr::from_slice(body)
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

pub fn finalizers_empty(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
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
