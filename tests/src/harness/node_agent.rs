//! A `sidelb-node-agent` process against a real control plane: the pods of
//! its nodes run as local processes, each in its own network namespace.
//!
//! [`NodeAgent::spawn`] returns once the nodes are registered and pods are
//! watched. The images tests use are mapped to the workspace's binaries
//! ([`NodeAgent::images`]): the proxy for [`PROXY_IMAGE`], the injector for
//! [`INJECTOR_IMAGE`], the test backend for [`BACKEND_IMAGE`], the client
//! app `sidelb-test-client` for [`CLIENT_IMAGE`], and, once `make deps-apps`
//! built it, the Go client and server of `make compare` for [`GO_COMPARE_IMAGE`]. Dropping the
//! guard stops the agent gracefully (SIGTERM: its pods are stopped and its
//! network namespaces and bridge removed), bounded, then SIGKILL.

use super::binary::{BACKEND_BIN, PROXY_BIN, binary_path};
use super::injector::INJECTOR_BIN;
use super::process::Process;
use super::scratch::ScratchDir;
use crate::node_agent::READY_LINE;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The agent's binary name.
pub const NODE_AGENT_BIN: &str = "sidelb-node-agent";
/// Image names the tests' pods use, mapped to the workspace's binaries.
pub const PROXY_IMAGE: &str = "sidelb/proxy";
pub const INJECTOR_IMAGE: &str = "sidelb/injector";
pub const BACKEND_IMAGE: &str = "sidelb/test-backend";
pub const CLIENT_IMAGE: &str = "sidelb/test-client";
/// `target/apps/bin/go-compare` (`-mode=client` or `-mode=server`).
pub const GO_COMPARE_IMAGE: &str = "sidelb/go-compare";
/// Where `make deps-apps` puts it, under `target/apps`.
pub const GO_COMPARE_APP: &str = "bin/go-compare";
/// The client app's binary name.
pub const CLIENT_BIN: &str = "sidelb-test-client";

const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct NodeAgent {
    process: Option<Process>,
    state: ScratchDir,
}

impl NodeAgent {
    /// The images tests use, as `--image` values.
    pub fn images() -> Result<Vec<String>> {
        let mut images = vec![
            format!("{PROXY_IMAGE}={}", binary_path(PROXY_BIN)?.display()),
            format!("{INJECTOR_IMAGE}={}", binary_path(INJECTOR_BIN)?.display()),
            format!("{BACKEND_IMAGE}={}", binary_path(BACKEND_BIN)?.display()),
            format!("{CLIENT_IMAGE}={}", binary_path(CLIENT_BIN)?.display()),
        ];
        if let Ok(go) = sidelb_test_env::app("Go", GO_COMPARE_APP) {
            images.push(format!("{GO_COMPARE_IMAGE}={}", go.display()));
        }
        Ok(images)
    }

    /// Starts an agent for `nodes` (`NAME` or `NAME:ZONE`) that also binds
    /// unscheduled pods to them.
    pub async fn spawn(kubeconfig: &Path, nodes: &[&str]) -> Result<NodeAgent> {
        let state = ScratchDir::new("node-agent")?;
        let mut command = Command::new(binary_path(NODE_AGENT_BIN)?);
        command
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--state-dir")
            .arg(state.path())
            .arg("--schedule")
            .env_clear()
            .env("SIDELB_LOG", "info,sidelb_tests=debug");
        for node in nodes {
            command.arg("--node").arg(node);
        }
        for image in Self::images()? {
            command.arg("--image").arg(image);
        }
        let process = Process::spawn("node-agent", command)?;
        process
            .wait_for_line("the agent to be ready", START_TIMEOUT, |l| {
                l.starts_with(READY_LINE)
            })
            .await?;
        Ok(NodeAgent {
            process: Some(process),
            state,
        })
    }

    pub fn process(&self) -> Option<&Process> {
        self.process.as_ref()
    }

    /// Where the agent writes what container `container` of the pod with
    /// `uid` prints (stdout and stderr), as a kubelet keeps container logs.
    pub fn container_log(&self, uid: &str, container: &str) -> PathBuf {
        let pod = self.state.path().join("pods").join(uid);
        pod.join("logs").join(format!("{container}.log"))
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        let _ = process.terminate();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match process.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}
