//! One task per watched Service: two watches in, every subscriber out.
//!
//! However many pools use a Service (several ports, or the same port from an
//! upstream listener and from authority routing), the API server sees one
//! list+watch of the Service object and one of its EndpointSlices. The task
//! owns what they report ([`ServiceState`]) and each subscriber's
//! [`Publisher`], and after every change tells each subscriber the answer for
//! its own port; the publishers turn answers into diffs, so an event that
//! does not change a port's endpoints sends that port nothing.
//!
//! The task ends when its last subscriber has gone (a pool dropped after
//! being idle), which drops the watches; the registry hands the next
//! subscriber of that Service to a new task.
//!
//! Recovery is the `kube` watcher's — a cut watch resumes from its last
//! resourceVersion, a `410 Gone` relists — paced by [`super::retry`]:
//! exponential backoff after failures, so an unreachable API server is
//! retried without a tight loop.

use super::ServiceRef;
use super::failure::{WatchFailure, Watched};
use super::registry::Registry;
use super::retry::{RetryingWatch, Step};
use super::state::{Outcome, SERVICE_NAME_LABEL, ServiceState};
use crate::discovery::Publisher;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, Client};
use sidelb_config::PortRef;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A pool's interest in one port of the Service.
pub(crate) struct Subscriber {
    pub(crate) port: PortRef,
    pub(crate) publisher: Publisher,
}

/// Runs the watches of `service` for the subscribers `joining` brings (the
/// first is already queued) until none is left.
pub(crate) async fn run(
    client: Client,
    service: ServiceRef,
    mut joining: mpsc::UnboundedReceiver<Subscriber>,
    registry: Arc<Registry<Subscriber>>,
    generation: u64,
) {
    let namespace = &service.namespace;
    let mut services = RetryingWatch::new(watcher(
        Api::<Service>::namespaced(client.clone(), namespace),
        watcher::Config::default().fields(&format!("metadata.name={}", service.name)),
    ));
    let mut slices = RetryingWatch::new(watcher(
        Api::<EndpointSlice>::namespaced(client, namespace),
        watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={}", service.name)),
    ));

    let mut fanout = Fanout::new(service.clone());
    tracing::info!(service = %service, "watching the Service and its EndpointSlices");
    loop {
        tokio::select! {
            step = services.next() => match step {
                Step::Event(event) => {
                    if fanout.state.apply_service(event) {
                        fanout.publish_all();
                    }
                }
                Step::Expired => fanout.expired(Watched::Services),
                Step::Failed { error, in_a_row, retry_in } => {
                    fanout.failed(Watched::Services, error, in_a_row, retry_in);
                }
            },
            step = slices.next() => match step {
                Step::Event(event) => {
                    if fanout.state.apply_slice(event) {
                        fanout.publish_all();
                    }
                }
                Step::Expired => fanout.expired(Watched::EndpointSlices),
                Step::Failed { error, in_a_row, retry_in } => {
                    fanout.failed(Watched::EndpointSlices, error, in_a_row, retry_in);
                }
            },
            Some(subscriber) = joining.recv() => fanout.add(subscriber),
            Some(id) = fanout.gone.next(), if !fanout.gone.is_empty() => {
                fanout.subscribers.remove(&id);
                if fanout.subscribers.is_empty() {
                    match registry.retire(&service, generation, &mut joining) {
                        Some(subscriber) => fanout.add(subscriber),
                        None => {
                            tracing::info!(service = %service, "no longer used: stopped watching");
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// The state of one Service and the subscribers it is told to.
struct Fanout {
    service: ServiceRef,
    state: ServiceState,
    subscribers: HashMap<u64, Subscriber>,
    /// Resolves with a subscriber's id when it has gone.
    gone: FuturesUnordered<BoxFuture<'static, u64>>,
    next_id: u64,
    was_synced: bool,
}

impl Fanout {
    fn new(service: ServiceRef) -> Self {
        Fanout {
            state: ServiceState::new(&service.name, &service.namespace),
            service,
            subscribers: HashMap::new(),
            gone: FuturesUnordered::new(),
            next_id: 0,
            was_synced: false,
        }
    }

    fn add(&mut self, mut subscriber: Subscriber) {
        let id = self.next_id;
        self.next_id += 1;
        let closed = subscriber.publisher.closed();
        self.gone.push(Box::pin(async move {
            closed.await;
            id
        }));
        tell(&self.state, &mut subscriber);
        self.subscribers.insert(id, subscriber);
    }

    fn publish_all(&mut self) {
        if !self.was_synced && self.state.synced() {
            self.was_synced = true;
            tracing::info!(
                service = %self.service,
                slices = self.state.slice_count(),
                "synced the Service and its EndpointSlices"
            );
        }
        for subscriber in self.subscribers.values_mut() {
            tell(&self.state, subscriber);
        }
    }

    fn expired(&self, watched: Watched) {
        tracing::info!(
            service = %self.service,
            resource = watched.resource(),
            "watch history expired (410 Gone); listing again"
        );
    }

    fn failed(
        &mut self,
        watched: Watched,
        error: watcher::Error,
        in_a_row: u32,
        retry_in: Duration,
    ) {
        let service = self.service.clone();
        let failure = WatchFailure::classify(error, watched, &service.namespace);
        if failure.needs_a_fix() {
            if self.state.block(watched, failure.to_string()) {
                tracing::error!(service = %service, "{failure}");
            }
            self.publish_all();
            return;
        }
        // The first failure of a run and every tenth are worth a warning;
        // the retries in between are noise.
        if in_a_row == 1 {
            tracing::warn!(
                service = %service,
                "{failure}; keeping the last known endpoints and retrying in {retry_in:.1?}"
            );
        } else if in_a_row.is_multiple_of(10) {
            tracing::warn!(
                service = %service,
                "{failure} ({in_a_row} failures in a row); still keeping the last known endpoints, retrying in {retry_in:.1?}"
            );
        } else {
            tracing::debug!(service = %service, "{failure} ({in_a_row} failures in a row)");
        }
    }
}

/// Tells one subscriber the current answer for its port, if there is one.
fn tell(state: &ServiceState, subscriber: &mut Subscriber) {
    match state.outcome(&subscriber.port) {
        Outcome::Unknown => {}
        Outcome::Endpoints(endpoints) => subscriber.publisher.publish(endpoints),
        Outcome::Unresolvable(why) => subscriber.publisher.publish_missing(why),
    }
}
