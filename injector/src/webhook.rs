//! One AdmissionReview in, one AdmissionReview out: the webhook without HTTP.
//!
//! `mutate` reads the review, asks [`policy`] what to do, and answers with the
//! request's `uid` and, when injecting, the [`patch`]. A body that is not a
//! review it can answer is a [`BadReview`], which the server turns into a
//! `400` with the reason; everything else is answered, so a problem with one
//! pod's annotations reaches the user as a refusal they can read in `kubectl`.

use crate::config::SidecarDefaults;
use crate::patch::{self, Additions};
use crate::policy::{self, Decision, PolicyError};
use crate::review::{self, AdmissionResponse, AdmissionReview, ReviewResponse};
use crate::sidecar;
use sidelb_config::names;

/// The injector's version, written into `sidelb.io/injected`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An answered review.
pub struct Answer {
    /// The JSON of the response review.
    pub body: Vec<u8>,
    pub outcome: Outcome,
}

/// What happened, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `injected`, `skipped` or `refused`.
    pub result: &'static str,
    pub reason: &'static str,
}

/// A body the injector cannot answer as a review.
#[derive(Debug, thiserror::Error)]
pub enum BadReview {
    #[error("the body is empty; send an {API} {KIND}", API = review::API_VERSION, KIND = review::KIND)]
    Empty,
    #[error("the body is not an {API} {KIND}: {0}", API = review::API_VERSION, KIND = review::KIND)]
    Json(#[source] serde_json::Error),
    #[error("`{0}` `{1}` is not an {API} {KIND}", API = review::API_VERSION, KIND = review::KIND)]
    WrongType(String, String),
    #[error("the AdmissionReview has no request")]
    NoRequest,
    #[error("request.uid is empty")]
    NoUid,
    #[error(transparent)]
    Pod(#[from] PolicyError),
}

pub fn mutate(body: &[u8], defaults: &SidecarDefaults) -> Result<Answer, BadReview> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BadReview::Empty);
    }
    let review: AdmissionReview = serde_json::from_slice(body).map_err(BadReview::Json)?;
    if review.api_version != review::API_VERSION || review.kind != review::KIND {
        return Err(BadReview::WrongType(review.api_version, review.kind));
    }
    let request = review.request.ok_or(BadReview::NoRequest)?;
    if request.uid.is_empty() {
        return Err(BadReview::NoUid);
    }
    let decision = policy::decide(&request, defaults)?;
    let uid = request.uid.clone();
    let (response, outcome) = match decision {
        Decision::Skip(skip) => (
            AdmissionResponse::allow(uid),
            outcome("skipped", skip.reason()),
        ),
        Decision::Refuse(message) => {
            tracing::info!(uid, namespace = ?request.namespace, %message, "refused a pod");
            let message = format!("sidelb-injector: {message}");
            (
                AdmissionResponse::refuse(uid, message),
                outcome("refused", "invalid-annotation"),
            )
        }
        Decision::Inject(plan) => {
            let container = sidecar::container(&plan, defaults);
            let volume = plan.token_volume.as_deref().map(sidecar::token_volume);
            let object = request.object.as_ref().unwrap_or(&serde_json::Value::Null);
            let additions = Additions {
                container: &container,
                native: plan.native,
                volume: volume.as_ref(),
                annotations: &[(names::INJECTED, VERSION)],
            };
            let patch = patch::build(object, &additions).and_then(|p| serde_json::to_vec(&p));
            let patch = patch.map_err(|e| BadReview::Pod(PolicyError::NotAPod(e)))?;
            let mut response = AdmissionResponse::patch(uid, &patch);
            response.warnings = plan.warnings;
            let kind = if plan.native {
                "native-sidecar"
            } else {
                "classic-sidecar"
            };
            (response, outcome("injected", kind))
        }
    };
    tracing::debug!(uid = request.uid, namespace = ?request.namespace, ?outcome, "answered");
    let body = serde_json::to_vec(&ReviewResponse::from(response)).map_err(BadReview::Json)?;
    Ok(Answer { body, outcome })
}

fn outcome(result: &'static str, reason: &'static str) -> Outcome {
    Outcome { result, reason }
}
