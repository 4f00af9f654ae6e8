//! A fake Kubernetes API server for end-to-end tests.
//!
//! sidelb's proxy discovers endpoints by listing and watching EndpointSlices and
//! Services, and its injector is a mutating admission webhook. Neither can be tested
//! honestly against a mock of the `kube` crate: what matters is how the real clients
//! (`kube`'s watcher, `kubectl`) behave against the real protocol — resourceVersions,
//! bookmarks, `410 Gone`, `Status` errors, dropped watches, AdmissionReview calls over
//! TLS. This crate speaks that protocol over HTTP(S) on 127.0.0.1, keeps everything in
//! memory, and lets a test inject the failures a cluster produces.
//!
//! Start one with [`FakeApiServer::start`] (or [`FakeApiServer::builder`]); point a
//! client at [`FakeApiServer::kubeconfig_path`]. The `fake-apiserver` binary runs the
//! same server for humans and demos.
//!
//! Known differences from kube-apiserver: no OpenAPI documents (kubectl needs
//! `--validate=false`), no RBAC beyond the forbid hooks, no managedFields and a
//! server-side apply that is a strategic merge without conflict detection, no
//! controllers (no garbage collection by ownerReferences; a Namespace's contents go
//! with it at once; Pods stay `Pending`), validation only of names, labels and the
//! fields sidelb's kinds need, protobuf bodies only for the simple kinds kubectl's
//! `create` subcommands send, webhook `matchConditions` not evaluated, and lists at an
//! exact older resourceVersion answered 410.

mod admission;
mod crud;
mod defaults;
mod delete;
mod discovery;
mod dispatch;
mod faults;
mod handle;
mod kubeconfig;
mod list_watch;
mod meta;
mod patch;
mod protobuf;
mod request;
mod resources;
mod response;
mod selectors;
mod server;
mod status;
mod store;
mod table;
pub mod tls;
mod validation;

pub use faults::Mode as FaultMode;
pub use handle::{Builder, FakeApiServer, StartError};
pub use status::ApiError;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

/// Everything the request handlers share.
pub(crate) struct Shared {
    pub store: store::Store,
    pub faults: faults::Faults,
    pub stats: faults::Stats,
    pub cluster_ips: defaults::ClusterIps,
    pub settings: Settings,
    /// Where webhook Services (namespace, name, port) really listen.
    pub webhook_services: Mutex<HashMap<(String, String, u16), SocketAddr>>,
    pub server_address: Mutex<String>,
}

/// Behaviour fixed when the server is built.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The user requests are made as (in 403 messages and AdmissionReviews).
    pub user: String,
    /// When set, requests must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    pub bookmark_interval: Duration,
    /// Whether the ServiceAccount admission plugin mutates Pods.
    pub service_account_admission: bool,
}

impl Shared {
    fn new(settings: Settings, history_limit: usize) -> Self {
        Self {
            store: store::Store::new(history_limit, 100),
            faults: faults::Faults::default(),
            stats: faults::Stats::default(),
            cluster_ips: defaults::ClusterIps::default(),
            settings,
            webhook_services: Mutex::default(),
            server_address: Mutex::default(),
        }
    }
}
