//! A `sidelb-injector` process on 127.0.0.1, serving a given certificate.
//!
//! The injector reads its certificate and key from files, binds
//! `127.0.0.1:0` here, and logs `sidelb-injector listening on
//! https://IP:PORT` on stderr; [`Injector::spawn`] returns once that line is
//! there, so the address is known and the port is open. The process runs on
//! an empty environment plus what the caller passes (e.g. a Deployment's
//! `env`), so nothing from the test's own environment changes its
//! configuration. Killed on drop like every [`Process`]; [`Injector::stop`]
//! is the graceful stop (SIGTERM, drain, exit). [`Injector::sidecar_env`]
//! admits a pod through the webhook as the API server would and reads the
//! proxy's environment from the patch.

use super::binary::binary_path;
use super::http_get::{get_https, send_https};
use super::metrics::{self, Sample};
use super::process::Process;
use super::scratch::ScratchDir;
use super::wait::wait_until;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sidelb_fake_apiserver::tls::TestCa;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, ExitStatus};
use std::time::Duration;

/// The injector's binary name.
pub const INJECTOR_BIN: &str = "sidelb-injector";

/// Bound on the injector's start-up and on its graceful stop.
const START_STOP_TIMEOUT: Duration = Duration::from_secs(30);

const LISTENING: &str = "sidelb-injector listening on https://";

pub struct Injector {
    process: Process,
    addr: SocketAddr,
    /// The CA PEM its certificate for `127.0.0.1` comes from, when known.
    ca_pem: Option<String>,
    /// Holds `tls.crt` and `tls.key`.
    _tls: ScratchDir,
}

impl Injector {
    /// Starts the injector with this certificate and key (PEM) and `env` on
    /// an otherwise empty environment; ready to serve when returned.
    pub async fn spawn<K, V>(
        cert_pem: &str,
        key_pem: &str,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Injector>
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let tls = ScratchDir::new("injector-tls")?;
        let cert = tls.path().join("tls.crt");
        let key = tls.path().join("tls.key");
        std::fs::write(&cert, cert_pem).context("writing tls.crt")?;
        std::fs::write(&key, key_pem).context("writing tls.key")?;
        let mut command = Command::new(binary_path(INJECTOR_BIN)?);
        command.env_clear().envs(env);
        // Where it listens and where its certificate is: set last, so they win.
        command
            .env("SIDELB_INJECTOR_ADDR", "127.0.0.1:0")
            .env("SIDELB_TLS_CERT", &cert)
            .env("SIDELB_TLS_KEY", &key);
        let mut process = Process::spawn(INJECTOR_BIN, command)?;
        let found = wait_until(
            "sidelb-injector's listening line",
            START_STOP_TIMEOUT,
            || {
                let stderr = process.stderr();
                let addr = stderr.lines().find_map(|line| {
                    let at = line.find(LISTENING)? + LISTENING.len();
                    line[at..].split_whitespace().next().map(str::to_owned)
                });
                let exited = addr.is_none() && process.try_wait().ok().flatten().is_some();
                std::future::ready(match (addr, exited) {
                    (Some(addr), _) => Some(Ok(addr)),
                    (None, true) => Some(Err(())),
                    (None, false) => None,
                })
            },
        )
        .await;
        let addr = match found {
            Ok(Ok(addr)) => addr,
            Ok(Err(())) => bail!(
                "sidelb-injector exited before listening\n{}",
                process.diagnostics()
            ),
            Err(e) => bail!("{e}\n{}", process.diagnostics()),
        };
        let addr = addr
            .parse()
            .with_context(|| format!("sidelb-injector logged an odd address {addr:?}"))?;
        Ok(Injector {
            process,
            addr,
            ca_pem: None,
            _tls: tls,
        })
    }

    /// Starts the injector with a fresh certificate from `ca` for `127.0.0.1`
    /// (the name the API server verifies for `https://127.0.0.1:PORT/...`).
    pub async fn spawn_with_ca<K, V>(
        ca: &TestCa,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Injector>
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let (cert, key) = ca.issue_pem(&["127.0.0.1"])?;
        let mut injector = Injector::spawn(&cert, &key, env).await?;
        injector.ca_pem = Some(ca.pem().to_owned());
        Ok(injector)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT{path}`, the webhook's `clientConfig.url`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// `/metrics`, parsed: counters such as
    /// `sidelb_injector_admission_requests_total{result,reason}`. Only for an
    /// injector started by [`Injector::spawn_with_ca`], whose CA is known.
    pub async fn metrics(&self) -> Result<Vec<Sample>> {
        let ca = self
            .ca_pem
            .as_deref()
            .context("the injector's CA is unknown: start it with Injector::spawn_with_ca")?;
        let (status, body) = get_https(self.addr, "127.0.0.1", ca, "/metrics").await?;
        if !status.is_success() {
            bail!("GET /metrics from sidelb-injector: {status}: {body}");
        }
        Ok(metrics::parse(&body))
    }

    /// Sends a Pod CREATE of `pod` (a Pod object) to the webhook; returns the
    /// answer's `response`. Only for an injector started by
    /// [`Injector::spawn_with_ca`].
    pub async fn review(&self, pod: &Value) -> Result<Value> {
        let ca = self
            .ca_pem
            .as_deref()
            .context("the injector's CA is unknown: start it with Injector::spawn_with_ca")?;
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "sidelb-tests",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "namespace": "default",
                "object": pod,
            },
        });
        let (status, _, body) = send_https(
            self.addr,
            "127.0.0.1",
            ca,
            http::Method::POST,
            "/mutate?timeout=10s",
            &[("content-type", "application/json")],
            review.to_string().into(),
        )
        .await?;
        if !status.is_success() {
            bail!("POST /mutate to sidelb-injector: {status}: {body}");
        }
        let answer: Value = serde_json::from_str(&body).context("the AdmissionReview answer")?;
        Ok(answer["response"].clone())
    }

    /// Admits `pod` and returns the environment of the `sidelb-proxy`
    /// container the patch adds, and the answer's warnings.
    pub async fn sidecar_env(
        &self,
        pod: &Value,
    ) -> Result<(BTreeMap<String, String>, Vec<String>)> {
        use base64::Engine;
        let response = self.review(pod).await?;
        if response["allowed"] != true {
            bail!("the pod was refused: {response}");
        }
        let patch = response["patch"]
            .as_str()
            .context("the pod was not patched")?;
        let patch = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .context("the patch's base64")?;
        let ops: Vec<Value> = serde_json::from_slice(&patch).context("the patch's JSON")?;
        let proxy = ops
            .iter()
            .map(|op| &op["value"])
            .flat_map(|v| v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]))
            .find(|c| c["name"] == "sidelb-proxy")
            .with_context(|| format!("no sidelb-proxy container in the patch: {ops:?}"))?;
        let env = proxy["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_owned(),
                    e["value"].as_str()?.to_owned(),
                ))
            })
            .collect();
        let warnings = response["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str().map(str::to_owned))
            .collect();
        Ok((env, warnings))
    }

    /// Everything the injector logged so far (its logs go to stderr).
    pub fn log(&self) -> String {
        self.process.stderr()
    }

    /// SIGTERM, then waits for the exit: open requests drain, the port closes.
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        self.process.terminate()?;
        self.process.wait(START_STOP_TIMEOUT).await
    }
}
