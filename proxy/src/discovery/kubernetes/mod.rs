//! Endpoints from the Kubernetes API: a Service's EndpointSlices, read the
//! way kube-proxy reads them.
//!
//! Only the Services the pod actually talks to are watched — a pool
//! subscribes when it is first used and its subscription ends when the pool
//! is dropped — and each Service once, whatever number of ports and pools use
//! it ([`registry`], [`watch`]). Per Service there are two list+watches, both
//! namespaced and narrow: the Service object (`metadata.name=<svc>`) for its
//! ports, and its EndpointSlices (`kubernetes.io/service-name=<svc>`) for the
//! pods. What they report is merged into one answer per port ([`state`]):
//! the port asked for is found on the Service and mapped to each slice's
//! port ([`ports`]), then the ready endpoints of all slices are taken
//! ([`endpoints`]). Failures keep the last known endpoints, except those that
//! need someone to fix the cluster, which requests are told about
//! ([`failure`]). Failures are retried with backoff ([`retry`]), and each
//! watch restarts at most once a second ([`pacing`]).
//!
//! Credentials come from [`kube::Config::infer`]: `KUBECONFIG` (or
//! `~/.kube/config`) when present, else the pod's service account (token and
//! CA mounted under `/var/run/secrets/kubernetes.io/serviceaccount`, the API
//! server from `KUBERNETES_SERVICE_HOST`). An API server that is down at
//! start delays readiness until it answers once ([`reach`]); it does not
//! stop the proxy.

pub mod endpoints;
pub(crate) mod failure;
pub(crate) mod pacing;
pub(crate) mod ports;
pub(crate) mod reach;
pub(crate) mod registry;
pub(crate) mod retry;
pub(crate) mod state;
pub(crate) mod watch;

use super::{Discover, Publisher, UpdateRx};
use kube::Client;
use kube::client::ClientBuilder;
use pacing::PaceWatches;
use reach::Reach;
use registry::Registry;
use sidelb_config::{ServiceKey, names};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tower::buffer::BufferLayer;
use watch::Subscriber;

/// Requests to the API server queued in the client at most (two watches
/// and their lists per Service in use; more wait their turn).
const API_REQUESTS_QUEUED: usize = 64;

/// A Service, whatever its port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceRef {
    pub name: String,
    pub namespace: String,
}

impl From<&ServiceKey> for ServiceRef {
    fn from(key: &ServiceKey) -> Self {
        ServiceRef {
            name: key.name.clone(),
            namespace: key.namespace.clone(),
        }
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error(
        "cannot tell how to reach the Kubernetes API server ({0}); in a pod the proxy uses its service account \
         (KUBERNETES_SERVICE_HOST and the token and CA under /var/run/secrets/kubernetes.io/serviceaccount: \
         check automountServiceAccountToken); elsewhere set KUBECONFIG; \
         or run without a cluster with SIDELB_DISCOVERY=file:PATH"
    )]
    Config(#[source] kube::config::InferConfigError),
    #[error("cannot set up the Kubernetes client for {cluster_url}: {source}")]
    Client {
        cluster_url: String,
        #[source]
        source: kube::Error,
    },
}

/// The Kubernetes source. Cheap to clone; clones share the watches.
#[derive(Clone)]
pub struct KubernetesDiscovery {
    client: Client,
    cluster_url: Arc<str>,
    registry: Arc<Registry<Subscriber>>,
    runtime: tokio::runtime::Handle,
    reach: Reach,
}

impl KubernetesDiscovery {
    /// Finds the credentials and builds the client; the API server is asked
    /// for its version in the background ([`reach`]).
    /// Must run inside the Tokio runtime the watches will run on.
    pub(crate) async fn connect() -> Result<Self, KubernetesError> {
        let config = kube::Config::infer()
            .await
            .map_err(KubernetesError::Config)?;
        Self::from_config(config)
    }

    /// A source for the API server and credentials of `config`. Must run
    /// inside the Tokio runtime the watches will run on.
    pub fn from_config(config: kube::Config) -> Result<Self, KubernetesError> {
        // kube's rustls uses the process-wide crypto provider; the build has
        // only ring, but a workspace build may unify in another provider,
        // and with two rustls refuses to guess.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cluster_url = config.cluster_url.to_string();
        let client = ClientBuilder::try_from(config)
            .map_err(|source| KubernetesError::Client {
                cluster_url: cluster_url.clone(),
                source,
            })?
            // The pacing layer holds a ready service while a watch waits,
            // so it needs a cloneable one below it.
            .with_layer(&BufferLayer::new(API_REQUESTS_QUEUED))
            .with_layer(&PaceWatches::default())
            .build();
        tracing::info!(api_server = %cluster_url, "Kubernetes discovery");
        Ok(KubernetesDiscovery {
            reach: Reach::probe(client.clone(), &cluster_url),
            client,
            cluster_url: cluster_url.into(),
            registry: Arc::new(Registry::default()),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// The `topology.kubernetes.io/zone` label of Node `node`, or why it
    /// could not be read (within `within`).
    pub(crate) async fn node_zone(&self, node: &str, within: Duration) -> Result<String, String> {
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
            kube::Api::all(self.client.clone());
        let found = tokio::time::timeout(within, nodes.get(node))
            .await
            .map_err(|_| format!("the API server did not answer within {within:?}"))?
            .map_err(|e| match e {
                kube::Error::Api(status) if status.code == 403 => format!(
                    "{}; the proxy needs `get` on nodes, which the chart grants",
                    status.message
                ),
                other => other.to_string(),
            })?;
        found
            .metadata
            .labels
            .and_then(|labels| labels.get(names::ZONE_LABEL).cloned())
            .filter(|zone| !zone.is_empty())
            .ok_or_else(|| format!("node {node} has no {} label", names::ZONE_LABEL))
    }

    /// The Services watched now (each once, whatever the ports).
    pub fn watched(&self) -> Vec<ServiceRef> {
        self.registry.watched()
    }
}

impl Discover for KubernetesDiscovery {
    fn subscribe(&self, service: &ServiceKey) -> UpdateRx {
        let (tx, rx) = mpsc::unbounded_channel();
        let subscriber = Subscriber {
            port: service.port.clone(),
            publisher: Publisher::new(tx),
        };
        let service = ServiceRef::from(service);
        self.registry
            .join(&service, subscriber, |joining, generation| {
                self.runtime.spawn(watch::run(
                    self.client.clone(),
                    service.clone(),
                    joining,
                    self.registry.clone(),
                    generation,
                ));
            });
        rx
    }

    fn describe(&self) -> String {
        format!("the Kubernetes API server {}", self.cluster_url)
    }

    fn ready(&self) -> Result<(), String> {
        self.reach.ready()
    }
}
