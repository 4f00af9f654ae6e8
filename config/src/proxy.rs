//! The proxy's configuration, parsed and validated from settings.

use crate::backend_tls::{self, BackendTls};
use crate::settings::{self as s, SETTINGS, Setting, SettingError};
use crate::upstreams::{self, Upstream};
use crate::value::{self, ValueError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balancer {
    P2cEwma,
    RoundRobin,
    LeastRequest,
}

impl Balancer {
    pub fn name(self) -> &'static str {
        match self {
            Balancer::P2cEwma => "p2c-ewma",
            Balancer::RoundRobin => "round-robin",
            Balancer::LeastRequest => "least-request",
        }
    }
}

/// Active health checking of endpoints (`SIDELB_HEALTH_CHECK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthCheck {
    Off,
    /// `grpc.health.v1.Health` on each endpoint's connection.
    Grpc,
}

impl HealthCheck {
    pub fn name(self) -> &'static str {
        match self {
            HealthCheck::Off => "off",
            HealthCheck::Grpc => "grpc",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovery {
    Kubernetes,
    File(PathBuf),
}

impl std::fmt::Display for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Discovery::Kubernetes => f.write_str("kubernetes"),
            Discovery::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

/// A configuration the proxy cannot start with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// One setting's value is not accepted.
    #[error(transparent)]
    Setting(#[from] SettingError),
    #[error(
        "{} {outbound} and {} {admin} take the same port; give them different ports",
        s::OUTBOUND_ADDR,
        s::ADMIN_ADDR
    )]
    SamePort {
        outbound: SocketAddr,
        admin: SocketAddr,
    },
    #[error(
        "{} is set but {} is not: give the PEM file of the CAs that sign the backends' certificates (annotation sidelb.io/backend-tls-ca), or empty {} for plaintext",
        s::BACKEND_TLS,
        s::BACKEND_TLS_CA,
        s::BACKEND_TLS
    )]
    BackendTlsWithoutCa,
}

/// Everything the proxy needs to start.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub outbound_addr: SocketAddr,
    pub upstreams: Vec<Upstream>,
    pub admin_addr: SocketAddr,
    pub discovery: Discovery,
    pub balancer: Balancer,
    pub cluster_domain: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub node_name: String,
    pub zone: String,
    pub log: String,
    pub log_format: LogFormat,
    pub workers: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: u32,
    pub max_in_flight: usize,
    /// Most pools; pinned ones (upstreams, listed services) count but are never refused.
    pub max_services: usize,
    pub service_idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// `None`: no keepalive pings.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    pub retry_budget_percent: u32,
    pub retry_budget_min_per_second: u32,
    /// `0`: no ejection.
    pub ejection_failures: u32,
    pub ejection_base_time: Duration,
    pub ejection_max_time: Duration,
    pub ejection_max_percent: u32,
    /// `None`: no slow start.
    pub slow_start: Option<Duration>,
    pub shutdown_grace: Duration,
    pub drain_timeout: Duration,
    /// The request header whose value picks the pod (lower case); `None`: no affinity.
    pub hash_header: Option<String>,
    /// Most endpoints of one service in use; `0`: all.
    pub subset_size: usize,
    pub health_check: HealthCheck,
    /// Services whose pods serve TLS; empty: plaintext to all.
    pub backend_tls: Vec<BackendTls>,
    /// The CA bundle for them; set whenever `backend_tls` is not empty.
    pub backend_tls_ca: Option<PathBuf>,
}

impl ProxyConfig {
    /// Reads every setting through `lookup` (a variable name → its value),
    /// falling back to defaults. The first bad value is the error, naming the
    /// variable, the value and what is accepted.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |env: &str| -> Result<String, ConfigError> {
            let setting = Setting::by_env(env).expect("every read setting is in SETTINGS");
            match lookup(env) {
                Some(v) => {
                    let v = v.trim().to_owned();
                    setting.check(env, &v)?;
                    Ok(v)
                }
                None => Ok(setting.default.to_owned()),
            }
        };
        let dur = |env: &str| -> Result<Duration, ConfigError> {
            at(env, value::duration(&get(env)?, true))
        };
        let num = |env: &str| -> Result<u64, ConfigError> {
            at(env, value::count(&get(env)?, 0, u64::MAX))
        };

        let pod_namespace = get(s::POD_NAMESPACE)?;
        let upstreams = at(
            s::UPSTREAMS,
            upstreams::parse(&get(s::UPSTREAMS)?, &pod_namespace),
        )?;
        let backend_tls = at(
            s::BACKEND_TLS,
            backend_tls::parse(&get(s::BACKEND_TLS)?, &pod_namespace),
        )?;
        let backend_tls_ca = at(
            s::BACKEND_TLS_CA,
            value::file_path(&get(s::BACKEND_TLS_CA)?).map(|p| p.map(PathBuf::from)),
        )?;
        if !backend_tls.is_empty() && backend_tls_ca.is_none() {
            return Err(ConfigError::BackendTlsWithoutCa);
        }
        let discovery = match value::discovery(&get(s::DISCOVERY)?) {
            Ok(None) => Discovery::Kubernetes,
            Ok(Some(path)) => Discovery::File(PathBuf::from(path)),
            Err(e) => return at(s::DISCOVERY, Err(e)),
        };
        let balancer = match get(s::BALANCER)?.as_str() {
            "round-robin" => Balancer::RoundRobin,
            "least-request" => Balancer::LeastRequest,
            _ => Balancer::P2cEwma,
        };
        let log_format = match get(s::LOG_FORMAT)?.as_str() {
            "json" => LogFormat::Json,
            _ => LogFormat::Plain,
        };
        let health_check = match get(s::HEALTH_CHECK)?.as_str() {
            "grpc" => HealthCheck::Grpc,
            _ => HealthCheck::Off,
        };
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        let config = ProxyConfig {
            outbound_addr: at(
                s::OUTBOUND_ADDR,
                value::socket_addr(&get(s::OUTBOUND_ADDR)?),
            )?,
            admin_addr: at(s::ADMIN_ADDR, value::socket_addr(&get(s::ADMIN_ADDR)?))?,
            upstreams,
            discovery,
            balancer,
            cluster_domain: get(s::CLUSTER_DOMAIN)?,
            pod_namespace,
            pod_name: get(s::POD_NAME)?,
            node_name: get(s::NODE_NAME)?,
            zone: get(s::ZONE)?,
            log: get(s::LOG)?,
            log_format,
            workers: num(s::WORKERS)? as usize,
            header_read_timeout: dur(s::HEADER_READ_TIMEOUT)?,
            max_header_bytes: num(s::MAX_HEADER_BYTES)? as u32,
            max_in_flight: num(s::MAX_IN_FLIGHT)? as usize,
            max_services: num(s::MAX_SERVICES)? as usize,
            service_idle_timeout: dur(s::SERVICE_IDLE_TIMEOUT)?,
            connect_timeout: dur(s::CONNECT_TIMEOUT)?,
            keepalive_interval: nonzero(dur(s::KEEPALIVE_INTERVAL)?),
            keepalive_timeout: dur(s::KEEPALIVE_TIMEOUT)?,
            retry_budget_percent: num(s::RETRY_BUDGET_PERCENT)? as u32,
            retry_budget_min_per_second: num(s::RETRY_BUDGET_MIN_PER_SECOND)? as u32,
            ejection_failures: num(s::EJECTION_FAILURES)? as u32,
            ejection_base_time: dur(s::EJECTION_BASE_TIME)?,
            ejection_max_time: dur(s::EJECTION_MAX_TIME)?,
            ejection_max_percent: num(s::EJECTION_MAX_PERCENT)? as u32,
            slow_start: nonzero(dur(s::SLOW_START)?),
            shutdown_grace: dur(s::SHUTDOWN_GRACE)?,
            drain_timeout: dur(s::DRAIN_TIMEOUT)?,
            hash_header: at(s::HASH_HEADER, value::header_name(&get(s::HASH_HEADER)?))?,
            subset_size: num(s::SUBSET_SIZE)? as usize,
            health_check,
            backend_tls,
            backend_tls_ca,
        };
        at(
            s::UPSTREAMS,
            upstreams::check_listeners(&config.upstreams, config.outbound_addr, config.admin_addr),
        )?;
        if upstreams::overlap(config.outbound_addr, config.admin_addr) {
            return Err(ConfigError::SamePort {
                outbound: config.outbound_addr,
                admin: config.admin_addr,
            });
        }
        Ok(config)
    }

    /// The configuration with every default.
    pub fn defaults() -> Self {
        Self::from_lookup(|_| None).expect("defaults are valid")
    }

    /// Names of every variable the proxy reads.
    pub fn env_names() -> impl Iterator<Item = &'static str> {
        SETTINGS.iter().map(|s| s.env)
    }
}

fn at<T, E: Into<ValueError>>(env: &str, r: Result<T, E>) -> Result<T, ConfigError> {
    r.map_err(|e| {
        ConfigError::Setting(SettingError {
            origin: env.to_owned(),
            why: e.into(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<ProxyConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_design() {
        let c = ProxyConfig::defaults();
        assert_eq!(c.outbound_addr, "127.0.0.1:4140".parse().unwrap());
        assert_eq!(c.admin_addr, "127.0.0.1:4191".parse().unwrap());
        assert_eq!(c.discovery, Discovery::Kubernetes);
        assert_eq!(c.balancer, Balancer::P2cEwma);
        assert_eq!(c.cluster_domain, "cluster.local");
        assert_eq!(c.pod_namespace, "default");
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.max_header_bytes, 65536);
        assert_eq!(c.max_in_flight, 10_000);
        assert_eq!(c.max_services, 100);
        assert_eq!(c.service_idle_timeout, Duration::from_secs(600));
        assert_eq!(c.ejection_failures, 5);
        assert_eq!(c.ejection_base_time, Duration::from_secs(10));
        assert_eq!(c.ejection_max_time, Duration::from_secs(300));
        assert_eq!(c.ejection_max_percent, 50);
        assert_eq!(c.retry_budget_percent, 20);
        assert_eq!(c.retry_budget_min_per_second, 10);
        assert_eq!(c.slow_start, None);
        assert_eq!(c.hash_header, None);
        assert!(c.backend_tls.is_empty());
        assert_eq!(c.backend_tls_ca, None);
        assert_eq!(c.subset_size, 64);
        assert_eq!(c.health_check, HealthCheck::Off);
    }

    #[test]
    fn reads_values() {
        let c = parse(&[
            ("SIDELB_DISCOVERY", "file:/tmp/e.yaml"),
            ("SIDELB_BALANCER", "round-robin"),
            ("POD_NAMESPACE", "shop"),
            ("SIDELB_UPSTREAMS", "orders:grpc=15002"),
            ("SIDELB_KEEPALIVE_INTERVAL", "0s"),
            ("SIDELB_HASH_HEADER", "X-User"),
            ("SIDELB_SUBSET_SIZE", "0"),
            ("SIDELB_HEALTH_CHECK", "grpc"),
        ])
        .unwrap();
        assert_eq!(c.health_check, HealthCheck::Grpc);
        assert_eq!(c.hash_header.as_deref(), Some("x-user"));
        assert_eq!(c.subset_size, 0, "0: every endpoint");

        assert_eq!(c.discovery, Discovery::File("/tmp/e.yaml".into()));
        assert_eq!(c.balancer, Balancer::RoundRobin);
        assert_eq!(c.upstreams[0].service.namespace, "shop");
        assert_eq!(c.keepalive_interval, None);
    }

    #[test]
    fn errors_name_the_variable() {
        let err = parse(&[("SIDELB_UPSTREAMS", "greeter")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("SIDELB_UPSTREAMS: "), "{err}");
        let err = parse(&[("SIDELB_BALANCER", "random")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("SIDELB_BALANCER: "), "{err}");
        let err = parse(&[("SIDELB_UPSTREAMS", "a:1=4140")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("outbound or admin"), "{err}");
        let err = parse(&[("SIDELB_HEADER_READ_TIMEOUT", "1ns")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("SIDELB_HEADER_READ_TIMEOUT: `1ns`") && err.contains("from 1ms to 24h"),
            "{err}"
        );
        for bad in ["on", "GRPC", "http"] {
            let err = parse(&[("SIDELB_HEALTH_CHECK", bad)])
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("SIDELB_HEALTH_CHECK: `{bad}`"))
                    && err.contains("one of off, grpc"),
                "{err}"
            );
        }
        for bad in ["-1", "all", "70000"] {
            let err = parse(&[("SIDELB_SUBSET_SIZE", bad)])
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("SIDELB_SUBSET_SIZE: `{bad}`"))
                    && err.contains("a whole number from 0 to 65535"),
                "{err}"
            );
        }
    }

    #[test]
    fn backend_tls_needs_its_ca() {
        let err = parse(&[("SIDELB_BACKEND_TLS", "greeter")]).unwrap_err();
        assert_eq!(err, ConfigError::BackendTlsWithoutCa);
        let err = err.to_string();
        assert!(
            err.contains("SIDELB_BACKEND_TLS is set but SIDELB_BACKEND_TLS_CA is not"),
            "{err}"
        );
        let c = parse(&[
            ("POD_NAMESPACE", "shop"),
            ("SIDELB_BACKEND_TLS", "greeter:50051=g.example.com, orders"),
            ("SIDELB_BACKEND_TLS_CA", "/etc/ca.pem"),
        ])
        .unwrap();
        assert_eq!(c.backend_tls.len(), 2);
        assert_eq!(c.backend_tls[1].server_name(), "orders.shop.svc");
        assert_eq!(c.backend_tls_ca, Some(PathBuf::from("/etc/ca.pem")));
        let err = parse(&[("SIDELB_BACKEND_TLS_CA", "ca.pem")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("SIDELB_BACKEND_TLS_CA: `ca.pem`"), "{err}");
        let err = parse(&[("SIDELB_BACKEND_TLS", "a.b.c")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("SIDELB_BACKEND_TLS: entry `a.b.c`"),
            "{err}"
        );
    }

    #[test]
    fn a_wildcard_address_takes_its_port_on_every_address() {
        let err = parse(&[
            ("SIDELB_ADMIN_ADDR", "0.0.0.0:4191"),
            ("SIDELB_UPSTREAMS", "a:1=4191"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`a.default:1`") && err.contains("outbound or admin"),
            "{err}"
        );
        let err = parse(&[
            ("SIDELB_ADMIN_ADDR", "0.0.0.0:4140"),
            ("SIDELB_OUTBOUND_ADDR", "127.0.0.1:4140"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("take the same port"), "{err}");
        assert!(
            parse(&[
                ("SIDELB_ADMIN_ADDR", "0.0.0.0:4191"),
                ("SIDELB_UPSTREAMS", "a:1=15001")
            ])
            .is_ok()
        );
    }
}
