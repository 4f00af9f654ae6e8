//! The usual proxy scenario in one call: named backends behind Service
//! `echo.default:50051`, an endpoints file listing them, and a proxy with
//! an upstream listener for the service, returned once every backend is
//! connected (so what a test counts does not depend on connection timing).

use super::backend::{Backend, BackendOptions};
use super::client::Echo;
use super::endpoints_file::{EndpointsFile, ServiceEndpoints};
use super::proxy::{Proxy, ProxyOptions};
use anyhow::Result;
use std::net::SocketAddr;

/// The Service every [`EchoSetup`] is about.
pub const ECHO: &str = "echo.default:50051";

/// Backends, their endpoints file and the proxy in front of them.
pub struct EchoSetup {
    pub backends: Vec<Backend>,
    pub file: EndpointsFile,
    pub proxy: Proxy,
}

impl EchoSetup {
    /// Starts one backend per name with `backend`, and the proxy with the
    /// extra environment `env` (e.g. `SIDELB_BALANCER`).
    pub async fn start(
        names: &[&str],
        backend: BackendOptions,
        env: &[(&str, &str)],
    ) -> Result<EchoSetup> {
        let backends = Backend::spawn_all(names, backend).await?;
        EchoSetup::with_backends(backends, env).await
    }

    /// The same with backends started by the test (e.g. each with its own options).
    pub async fn with_backends(backends: Vec<Backend>, env: &[(&str, &str)]) -> Result<EchoSetup> {
        let file =
            EndpointsFile::create(&[ServiceEndpoints::of("echo", "default", 50051, &backends)])?;
        let mut options = ProxyOptions::file_discovery(&file).upstream(ECHO);
        for (name, value) in env {
            options = options.env(name, *value);
        }
        let proxy = Proxy::spawn(options).await?;
        let setup = EchoSetup {
            backends,
            file,
            proxy,
        };
        setup.wait_ready().await?;
        Ok(setup)
    }

    /// A client of the service on one connection to its upstream listener.
    pub async fn client(&self) -> Result<Echo> {
        self.proxy.connect(ECHO).await
    }

    /// The backend named `name`.
    pub fn backend(&self, name: &str) -> &Backend {
        self.backends
            .iter()
            .find(|b| b.name() == name)
            .unwrap_or_else(|| panic!("no backend named {name}"))
    }

    /// The addresses of the backends now in [`EchoSetup::backends`].
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.backends.iter().map(Backend::addr).collect()
    }

    /// Rewrites the endpoints file with the backends now in
    /// [`EchoSetup::backends`].
    pub fn publish(&self) -> Result<()> {
        self.file.write(&[ServiceEndpoints::of(
            "echo",
            "default",
            50051,
            &self.backends,
        )])
    }

    /// Waits until the proxy has exactly the current backends, all connected.
    pub async fn wait_ready(&self) -> Result<()> {
        self.proxy.wait_ready(ECHO, &self.addrs()).await
    }
}
