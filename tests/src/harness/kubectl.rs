//! The real `kubectl`, pointed at one API server's kubeconfig.
//!
//! Each [`Kubectl`] has its own scratch directory for kubectl's discovery
//! cache and for the manifests a test writes ([`Kubectl::file`]), and ignores
//! `$KUBECONFIG`, so nothing outside the test is read or touched. Tests that
//! need kubectl skip, saying so, when [`kubectl_present`] is false.
//! `create -f` and `apply -f` need `--validate=false` against the fake API
//! server, which serves no OpenAPI documents.

use super::scratch::ScratchDir;
use anyhow::Result;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Bound on each request of a kubectl command run by [`Kubectl::run`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `kubectl` can be run.
pub fn kubectl_present() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub struct Kubectl {
    kubeconfig: PathBuf,
    dir: ScratchDir,
}

impl Kubectl {
    pub fn new(kubeconfig: &Path) -> Result<Kubectl> {
        Ok(Kubectl {
            kubeconfig: kubeconfig.to_path_buf(),
            dir: ScratchDir::new("kubectl")?,
        })
    }

    /// Writes `text` to `name` in the scratch directory; returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write manifest");
        path
    }

    /// `kubectl --kubeconfig K --cache-dir C ARGS`, not yet run, with no
    /// bound on its requests (for watches; the caller stops it).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env_remove("KUBECONFIG");
        command
    }

    /// Runs kubectl to its end; each of its requests is bounded by
    /// [`REQUEST_TIMEOUT`], so a server that hangs fails the command.
    pub fn run(&self, args: &[&str]) -> Output {
        let timeout = format!("--request-timeout={}s", REQUEST_TIMEOUT.as_secs());
        let mut bounded = vec![timeout.as_str()];
        bounded.extend_from_slice(args);
        self.command(&bounded).output().expect("kubectl runs")
    }

    /// Runs kubectl and returns stdout, failing the test if kubectl failed.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            !output.status.success(),
            "kubectl {args:?} should have failed, printed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// Runs kubectl; its stdout, or an error with what it printed (for
    /// programs, where [`Kubectl::ok`] would panic).
    pub fn output(&self, args: &[&str]) -> Result<String> {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            anyhow::bail!(
                "kubectl {} failed: {}{stdout}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(stdout)
    }

    /// `kubectl apply -f` of `objects` as one List, written to `name`.
    pub fn apply_list(&self, name: &str, objects: Vec<Value>) -> Result<String> {
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
        let file = self.file(name, &list.to_string());
        self.output(&["apply", "-f", &file.display().to_string()])
    }

    /// `kubectl rollout status` of a Deployment, bounded by `timeout`.
    pub fn rollout_status(&self, ns: &str, deployment: &str, timeout: Duration) -> Result<()> {
        let timeout = format!("--timeout={}s", timeout.as_secs());
        let target = format!("deployment/{deployment}");
        self.output(&["-n", ns, "rollout", "status", &target, &timeout])?;
        Ok(())
    }

    /// `kubectl ARGS -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&args)).expect("kubectl printed JSON")
    }
}
