//! The test's handle on a running fake API server.
//!
//! The server runs on its own thread with its own Tokio runtime, so synchronous tests
//! and `#[tokio::test]`s alike can use it and nothing the test does can starve it.
//! Dropping the handle stops the server, ends the thread and removes the kubeconfig's
//! temporary directory.
//!
//! - `builder`: the options a server starts with ([`Builder`]).
//! - `lifecycle`: starting the thread and the listener, stopping, restarting, dropping.
//! - `objects`: reading and writing objects directly, bypassing admission webhooks.
//! - `faults`: the failures a test injects (dropped watches, compaction, 500s, 403s).
//! - `accounting`: what clients asked for, and waiting on a condition.

mod accounting;
mod builder;
mod faults;
mod lifecycle;
mod objects;

pub use builder::{Builder, StartError};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use super::Shared;

/// A running fake API server.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    thread: Option<JoinHandle<()>>,
    exit: Option<oneshot::Sender<()>>,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    ca_pem: Option<String>,
    kubeconfig: PathBuf,
    temp_dir: Option<PathBuf>,
    serving: Mutex<Option<Serving>>,
}

/// The accept loop of one start of the server.
struct Serving {
    stop: watch::Sender<bool>,
    stopped: mpsc::Receiver<()>,
}

impl FakeApiServer {
    /// Starts on 127.0.0.1 with a free port, plain HTTP, no authentication.
    pub fn start() -> Result<Self, StartError> {
        Builder::default().start()
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    /// `http://127.0.0.1:PORT` (or `https://`).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The CA certificate (PEM) clients must trust, when serving HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The store's current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.resource_version()
    }
}
