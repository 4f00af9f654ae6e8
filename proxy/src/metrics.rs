//! Prometheus metrics.
//!
//! Hot-path counters are resolved once per endpoint (or service) and kept as
//! handles, so a request pays for an atomic add, not a label-set lookup.
//! Gauges that describe state (endpoints by state) are refreshed at scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ServiceLabels {
    pub(crate) service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EndpointLabels {
    pub(crate) service: String,
    pub(crate) endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) service: String,
    /// Empty when the proxy answered itself (no endpoint was reached).
    pub(crate) endpoint: String,
    /// Empty for requests that are not gRPC.
    pub(crate) grpc_status: String,
    pub(crate) http_status: String,
}

/// The `grpc_status` label of a status: `0`..`16` as themselves, any other
/// value an endpoint sends as [`OTHER_GRPC_STATUS`], so label values stay
/// a small fixed set whatever endpoints answer.
pub(crate) fn grpc_status_label(status: Option<u16>) -> String {
    match status {
        None => String::new(),
        Some(s) if s <= MAX_GRPC_STATUS => s.to_string(),
        Some(_) => OTHER_GRPC_STATUS.to_owned(),
    }
}

/// The highest status code gRPC defines (UNAUTHENTICATED).
pub(crate) const MAX_GRPC_STATUS: u16 = 16;
pub(crate) const OTHER_GRPC_STATUS: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HealthLabels {
    pub(crate) service: String,
    /// One of [`HEALTH_LABELS`].
    pub(crate) health: String,
}

/// The gRPC health verdicts, by their value in `endpoint::grpc_health::Verdict`.
pub(crate) const HEALTH_LABELS: [&str; 4] = ["unknown", "serving", "not-serving", "unimplemented"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabels {
    pub(crate) service: String,
    pub(crate) state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerLabels {
    pub(crate) protocol: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

pub struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) request_duration: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    pub(crate) endpoints: Family<StateLabels, Gauge>,
    pub(crate) discovery_updates: Family<ServiceLabels, Counter>,
    pub(crate) subset_endpoints: Family<ServiceLabels, Gauge>,
    pub(crate) retries: Family<ServiceLabels, Counter>,
    pub(crate) retries_over_budget: Family<ServiceLabels, Counter>,
    pub(crate) overloaded: Family<ServiceLabels, Counter>,
    pub(crate) hashed_requests: Family<ServiceLabels, Counter>,
    pub(crate) hash_passed: Family<ServiceLabels, Counter>,
    pub(crate) zone_local_requests: Family<ServiceLabels, Counter>,
    pub(crate) zone_spilled_requests: Family<ServiceLabels, Counter>,
    pub(crate) health_transitions: Family<HealthLabels, Counter>,
    /// Unlabelled: a refused service is not worth a series of its own.
    pub(crate) services_refused: Counter,
    pub(crate) ejections: Family<EndpointLabels, Counter>,
    pub(crate) rate_limited: Family<EndpointLabels, Counter>,
    pub(crate) load_reports: Family<EndpointLabels, Counter>,
    pub(crate) ejected: Family<EndpointLabels, Gauge>,
    pub(crate) connect_failures: Family<EndpointLabels, Counter>,
    pub(crate) app_connections: Family<ListenerLabels, Counter>,
    pub(crate) protocol_errors: Family<ListenerLabels, Counter>,
    /// Serialises scrapes, which reset the state gauges.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sidelb");
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            endpoints: Family::default(),
            discovery_updates: Family::default(),
            subset_endpoints: Family::default(),
            retries: Family::default(),
            retries_over_budget: Family::default(),
            overloaded: Family::default(),
            hashed_requests: Family::default(),
            hash_passed: Family::default(),
            zone_local_requests: Family::default(),
            zone_spilled_requests: Family::default(),
            health_transitions: Family::default(),
            services_refused: Counter::default(),
            ejections: Family::default(),
            rate_limited: Family::default(),
            load_reports: Family::default(),
            ejected: Family::default(),
            connect_failures: Family::default(),
            app_connections: Family::default(),
            protocol_errors: Family::default(),
            registry: Registry::default(),
            scrape: Mutex::new(()),
        };
        registry.register(
            "requests",
            "Requests by service, endpoint and status",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers, by service",
            m.request_duration.clone(),
        );
        registry.register(
            "endpoints",
            "Endpoints by service and state",
            m.endpoints.clone(),
        );
        registry.register(
            "discovery_updates",
            "Endpoint updates received from discovery",
            m.discovery_updates.clone(),
        );
        registry.register(
            "subset_endpoints",
            "Endpoints of the service this proxy uses: the subset SIDELB_SUBSET_SIZE chose, or all of them",
            m.subset_endpoints.clone(),
        );
        registry.register(
            "retries",
            "Requests retried on another endpoint because they never reached an app",
            m.retries.clone(),
        );
        registry.register(
            "retries_over_budget",
            "Retryable requests not retried because the retry budget was spent",
            m.retries_over_budget.clone(),
        );
        registry.register(
            "overloaded",
            "Requests refused because the service had too many in flight",
            m.overloaded.clone(),
        );
        registry.register(
            "hashed_requests",
            "Requests that carried the SIDELB_HASH_HEADER header and were placed by its value",
            m.hashed_requests.clone(),
        );
        registry.register(
            "hash_passed",
            "Hashed requests sent past their key's pod: it was over 1.25x the mean in-flight, or could not take them",
            m.hash_passed.clone(),
        );
        registry.register(
            "health_transitions",
            "Changes of endpoints' gRPC health (SIDELB_HEALTH_CHECK=grpc), by the health they changed to",
            m.health_transitions.clone(),
        );
        registry.register(
            "services_refused",
            "Requests for a service past SIDELB_MAX_SERVICES, refused before any discovery",
            m.services_refused.clone(),
        );
        registry.register(
            "zone_local_requests",
            "Requests kept in this pod's zone (SIDELB_ZONE or its Node's), while its endpoints could take them",
            m.zone_local_requests.clone(),
        );
        registry.register(
            "zone_spilled_requests",
            "Requests of a service with endpoints in this pod's zone that were balanced over every zone, the local endpoints being too few or too busy",
            m.zone_spilled_requests.clone(),
        );
        registry.register(
            "ejections",
            "Times an endpoint was ejected as an outlier",
            m.ejections.clone(),
        );
        registry.register(
            "rate_limited",
            "Answers that said an endpoint is rate limited (RESOURCE_EXHAUSTED, HTTP 429); each lowers its share for a while",
            m.rate_limited.clone(),
        );
        registry.register(
            "load_reports",
            "Answers that carried an ORCA load report (endpoint-load-metrics-bin), by which the balancer weighs the endpoint against others that report",
            m.load_reports.clone(),
        );
        registry.register(
            "ejected",
            "1 while an endpoint is ejected",
            m.ejected.clone(),
        );
        registry.register(
            "connect_failures",
            "Failed connection attempts to endpoints",
            m.connect_failures.clone(),
        );
        registry.register(
            "app_connections",
            "Connections accepted from the app, by protocol",
            m.app_connections.clone(),
        );
        registry.register(
            "protocol_errors",
            "App connections closed for bad framing, oversized headers or slow request heads",
            m.protocol_errors.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Removes the per-service series of a service no longer served (the
    /// request counters are removed by whoever made them, see
    /// `balancer::pool` and `endpoint`).
    pub(crate) fn remove_service(&self, service: &str) {
        let labels = ServiceLabels {
            service: service.to_owned(),
        };
        self.request_duration.remove(&labels);
        self.discovery_updates.remove(&labels);
        self.subset_endpoints.remove(&labels);
        self.retries.remove(&labels);
        self.retries_over_budget.remove(&labels);
        self.overloaded.remove(&labels);
        self.hashed_requests.remove(&labels);
        self.hash_passed.remove(&labels);
        self.zone_local_requests.remove(&labels);
        self.zone_spilled_requests.remove(&labels);
        for health in HEALTH_LABELS {
            self.health_transitions.remove(&HealthLabels {
                service: service.to_owned(),
                health: health.to_owned(),
            });
        }
    }

    /// Removes the per-endpoint series (but the request counters) of an
    /// endpoint gone from its service.
    pub(crate) fn remove_endpoint(&self, labels: &EndpointLabels) {
        self.ejections.remove(labels);
        self.ejected.remove(labels);
        self.connect_failures.remove(labels);
        self.rate_limited.remove(labels);
        self.load_reports.remove(labels);
    }

    /// Encodes every metric; `refresh` first sets the state gauges.
    pub(crate) fn encode(&self, refresh: impl FnOnce(&Self)) -> String {
        let _guard = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.endpoints.clear();
        refresh(self);
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_status_labels_are_a_fixed_set() {
        assert_eq!(grpc_status_label(None), "");
        assert_eq!(grpc_status_label(Some(0)), "0");
        assert_eq!(grpc_status_label(Some(16)), "16");
        for odd in [17, 99, 1000, u16::MAX] {
            assert_eq!(grpc_status_label(Some(odd)), OTHER_GRPC_STATUS);
        }
    }

    #[test]
    fn removed_services_and_endpoints_leave_no_series() {
        let m = Metrics::new();
        let service = ServiceLabels {
            service: "a.ns:1".into(),
        };
        let endpoint = EndpointLabels {
            service: "a.ns:1".into(),
            endpoint: "127.0.0.1:9".into(),
        };
        m.retries.get_or_create(&service).inc();
        m.subset_endpoints.get_or_create(&service).set(3);
        m.hashed_requests.get_or_create(&service).inc();
        m.hash_passed.get_or_create(&service).inc();
        m.health_transitions
            .get_or_create(&HealthLabels {
                service: "a.ns:1".into(),
                health: "not-serving".into(),
            })
            .inc();
        m.request_duration.get_or_create(&service).observe(0.1);
        m.connect_failures.get_or_create(&endpoint).inc();
        m.ejected.get_or_create(&endpoint).set(1);
        m.rate_limited.get_or_create(&endpoint).inc();
        m.load_reports.get_or_create(&endpoint).inc();
        assert!(m.encode(|_| ()).contains("a.ns:1"));
        m.remove_endpoint(&endpoint);
        assert!(!m.encode(|_| ()).contains("127.0.0.1:9"));
        m.remove_service("a.ns:1");
        assert!(!m.encode(|_| ()).contains("a.ns:1"));
    }
}
