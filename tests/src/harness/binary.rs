//! Finding the binaries that the tests run.
//!
//! `env!("CARGO_BIN_EXE_…")` only names binaries of the package whose tests are
//! being compiled, and cargo builds no other package's binaries for them. So
//! the harness looks for a binary where cargo put it: next to the running
//! executable (a test runs from `target/<profile>/deps/`, a binary from
//! `target/<profile>/`), which also picks the same profile as the caller. The
//! binaries are built beforehand, e.g. by `cargo build --workspace --bins`
//! (`cargo test --workspace` builds every package's binaries too).

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// Overrides where binaries are looked for (a directory).
pub const BIN_DIR_ENV: &str = "SIDELB_BIN_DIR";

/// The test backend's binary name.
pub const BACKEND_BIN: &str = "sidelb-test-backend";
/// The Rust app's binary name (tonic, one channel; see `apps`).
pub const APP_BIN: &str = "sidelb-test-app";
/// The proxy's binary name.
pub const PROXY_BIN: &str = "sidelb-proxy";

/// The path of the workspace binary `name`, or an error that says how to
/// build it.
pub fn binary_path(name: &str) -> Result<PathBuf> {
    let candidates = candidate_dirs();
    for dir in &candidates {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    let searched: Vec<_> = candidates.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "binary `{name}` not found (looked in {}); build it first: `cargo build --workspace --bins` \
         (add `--release` for a release test run), or set {BIN_DIR_ENV}",
        searched.join(", ")
    )
}

fn candidate_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        return vec![PathBuf::from(dir)];
    }
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.to_path_buf());
        if dir.file_name().is_some_and(|n| n == "deps")
            && let Some(profile_dir) = dir.parent()
        {
            dirs.push(profile_dir.to_path_buf());
        }
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    dirs.push(target.join(profile));
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_says_how_to_build_it() {
        let err = binary_path("no-such-binary").expect_err("missing");
        assert!(
            err.to_string().contains("cargo build --workspace --bins"),
            "{err}"
        );
    }
}
