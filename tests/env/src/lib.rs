//! Where the tests find the interpreters and packages the project installs
//! for itself, instead of whatever `python3` comes first on `PATH`.
//!
//! `make deps` (`scripts/ensure.sh`) builds a Python environment under
//! `target/venv` from `tests/requirements.txt` and installs the npm packages
//! of `package-lock.json` into `node_modules/` at the workspace root; every
//! make target that runs tests sets that up first and exports
//! `SIDELB_PYTHON`; `make deps-apps` builds the Go and Java apps of
//! `tests/apps` into `target/apps`. A test run straight from `cargo test` finds the same
//! environment here, or is told how to create it.

use std::path::{Path, PathBuf};

/// Names the Python interpreter the tests run, overriding `target/venv`.
pub const PYTHON_ENV: &str = "SIDELB_PYTHON";
/// Also honoured, after [`PYTHON_ENV`].
pub const PYTHON_FALLBACK_ENV: &str = "PYTHON";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no Python environment at {0}: run `make deps-python` (or set {PYTHON_ENV} to an \
         interpreter with the packages of tests/requirements.txt)"
    )]
    NoVenv(PathBuf),
    #[error("no npm packages at {0}: run `make deps-node`")]
    NoNodeModules(PathBuf),
    #[error("no {0} app at {1}: run `make deps` (its step `make deps-apps` builds it)")]
    NoApp(&'static str, PathBuf),
}

/// The workspace's root directory (where `Cargo.toml`, `target/` and
/// `package.json` are).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map_or_else(|| manifest.join("../.."), Path::to_path_buf)
}

/// The Python interpreter for the tests: `$SIDELB_PYTHON`, else `$PYTHON`,
/// else the project's `target/venv/bin/python` if it exists.
pub fn python() -> Result<PathBuf, Error> {
    for name in [PYTHON_ENV, PYTHON_FALLBACK_ENV] {
        if let Some(python) = std::env::var_os(name).filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(python));
        }
    }
    let venv = workspace_root().join("target/venv");
    let python = venv.join("bin/python");
    if python.exists() {
        Ok(python)
    } else {
        Err(Error::NoVenv(venv))
    }
}

/// The project's `node_modules/`, where Node scripts anywhere in the
/// repository resolve their packages from.
pub fn node_modules() -> Result<PathBuf, Error> {
    let dir = workspace_root().join("node_modules");
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(Error::NoNodeModules(dir))
    }
}

/// `target/apps/PATH`, where `make deps-apps` puts the built app of
/// `language` (`tests/apps/LANGUAGE`), if it is there.
pub fn app(language: &'static str, path: &str) -> Result<PathBuf, Error> {
    let app = workspace_root().join("target/apps").join(path);
    if app.is_file() {
        Ok(app)
    } else {
        Err(Error::NoApp(language, app))
    }
}
