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
use crate::review::{self, AdmissionResponse, AdmissionReview, PodObject, ReviewResponse};
use crate::sidecar;
use sidelb_config::names;

/// The injector's version, written into `sidelb.io/injected`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An answered review.
pub struct Answer {
    pub review: ReviewResponse,
    pub outcome: Outcome,
    /// The namespace of a pod injected for real (not a dry run), whose
    /// service accounts need the proxy's read access ([`crate::grant`]).
    pub grant: Option<String>,
}

impl Answer {
    /// Shown to the user who created the pod, with the answer.
    pub fn warn(&mut self, warning: String) {
        self.review.response.warnings.push(warning);
    }

    /// The JSON of the response review.
    pub fn encode(&self) -> Result<Vec<u8>, BadReview> {
        serde_json::to_vec(&self.review).map_err(BadReview::Encode)
    }
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
    /// Not the request's fault: the answer could not be written.
    #[error("cannot encode the answer: {0}")]
    Encode(#[source] serde_json::Error),
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
    let uid = request.uid.clone();
    let namespace = request.namespace.as_deref().unwrap_or_default();
    if let Some(skip) = policy::not_a_pod_create(&request) {
        let reason = skip.reason();
        tracing::debug!(uid, namespace, reason, "left alone");
        return Ok(Answer {
            review: ReviewResponse::from(AdmissionResponse::allow(uid)),
            outcome: outcome("skipped", reason),
            grant: None,
        });
    }
    let object = policy::read_pod(&request)?;
    let decision = policy::decide(&object, defaults);
    let pod = pod_name(&object);
    let mut grant = None;
    let (response, outcome) = match decision {
        Decision::Skip(skip) => {
            let reason = skip.reason();
            let warning = skip.warning();
            if warning.is_some() {
                tracing::info!(uid, namespace, pod, reason, "left alone, with a warning");
            } else {
                tracing::debug!(uid, namespace, pod, reason, "left alone");
            }
            let mut response = AdmissionResponse::allow(uid);
            response.warnings.extend(warning);
            (response, outcome("skipped", reason))
        }
        Decision::Refuse(refusal) => {
            let message = refusal.message;
            tracing::info!(uid, namespace, pod, %message, "refused a pod");
            let message = format!("sidelb-injector: {message}");
            let response = AdmissionResponse::refuse(uid, message);
            (response, outcome("refused", refusal.reason))
        }
        Decision::Inject(plan) => {
            let container = sidecar::container(&plan, defaults);
            let volumes = sidecar::volumes(&plan);
            let mut annotations = vec![(names::INJECTED, VERSION)];
            annotations.extend(plan.annotations.iter().map(|(k, v)| (*k, v.as_str())));
            let additions = Additions {
                container: &container,
                native: plan.native,
                volumes: &volumes,
                annotations: &annotations,
            };
            let patch = patch::build(&object, &additions).and_then(|p| serde_json::to_vec(&p));
            let patch = patch.map_err(BadReview::Encode)?;
            let kind = if plan.native {
                "native-sidecar"
            } else {
                "classic-sidecar"
            };
            tracing::info!(uid, namespace, pod, kind, "injected sidelb-proxy");
            let mut response = AdmissionResponse::patch(uid, &patch);
            response.warnings = plan.warnings;
            if request.dry_run != Some(true) {
                grant = Some(namespace.to_owned());
            }
            (response, outcome("injected", kind))
        }
    };
    Ok(Answer {
        review: ReviewResponse::from(response),
        outcome,
        grant,
    })
}

/// The pod's name, or its `generateName` and `*` before it has one.
fn pod_name(pod: &PodObject) -> String {
    let metadata = pod.metadata.as_ref();
    let field = |value: Option<&String>| value.filter(|s| !s.is_empty()).cloned();
    match (
        field(metadata.and_then(|m| m.name.as_ref())),
        field(metadata.and_then(|m| m.generate_name.as_ref())),
    ) {
        (Some(name), _) => name,
        (None, Some(prefix)) => format!("{prefix}*"),
        (None, None) => String::new(),
    }
}

fn outcome(result: &'static str, reason: &'static str) -> Outcome {
    Outcome { result, reason }
}
