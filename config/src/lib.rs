//! The public contract of sidelb, in one place.
//!
//! The proxy reads environment variables; the injector writes them, from pod
//! annotations and its own defaults. Both sides use this crate, so a name, a
//! default or a validation rule exists exactly once: if the injector accepts an
//! annotation value, the proxy accepts the variable it becomes.
//!
//! - [`names`]: annotation keys, container and port names, well-known ports.
//! - [`settings`]: every proxy setting with its variable, flag, annotation and default.
//! - [`ProxyConfig`]: the parsed, validated configuration of one proxy.
//! - [`upstreams`]: the `SIDELB_UPSTREAMS` / `sidelb.io/upstreams` format.
//! - [`backend_tls`]: the `SIDELB_BACKEND_TLS` / `sidelb.io/backend-tls` format.
//! - [`quantity`]: Kubernetes resource quantities, for the proxy's resources.
//! - [`exposition`]: how `/metrics` answers (Prometheus text or OpenMetrics).

pub mod backend_tls;
pub mod exposition;
pub mod names;
pub mod proxy;
pub mod quantity;
pub mod service;
pub mod settings;
pub mod upstreams;
pub mod value;

pub use backend_tls::BackendTls;
pub use proxy::{Balancer, ConfigError, Discovery, HealthCheck, LogFormat, ProxyConfig};
pub use service::{PortRef, ServiceKey};
pub use settings::{SETTINGS, Setting};
pub use upstreams::Upstream;
