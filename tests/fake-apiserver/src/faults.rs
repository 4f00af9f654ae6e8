//! Fault injection and request accounting, for tests of clients' resilience.
//!
//! A test can make the server answer every request with 500, hang every request until
//! the fault is cleared, or forbid a resource (the real 403 text, per verb). Counters of
//! requests and open watches per resource let a test wait for "a watch on
//! endpointslices is open" instead of sleeping.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

/// How the server answers requests right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Normal,
    /// Every API request gets `500 InternalError`.
    Fail,
    /// Every API request waits until the mode changes.
    Hang,
}

#[derive(Debug)]
pub struct Faults {
    mode: watch::Sender<Mode>,
    /// (group, resource, verb); verb `*` forbids every verb.
    forbidden: Mutex<HashSet<(String, String, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            mode: watch::channel(Mode::Normal).0,
            forbidden: Mutex::default(),
        }
    }
}

impl Faults {
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Waits while the server hangs; returns the mode that ended the wait.
    pub async fn pass(&self) -> Mode {
        let mut rx = self.mode.subscribe();
        loop {
            let mode = *rx.borrow_and_update();
            if mode != Mode::Hang {
                return mode;
            }
            if rx.changed().await.is_err() {
                return Mode::Normal;
            }
        }
    }

    pub fn forbid(&self, group: &str, resource: &str, verb: &str) {
        lock(&self.forbidden).insert((group.into(), resource.into(), verb.into()));
    }

    /// Lifts every prohibition on `group`/`resource`.
    pub fn allow(&self, group: &str, resource: &str) {
        lock(&self.forbidden).retain(|(g, r, _)| g != group || r != resource);
    }

    pub fn is_forbidden(&self, group: &str, resource: &str, verb: &str) -> bool {
        let forbidden = lock(&self.forbidden);
        ["*", verb]
            .iter()
            .any(|v| forbidden.contains(&(group.to_string(), resource.to_string(), v.to_string())))
    }

    pub fn clear(&self) {
        self.set_mode(Mode::Normal);
        lock(&self.forbidden).clear();
    }
}

/// Requests per (resource, verb), every API request, and open watches per resource.
#[derive(Debug, Default)]
pub struct Stats {
    requests: Mutex<HashMap<(String, String), u64>>,
    /// Every API request that got past authentication, faulted ones included.
    api_requests: std::sync::atomic::AtomicU64,
    watches: Arc<Mutex<HashMap<String, usize>>>,
}

/// Counts a watch as open until dropped.
pub struct OpenWatch {
    resource: String,
    watches: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.watches).get_mut(&self.resource) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Stats {
    pub fn count(&self, resource: &str, verb: &str) {
        *lock(&self.requests)
            .entry((resource.to_string(), verb.to_string()))
            .or_default() += 1;
    }

    /// Counts an API request as it arrives, before any fault is applied.
    pub fn count_api_request(&self) {
        self.api_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn api_requests(&self) -> u64 {
        self.api_requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn requests(&self, resource: &str, verb: &str) -> u64 {
        lock(&self.requests)
            .get(&(resource.to_string(), verb.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn watch_opened(&self, resource: &str) -> OpenWatch {
        *lock(&self.watches).entry(resource.to_string()).or_default() += 1;
        OpenWatch {
            resource: resource.to_string(),
            watches: self.watches.clone(),
        }
    }

    pub fn open_watches(&self, resource: &str) -> usize {
        lock(&self.watches).get(resource).copied().unwrap_or(0)
    }

    /// All counters, for `/fake/stats`.
    pub fn snapshot(&self) -> serde_json::Value {
        let requests: serde_json::Map<String, serde_json::Value> = lock(&self.requests)
            .iter()
            .map(|((r, v), n)| (format!("{r} {v}"), (*n).into()))
            .collect();
        let watches: serde_json::Map<String, serde_json::Value> = lock(&self.watches)
            .iter()
            .map(|(r, n)| (r.clone(), (*n).into()))
            .collect();
        serde_json::json!({
            "requests": requests,
            "apiRequests": self.api_requests(),
            "openWatches": watches,
        })
    }
}
