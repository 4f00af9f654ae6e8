//! The object store: every object of every resource, one global resourceVersion, and a
//! bounded history of changes that watches replay from.
//!
//! Like etcd behind kube-apiserver, each write takes the next resourceVersion and is
//! recorded as an event. A watch from resourceVersion N replays the history after N and
//! then follows live events; once N has fallen out of the history (it is bounded, and a
//! test can compact it at will) the watch is answered `410 Expired`, which is what makes
//! clients such as kube-runtime's watcher relist. Events are published while the store
//! lock is held, so a subscriber never misses or reorders one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::meta;
use super::resources::ResourceType;
use super::status::ApiError;

const LIVE_EVENT_BUFFER: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ObjectKey {
    resource: String,
    namespace: String,
    name: String,
}

impl ObjectKey {
    fn new(resource: &ResourceType, namespace: &str, name: &str) -> Self {
        Self {
            resource: resource.qualified(),
            namespace: if resource.namespaced {
                namespace.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object. `old` is the object before a modification, so a watch
/// with selectors can tell an object entering or leaving its selection.
#[derive(Debug)]
pub struct Event {
    pub kind: EventType,
    pub resource: &'static ResourceType,
    pub namespace: String,
    pub resource_version: u64,
    pub object: Value,
    pub old: Option<Value>,
}

/// Where a new watch starts and what it must send first.
pub struct Subscription {
    /// Recorded events after the requested resourceVersion.
    pub replay: Vec<Arc<Event>>,
    /// Current objects, sent as synthetic ADDED events (watch without a resourceVersion).
    pub initial: Vec<Value>,
    pub resource_version: u64,
    pub live: broadcast::Receiver<Arc<Event>>,
    /// Taken with the subscription, so a drop after it is never missed.
    pub drops: watch::Receiver<u64>,
}

struct Inner {
    resource_version: u64,
    objects: BTreeMap<ObjectKey, Value>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// The newest resourceVersion that is no longer in the history.
    compacted: u64,
}

pub struct Store {
    inner: Mutex<Inner>,
    live: broadcast::Sender<Arc<Event>>,
    drops: watch::Sender<u64>,
}

impl Store {
    pub fn new(history_limit: usize, first_resource_version: u64) -> Self {
        let (live, _) = broadcast::channel(LIVE_EVENT_BUFFER);
        let (drops, _) = watch::channel(0);
        Self {
            inner: Mutex::new(Inner {
                resource_version: first_resource_version,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_limit: history_limit.max(1),
                compacted: first_resource_version,
            }),
            live,
            drops,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    pub fn get(&self, resource: &ResourceType, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&ObjectKey::new(resource, namespace, name))
            .cloned()
    }

    /// Objects of a resource (in one namespace, or all), in key order, and the
    /// resourceVersion they are current at.
    pub fn list(&self, resource: &ResourceType, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        (
            Self::select(&inner, resource, namespace),
            inner.resource_version,
        )
    }

    fn select(inner: &Inner, resource: &ResourceType, namespace: Option<&str>) -> Vec<Value> {
        let start = ObjectKey::new(resource, namespace.unwrap_or(""), "");
        let qualified = start.resource.clone();
        inner
            .objects
            .range(start..)
            .take_while(|(k, _)| k.resource == qualified)
            .filter(|(k, _)| namespace.is_none_or(|ns| !resource.namespaced || k.namespace == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn record(&self, inner: &mut Inner, event: Event) {
        let event = Arc::new(event);
        inner.history.push_back(event.clone());
        while inner.history.len() > inner.history_limit {
            if let Some(dropped) = inner.history.pop_front() {
                inner.compacted = dropped.resource_version;
            }
        }
        let _ = self.live.send(event);
    }

    fn next_version(inner: &mut Inner, object: &mut Value) -> u64 {
        inner.resource_version += 1;
        meta::set_resource_version(object, inner.resource_version);
        inner.resource_version
    }

    /// Stores a new object; 409 AlreadyExists if the name is taken.
    pub fn create(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        let name = meta::name(&object).to_string();
        let key = ObjectKey::new(resource, namespace, &name);
        let mut inner = self.lock();
        if inner.objects.contains_key(&key) {
            return Err(ApiError::already_exists(resource, &name));
        }
        let rv = Self::next_version(&mut inner, &mut object);
        inner.objects.insert(key, object.clone());
        self.record(
            &mut inner,
            Event {
                kind: EventType::Added,
                resource,
                namespace: namespace.to_string(),
                resource_version: rv,
                object: object.clone(),
                old: None,
            },
        );
        Ok(object)
    }

    /// Replaces an object if it is still at `expected` (the version the caller read).
    pub fn update(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        mut object: Value,
        expected: u64,
    ) -> Result<Value, ApiError> {
        let name = meta::name(&object).to_string();
        let key = ObjectKey::new(resource, namespace, &name);
        let mut inner = self.lock();
        let Some(current) = inner.objects.get(&key) else {
            return Err(ApiError::not_found(resource, &name));
        };
        if meta::resource_version(current) != Some(expected) {
            return Err(ApiError::modified(resource, &name));
        }
        let old = current.clone();
        let rv = Self::next_version(&mut inner, &mut object);
        inner.objects.insert(key, object.clone());
        self.record(
            &mut inner,
            Event {
                kind: EventType::Modified,
                resource,
                namespace: namespace.to_string(),
                resource_version: rv,
                object: object.clone(),
                old: Some(old),
            },
        );
        Ok(object)
    }

    /// Removes an object if it is still at `expected` (when given). The DELETED event
    /// and the returned object carry the deletion's resourceVersion, as etcd's do.
    pub fn delete(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        name: &str,
        expected: Option<u64>,
    ) -> Result<Value, ApiError> {
        let key = ObjectKey::new(resource, namespace, name);
        let mut inner = self.lock();
        let Some(current) = inner.objects.get(&key) else {
            return Err(ApiError::not_found(resource, name));
        };
        if expected.is_some() && meta::resource_version(current) != expected {
            return Err(ApiError::modified(resource, name));
        }
        let Some(mut object) = inner.objects.remove(&key) else {
            return Err(ApiError::not_found(resource, name));
        };
        let rv = Self::next_version(&mut inner, &mut object);
        self.record(
            &mut inner,
            Event {
                kind: EventType::Deleted,
                resource,
                namespace: namespace.to_string(),
                resource_version: rv,
                object: object.clone(),
                old: None,
            },
        );
        Ok(object)
    }

    /// Starts a watch: from `since` (replaying history, 410 if it is gone) or, without
    /// it, from the current state sent as synthetic ADDED events.
    pub fn subscribe(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        since: Option<u64>,
    ) -> Result<Subscription, ApiError> {
        let inner = self.lock();
        let live = self.live.subscribe();
        let mut drops = self.drops.subscribe();
        drops.borrow_and_update();
        let current = inner.resource_version;
        let Some(since) = since else {
            return Ok(Subscription {
                replay: Vec::new(),
                initial: Self::select(&inner, resource, namespace),
                resource_version: current,
                live,
                drops,
            });
        };
        if since > current {
            return Err(ApiError::too_large_resource_version(since, current));
        }
        if since < inner.compacted {
            return Err(ApiError::expired(format!(
                "too old resource version: {since} ({})",
                inner.compacted
            )));
        }
        let replay = inner
            .history
            .iter()
            .filter(|e| e.resource_version > since)
            .cloned()
            .collect();
        Ok(Subscription {
            replay,
            initial: Vec::new(),
            resource_version: current,
            live,
            drops,
        })
    }

    /// Whether a list at exactly `resource_version` can still be served.
    pub fn is_compacted(&self, resource_version: u64) -> bool {
        resource_version < self.lock().compacted
    }

    /// Forgets the history, as a kube-apiserver restart does: its new watch cache starts
    /// after writes of its own (leases and the like), so every resourceVersion a client
    /// holds is now too old to watch from. One such write is counted here.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.resource_version += 1;
        inner.compacted = inner.resource_version;
    }

    /// Compacts and ends every open watch in one step, as a restart does: no
    /// watch can open, or hear a bookmark, between the two.
    pub fn compact_and_drop_watches(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.resource_version += 1;
        inner.compacted = inner.resource_version;
        self.drops.send_modify(|generation| *generation += 1);
        drop(inner);
    }

    /// The current resourceVersion for a bookmark, unless this watch has
    /// been dropped meanwhile.
    pub fn resource_version_for(&self, drops: &watch::Receiver<u64>) -> Option<u64> {
        let inner = self.lock();
        (!drops.has_changed().unwrap_or(true)).then_some(inner.resource_version)
    }

    /// Ends every open watch (they watch this channel).
    pub fn drop_watches(&self) {
        self.drops.send_modify(|generation| *generation += 1);
    }

    /// A bookmark object for `resource` at the current resourceVersion.
    pub fn bookmark(
        resource: &ResourceType,
        resource_version: u64,
        annotations: Option<Value>,
    ) -> Value {
        let mut metadata =
            json!({ "resourceVersion": resource_version.to_string(), "creationTimestamp": null });
        if let Some(annotations) = annotations {
            metadata["annotations"] = annotations;
        }
        json!({ "kind": resource.kind, "apiVersion": resource.api_version(), "metadata": metadata })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

    fn config_map(name: &str) -> Value {
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name, "namespace": "a" } })
    }

    #[test]
    fn bounded_history_makes_old_versions_expire() {
        let cm = resources::by_kind("v1", "ConfigMap").unwrap();
        let store = Store::new(2, 100);
        for name in ["x", "y", "z"] {
            store.create(cm, "a", config_map(name)).unwrap();
        }
        assert_eq!(store.resource_version(), 103);
        let err = store.subscribe(cm, None, Some(100)).err().unwrap();
        assert_eq!((err.code, err.reason), (410, "Expired"));
        assert_eq!(err.message, "too old resource version: 100 (101)");
        let resumed = store.subscribe(cm, None, Some(101)).ok().unwrap();
        let replayed: Vec<u64> = resumed.replay.iter().map(|e| e.resource_version).collect();
        assert_eq!(replayed, [102, 103]);
        assert_eq!(
            store.subscribe(cm, None, Some(104)).err().unwrap().code,
            504
        );
    }

    #[test]
    fn updates_check_the_version_read_and_deletes_get_a_new_one() {
        let cm = resources::by_kind("v1", "ConfigMap").unwrap();
        let store = Store::new(10, 100);
        let created = store.create(cm, "a", config_map("x")).unwrap();
        assert_eq!(
            store.create(cm, "a", config_map("x")).unwrap_err().code,
            409
        );
        assert_eq!(
            store
                .update(cm, "a", created.clone(), 1)
                .unwrap_err()
                .reason,
            "Conflict"
        );
        store.update(cm, "a", created, 101).unwrap();
        let deleted = store.delete(cm, "a", "x", None).unwrap();
        assert_eq!(meta::resource_version(&deleted), Some(103));
        assert!(store.get(cm, "a", "x").is_none());
        store.compact();
        assert_eq!(
            store.subscribe(cm, None, Some(103)).err().unwrap().code,
            410
        );
    }
}
