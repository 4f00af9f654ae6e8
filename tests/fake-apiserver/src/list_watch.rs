//! List and watch, with the resourceVersion semantics clients depend on.
//!
//! A list is consistent at the store's current resourceVersion and carries it in
//! `metadata.resourceVersion`; `limit`/`continue` page through it. A watch replays
//! history after `resourceVersion` (or, without one, sends the current objects as
//! synthetic ADDED events), follows live changes, sends BOOKMARKs when asked, and ends
//! at `timeoutSeconds`, when a test drops watches, or when the server stops. A watch
//! from a compacted resourceVersion gets one `ERROR` event with a 410 `Expired` Status,
//! as kube-apiserver's watch cache sends it.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::Shared;
use super::meta;
use super::request::{Output, Query, ResourcePath};
use super::resources::ResourceType;
use super::response::{self, Body};
use super::selectors::{FieldSelector, LabelSelector, Selectors};
use super::status::ApiError;
use super::store::{Event, EventType, Store, Subscription};
use super::table;

/// The selectors of a list or watch, including a name given in the path.
pub fn selectors(path: &ResourcePath, query: &Query) -> Result<Selectors, ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
    let mut fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), path.resource)?;
    if let Some(name) = &path.name {
        fields = fields.and(FieldSelector::for_name(name));
    }
    Ok(Selectors { labels, fields })
}

fn parse_resource_version(query: &Query) -> Result<Option<u64>, ApiError> {
    match query.get("resourceVersion").filter(|rv| !rv.is_empty()) {
        None => Ok(None),
        Some(rv) => rv
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}"))),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    start: String,
}

fn decode_continue(token: &str) -> Result<ContinueToken, ApiError> {
    let invalid = |why: String| ApiError::bad_request(format!("continue key is not valid: {why}"));
    let bytes = STANDARD.decode(token).map_err(|e| invalid(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))
}

fn object_key(object: &Value) -> String {
    format!(
        "{}/{}",
        meta::namespace(object).unwrap_or(""),
        meta::name(object)
    )
}

pub fn list(
    shared: &Shared,
    path: &ResourcePath,
    query: &Query,
    output: Output,
) -> Result<Response<Body>, ApiError> {
    let resource = path.resource;
    let selectors = selectors(path, query)?;
    let requested = parse_resource_version(query)?;
    let current = shared.store.resource_version();
    let exact = query.get("resourceVersionMatch") == Some("Exact");
    match requested {
        Some(rv) if rv > current => return Err(ApiError::too_large_resource_version(rv, current)),
        Some(rv) if exact && rv != current => {
            return Err(ApiError::expired(
                "The resourceVersion for the provided list is too old.",
            ));
        }
        _ => {}
    }
    let start = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let token = decode_continue(token)?;
            if shared.store.is_compacted(token.rv) {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            Some(token.start)
        }
        None => None,
    };
    let (objects, rv) = shared.store.list(resource, path.namespace.as_deref());
    let mut matching: Vec<Value> = objects
        .into_iter()
        .filter(|o| selectors.matches(o))
        .filter(|o| start.as_ref().is_none_or(|s| object_key(o) > *s))
        .collect();
    let mut list_meta = json!({ "resourceVersion": rv.to_string() });
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    if let Some(limit) = limit
        && matching.len() > limit
    {
        let remaining = matching.len() - limit;
        matching.truncate(limit);
        let last = matching.last().map(object_key).unwrap_or_default();
        let token = ContinueToken {
            v: "meta.k8s.io/v1".into(),
            rv,
            start: last,
        };
        let token = STANDARD.encode(serde_json::to_vec(&token).unwrap_or_default());
        list_meta["continue"] = json!(token);
        if selectors.is_empty() {
            list_meta["remainingItemCount"] = json!(remaining);
        }
    }
    let body = match output {
        Output::Table => table::table(resource, &matching, rv, true),
        Output::PartialMetadata => table::metadata_list(&matching, list_meta),
        _ => json!({
            "kind": resource.list_kind(),
            "apiVersion": resource.api_version(),
            "metadata": list_meta,
            "items": matching.iter().map(meta::without_type_meta).collect::<Vec<_>>(),
        }),
    };
    Ok(response::encoded(StatusCode::OK, &body, output))
}

/// What one watch sends and how long it lasts.
struct WatchPlan {
    resource: &'static ResourceType,
    namespace: Option<String>,
    selectors: Selectors,
    output: Output,
    bookmarks: bool,
    initial_events_end: bool,
    timeout: Duration,
}

pub fn watch(
    shared: &Arc<Shared>,
    path: &ResourcePath,
    query: &Query,
    output: Output,
) -> Result<Response<Body>, ApiError> {
    let selectors = selectors(path, query)?;
    let send_initial_events = query.flag("sendInitialEvents");
    let bookmarks = query.flag("allowWatchBookmarks");
    if send_initial_events
        && (!bookmarks || query.get("resourceVersionMatch") != Some("NotOlderThan"))
    {
        return Err(ApiError::invalid(
            path.resource,
            "",
            &[super::status::FieldError::forbidden(
                "sendInitialEvents",
                "sendInitialEvents requires setting allowWatchBookmarks to true and resourceVersionMatch to NotOlderThan",
            )],
        ));
    }
    let since = match parse_resource_version(query)? {
        Some(0) | None => None,
        Some(_) if send_initial_events => None,
        Some(rv) => Some(rv),
    };
    let timeout = match query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
    {
        Some(seconds) if seconds > 0 => Duration::from_secs(seconds),
        _ => Duration::from_secs(1800 + fastrand::u64(0..1800)),
    };
    let plan = WatchPlan {
        resource: path.resource,
        namespace: path.namespace.clone(),
        selectors,
        output,
        bookmarks,
        initial_events_end: send_initial_events,
        timeout,
    };
    let (tx, response) = response::stream();
    match shared
        .store
        .subscribe(path.resource, path.namespace.as_deref(), since)
    {
        Ok(subscription) => {
            let shared = shared.clone();
            tokio::spawn(async move { run_watch(shared, plan, subscription, tx).await });
        }
        Err(err) => {
            let line = event_line("ERROR", err.to_status());
            tokio::spawn(async move {
                let _ = tx.send(line).await;
            });
        }
    }
    Ok(response)
}

fn event_line(kind: &str, object: Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Writes events to one client; owns the per-watch state.
struct Watcher {
    plan: WatchPlan,
    tx: mpsc::Sender<Bytes>,
    /// The newest resourceVersion this client has been told about.
    resource_version: u64,
    table_headers_sent: bool,
}

impl Watcher {
    fn encode(&mut self, object: &Value) -> Value {
        match self.plan.output {
            Output::Table => {
                let rv = meta::resource_version(object).unwrap_or(self.resource_version);
                let headers = !self.table_headers_sent;
                self.table_headers_sent = true;
                table::table(
                    self.plan.resource,
                    std::slice::from_ref(object),
                    rv,
                    headers,
                )
            }
            Output::PartialMetadata => table::metadata_only(object),
            _ => object.clone(),
        }
    }

    async fn send(&mut self, kind: EventType, object: &Value) -> bool {
        let encoded = self.encode(object);
        self.tx
            .send(event_line(kind.as_str(), encoded))
            .await
            .is_ok()
    }

    fn in_scope(&self, event: &Event) -> bool {
        event.resource.qualified() == self.plan.resource.qualified()
            && self
                .plan
                .namespace
                .as_ref()
                .is_none_or(|ns| !event.resource.namespaced || *ns == event.namespace)
    }

    /// Sends what this watch should see of one change; false once the client is gone.
    async fn deliver(&mut self, event: &Event) -> bool {
        if event.resource_version <= self.resource_version && self.resource_version != 0 {
            return true;
        }
        self.resource_version = event.resource_version;
        if !self.in_scope(event) {
            return true;
        }
        let selected = |o: &Value| self.plan.selectors.matches(o);
        let now = selected(&event.object);
        let kind = match event.kind {
            EventType::Added | EventType::Deleted => now.then_some(event.kind),
            EventType::Modified => match (event.old.as_ref().is_some_and(selected), now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            },
        };
        match kind {
            Some(kind) => self.send(kind, &event.object).await,
            None => true,
        }
    }

    async fn bookmark(&mut self, annotations: Option<Value>) -> bool {
        let object = Store::bookmark(self.plan.resource, self.resource_version, annotations);
        let object = match self.plan.output {
            Output::Table | Output::PartialMetadata => table::metadata_only(&object),
            _ => object,
        };
        self.tx.send(event_line("BOOKMARK", object)).await.is_ok()
    }
}

async fn run_watch(
    shared: Arc<Shared>,
    plan: WatchPlan,
    subscription: Subscription,
    tx: mpsc::Sender<Bytes>,
) {
    let _open = shared.stats.watch_opened(plan.resource.plural);
    let Subscription {
        replay,
        initial,
        resource_version,
        mut live,
        mut drops,
    } = subscription;
    let deadline = tokio::time::sleep(plan.timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(shared.settings.bookmark_interval);
    ticker.tick().await;
    let mut watcher = Watcher {
        plan,
        tx,
        resource_version: 0,
        table_headers_sent: false,
    };
    for object in &initial {
        if watcher.plan.selectors.matches(object) && !watcher.send(EventType::Added, object).await {
            return;
        }
    }
    watcher.resource_version = resource_version;
    if watcher.plan.initial_events_end {
        let end = json!({ "k8s.io/initial-events-end": "true" });
        if !watcher.bookmark(Some(end)).await {
            return;
        }
    }
    if let Some(first) = replay.first() {
        watcher.resource_version = first.resource_version.saturating_sub(1);
    }
    for event in &replay {
        if !watcher.deliver(event).await {
            return;
        }
    }
    watcher.resource_version = watcher.resource_version.max(resource_version);
    loop {
        tokio::select! {
            // A drop wins over events that arrived after it.
            biased;
            _ = drops.changed() => return,
            received = live.recv() => match received {
                Ok(event) => {
                    if !watcher.deliver(&event).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick(), if watcher.plan.bookmarks => {
                let Some(current) = shared.store.resource_version_for(&drops) else {
                    return;
                };
                while let Ok(event) = live.try_recv() {
                    if !watcher.deliver(&event).await {
                        return;
                    }
                }
                watcher.resource_version = watcher.resource_version.max(current);
                if !watcher.bookmark(None).await {
                    return;
                }
            }
            _ = &mut deadline => return,
            _ = watcher.tx.closed() => return,
        }
    }
}
