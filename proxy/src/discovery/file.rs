//! Endpoints from a YAML file, for running without a cluster.
//!
//! ```yaml
//! services:
//!   - name: greeter
//!     namespace: default
//!     port: 50051
//!     endpoints: ["127.0.0.1:50061", "127.0.0.1:50062"]
//! ```
//!
//! The file is checked for changes every [`POLL_INTERVAL`] (a `stat`, cheap)
//! and re-read when its size, time or inode changed, which catches in-place
//! writes, atomic renames and Kubernetes' ConfigMap symlink swaps alike. A
//! file that does not parse at start is an error; a bad rewrite later is
//! logged and the last good endpoints stay in use.

use super::{Discover, EndpointMeta, Publisher, UpdateRx};
use serde::Deserialize;
use sidelb_config::service::is_dns_label;
use sidelb_config::{PortRef, ServiceKey};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("endpoints file {path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("endpoints file {path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

type Services = BTreeMap<ServiceKey, Vec<EndpointMeta>>;

/// The file source. Cheap to clone; clones share state.
#[derive(Clone)]
pub(crate) struct FileDiscovery {
    path: Arc<PathBuf>,
    default_namespace: Arc<str>,
    state: Arc<Mutex<State>>,
    listed: Arc<watch::Sender<Vec<ServiceKey>>>,
}

struct State {
    services: Services,
    subscribers: Vec<(ServiceKey, Publisher)>,
    stamp: Option<Stamp>,
    updates: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl FileDiscovery {
    /// Reads the file once; an unreadable or invalid file is an error.
    pub(crate) fn load(path: &Path, default_namespace: &str) -> Result<Self, FileError> {
        let stamp = stamp(path);
        let services = read(path, default_namespace)?;
        let (listed, _) = watch::channel(services.keys().cloned().collect());
        Ok(FileDiscovery {
            path: Arc::new(path.to_owned()),
            listed: Arc::new(listed),
            default_namespace: default_namespace.into(),
            state: Arc::new(Mutex::new(State {
                services,
                subscribers: Vec::new(),
                stamp,
                updates: 0,
            })),
        })
    }

    /// Watches the file until the returned task is aborted.
    pub(crate) fn spawn_watch(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.reload_if_changed();
            }
        })
    }

    /// Re-reads the file if it changed since the last read. Returns whether
    /// new endpoints were applied.
    pub(crate) fn reload_if_changed(&self) -> bool {
        let now = stamp(&self.path);
        {
            let state = lock(&self.state);
            if now == state.stamp {
                return false;
            }
        }
        let parsed = read(&self.path, &self.default_namespace);
        let mut state = lock(&self.state);
        state.stamp = now;
        match parsed {
            Ok(services) => {
                if services == state.services {
                    return false;
                }
                tracing::info!(path = %self.path.display(), services = services.len(), "endpoints file changed");
                state.services = services;
                state.updates += 1;
                let State {
                    services,
                    subscribers,
                    ..
                } = &mut *state;
                subscribers.retain(|(_, p)| !p.is_closed());
                for (key, publisher) in subscribers.iter_mut() {
                    publish(&self.path, services, key, publisher);
                }
                let keys: Vec<ServiceKey> = services.keys().cloned().collect();
                self.listed.send_if_modified(|listed| {
                    let changed = *listed != keys;
                    *listed = keys;
                    changed
                });
                true
            }
            Err(e) => {
                tracing::error!("{e}; keeping the last good endpoints");
                false
            }
        }
    }
}

impl Discover for FileDiscovery {
    fn subscribe(&self, service: &ServiceKey) -> UpdateRx {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut publisher = Publisher::new(tx);
        let mut state = lock(&self.state);
        publish(&self.path, &state.services, service, &mut publisher);
        state.subscribers.push((service.clone(), publisher));
        rx
    }

    fn describe(&self) -> String {
        format!("endpoints file {}", self.path.display())
    }

    fn listed(&self) -> Option<watch::Receiver<Vec<ServiceKey>>> {
        Some(self.listed.subscribe())
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn publish(path: &Path, services: &Services, key: &ServiceKey, publisher: &mut Publisher) {
    match services.get(key) {
        Some(endpoints) => publisher.publish(endpoints.iter().cloned()),
        None => publisher.publish_missing(format!(
            "service {key} is not in the endpoints file {}; add it there",
            path.display()
        )),
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    services: Option<Vec<ServiceEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceEntry {
    name: String,
    namespace: Option<String>,
    port: PortValue,
    #[serde(default)]
    endpoints: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortValue {
    Number(u64),
    Name(String),
}

fn read(path: &Path, default_namespace: &str) -> Result<Services, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, default_namespace).map_err(|why| FileError::Invalid {
        path: path.to_owned(),
        why,
    })
}

/// Parses the file's text; the error names the entry that is wrong.
pub fn parse(
    text: &str,
    default_namespace: &str,
) -> Result<BTreeMap<ServiceKey, Vec<EndpointMeta>>, String> {
    const SHAPE: &str = "expected `services:` with entries of `name`, `namespace`, `port` and `endpoints: [\"ip:port\", …]`";
    if text.trim().is_empty() {
        return Err(format!("the file is empty; {SHAPE}"));
    }
    // One line per error for the log: the position, not a drawing of the text.
    let options = serde_saphyr::options! { with_snippet: false };
    let doc: Document =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| format!("{e}; {SHAPE}"))?;
    let mut out = BTreeMap::new();
    for (i, entry) in doc.services.unwrap_or_default().into_iter().enumerate() {
        let at = format!("services[{i}] ({})", entry.name);
        if !is_dns_label(&entry.name) {
            return Err(format!(
                "{at}: `{}` is not a valid service name",
                entry.name
            ));
        }
        let namespace = entry
            .namespace
            .unwrap_or_else(|| default_namespace.to_owned());
        if !is_dns_label(&namespace) {
            return Err(format!("{at}: `{namespace}` is not a valid namespace"));
        }
        let port = match entry.port {
            PortValue::Number(n) => u16::try_from(n)
                .ok()
                .filter(|p| *p != 0)
                .map(PortRef::Number)
                .ok_or_else(|| format!("{at}: port {n} is not in 1-65535"))?,
            PortValue::Name(name) => PortRef::parse(&name).map_err(|e| format!("{at}: {e}"))?,
        };
        let mut endpoints = Vec::with_capacity(entry.endpoints.len());
        for e in &entry.endpoints {
            let addr: SocketAddr = e.trim().parse().map_err(|_| {
                format!(
                    "{at}: endpoint `{e}` is not an address `ip:port`, e.g. `10.0.0.7:50051` or `[::1]:50051` (host names are not resolved: write `127.0.0.1` for localhost)"
                )
            })?;
            if !endpoints.iter().any(|m: &EndpointMeta| m.addr == addr) {
                endpoints.push(EndpointMeta::new(addr));
            }
        }
        let key = ServiceKey::new(entry.name, namespace, port);
        if out.contains_key(&key) {
            return Err(format!(
                "{at}: service {key} is listed twice; merge its endpoints into one entry"
            ));
        }
        out.insert(key, endpoints);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let services = parse(
            "services:\n  - name: greeter\n    namespace: default\n    port: 50051\n    endpoints: [\"127.0.0.1:50061\", \"127.0.0.1:50062\"]\n",
            "x",
        )
        .unwrap();
        let key = ServiceKey::new("greeter", "default", PortRef::Number(50051));
        assert_eq!(services[&key].len(), 2);
    }

    #[test]
    fn named_ports_and_default_namespace() {
        let services = parse("services:\n- name: a\n  port: grpc\n", "shop").unwrap();
        let key = ServiceKey::new("a", "shop", PortRef::Name("grpc".into()));
        assert!(services[&key].is_empty());
    }

    #[test]
    fn errors_name_the_entry() {
        for (text, needle) in [
            ("", "empty"),
            ("services: 3", "services"),
            (
                "services:\n- name: a\n  port: 0\n",
                "services[0] (a): port 0",
            ),
            (
                "services:\n- name: a\n  port: 1\n  endpoints: [\"x\"]\n",
                "endpoint `x`",
            ),
            (
                "services:\n- name: A\n  port: 1\n",
                "not a valid service name",
            ),
            ("services:\n- name: a\n  port: 1\n  typo: 1\n", "typo"),
            (
                "services:\n- {name: a, port: 1}\n- {name: a, port: 1}\n",
                "twice",
            ),
        ] {
            let err = parse(text, "default").unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
