//! What a failed list or watch means, and what to tell people about it.
//!
//! The watcher retries every error with backoff; what differs is what the
//! proxy does meanwhile. Most errors are *transient* — the API server is
//! restarting, unreachable, overloaded, or a watch was cut — and the right
//! response is silence towards the balancer: keep the last known endpoints,
//! which are very likely still right. A few errors only go away when someone
//! changes the cluster — RBAC that does not let the pod's service account
//! read Services or EndpointSlices (403), credentials the API server refuses
//! (401), an API server too old to serve EndpointSlices (404 on list) — and a
//! Service that never got its endpoints because of one is reported to the
//! balancer, so that requests fail at once with a message saying what to fix
//! instead of waiting for an answer that cannot come.

use kube::runtime::watcher;

/// The two kinds of objects sidelb reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Watched {
    Services,
    EndpointSlices,
}

impl Watched {
    /// The resource as RBAC rules and API errors name it.
    pub(crate) fn resource(self) -> &'static str {
        match self {
            Watched::Services => "services",
            Watched::EndpointSlices => "endpointslices.discovery.k8s.io",
        }
    }
}

/// Why a list or watch failed, for people.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchFailure {
    #[error(
        "cannot {verb} {resource} in namespace {namespace}: forbidden ({api_message}); \
         sidelb-proxy needs get, list and watch on services and endpointslices.discovery.k8s.io — \
         the sidelb chart's RBAC grants them to the service accounts in rbac.subjects; \
         add this pod's service account there or grant them with a Role and RoleBinding in {namespace}"
    )]
    Forbidden {
        verb: &'static str,
        resource: &'static str,
        namespace: String,
        api_message: String,
    },
    #[error(
        "cannot {verb} {resource} in namespace {namespace}: the API server refused the proxy's credentials \
         ({api_message}); check the pod's service-account token (automountServiceAccountToken) or KUBECONFIG"
    )]
    Unauthorized {
        verb: &'static str,
        resource: &'static str,
        namespace: String,
        api_message: String,
    },
    #[error(
        "cannot {verb} {resource}: the API server does not serve it ({api_message}); \
         sidelb needs discovery.k8s.io/v1 EndpointSlices (Kubernetes 1.21 or later)"
    )]
    NotServed {
        verb: &'static str,
        resource: &'static str,
        api_message: String,
    },
    #[error("cannot {verb} {resource} in namespace {namespace}: {detail}")]
    Transient {
        verb: &'static str,
        resource: &'static str,
        namespace: String,
        /// The error and its causes, down to e.g. "Connection refused".
        detail: String,
    },
}

impl WatchFailure {
    /// Classifies a watcher error on `watched` in `namespace`.
    pub(crate) fn classify(error: watcher::Error, watched: Watched, namespace: &str) -> Self {
        let verb = match &error {
            watcher::Error::InitialListFailed(_) | watcher::Error::NoResourceVersion => "list",
            watcher::Error::WatchStartFailed(_)
            | watcher::Error::WatchError(_)
            | watcher::Error::WatchFailed(_) => "watch",
        };
        let status = match &error {
            watcher::Error::InitialListFailed(kube::Error::Api(s))
            | watcher::Error::WatchStartFailed(kube::Error::Api(s))
            | watcher::Error::WatchFailed(kube::Error::Api(s))
            | watcher::Error::WatchError(s) => Some((s.code, s.message.clone())),
            _ => None,
        };
        let resource = watched.resource();
        let namespace = namespace.to_owned();
        match status {
            Some((403, api_message)) => WatchFailure::Forbidden {
                verb,
                resource,
                namespace,
                api_message,
            },
            Some((401, api_message)) => WatchFailure::Unauthorized {
                verb,
                resource,
                namespace,
                api_message,
            },
            Some((404, api_message)) if verb == "list" => WatchFailure::NotServed {
                verb,
                resource,
                api_message,
            },
            _ => WatchFailure::Transient {
                verb,
                resource,
                namespace,
                detail: with_causes(&error),
            },
        }
    }

    /// Whether only a change to the cluster can fix it (so waiting for it is
    /// pointless and requests should hear about it).
    pub(crate) fn needs_a_fix(&self) -> bool {
        !matches!(self, WatchFailure::Transient { .. })
    }
}

/// An error and its causes on one line. Each cause is added unless the text
/// already says it (kube's errors often repeat their source's message).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            Status::failure(message, "Forbidden").with_code(code),
        ))
    }

    #[test]
    fn forbidden_names_verb_resource_namespace_and_the_chart_rbac() {
        let err = watcher::Error::InitialListFailed(api_error(
            403,
            "endpointslices.discovery.k8s.io is forbidden: User \"system:serviceaccount:shop:app\" cannot list resource",
        ));
        let failure = WatchFailure::classify(err, Watched::EndpointSlices, "shop");
        assert!(failure.needs_a_fix());
        let text = failure.to_string();
        for needle in [
            "cannot list endpointslices.discovery.k8s.io in namespace shop",
            "system:serviceaccount:shop:app",
            "get, list and watch on services and endpointslices",
            "RBAC",
        ] {
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
        let err = watcher::Error::WatchStartFailed(api_error(403, "no"));
        let text = WatchFailure::classify(err, Watched::Services, "default").to_string();
        assert!(
            text.starts_with("cannot watch services in namespace default"),
            "{text}"
        );
    }

    #[test]
    fn other_errors_are_transient() {
        for err in [
            watcher::Error::InitialListFailed(api_error(500, "etcd is down")),
            watcher::Error::WatchError(Box::new(
                Status::failure("too old resource version", "Expired").with_code(410),
            )),
            watcher::Error::WatchFailed(api_error(404, "gone")),
            watcher::Error::NoResourceVersion,
        ] {
            let failure = WatchFailure::classify(err, Watched::Services, "default");
            assert!(!failure.needs_a_fix(), "{failure}");
        }
    }

    #[test]
    fn transient_errors_say_their_causes() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let err = watcher::Error::WatchStartFailed(kube::Error::Service(Box::new(refused)));
        let text = WatchFailure::classify(err, Watched::EndpointSlices, "default").to_string();
        assert!(
            text.starts_with("cannot watch endpointslices.discovery.k8s.io in namespace default: "),
            "{text}"
        );
        assert!(text.ends_with("Connection refused"), "{text}");
        assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
    }

    #[test]
    fn unauthorized_and_not_served_need_a_fix() {
        let err = watcher::Error::InitialListFailed(api_error(401, "Unauthorized"));
        let failure = WatchFailure::classify(err, Watched::Services, "default");
        assert!(
            failure
                .to_string()
                .contains("refused the proxy's credentials")
        );
        let err = watcher::Error::InitialListFailed(api_error(
            404,
            "the server could not find the requested resource",
        ));
        let failure = WatchFailure::classify(err, Watched::EndpointSlices, "default");
        assert!(failure.to_string().contains("Kubernetes 1.21"), "{failure}");
    }
}
