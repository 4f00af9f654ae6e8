//! The `admission.k8s.io/v1` AdmissionReview, as far as the injector reads and
//! writes it.
//!
//! k8s-openapi does not carry the admission types (they are not in the API
//! server's OpenAPI document), so the few fields used are declared here.
//! Unknown fields are ignored: kube-apiserver adds fields over time, and a
//! newer server must not break an older injector. What the injector relies on
//! (`apiVersion`, `kind`, `request.uid`, `request.kind`, `request.operation`)
//! is required, so a body without it is refused with a reason.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// A review as the API server sends it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    pub api_version: String,
    pub kind: String,
    pub request: Option<AdmissionRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub sub_resource: Option<String>,
    pub operation: String,
    #[serde(default)]
    pub namespace: Option<String>,
    /// The object being admitted; `null` for DELETE.
    #[serde(default)]
    pub object: Option<Value>,
    /// Nothing is to be persisted, so nothing is to be done outside the answer.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl AdmissionRequest {
    /// A Pod itself (not a subresource such as `pods/binding`).
    pub fn is_pod(&self) -> bool {
        self.kind.group.is_empty()
            && self.kind.version == "v1"
            && self.kind.kind == "Pod"
            && self.sub_resource.as_deref().unwrap_or_default().is_empty()
    }
}

/// The answer, wrapped in its review.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub response: AdmissionResponse,
}

impl From<AdmissionResponse> for ReviewResponse {
    fn from(response: AdmissionResponse) -> Self {
        ReviewResponse {
            api_version: API_VERSION,
            kind: KIND,
            response,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Base64 of the JSON Patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Shown by kubectl to the user who created the pod.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A `meta/v1` Status: how a refusal reaches `kubectl`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub status: &'static str,
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl AdmissionResponse {
    pub fn allow(uid: String) -> Self {
        AdmissionResponse {
            uid,
            allowed: true,
            status: None,
            patch: None,
            patch_type: None,
            warnings: Vec::new(),
        }
    }

    /// Allowed with a JSON Patch (`patch` is the patch's JSON text).
    pub fn patch(uid: String, patch: &[u8]) -> Self {
        use base64::Engine;
        AdmissionResponse {
            patch: Some(base64::engine::general_purpose::STANDARD.encode(patch)),
            patch_type: Some("JSONPatch"),
            ..Self::allow(uid)
        }
    }

    /// Refused with `400 Bad Request` and a message for the user.
    pub fn refuse(uid: String, message: String) -> Self {
        AdmissionResponse {
            allowed: false,
            status: Some(Status {
                status: "Failure",
                code: 400,
                reason: "BadRequest",
                message,
            }),
            ..Self::allow(uid)
        }
    }
}
