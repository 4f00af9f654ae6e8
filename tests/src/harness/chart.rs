//! The Helm chart as Helm's own engine renders it
//! (`charts/tests/render_chart.py`, in the project's Python environment with
//! the packages of `charts/tests/requirements.txt`: `make deps-python`).

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The release namespace and name the tests install the chart as.
pub const NAMESPACE: &str = "sidelb";
pub const RELEASE: &str = "sidelb";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The chart's objects rendered with `values`; with `kubeconfig`, `lookup`
/// sees that cluster, as in `helm upgrade`.
pub fn render(kubeconfig: Option<&Path>, values: &Value) -> Result<Vec<Value>> {
    let python = sidelb_test_env::python()?;
    let mut cmd = Command::new(&python);
    cmd.arg(repo().join("charts/tests/render_chart.py"))
        .args(["--namespace", NAMESPACE, "--release", RELEASE])
        .args(["--values", &values.to_string()]);
    if let Some(kubeconfig) = kubeconfig {
        cmd.arg("--kubeconfig").arg(kubeconfig);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "rendering the chart with {} failed (it needs the packages of \
             charts/tests/requirements.txt: `make deps-python`):\n{}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("render_chart.py prints JSON")
}

/// The rendered object of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .with_context(|| format!("the chart rendered no {kind} {name}"))
}
