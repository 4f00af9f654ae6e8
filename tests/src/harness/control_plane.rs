//! The real control plane of `make cluster`: etcd, kube-apiserver and
//! kube-controller-manager built from Kubernetes' own modules and run by
//! `cluster/cluster.sh`, for tests that need the real API server's judgement
//! (admission, RBAC, tokens, the controllers) rather than the fake one's.
//!
//! [`ControlPlane::private`] starts a control plane of the test's own in a scratch
//! directory and stops it when dropped; [`ControlPlane::read`] finds a running one
//! from the `env` file `cluster/cluster.sh` writes into its directory (one
//! `KEY=VALUE` a line; the README's "A real control plane" lists the keys).
//! The binaries come from the cache `cluster/build.sh` fills, so the first
//! run on a machine builds them (see the README for how long that takes).

use super::scratch::ScratchDir;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where `cluster/cluster.sh` keeps a cluster (its own default: `target/cluster`).
pub const CLUSTER_DIR_ENV: &str = "SIDELB_CLUSTER_DIR";

/// The components `cluster/cluster.sh up` starts, each with a pid file.
pub const COMPONENTS: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

pub struct ControlPlane {
    dir: PathBuf,
    env: BTreeMap<String, String>,
    /// Set for a private cluster: stopped, then removed, on drop.
    scratch: Option<ScratchDir>,
}

impl ControlPlane {
    /// A control plane of this test's own, in a scratch directory, ready
    /// (`/readyz` ok, the default ServiceAccount made) when returned.
    pub fn private() -> Result<ControlPlane> {
        let scratch = ScratchDir::new("cluster")?;
        let dir = scratch.path().join("cluster");
        if let Err(err) = script(&dir, &["up"]) {
            // A start that failed half-way leaves the components that did start.
            let _ = script(&dir, &["down"]);
            return Err(err);
        }
        let mut cluster = ControlPlane::read(&dir)?;
        cluster.scratch = Some(scratch);
        Ok(cluster)
    }

    /// The cluster whose directory is `dir`, from its `env` file.
    pub fn read(dir: &Path) -> Result<ControlPlane> {
        Ok(ControlPlane {
            dir: dir.to_path_buf(),
            env: read_env(dir)?,
            scratch: None,
        })
    }

    /// Runs `cluster/cluster.sh ARGS` for this cluster; fails with its output.
    pub fn script(&self, args: &[&str]) -> Result<Output> {
        script(&self.dir, args)
    }

    /// Reads the `env` file again (after `up` moved something).
    pub fn reread(&mut self) -> Result<()> {
        self.env = read_env(&self.dir)?;
        Ok(())
    }

    /// A value of the `env` file, e.g. `SIDELB_CLUSTER_SERVER`.
    pub fn get(&self, key: &str) -> Result<&str> {
        match self.env.get(key) {
            Some(value) => Ok(value),
            None => bail!("{} has no {key}", self.dir.join("env").display()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin kubeconfig (group `system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A kubeconfig for `user` in `groups`, with a client certificate signed
    /// by the cluster's CA.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<PathBuf> {
        let mut args = vec!["kubeconfig", user];
        args.extend_from_slice(groups);
        let output = self.script(&args)?;
        Ok(PathBuf::from(
            String::from_utf8_lossy(&output.stdout).trim(),
        ))
    }

    /// The pid of a running component, from its pid file.
    pub fn pid(&self, component: &str) -> Option<u32> {
        let path = self.dir.join("run").join(format!("{component}.pid"));
        let pid: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.scratch.is_none() {
            return;
        }
        if let Err(err) = self.script(&["down"]) {
            eprintln!(
                "stopping the private control plane in {}: {err:#}",
                self.dir.display()
            );
        }
    }
}

fn script(dir: &Path, args: &[&str]) -> Result<Output> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster/cluster.sh");
    let output = Command::new(&path)
        .args(args)
        .env(CLUSTER_DIR_ENV, dir)
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    if !output.status.success() {
        bail!(
            "cluster/cluster.sh {} failed ({}):\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

fn read_env(dir: &Path) -> Result<BTreeMap<String, String>> {
    let path = dir.join("env");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is the control plane up? `make cluster`)",
            path.display()
        )
    })?;
    Ok(parse_env(&text))
}

/// `KEY=VALUE` lines; the value is the rest of the line, unquoted.
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_string(), value.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_are_the_rest_of_the_line() {
        let env = parse_env("A=https://127.0.0.1:6443\nEMPTY=\nB=x=y\n\n");
        assert_eq!(env["A"], "https://127.0.0.1:6443");
        assert_eq!(env["EMPTY"], "");
        assert_eq!(env["B"], "x=y");
        assert_eq!(env.len(), 3);
    }
}
