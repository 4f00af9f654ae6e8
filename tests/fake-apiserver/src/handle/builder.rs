//! How to start a fake API server: the [`Builder`]'s options and the error a start
//! can end in.
//!
//! Every option has a default that suits most tests (`127.0.0.1:0`, plain HTTP, no
//! token, user `system:admin`); a test sets only what it is about, e.g.
//! `FakeApiServer::builder().tls(true).token("t").start()`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::super::tls::TlsError;
use super::FakeApiServer;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("fake API server I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("fake API server TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("fake API server thread did not start")]
    Thread,
}

/// How to start a [`FakeApiServer`].
#[derive(Debug, Clone)]
pub struct Builder {
    pub(super) listen: SocketAddr,
    pub(super) tls: bool,
    pub(super) token: Option<String>,
    pub(super) user: String,
    pub(super) kubeconfig_path: Option<PathBuf>,
    pub(super) history_limit: usize,
    pub(super) bookmark_interval: Duration,
    pub(super) service_account_admission: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
            token: None,
            user: "system:admin".into(),
            kubeconfig_path: None,
            history_limit: 1000,
            bookmark_interval: Duration::from_secs(5),
            service_account_admission: true,
        }
    }
}

impl Builder {
    /// Where to listen (default `127.0.0.1:0`, a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Serve HTTPS with a certificate from a generated CA, put in the kubeconfig.
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Require `Authorization: Bearer <token>` (written into the kubeconfig).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The user requests are made as, named in 403 messages and AdmissionReviews.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// Write the kubeconfig here instead of a temporary directory.
    pub fn kubeconfig_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig_path = Some(path.into());
        self
    }

    /// How many events the store remembers for watches to resume from.
    pub fn history_limit(mut self, events: usize) -> Self {
        self.history_limit = events;
        self
    }

    /// How often watches that allow bookmarks get one.
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// Whether Pods get the ServiceAccount admission plugin's token volume (default on).
    pub fn service_account_admission(mut self, on: bool) -> Self {
        self.service_account_admission = on;
        self
    }

    pub fn start(self) -> Result<FakeApiServer, StartError> {
        FakeApiServer::launch(self)
    }
}
