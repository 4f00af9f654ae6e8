//! sidelb-injector: the mutating admission webhook that adds the
//! `sidelb-proxy` sidecar to pods.
//!
//! A request flows `server → webhook → policy → patch`:
//! - [`server`]: HTTPS (h2 and HTTP/1.1), routing, body limits;
//! - [`webhook`]: one AdmissionReview in, one out;
//! - [`policy`]: whether to inject and with which settings;
//! - [`sidecar`] and [`patch`]: the container and the JSON Patch that adds it.
//!
//! [`grant`] gives the namespaces of injected pods the proxy's Kubernetes read
//! access. [`tls`] keeps the serving certificate fresh, [`config`] reads flags and
//! environment, [`metrics`] counts outcomes. [`Injector::start`] runs all of it
//! in the current Tokio runtime, which is how `main` and the tests use it.

pub mod config;
pub mod grant;
pub mod metrics;
pub mod patch;
pub mod policy;
pub mod review;
pub mod server;
pub mod sidecar;
pub mod tls;
pub mod webhook;

use crate::config::InjectorConfig;
use crate::metrics::Metrics;
use crate::server::App;
use crate::tls::{CertFiles, Reloader, TlsError};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Why the injector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot load the TLS certificate: {0}")]
    Tls(#[from] TlsError),
    #[error(
        "{env} is set, but no Kubernetes API access was found (an in-cluster \
         service account token or KUBECONFIG)",
        env = sidelb_config::names::injector_env::PROXY_ROLE_BINDING
    )]
    Kubernetes(#[source] kube::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running injector.
pub struct Injector {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
    reloader: JoinHandle<()>,
}

impl Injector {
    /// Loads the certificate, binds the address and starts serving.
    pub async fn start(config: InjectorConfig) -> Result<Injector, StartError> {
        let metrics = Arc::new(Metrics::new());
        let files = CertFiles {
            cert: config.tls_cert.clone(),
            key: config.tls_key.clone(),
        };
        let (resolver, reloader) = Reloader::load(files)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(resolver)?);
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.addr,
            source,
        })?;
        let reloader = tokio::spawn(reloader.run(config.tls_reload_interval, metrics.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let grants = match config.proxy_role_binding {
            Some(binding) => {
                let client = kube::Client::try_default()
                    .await
                    .map_err(StartError::Kubernetes)?;
                Some(grant::Grants::new(client, binding))
            }
            None => None,
        };
        let app = Arc::new(App::new(config.sidecar, metrics, grants));
        let server = tokio::spawn(server::serve(listener, acceptor, app, async {
            let _ = stopped.await;
        }));
        Ok(Injector {
            local_addr,
            stop,
            server,
            reloader,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets open requests finish (bounded) and returns.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
        self.reloader.abort();
    }
}
