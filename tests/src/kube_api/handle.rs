//! The test's handle on a running fake API server.
//!
//! The server runs on its own thread with its own Tokio runtime, so synchronous tests
//! and `#[tokio::test]`s alike can use it and nothing the test does can starve it.
//! Dropping the handle stops the server, ends the thread and removes the kubeconfig's
//! temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use super::crud;
use super::delete;
use super::faults::Mode;
use super::kubeconfig;
use super::resources::{self, ResourceType};
use super::server;
use super::status::ApiError;
use super::tls::{TestCa, TlsError};
use super::{Settings, Shared};

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
    listen: SocketAddr,
    tls: bool,
    token: Option<String>,
    user: String,
    kubeconfig_path: Option<PathBuf>,
    history_limit: usize,
    bookmark_interval: Duration,
    service_account_admission: bool,
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

fn temp_dir() -> std::io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "sidelb-fake-apiserver-{}-{n}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn seed_namespaces(shared: &Shared) {
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let namespace = serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } });
        let _ = crud::create_direct(shared, namespace);
    }
}

impl FakeApiServer {
    /// Starts on 127.0.0.1 with a free port, plain HTTP, no authentication.
    pub fn start() -> Result<Self, StartError> {
        Builder::default().start()
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    fn launch(builder: Builder) -> Result<Self, StartError> {
        let settings = Settings {
            user: builder.user.clone(),
            token: builder.token.clone(),
            bookmark_interval: builder.bookmark_interval,
            service_account_admission: builder.service_account_admission,
        };
        let shared = Arc::new(Shared::new(settings, builder.history_limit));
        seed_namespaces(&shared);

        let (handle_tx, handle_rx) = mpsc::channel();
        let (exit, exit_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        let _ = handle_tx.send(Some(runtime.handle().clone()));
                        runtime.block_on(async move {
                            let _ = exit_rx.await;
                        });
                    }
                    Err(_) => {
                        let _ = handle_tx.send(None);
                    }
                }
            })?;
        let runtime = handle_rx.recv().ok().flatten().ok_or(StartError::Thread)?;

        let (tls, ca_pem) = if builder.tls {
            let ca = TestCa::new("sidelb fake apiserver CA")?;
            let ip = builder.listen.ip().to_string();
            let config = ca.server_config(&["127.0.0.1", "localhost", &ip])?;
            (Some(TlsAcceptor::from(config)), Some(ca.pem().to_string()))
        } else {
            (None, None)
        };
        let (kubeconfig, temp) = match builder.kubeconfig_path.clone() {
            Some(path) => (path, None),
            None => {
                let dir = temp_dir()?;
                (dir.join("kubeconfig"), Some(dir))
            }
        };
        let mut server = Self {
            shared,
            runtime,
            thread: Some(thread),
            exit: Some(exit),
            addr: builder.listen,
            tls,
            ca_pem,
            kubeconfig,
            temp_dir: temp,
            serving: Mutex::new(None),
        };
        server.addr = server.listen()?;
        if let Ok(mut address) = server.shared.server_address.lock() {
            *address = server.addr.to_string();
        }
        kubeconfig::write(
            &server.kubeconfig,
            &server.url(),
            server.ca_pem.as_deref(),
            builder.token.as_deref(),
        )?;
        Ok(server)
    }

    fn listen(&self) -> std::io::Result<SocketAddr> {
        let listener = {
            let _context = self.runtime.enter();
            server::bind(self.addr)?
        };
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let (stopped_tx, stopped) = mpsc::channel();
        let shared = self.shared.clone();
        let tls = self.tls.clone();
        self.runtime.spawn(async move {
            server::serve(listener, shared, tls, stop_rx).await;
            let _ = stopped_tx.send(());
        });
        if let Ok(mut serving) = self.serving.lock() {
            *serving = Some(Serving { stop, stopped });
        }
        Ok(addr)
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

    // Objects. These take the server's write path (defaults, validation, events) but
    // not admission webhooks; create through a client to exercise those.

    /// Creates an object (`apiVersion`, `kind`, `metadata.namespace` or `default`).
    pub fn create(&self, object: Value) -> Result<Value, ApiError> {
        crud::create_direct(&self.shared, object)
    }

    /// Replaces an object (conditionally, if it carries a resourceVersion).
    pub fn replace(&self, object: Value) -> Result<Value, ApiError> {
        crud::replace_direct(&self.shared, object)
    }

    /// Creates the object or replaces whatever is stored under its name.
    pub fn apply(&self, mut object: Value) -> Result<Value, ApiError> {
        super::meta::metadata_mut(&mut object).remove("resourceVersion");
        match crud::create_direct(&self.shared, object.clone()) {
            Err(err) if err.reason == "AlreadyExists" => crud::replace_direct(&self.shared, object),
            other => other,
        }
    }

    /// Applies a JSON merge patch to a stored object.
    pub fn patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        merge_patch: &Value,
    ) -> Result<Value, ApiError> {
        let resource = Self::resource(api_version, kind)?;
        crud::merge_patch_direct(
            &self.shared,
            resource,
            Self::namespace(resource, namespace),
            name,
            merge_patch,
        )
    }

    /// Deletes an object (only marks it, if it has finalizers).
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let resource = Self::resource(api_version, kind)?;
        delete::delete_direct(
            &self.shared,
            resource,
            Self::namespace(resource, namespace),
            name,
        )
    }

    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let resource = Self::resource(api_version, kind).ok()?;
        self.shared
            .store
            .get(resource, Self::namespace(resource, namespace), name)
    }

    /// Objects of a kind, in one namespace or (with `None`) all.
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        match Self::resource(api_version, kind) {
            Ok(resource) => self.shared.store.list(resource, namespace).0,
            Err(_) => Vec::new(),
        }
    }

    fn resource(api_version: &str, kind: &str) -> Result<&'static ResourceType, ApiError> {
        resources::by_kind(api_version, kind).ok_or_else(|| {
            ApiError::bad_request(format!(
                "no kind {kind:?} is registered for version {api_version:?}"
            ))
        })
    }

    fn namespace<'a>(resource: &ResourceType, namespace: Option<&'a str>) -> &'a str {
        match (resource.namespaced, namespace) {
            (false, _) => "",
            (true, Some(ns)) => ns,
            (true, None) => "default",
        }
    }

    /// Sends webhook calls for Service `namespace/name:port` to `addr`.
    pub fn route_service(&self, namespace: &str, name: &str, port: u16, addr: SocketAddr) {
        if let Ok(mut services) = self.shared.webhook_services.lock() {
            services.insert((namespace.to_string(), name.to_string(), port), addr);
        }
    }

    // Faults.

    /// Ends every open watch (clients see their watch stream close).
    pub fn drop_watches(&self) {
        self.shared.store.drop_watches();
    }

    /// Drops every watch and forgets the event history: a watch from any earlier
    /// resourceVersion then gets `410 Expired`. Objects are kept.
    pub fn restart_with_compaction(&self) {
        self.shared.store.compact_and_drop_watches();
    }

    /// Answer every request with 500 (`Fail`), hold them (`Hang`), or serve (`Normal`).
    pub fn set_fault_mode(&self, mode: Mode) {
        self.shared.faults.set_mode(mode);
    }

    /// Answers every request for `group`/`resource` (`""` for core) with 403 Forbidden.
    pub fn forbid(&self, group: &str, resource: &str) {
        self.shared.faults.forbid(group, resource, "*");
    }

    /// Answers one verb (`list`, `watch`, `get`, ...) on `group`/`resource` with 403.
    pub fn forbid_verb(&self, group: &str, resource: &str, verb: &str) {
        self.shared.faults.forbid(group, resource, verb);
    }

    /// Lifts every prohibition on `group`/`resource`.
    pub fn allow(&self, group: &str, resource: &str) {
        self.shared.faults.allow(group, resource);
    }

    /// Back to normal service, nothing forbidden.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Stops listening and cuts every connection; the store is kept.
    pub fn stop(&self) {
        let serving = self.serving.lock().ok().and_then(|mut s| s.take());
        if let Some(serving) = serving {
            let _ = serving.stop.send(true);
            let _ = serving.stopped.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Listens again on the same address after [`stop`](Self::stop).
    pub fn start_again(&self) -> std::io::Result<()> {
        let mut last = None;
        for _ in 0..50 {
            match self.listen() {
                Ok(_) => return Ok(()),
                Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
                    last = Some(err);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => return Err(err),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("could not listen again")))
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again).
    pub fn restart(&self) -> std::io::Result<()> {
        self.stop();
        self.start_again()
    }

    // Accounting.

    /// Requests seen for `resource` (plural, e.g. `endpointslices`) with `verb`
    /// (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`).
    pub fn requests(&self, resource: &str, verb: &str) -> u64 {
        self.shared.stats.requests(resource, verb)
    }

    /// Every API request received (discovery, lists, watches, writes),
    /// including those answered with an injected fault or held by `Hang`:
    /// what a client's retry loop costs the server.
    pub fn api_requests(&self) -> u64 {
        self.shared.stats.api_requests()
    }

    /// Watches on `resource` open right now.
    pub fn open_watches(&self, resource: &str) -> usize {
        self.shared.stats.open_watches(resource)
    }

    /// Polls `condition` until it holds or `timeout` passes; returns whether it held.
    /// Blocks the calling thread: from async code use [`wait_until_async`](Self::wait_until_async).
    pub fn wait_until(&self, timeout: Duration, condition: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub async fn wait_until_async(
        &self,
        timeout: Duration,
        condition: impl Fn(&Self) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(exit) = self.exit.take() {
            let _ = exit.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(dir) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
