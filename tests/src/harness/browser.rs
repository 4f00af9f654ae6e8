//! The proxy's live page (the admin server's `GET /`) in headless Chromium,
//! read as a person sees it.
//!
//! `tests/browser/live_page.js` (playwright-core driving Debian's
//! `chromium`) opens the page and prints what it shows whenever that
//! changes: each service's rows with their `data-*` attributes and text,
//! the hosts the page sent requests to, and any script error or request
//! refused for leaving the admin address. [`LivePage`] keeps the latest;
//! tests wait on it with a bound. Chromium and the Node packages come from
//! `make deps`: a missing one is an error naming it, never a skipped test.

use super::process::Process;
use super::wait::wait_until;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Bound on Chromium starting and the page loading.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// The script stops by itself after this long, whatever the test does.
const SCRIPT_SECONDS: u64 = 300;

/// What the page shows at one moment.
#[derive(Clone, Debug, Deserialize)]
pub struct PageView {
    pub title: String,
    /// The header's line: when the page last updated, or why it could not.
    pub status: String,
    pub services: Vec<PageService>,
    pub requests: PageRequests,
    /// Script errors, console errors, requests refused for another host.
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PageRequests {
    pub count: u64,
    /// Every `host:port` the page sent a request to.
    pub hosts: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PageService {
    pub service: String,
    pub summary: String,
    pub rows: Vec<PageRow>,
}

/// One pod's row.
#[derive(Clone, Debug, Deserialize)]
pub struct PageRow {
    pub endpoint: String,
    pub name: String,
    /// As `/endpoints` names it: `ready`, `ejected`, `down`, …
    pub state: String,
    /// Its share of the service's requests over the page's window; `None`
    /// until the page has two reads to compare.
    pub share: Option<f64>,
    /// Requests per second over the window.
    pub rate: Option<f64>,
    /// Answers that were not OK over the window.
    pub errors: u64,
    /// `slow-start`, `rate-limited`.
    pub extras: Vec<String>,
    /// The row's text, as read.
    pub text: String,
}

impl PageView {
    pub fn service(&self, name: &str) -> Option<&PageService> {
        self.services.iter().find(|s| s.service == name)
    }
}

impl PageService {
    pub fn row(&self, endpoint: SocketAddr) -> Option<&PageRow> {
        let endpoint = endpoint.to_string();
        self.rows.iter().find(|r| r.endpoint == endpoint)
    }
}

/// The page open in a browser until dropped.
pub struct LivePage {
    process: Process,
}

fn script() -> Result<(PathBuf, PathBuf)> {
    let modules = sidelb_test_env::node_modules()?;
    if !modules.join("playwright-core").is_dir() {
        bail!(
            "no playwright-core in {}: run `make deps-node`",
            modules.display()
        );
    }
    let chromium = std::env::var_os("SIDELB_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        bail!("no {}: run `make deps-tools`", chromium.display());
    }
    let script = sidelb_test_env::workspace_root().join("tests/browser/live_page.js");
    Ok((script, chromium))
}

fn command(url: &str) -> Result<Command> {
    let (script, chromium) = script()?;
    let mut command = Command::new("node");
    command
        .arg(script)
        .arg(format!("--url={url}"))
        .arg(format!("--for-seconds={SCRIPT_SECONDS}"))
        .env("SIDELB_CHROMIUM", chromium);
    Ok(command)
}

fn page_url(admin: SocketAddr) -> String {
    format!("http://{admin}/")
}

impl LivePage {
    /// Opens `http://ADMIN/` and waits for it to load.
    pub async fn open(admin: SocketAddr) -> Result<LivePage> {
        let process = Process::spawn("live-page", command(&page_url(admin))?)?;
        process
            .wait_for_line("the page to load", LOAD_TIMEOUT, |l| l == "loaded")
            .await?;
        Ok(LivePage { process })
    }

    /// The latest view, once the page has shown one.
    pub fn view(&self) -> Option<PageView> {
        let lines = self.process.lines();
        let last = lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("snapshot "))?;
        serde_json::from_str(last).ok()
    }

    /// Waits, at most `within`, until `check` finds what it wants in the
    /// latest view; the error shows that view and the script's logs.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&PageView) -> Option<T>,
    ) -> Result<T> {
        let found = wait_until(what, within, || {
            std::future::ready(self.view().as_ref().and_then(&check))
        })
        .await;
        found.with_context(|| {
            format!(
                "the page showed: {:#?}\n{}",
                self.view(),
                self.process.diagnostics()
            )
        })
    }

    /// Closes the browser (SIGTERM; the guard kills it if that hangs).
    pub async fn close(mut self) -> Result<()> {
        self.process.terminate()?;
        self.process.wait(Duration::from_secs(20)).await?;
        Ok(())
    }
}
