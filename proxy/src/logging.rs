//! The process's log, and its filter changed while the proxy runs.
//!
//! An operator chasing a problem in a running pod wants `debug` for one
//! module now, and `info` again afterwards, without a restart that would
//! drop every connection and the state worth looking at. So the
//! `EnvFilter` sits in a reload layer: `PUT /log-level` ([`LogFilter::set`])
//! swaps it, and tracing's per-callsite interest is rebuilt at once.
//!
//! A filter that does not name `kube` gets [`KUBE_LOG_DIRECTIVES`] added,
//! the first one from `SIDELB_LOG` and every later one alike.

use sidelb_config::{LogFormat, ProxyConfig};
use std::sync::Mutex;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// What `kube` may log unless the filter names it: its client and watcher
/// log every failed request and every retry of a watch (some at ERROR),
/// while Kubernetes discovery reports the same failures itself, once per
/// run, with what to do. Warnings about its configuration and CA reloads stay.
const KUBE_LOG_DIRECTIVES: &[&str] = &[
    "kube_client::client=error",
    "kube_client::client::builder=off",
    "kube_client::client::tls=warn",
    "kube_runtime=error",
];

/// The filter used when `SIDELB_LOG` cannot be parsed.
const FALLBACK: &str = "info";

/// The filter in force, and the way to replace it.
pub struct LogFilter {
    handle: reload::Handle<EnvFilter, Registry>,
    /// As given: `SIDELB_LOG`, or the last filter accepted.
    text: Mutex<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid log filter `{given}`: {why}; the filter stays `{kept}`")]
pub(crate) struct InvalidFilter {
    given: String,
    why: String,
    kept: String,
}

impl LogFilter {
    /// Installs the process's subscriber (to stderr, in `config`'s format)
    /// with `config.log` as its filter.
    pub fn init(config: &ProxyConfig) -> LogFilter {
        let (initial, text, bad) = match parse(&config.log) {
            Ok(filter) => (filter, config.log.trim().to_owned(), None),
            Err(why) => (
                parse(FALLBACK).unwrap_or_else(|_| EnvFilter::new(FALLBACK)),
                FALLBACK.to_owned(),
                Some(why),
            ),
        };
        let (layer, log) = LogFilter::new(initial, text);
        let registry = tracing_subscriber::registry().with(layer);
        let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        match config.log_format {
            LogFormat::Json => registry.with(fmt.json().flatten_event(true)).init(),
            LogFormat::Plain => registry.with(fmt.with_ansi(false)).init(),
        }
        if let Some(why) = bad {
            tracing::warn!(
                "SIDELB_LOG `{}` is not a log filter ({why}); logging at `{FALLBACK}`",
                config.log
            );
        }
        log
    }

    /// A filter `text` (already parsed as `filter`) and the layer it controls.
    fn new(filter: EnvFilter, text: String) -> (reload::Layer<EnvFilter, Registry>, LogFilter) {
        let (layer, handle) = reload::Layer::new(filter);
        let log = LogFilter {
            handle,
            text: Mutex::new(text),
        };
        (layer, log)
    }

    /// The filter in force, as it was given.
    pub(crate) fn current(&self) -> String {
        self.text.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the filter with `text`, or leaves it as it is and says why not.
    pub(crate) fn set(&self, text: &str) -> Result<(), InvalidFilter> {
        let mut current = self.text.lock().unwrap_or_else(|p| p.into_inner());
        let given = text.trim();
        let invalid = |why: String| InvalidFilter {
            given: given.to_owned(),
            why,
            kept: current.clone(),
        };
        let filter = parse(given).map_err(invalid)?;
        self.handle
            .reload(filter)
            .map_err(|e| invalid(format!("the log cannot be changed: {e}")))?;
        *current = given.to_owned();
        Ok(())
    }
}

/// The filter `text` stands for, with [`KUBE_LOG_DIRECTIVES`] unless it
/// names `kube` itself.
fn parse(text: &str) -> Result<EnvFilter, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("it is empty; give a level (`debug`) or directives \
                    (`info,sidelb_proxy::balancer=debug`)"
            .to_owned());
    }
    let mut filter = EnvFilter::builder()
        .parse(text)
        .map_err(|e| e.to_string())?;
    if !text.contains("kube") {
        for directive in KUBE_LOG_DIRECTIVES {
            filter = filter.add_directive(directive.parse().map_err(|e| format!("{e}"))?);
        }
    }
    Ok(filter)
}

#[cfg(test)]
#[path = "logging_tests.rs"]
mod tests;
