//! Running the apps of `tests/apps` (and the Python one, `tests/python`) and
//! reading their JSON summary: a user's app in the language people write,
//! on one channel of that language's own gRPC library, dialing nothing but
//! the address it is given.
//!
//! Every app takes the same flags and prints the same summary
//! ([`AppSummary`], `tests/apps/README.md`), so one test body covers every
//! language. The interpreters and builds come from `make deps`: a missing
//! one is an error naming it, never a skipped test.

use super::binary::{APP_BIN, binary_path};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Bound on one run of an app (a JVM's start included).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The checks every app runs besides the unary calls; `large` only when
/// [`AppClient::large_bytes`] is not 0.
pub const CHECKS: [&str; 7] = [
    "server_stream",
    "client_stream",
    "bidi",
    "metadata",
    "failure",
    "deadline",
    "cancel",
];

/// The language of an app, and so its gRPC library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    /// `grpcio`, `tests/python/echo_client.py`.
    Python,
    /// grpc-go, `tests/apps/go`.
    Go,
    /// grpc-java, `tests/apps/java`.
    Java,
    /// `@grpc/grpc-js`, `tests/apps/node/echo_client.js`.
    Node,
    /// tonic, `sidelb-test-app` (`tests/src/bin/sidelb-test-app.rs`).
    Rust,
}

impl Language {
    /// As the app names itself in its summary.
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Go => "go",
            Language::Java => "java",
            Language::Node => "node",
            Language::Rust => "rust",
        }
    }

    /// The command that runs the app, before its flags.
    fn command(self) -> Result<Command> {
        let root = sidelb_test_env::workspace_root();
        Ok(match self {
            Language::Python => {
                let mut command = Command::new(sidelb_test_env::python()?);
                command.arg(root.join("tests/python/echo_client.py"));
                command
            }
            Language::Go => Command::new(sidelb_test_env::app("Go", "bin/go-echo-client")?),
            Language::Java => {
                let jar = sidelb_test_env::app("Java", "bin/java-echo-client.jar")?;
                let mut command = Command::new("java");
                command.arg("-jar").arg(jar);
                command
            }
            Language::Node => {
                let grpc = sidelb_test_env::node_modules()?.join("@grpc/grpc-js");
                if !grpc.is_dir() {
                    bail!("no {} : run `make deps-node`", grpc.display());
                }
                let mut command = Command::new("node");
                command.arg(root.join("tests/apps/node/echo_client.js"));
                command
            }
            Language::Rust => Command::new(binary_path(APP_BIN)?),
        })
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an app is asked to do.
#[derive(Clone, Debug)]
pub struct AppClient {
    pub language: Language,
    /// Where it dials.
    pub target: SocketAddr,
    /// `:authority` to send instead of the target's address.
    pub authority: Option<String>,
    /// Unary calls to tally.
    pub calls: u32,
    /// Size of the large-message check; 0 skips it.
    pub large_bytes: usize,
}

impl AppClient {
    pub fn new(language: Language, target: SocketAddr) -> Self {
        AppClient {
            language,
            target,
            authority: None,
            calls: 100,
            large_bytes: 5 * 1024 * 1024,
        }
    }

    /// The checks this run makes, `large` included when asked for.
    pub fn checks(&self) -> Vec<&'static str> {
        let mut checks = CHECKS.to_vec();
        if self.large_bytes > 0 {
            checks.push("large");
        }
        checks
    }

    /// Runs the app to completion and parses its summary.
    pub async fn run(&self) -> Result<AppSummary> {
        let language = self.language;
        let mut command = language.command()?;
        command
            .arg(format!("--target={}", self.target))
            .arg(format!("--calls={}", self.calls))
            .arg(format!("--large-bytes={}", self.large_bytes))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(authority) = &self.authority {
            command.arg(format!("--authority={authority}"));
        }
        let program = PathBuf::from(command.as_std().get_program());
        let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
            .await
            .with_context(|| format!("the {language} app did not finish within {RUN_TIMEOUT:?}"))?
            .with_context(|| {
                format!(
                    "starting the {language} app ({}): run `make deps`",
                    program.display()
                )
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            bail!(
                "the {language} app failed ({}); `make deps` sets up what it needs\n\
                 stdout: {stdout}\nstderr: {stderr}",
                output.status
            );
        }
        let summary: AppSummary = serde_json::from_str(stdout.trim()).with_context(|| {
            format!("the {language} app printed no summary: {stdout}\nstderr: {stderr}")
        })?;
        if summary.language != language.name() {
            bail!("asked for the {language} app, ran {}", summary.language);
        }
        Ok(summary)
    }
}

/// The JSON summary every app prints (`sidelb-test-app` writes it with this
/// very type).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppSummary {
    /// [`Language::name`].
    pub language: String,
    pub target: String,
    pub unary: UnarySummary,
    /// [`CHECKS`], and `large`.
    pub checks: BTreeMap<String, Check>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnarySummary {
    pub calls: u64,
    /// Calls answered per backend (failed ones by the `x-sidelb-backend` trailer).
    pub by_backend: BTreeMap<String, u64>,
    /// Calls per gRPC status name (`OK`, `UNAVAILABLE`, …).
    pub statuses: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
    /// Backends that served the check's calls.
    pub backends: Vec<String>,
}

impl AppSummary {
    /// What is wrong with the checks `wanted`: missing or failed ones, with
    /// their details.
    pub fn failed_checks(&self, wanted: &[&str]) -> Vec<String> {
        let mut failed: Vec<String> = wanted
            .iter()
            .filter(|name| !self.checks.contains_key(**name))
            .map(|name| format!("{name}: not run"))
            .collect();
        failed.extend(
            self.checks
                .iter()
                .filter(|(_, check)| !check.ok)
                .map(|(name, check)| format!("{name}: {}", check.detail)),
        );
        failed
    }
}

impl Check {
    /// A check's outcome, `backends` sorted and each named once.
    pub fn new(ok: bool, detail: impl Into<String>, backends: &[&str]) -> Self {
        let mut backends: Vec<String> = backends
            .iter()
            .filter(|b| !b.is_empty())
            .map(|b| b.to_string())
            .collect();
        backends.sort();
        backends.dedup();
        Check {
            ok,
            detail: detail.into(),
            backends,
        }
    }
}
