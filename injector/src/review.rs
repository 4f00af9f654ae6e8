//! The `admission.k8s.io/v1` AdmissionReview, as far as the injector reads and
//! writes it.
//!
//! k8s-openapi does not carry the admission types (they are not in the API
//! server's OpenAPI document), so the few fields used are declared here.
//! Unknown fields are ignored: kube-apiserver adds fields over time, and a
//! newer server must not break an older injector. What the injector relies on
//! (`apiVersion`, `kind`, `request.uid`, `request.kind`, `request.operation`)
//! is required, so a body without it is refused with a reason.
//!
//! A review is up to 3 MiB and is read once: the object stays the raw JSON
//! text it arrived as (borrowed from the body, not copied) until a Pod CREATE
//! is read from it, into [`PodObject`] directly, so no generic JSON tree of it
//! is built or cloned. `oldObject` is skipped without being kept.

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// A review as the API server sends it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview<'a> {
    pub api_version: String,
    pub kind: String,
    #[serde(borrow)]
    pub request: Option<AdmissionRequest<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest<'a> {
    pub uid: String,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub sub_resource: Option<String>,
    pub operation: String,
    #[serde(default)]
    pub namespace: Option<String>,
    /// The object being admitted, as raw JSON; `None` when `null` (DELETE).
    #[serde(default, borrow)]
    pub object: Option<&'a RawValue>,
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

/// A Pod as the injector reads it. `metadata` stays optional (unlike
/// k8s-openapi's `Pod`) so the patch can tell a missing one from an empty one.
#[derive(Debug, Default, Deserialize)]
pub struct PodObject {
    #[serde(default)]
    pub metadata: Option<ObjectMeta>,
    #[serde(default)]
    pub spec: Option<PodSpec>,
}

impl AdmissionRequest<'_> {
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
