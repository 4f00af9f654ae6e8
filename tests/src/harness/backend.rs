//! Test backends as real processes: `sidelb-test-backend`, one per instance.
//!
//! A backend is a separate process, not a task in the test, so that it can be
//! stopped the ways a pod stops: SIGTERM (drain: [`Backend::terminate`] then
//! [`Backend::wait_draining`] / [`Backend::wait_exit`], or [`Backend::stop`])
//! or SIGKILL (crash: [`Backend::kill`]), and so that the proxy under test sees
//! real sockets closing.

use super::binary::{BACKEND_BIN, binary_path};
use super::client;
use super::process::Process;
use crate::echo::health::HealthMode;
use crate::echo::health_pb::HealthCheckRequest;
use crate::echo::health_pb::health_check_response::ServingStatus;
use crate::echo::health_pb::health_client::HealthClient;
use crate::echo::pb::{StatsReply, StatsRequest};
use anyhow::{Context, Result};
use clap::ValueEnum;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

/// Bound on a backend's start (binding and printing its address).
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on a backend's exit after SIGTERM, beyond its own drain.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How a backend should behave; see `sidelb-test-backend --help`.
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// Listen here instead of on a free port (e.g. to restart on the same address).
    pub addr: Option<SocketAddr>,
    /// Added at the start of every call (`--delay-ms`).
    pub delay: Duration,
    /// `--max-concurrent-streams`.
    pub max_concurrent_streams: Option<u32>,
    /// Every Nth call fails (`--fail-every`, 0: never) with `fail_code`
    /// (default UNAVAILABLE).
    pub fail_every: u64,
    pub fail_code: Option<tonic::Code>,
    /// `--drain-timeout-ms` (default 30 s).
    pub drain_timeout: Option<Duration>,
    /// `--health`: which part of `grpc.health.v1.Health` it serves.
    pub health: HealthMode,
    /// `--health-file`: its health status is this file's content (see
    /// [`write_health`]); `None`: always SERVING.
    pub health_file: Option<PathBuf>,
    /// `--orca-utilization`: every answer carries an ORCA load report saying it.
    pub orca_utilization: Option<f64>,
    /// Serve TLS with these PEM files: `--tls-cert`, `--tls-key`.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Sets the health status a backend started with `health_file` reports
/// (`SERVING`, `NOT_SERVING`, `SERVICE_UNKNOWN`), written whole at once so
/// the backend never reads half of it.
pub fn write_health(file: &Path, status: &str) -> Result<()> {
    let partial = file.with_extension("partial");
    std::fs::write(&partial, status).with_context(|| format!("write {}", partial.display()))?;
    std::fs::rename(&partial, file).with_context(|| format!("rename to {}", file.display()))
}

/// A running `sidelb-test-backend`; killed when dropped.
#[derive(Debug)]
pub struct Backend {
    name: String,
    addr: SocketAddr,
    process: Process,
}

impl Backend {
    /// Starts a backend named `name` and waits until it listens.
    pub async fn spawn(name: &str, options: BackendOptions) -> Result<Backend> {
        let mut command = Command::new(binary_path(BACKEND_BIN)?);
        let addr = options
            .addr
            .map_or("127.0.0.1:0".to_string(), |a| a.to_string());
        command.args(["--name", name, "--addr", &addr]);
        command.arg(format!("--delay-ms={}", options.delay.as_millis()));
        command.arg(format!("--fail-every={}", options.fail_every));
        if let Some(max) = options.max_concurrent_streams {
            command.arg(format!("--max-concurrent-streams={max}"));
        }
        if let Some(code) = options.fail_code {
            command.arg(format!("--fail-code={}", code as i32));
        }
        if let Some(utilization) = options.orca_utilization {
            command.arg(format!("--orca-utilization={utilization}"));
        }
        if let Some(drain) = options.drain_timeout {
            command.arg(format!("--drain-timeout-ms={}", drain.as_millis()));
        }
        command.arg(format!(
            "--health={}",
            options
                .health
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_owned())
        ));
        if let Some(file) = &options.health_file {
            command.arg("--health-file").arg(file);
        }
        if let Some((cert, key)) = &options.tls {
            command
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        let process = Process::spawn(name, command)?;
        let line = process
            .wait_for_line("its address", START_TIMEOUT, |l| {
                l.starts_with("listening ")
            })
            .await?;
        let addr = line
            .trim_start_matches("listening ")
            .parse()
            .with_context(|| format!("{name} printed an unreadable address: {line}"))?;
        Ok(Backend {
            name: name.to_string(),
            addr,
            process,
        })
    }

    /// Starts one backend per name, all with `options`.
    pub async fn spawn_all(names: &[&str], options: BackendOptions) -> Result<Vec<Backend>> {
        let mut started = Vec::with_capacity(names.len());
        for name in names {
            started.push(Backend::spawn(name, options.clone()).await?);
        }
        Ok(started)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the backend has served, asked on a new connection.
    pub async fn stats(&self) -> Result<StatsReply> {
        let mut client = client::connect(self.addr).await?;
        let reply = client
            .stats(StatsRequest {})
            .await
            .with_context(|| format!("Stats of {}", self.name))?;
        Ok(reply.into_inner())
    }

    /// The health status it reports to `Check` now, asked on a new connection.
    pub async fn health(&self) -> Result<ServingStatus> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))?
            .connect_timeout(client::CONNECT_TIMEOUT)
            .connect()
            .await
            .with_context(|| format!("connect to {}", self.name))?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .with_context(|| format!("Health/Check of {}", self.name))?;
        Ok(reply.into_inner().status())
    }

    /// Sends SIGTERM; the backend starts draining.
    pub fn terminate(&self) -> Result<()> {
        self.process.terminate()
    }

    /// Waits until the backend says it is draining (after [`Backend::terminate`]).
    pub async fn wait_draining(&self) -> Result<()> {
        self.process
            .wait_for_line("`draining`", STOP_TIMEOUT, |l| l == "draining")
            .await
            .map(drop)
    }

    /// Waits for the backend to exit.
    pub async fn wait_exit(&mut self) -> Result<ExitStatus> {
        self.process.wait(STOP_TIMEOUT).await
    }

    /// SIGTERM and wait for the exit: a graceful stop.
    pub async fn stop(mut self) -> Result<ExitStatus> {
        self.terminate()?;
        self.wait_exit().await
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) -> Result<ExitStatus> {
        self.process.kill()
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}
