//! The injector's Prometheus metrics, served on `/metrics`.
//!
//! Few and about outcomes: how many admission requests ended in which result
//! (so a drop in `injected` or a rise in `refused`/`error` is visible),
//! whether certificate reloads work (a failing reload means the webhook will
//! break when the old certificate expires), and whether injected pods'
//! namespaces get the proxy's read access (a failing one means 403s).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    /// `injected`, `skipped`, `refused` or `error`.
    result: &'static str,
    /// Why: `native-sidecar`, `already-injected`, `invalid-annotation`, `malformed`, …
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    /// `ok` or `error`.
    result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    admissions: Family<AdmissionLabels, Counter>,
    cert_reloads: Family<ResultLabels, Counter>,
    grants: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sidelb_injector");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests by result and reason",
            admissions.clone(),
        );
        let cert_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cert_reloads",
            "Reloads of the TLS certificate and key after their files changed",
            cert_reloads.clone(),
        );
        let grants = Family::<ResultLabels, Counter>::default();
        registry.register(
            "namespace_grants",
            "Checks that an injected pod's namespace has the proxy's read access, by result",
            grants.clone(),
        );
        Metrics {
            registry,
            admissions,
            cert_reloads,
            grants,
        }
    }

    pub fn admission(&self, result: &'static str, reason: &'static str) {
        self.admissions
            .get_or_create(&AdmissionLabels { result, reason })
            .inc();
    }

    pub fn cert_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.cert_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn grant(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.grants.get_or_create(&ResultLabels { result }).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
