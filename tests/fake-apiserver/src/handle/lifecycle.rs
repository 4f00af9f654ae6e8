//! A server's life: its thread and runtime, its listener, stopping and listening again
//! on the same address, and the cleanup when the handle is dropped.
//!
//! [`FakeApiServer::stop`] cuts every connection but keeps the store, so a test can
//! play an API server restart: clients see their connections refused, then
//! [`FakeApiServer::start_again`] and the same objects at the same resourceVersions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use super::super::crud;
use super::super::kubeconfig;
use super::super::server;
use super::super::tls::TestCa;
use super::super::{Settings, Shared};
use super::{Builder, FakeApiServer, Serving, StartError};

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
    pub(super) fn launch(builder: Builder) -> Result<Self, StartError> {
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
