//! Running the Python gRPC client (`tests/python/echo_client.py`) and reading
//! its JSON summary: an app in another language than the proxy, on one
//! grpcio channel.
//!
//! Runs the project's Python environment (`make deps-python`, see
//! [`sidelb_test_env::python`]), which has `grpcio` and `grpcio-tools`.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Bound on one run of the client.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// What the Python client is asked to do.
#[derive(Clone, Debug)]
pub struct PythonClient {
    /// Where it dials.
    pub target: SocketAddr,
    /// `:authority` to send instead of the target's address.
    pub authority: Option<String>,
    /// Unary calls to tally.
    pub calls: u32,
    /// Size of the large-message check; 0 skips it.
    pub large_bytes: usize,
}

impl PythonClient {
    pub fn new(target: SocketAddr) -> Self {
        PythonClient {
            target,
            authority: None,
            calls: 100,
            large_bytes: 5 * 1024 * 1024,
        }
    }

    /// Runs the client to completion and parses its summary.
    pub async fn run(&self) -> Result<PythonSummary> {
        let python = sidelb_test_env::python()?;
        let mut command = Command::new(&python);
        command
            .arg(script_path())
            .arg(format!("--target={}", self.target))
            .arg(format!("--calls={}", self.calls))
            .arg(format!("--large-bytes={}", self.large_bytes))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(authority) = &self.authority {
            command.arg(format!("--authority={authority}"));
        }
        let run = command.output();
        let output = tokio::time::timeout(RUN_TIMEOUT, run)
            .await
            .with_context(|| format!("echo_client.py did not finish within {RUN_TIMEOUT:?}"))?
            .with_context(|| format!("starting {}", python.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            bail!(
                "echo_client.py failed ({}) under {}; it needs the packages of \
                 tests/python/requirements.txt (`make deps-python`)\n\
                 stdout: {stdout}\nstderr: {stderr}",
                output.status,
                python.display()
            );
        }
        serde_json::from_str(stdout.trim()).with_context(|| {
            format!("echo_client.py printed no summary: {stdout}\nstderr: {stderr}")
        })
    }
}

/// `tests/python/echo_client.py`.
pub fn script_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/echo_client.py")
}

/// The client's JSON summary.
#[derive(Clone, Debug, Deserialize)]
pub struct PythonSummary {
    pub target: String,
    pub unary: UnarySummary,
    /// `server_stream`, `client_stream`, `bidi`, `metadata`, `failure`, `large`.
    pub checks: BTreeMap<String, Check>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct UnarySummary {
    pub calls: u64,
    /// Calls answered per backend (failed ones by the `x-sidelb-backend` trailer).
    pub by_backend: BTreeMap<String, u64>,
    /// Calls per gRPC status name (`OK`, `UNAVAILABLE`, …).
    pub statuses: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
    /// Backends that served the check's calls.
    pub backends: Vec<String>,
}

impl PythonSummary {
    /// The checks that did not pass, with their details.
    pub fn failed_checks(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|(_, check)| !check.ok)
            .map(|(name, check)| format!("{name}: {}", check.detail))
            .collect()
    }
}
