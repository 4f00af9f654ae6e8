//! Every setting of the proxy: its environment variable, its command-line
//! flag, the pod annotation the injector turns into it, and its default.
//!
//! This table is the single source: the proxy builds its flags from it, the
//! injector validates annotations with it, and the README's table is checked
//! against it by a test.

use crate::value::{Kind, ValueError};

/// One proxy setting.
#[derive(Debug)]
pub struct Setting {
    /// Environment variable the proxy reads.
    pub env: &'static str,
    /// Pod annotation the injector turns into `env`, if users may set it per pod.
    pub annotation: Option<&'static str>,
    /// Value when neither the flag nor the variable is set.
    pub default: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

impl Setting {
    /// The long flag of this setting's variable, see [`flag_for`].
    pub fn flag(&self) -> String {
        flag_for(self.env)
    }

    /// The injector's variable that sets this setting's default for every
    /// injected pod (`SIDELB_BALANCER` → `SIDELB_DEFAULT_BALANCER`).
    pub fn injector_default_env(&self) -> Option<String> {
        self.annotation?;
        Some(format!(
            "SIDELB_DEFAULT_{}",
            self.env.strip_prefix("SIDELB_").unwrap_or(self.env)
        ))
    }

    /// Checks a value, with an error that names where it came from.
    pub fn check(&self, origin: &str, value: &str) -> Result<(), SettingError> {
        self.kind.check(value).map_err(|why| SettingError {
            origin: origin.to_owned(),
            why,
        })
    }

    pub fn by_env(env: &str) -> Option<&'static Setting> {
        SETTINGS.iter().find(|s| s.env == env)
    }

    pub fn by_annotation(annotation: &str) -> Option<&'static Setting> {
        SETTINGS.iter().find(|s| s.annotation == Some(annotation))
    }
}

/// A setting's value that is not accepted, and where it came from (a
/// variable, a flag or an annotation).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {why}")]
pub struct SettingError {
    pub origin: String,
    pub why: ValueError,
}

/// The long flag of an environment variable, for the proxy and the injector
/// alike: the variable without `SIDELB_`, lower-case, `-` for `_`
/// (`SIDELB_OUTBOUND_ADDR` → `outbound-addr`, `POD_NAMESPACE` → `pod-namespace`).
pub fn flag_for(env: &str) -> String {
    env.strip_prefix("SIDELB_")
        .unwrap_or(env)
        .to_ascii_lowercase()
        .replace('_', "-")
}

pub const OUTBOUND_ADDR: &str = "SIDELB_OUTBOUND_ADDR";
pub const UPSTREAMS: &str = "SIDELB_UPSTREAMS";
pub const ADMIN_ADDR: &str = "SIDELB_ADMIN_ADDR";
pub const DISCOVERY: &str = "SIDELB_DISCOVERY";
pub const BALANCER: &str = "SIDELB_BALANCER";
pub const CLUSTER_DOMAIN: &str = "SIDELB_CLUSTER_DOMAIN";
pub const POD_NAMESPACE: &str = crate::names::POD_NAMESPACE_ENV;
pub const POD_NAME: &str = crate::names::POD_NAME_ENV;
pub const NODE_NAME: &str = crate::names::NODE_NAME_ENV;
pub const ZONE: &str = "SIDELB_ZONE";
pub const LOG: &str = "SIDELB_LOG";
pub const LOG_FORMAT: &str = "SIDELB_LOG_FORMAT";
pub const WORKERS: &str = "SIDELB_WORKERS";
pub const HEADER_READ_TIMEOUT: &str = "SIDELB_HEADER_READ_TIMEOUT";
pub const MAX_HEADER_BYTES: &str = "SIDELB_MAX_HEADER_BYTES";
pub const MAX_IN_FLIGHT: &str = "SIDELB_MAX_IN_FLIGHT";
pub const MAX_SERVICES: &str = "SIDELB_MAX_SERVICES";
pub const SERVICE_IDLE_TIMEOUT: &str = "SIDELB_SERVICE_IDLE_TIMEOUT";
pub const CONNECT_TIMEOUT: &str = "SIDELB_CONNECT_TIMEOUT";
pub const KEEPALIVE_INTERVAL: &str = "SIDELB_KEEPALIVE_INTERVAL";
pub const KEEPALIVE_TIMEOUT: &str = "SIDELB_KEEPALIVE_TIMEOUT";
pub const RETRY_BUDGET_PERCENT: &str = "SIDELB_RETRY_BUDGET_PERCENT";
pub const RETRY_BUDGET_MIN_PER_SECOND: &str = "SIDELB_RETRY_BUDGET_MIN_PER_SECOND";
pub const EJECTION_FAILURES: &str = "SIDELB_EJECTION_FAILURES";
pub const EJECTION_BASE_TIME: &str = "SIDELB_EJECTION_BASE_TIME";
pub const EJECTION_MAX_TIME: &str = "SIDELB_EJECTION_MAX_TIME";
pub const EJECTION_MAX_PERCENT: &str = "SIDELB_EJECTION_MAX_PERCENT";
pub const SLOW_START: &str = "SIDELB_SLOW_START";
pub const SHUTDOWN_GRACE: &str = "SIDELB_SHUTDOWN_GRACE";
pub const DRAIN_TIMEOUT: &str = "SIDELB_DRAIN_TIMEOUT";
pub const HASH_HEADER: &str = "SIDELB_HASH_HEADER";
pub const SUBSET_SIZE: &str = "SIDELB_SUBSET_SIZE";
pub const HEALTH_CHECK: &str = "SIDELB_HEALTH_CHECK";
pub const BACKEND_TLS: &str = "SIDELB_BACKEND_TLS";
pub const BACKEND_TLS_CA: &str = "SIDELB_BACKEND_TLS_CA";

pub const BALANCERS: &[&str] = &["p2c-ewma", "round-robin", "least-request"];
pub const LOG_FORMATS: &[&str] = &["plain", "json"];
pub const HEALTH_CHECKS: &[&str] = &["off", "grpc"];

const fn setting(
    env: &'static str,
    annotation: Option<&'static str>,
    default: &'static str,
    kind: Kind,
    help: &'static str,
) -> Setting {
    Setting {
        env,
        annotation,
        default,
        kind,
        help,
    }
}

const fn duration(allow_zero: bool) -> Kind {
    Kind::Duration { allow_zero }
}

const fn count(min: u64, max: u64) -> Kind {
    Kind::Count { min, max }
}

pub static SETTINGS: &[Setting] = &[
    setting(
        OUTBOUND_ADDR,
        None,
        "127.0.0.1:4140",
        Kind::SocketAddr,
        "listener that routes each request by its :authority (or Host); `127.0.0.1:P` listens on `[::1]:P` too",
    ),
    setting(
        UPSTREAMS,
        Some("sidelb.io/upstreams"),
        "",
        Kind::Upstreams,
        "port-mapped listeners: `svc[.ns]:port=localport,…`; a local port listens on `127.0.0.1` and `::1`, a listen address given (`=[::1]:15001`) must be loopback",
    ),
    setting(
        ADMIN_ADDR,
        None,
        "127.0.0.1:4191",
        Kind::SocketAddr,
        "admin server: /live, /ready, /metrics, /endpoints; `127.0.0.1:P` listens on `[::1]:P` too, `0.0.0.0:P` or `[::]:P` on every address of both families",
    ),
    setting(
        DISCOVERY,
        None,
        "kubernetes",
        Kind::Discovery,
        "where endpoints come from: `kubernetes` or `file:PATH`",
    ),
    setting(
        BALANCER,
        Some("sidelb.io/balancer"),
        "p2c-ewma",
        Kind::OneOf(BALANCERS),
        "how each request picks an endpoint",
    ),
    setting(
        CLUSTER_DOMAIN,
        Some("sidelb.io/cluster-domain"),
        "cluster.local",
        Kind::DnsName,
        "cluster DNS domain, for authorities like `svc.ns.svc.cluster.local`",
    ),
    setting(
        POD_NAMESPACE,
        None,
        "default",
        Kind::DnsName,
        "namespace of short service names (set from the downward API)",
    ),
    setting(
        POD_NAME,
        None,
        "",
        Kind::Text,
        "this pod's name, for logs and the choice of endpoint subsets (set from the downward API; the hostname when empty)",
    ),
    setting(
        NODE_NAME,
        None,
        "",
        Kind::Text,
        "this pod's node, whose `topology.kubernetes.io/zone` label is the zone when `SIDELB_ZONE` is empty (set from the downward API)",
    ),
    setting(
        ZONE,
        None,
        "",
        Kind::Text,
        "this pod's zone, whose pods get its calls while they are healthy and not overloaded; empty: its Node's zone label, or no zone preference",
    ),
    setting(
        LOG,
        Some("sidelb.io/log-level"),
        "info",
        Kind::LogFilter,
        "log filter: a level or `target=level,…`",
    ),
    setting(
        LOG_FORMAT,
        Some("sidelb.io/log-format"),
        "plain",
        Kind::OneOf(LOG_FORMATS),
        "log format: `plain` or `json`",
    ),
    setting(
        WORKERS,
        Some("sidelb.io/workers"),
        "1",
        count(1, 64),
        "threads that serve traffic",
    ),
    setting(
        HEADER_READ_TIMEOUT,
        Some("sidelb.io/header-read-timeout"),
        "10s",
        duration(false),
        "a connection that has not sent its HTTP/2 preface or request head by then is closed",
    ),
    setting(
        MAX_HEADER_BYTES,
        Some("sidelb.io/max-header-bytes"),
        "65536",
        count(1024, 1 << 20),
        "largest request header block accepted, in bytes",
    ),
    setting(
        MAX_IN_FLIGHT,
        Some("sidelb.io/max-in-flight"),
        "10000",
        count(1, 1_000_000),
        "requests in flight per service; above it requests fail at once with UNAVAILABLE",
    ),
    setting(
        MAX_SERVICES,
        Some("sidelb.io/max-services"),
        "100",
        count(1, 100_000),
        "most distinct services one proxy serves (upstreams included); a request for one more gets UNAVAILABLE naming this limit and opens no watch",
    ),
    setting(
        SERVICE_IDLE_TIMEOUT,
        Some("sidelb.io/service-idle-timeout"),
        "10m",
        duration(false),
        "a service reached by authority and not used for this long is dropped: its watch, connections and metric series go, and it no longer counts against the limit",
    ),
    setting(
        CONNECT_TIMEOUT,
        Some("sidelb.io/connect-timeout"),
        "1s",
        duration(false),
        "time to open a connection to an endpoint",
    ),
    setting(
        KEEPALIVE_INTERVAL,
        Some("sidelb.io/keepalive-interval"),
        "10s",
        duration(true),
        "HTTP/2 PING interval on endpoint connections; `0s` turns pings off",
    ),
    setting(
        KEEPALIVE_TIMEOUT,
        Some("sidelb.io/keepalive-timeout"),
        "20s",
        duration(false),
        "an endpoint connection whose PING is not answered by then is closed",
    ),
    setting(
        RETRY_BUDGET_PERCENT,
        Some("sidelb.io/retry-budget-percent"),
        "20",
        count(0, 1000),
        "retries of never-sent requests allowed, as a percentage of recent requests",
    ),
    setting(
        RETRY_BUDGET_MIN_PER_SECOND,
        Some("sidelb.io/retry-budget-min-per-second"),
        "10",
        count(0, 1_000_000),
        "retries per second always allowed on top of the percentage",
    ),
    setting(
        EJECTION_FAILURES,
        Some("sidelb.io/ejection-failures"),
        "5",
        count(0, 10_000),
        "consecutive failures that eject an endpoint; `0` turns ejection off",
    ),
    setting(
        EJECTION_BASE_TIME,
        Some("sidelb.io/ejection-base-time"),
        "10s",
        duration(false),
        "first ejection time; it doubles with each repeat",
    ),
    setting(
        EJECTION_MAX_TIME,
        Some("sidelb.io/ejection-max-time"),
        "5m",
        duration(false),
        "longest ejection time",
    ),
    setting(
        EJECTION_MAX_PERCENT,
        Some("sidelb.io/ejection-max-percent"),
        "50",
        count(0, 100),
        "most of a service's endpoints ejected at once, in percent (at least one)",
    ),
    setting(
        SLOW_START,
        Some("sidelb.io/slow-start"),
        "0s",
        duration(true),
        "a new endpoint's share ramps up over this window; `0s` turns it off",
    ),
    setting(
        SHUTDOWN_GRACE,
        Some("sidelb.io/shutdown-grace"),
        "0s",
        duration(true),
        "after SIGTERM, keep serving new requests this long before draining; the injector gives a classic sidecar a third of the pod's `terminationGracePeriodSeconds`, at most `10s`",
    ),
    setting(
        DRAIN_TIMEOUT,
        Some("sidelb.io/drain-timeout"),
        "30s",
        duration(false),
        "after the grace, longest wait for in-flight requests; those still open then end with UNAVAILABLE (503) and the reason, and the proxy exits; the injector sets what is left of the pod's `terminationGracePeriodSeconds` less a 2 s margin",
    ),
    setting(
        HASH_HEADER,
        Some("sidelb.io/hash-header"),
        "",
        Kind::HeaderName,
        "a request header whose value keeps requests on one pod (consistent hashing with bounded load: a pod over 1.25× the mean in-flight passes the key on); requests without it are balanced as usual; empty turns affinity off",
    ),
    setting(
        SUBSET_SIZE,
        Some("sidelb.io/subset-size"),
        "64",
        count(0, 65_535),
        "most endpoints of one service this proxy connects to, chosen by rendezvous hashing of the pod's name and each endpoint's address, so that client pods spread evenly over the service's pods; `0` connects to all",
    ),
    setting(
        HEALTH_CHECK,
        Some("sidelb.io/health-check"),
        "off",
        Kind::OneOf(HEALTH_CHECKS),
        "`grpc`: watch each endpoint's `grpc.health.v1.Health` (Watch, else Check every 5 s) on its connection and send no new calls to one that answers NOT_SERVING until it answers SERVING; an endpoint without the Health service is used unchecked; `off`: no active checks",
    ),
    setting(
        BACKEND_TLS,
        Some("sidelb.io/backend-tls"),
        "",
        Kind::BackendTls,
        "services whose pods serve gRPC over TLS: `svc[.ns][:port][=server-name],…`; without a port every port, without a server name the certificate must be valid for `svc.ns.svc`; needs SIDELB_BACKEND_TLS_CA; empty: plaintext HTTP/2 to every service",
    ),
    setting(
        BACKEND_TLS_CA,
        None,
        "",
        Kind::FilePath,
        "PEM file of the CAs that backend certificates must chain to (no system roots); read at start and again when it changes; the injector sets it from `sidelb.io/backend-tls-ca`",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn defaults_are_valid() {
        for s in SETTINGS {
            s.check(s.env, s.default).unwrap();
        }
    }

    #[test]
    fn names_are_unique() {
        let envs: HashSet<_> = SETTINGS.iter().map(|s| s.env).collect();
        let flags: HashSet<_> = SETTINGS.iter().map(|s| s.flag()).collect();
        let anns: Vec<_> = SETTINGS.iter().filter_map(|s| s.annotation).collect();
        let ann_set: HashSet<_> = anns.iter().collect();
        assert_eq!(envs.len(), SETTINGS.len());
        assert_eq!(flags.len(), SETTINGS.len());
        assert_eq!(ann_set.len(), anns.len());
        assert!(anns.iter().all(|a| a.starts_with("sidelb.io/")));
    }

    #[test]
    fn flags_and_injector_defaults() {
        let s = Setting::by_env(OUTBOUND_ADDR).unwrap();
        assert_eq!(s.flag(), "outbound-addr");
        assert_eq!(flag_for("SIDELB_DEFAULT_BALANCER"), "default-balancer");
        assert_eq!(flag_for("POD_NAME"), "pod-name");
        assert_eq!(s.injector_default_env(), None);
        let b = Setting::by_annotation("sidelb.io/balancer").unwrap();
        assert_eq!(b.injector_default_env().unwrap(), "SIDELB_DEFAULT_BALANCER");
    }

    #[test]
    fn errors_name_the_source() {
        let b = Setting::by_env(BALANCER).unwrap();
        let err = b
            .check("sidelb.io/balancer", "random")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("sidelb.io/balancer: `random`"), "{err}");
        assert!(err.contains("round-robin"), "{err}");
    }
}
