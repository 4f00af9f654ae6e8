//! The injector's own configuration: flags and environment variables.
//!
//! Every option is defined once, by its environment variable; the flag is
//! derived from it with the same rule the proxy uses ([`flag_for`]), so
//! `SIDELB_PROXY_IMAGE` is also `--proxy-image`. The per-pod defaults of proxy
//! settings (`SIDELB_DEFAULT_BALANCER`, …) come from [`SETTINGS`], so a setting
//! added there gets its injector default without a change here.
//!
//! Values are checked at start-up with the same rules as the annotations they
//! stand in for: a bad default stops the injector instead of being written
//! into every pod.

use clap::{Arg, ArgMatches, Command};
use sidelb_config::names::{self, injector_env as env};
use sidelb_config::settings::{self, SETTINGS, Setting, flag_for};
use sidelb_config::{LogFormat, quantity, value};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Image pull policies Kubernetes accepts.
pub const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];

/// Everything the injector needs to start.
#[derive(Clone, Debug)]
pub struct InjectorConfig {
    pub addr: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub tls_reload_interval: Duration,
    pub log: String,
    pub log_format: LogFormat,
    pub sidecar: SidecarDefaults,
    /// The ClusterRoleBinding that grants injected namespaces the proxies'
    /// read access ([`crate::grant`]); `None`: access is granted otherwise.
    pub proxy_role_binding: Option<String>,
}

/// What every injected proxy gets unless its pod's annotations say otherwise.
#[derive(Clone, Debug)]
pub struct SidecarDefaults {
    pub image: String,
    pub image_pull_policy: String,
    pub native_sidecar: bool,
    pub resources: ProxyResources,
    /// Proxy settings set for every pod (from `SIDELB_DEFAULT_*`), in
    /// [`SETTINGS`] order.
    pub proxy_env: Vec<(&'static Setting, String)>,
}

/// The proxy container's resources; `None` leaves that one unset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyResources {
    pub cpu_request: Option<String>,
    pub memory_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

/// A flag or variable whose value is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Args(#[from] clap::Error),
}

/// One option: its variable, its default (`None`: unset unless given) and help.
struct Opt {
    env: &'static str,
    default: Option<&'static str>,
    help: &'static str,
}

const fn opt(env: &'static str, default: Option<&'static str>, help: &'static str) -> Opt {
    Opt { env, default, help }
}

const DEFAULT_IMAGE: &str = concat!("sidelb/proxy:", env!("CARGO_PKG_VERSION"));

const OPTIONS: &[Opt] = &[
    opt(
        env::ADDR,
        Some("0.0.0.0:8443"),
        "HTTPS address to serve the webhook on",
    ),
    opt(
        env::TLS_CERT,
        None,
        "PEM certificate chain file (reloaded when it changes)",
    ),
    opt(
        env::TLS_KEY,
        None,
        "PEM private key file (reloaded when it changes)",
    ),
    opt(
        env::TLS_RELOAD_INTERVAL,
        Some("10s"),
        "how often the certificate files are checked",
    ),
    opt(
        env::PROXY_IMAGE,
        Some(DEFAULT_IMAGE),
        "the proxy's container image",
    ),
    opt(
        env::PROXY_IMAGE_PULL_POLICY,
        Some("IfNotPresent"),
        "Always, IfNotPresent or Never",
    ),
    opt(
        env::NATIVE_SIDECAR,
        Some("true"),
        "inject a native sidecar (`false`: a regular first container)",
    ),
    opt(
        env::PROXY_CPU_REQUEST,
        Some("10m"),
        "the proxy's CPU request",
    ),
    opt(
        env::PROXY_MEMORY_REQUEST,
        Some("20Mi"),
        "the proxy's memory request",
    ),
    opt(
        env::PROXY_CPU_LIMIT,
        Some(""),
        "the proxy's CPU limit (empty: none)",
    ),
    opt(
        env::PROXY_MEMORY_LIMIT,
        Some("64Mi"),
        "the proxy's memory limit (empty: none)",
    ),
    opt(
        env::PROXY_ROLE_BINDING,
        Some(""),
        "ClusterRoleBinding to add each injected namespace's service accounts to (empty: none)",
    ),
    opt(env::LOG, Some("info"), "the injector's log filter"),
    opt(
        env::LOG_FORMAT,
        Some("plain"),
        "the injector's log format: plain or json",
    ),
];

/// The command line: every option above plus one `--default-*` per proxy
/// setting that has an annotation.
pub fn command() -> Command {
    let fixed = OPTIONS.iter().map(|o| {
        let arg = Arg::new(o.env)
            .long(flag_for(o.env))
            .env(o.env)
            .help(o.help);
        match o.default {
            Some(d) => arg.default_value(d),
            None => arg,
        }
    });
    let defaults = SETTINGS.iter().filter_map(|s| {
        let var = s.injector_default_env()?;
        Some(
            Arg::new(var.clone())
                .long(flag_for(&var))
                .env(var)
                .help(format!("default of {} for every pod: {}", s.env, s.help)),
        )
    });
    Command::new("sidelb-injector")
        .version(env!("CARGO_PKG_VERSION"))
        .about("sidelb's mutating admission webhook: adds the sidelb-proxy sidecar to pods")
        .args(fixed)
        .args(defaults)
}

impl InjectorConfig {
    /// Parses flags (and the environment) the way `main` does.
    pub fn parse_from<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = command().try_get_matches_from(args)?;
        Self::from_matches(&matches)
    }

    fn from_matches(m: &ArgMatches) -> Result<Self, ConfigError> {
        let get = |name: &str| m.get_one::<String>(name).map(|v| v.trim().to_owned());
        let required = |name: &str| {
            get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                ConfigError::Invalid(format!("{name} (--{}) is required", flag_for(name)))
            })
        };
        let invalid = |name: &str, why: &dyn std::fmt::Display| {
            ConfigError::Invalid(format!("{name}: {why}"))
        };

        let addr = required(env::ADDR)?;
        let addr = value::socket_addr(&addr).map_err(|e| invalid(env::ADDR, &e))?;
        let reload = required(env::TLS_RELOAD_INTERVAL)?;
        let tls_reload_interval =
            value::duration(&reload, false).map_err(|e| invalid(env::TLS_RELOAD_INTERVAL, &e))?;
        let log = required(env::LOG)?;
        Setting::by_env(settings::LOG)
            .map(|s| s.check(env::LOG, &log))
            .transpose()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let log_format = match required(env::LOG_FORMAT)?.as_str() {
            "plain" => LogFormat::Plain,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    env::LOG_FORMAT,
                    &format!("`{other}` is not plain or json"),
                ));
            }
        };

        let image_pull_policy = required(env::PROXY_IMAGE_PULL_POLICY)?;
        if !PULL_POLICIES.contains(&image_pull_policy.as_str()) {
            return Err(invalid(
                env::PROXY_IMAGE_PULL_POLICY,
                &format!(
                    "`{image_pull_policy}` is not one of {}",
                    PULL_POLICIES.join(", ")
                ),
            ));
        }
        let native = required(env::NATIVE_SIDECAR)?;
        let native_sidecar = parse_bool(&native)
            .ok_or_else(|| invalid(env::NATIVE_SIDECAR, &bool_error(&native)))?;
        let quantity = |name: &str| -> Result<Option<String>, ConfigError> {
            match get(name).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => quantity::check(&v)
                    .map(|()| Some(v))
                    .map_err(|e| invalid(name, &e)),
            }
        };
        let resources = ProxyResources {
            cpu_request: quantity(env::PROXY_CPU_REQUEST)?,
            memory_request: quantity(env::PROXY_MEMORY_REQUEST)?,
            cpu_limit: quantity(env::PROXY_CPU_LIMIT)?,
            memory_limit: quantity(env::PROXY_MEMORY_LIMIT)?,
        };

        for (request, limit, req_env, lim_env) in [
            (
                &resources.cpu_request,
                &resources.cpu_limit,
                env::PROXY_CPU_REQUEST,
                env::PROXY_CPU_LIMIT,
            ),
            (
                &resources.memory_request,
                &resources.memory_limit,
                env::PROXY_MEMORY_REQUEST,
                env::PROXY_MEMORY_LIMIT,
            ),
        ] {
            let (Some(request), Some(limit)) = (request, limit) else {
                continue;
            };
            if quantity::value(request).ok() > quantity::value(limit).ok() {
                let why = format!("`{request}` is above {lim_env} `{limit}`");
                return Err(invalid(req_env, &why));
            }
        }

        let proxy_role_binding = get(env::PROXY_ROLE_BINDING).filter(|v| !v.is_empty());
        if let Some(name) = &proxy_role_binding {
            object_name(name).map_err(|e| invalid(env::PROXY_ROLE_BINDING, &e))?;
        }

        let mut proxy_env = Vec::new();
        for setting in SETTINGS {
            let Some(var) = setting.injector_default_env() else {
                continue;
            };
            if let Some(v) = get(&var) {
                setting
                    .check(&var, &v)
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?;
                proxy_env.push((setting, v));
            }
        }

        Ok(InjectorConfig {
            addr,
            tls_cert: required(env::TLS_CERT)?.into(),
            tls_key: required(env::TLS_KEY)?.into(),
            tls_reload_interval,
            log,
            log_format,
            sidecar: SidecarDefaults {
                image: required(env::PROXY_IMAGE)?,
                image_pull_policy,
                native_sidecar,
                resources,
                proxy_env,
            },
            proxy_role_binding,
        })
    }
}

/// A Kubernetes object name (a DNS subdomain), as RBAC objects are named.
fn object_name(name: &str) -> Result<(), String> {
    let valid = name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not an object name (lowercase letters, digits, `-` and `.`)"
        ))
    }
}

/// `true` or `false`, as Kubernetes users write booleans in annotations.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

pub fn bool_error(v: &str) -> String {
    format!("`{v}` is not `true` or `false`")
}

/// The annotation that overrides each resource, next to the variable that
/// sets its default.
pub const RESOURCE_ANNOTATIONS: [(&str, &str); 4] = [
    (names::PROXY_CPU_REQUEST, env::PROXY_CPU_REQUEST),
    (names::PROXY_MEMORY_REQUEST, env::PROXY_MEMORY_REQUEST),
    (names::PROXY_CPU_LIMIT, env::PROXY_CPU_LIMIT),
    (names::PROXY_MEMORY_LIMIT, env::PROXY_MEMORY_LIMIT),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<InjectorConfig, ConfigError> {
        let mut args = vec![
            "sidelb-injector",
            "--tls-cert",
            "/c.pem",
            "--tls-key",
            "/k.pem",
        ];
        args.extend_from_slice(extra);
        InjectorConfig::parse_from(args)
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.addr, "0.0.0.0:8443".parse().unwrap());
        assert!(c.sidecar.native_sidecar);
        assert_eq!(c.sidecar.image_pull_policy, "IfNotPresent");
        assert_eq!(c.sidecar.resources.cpu_request.as_deref(), Some("10m"));
        assert_eq!(c.sidecar.resources.memory_limit.as_deref(), Some("64Mi"));
        assert_eq!(c.sidecar.resources.cpu_limit, None);
        assert!(c.sidecar.proxy_env.is_empty());
        assert_eq!(c.proxy_role_binding, None);
    }

    #[test]
    fn the_proxy_role_binding_is_an_object_name() {
        let c = parse(&["--proxy-role-binding", "sidelb-proxy"]).unwrap();
        assert_eq!(c.proxy_role_binding.as_deref(), Some("sidelb-proxy"));
        for bad in ["Sidelb", "a_b", "-a", "a..b"] {
            let flag = format!("--proxy-role-binding={bad}");
            let err = parse(&[&flag]).unwrap_err().to_string();
            assert!(err.starts_with("SIDELB_PROXY_ROLE_BINDING"), "{err}");
        }
    }

    #[test]
    fn flags_come_from_variable_names() {
        let c = parse(&[
            "--injector-addr",
            "127.0.0.1:9443",
            "--native-sidecar",
            "false",
            "--default-balancer",
            "round-robin",
            "--proxy-cpu-limit",
            "200m",
        ])
        .unwrap();
        assert_eq!(c.addr.port(), 9443);
        assert!(!c.sidecar.native_sidecar);
        assert_eq!(c.sidecar.proxy_env[0].0.env, "SIDELB_BALANCER");
        assert_eq!(c.sidecar.proxy_env[0].1, "round-robin");
        assert_eq!(c.sidecar.resources.cpu_limit.as_deref(), Some("200m"));
    }

    #[test]
    fn bad_values_stop_the_start_naming_the_variable() {
        for (args, name) in [
            (
                &["--default-balancer", "random"][..],
                "SIDELB_DEFAULT_BALANCER",
            ),
            (
                &["--proxy-memory-limit", "64MB"][..],
                "SIDELB_PROXY_MEMORY_LIMIT",
            ),
            (&["--native-sidecar", "yes"][..], "SIDELB_NATIVE_SIDECAR"),
            (
                &["--proxy-image-pull-policy", "sometimes"][..],
                "SIDELB_PROXY_IMAGE_PULL_POLICY",
            ),
            (&["--injector-addr", "8443"][..], "SIDELB_INJECTOR_ADDR"),
            (
                &["--proxy-memory-request", "1Gi"][..],
                "SIDELB_PROXY_MEMORY_REQUEST",
            ),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.starts_with(name), "{err}");
        }
        let err = InjectorConfig::parse_from(["sidelb-injector", "--tls-key", "/k"]).unwrap_err();
        assert!(err.to_string().contains("--tls-cert"), "{err}");
    }
}
