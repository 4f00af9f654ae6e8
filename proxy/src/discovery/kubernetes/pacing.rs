//! At most one start per second of any one watch.
//!
//! `kube`'s watcher backs off after errors, but a watch that the server (or
//! a load balancer in front of it) ends cleanly is resumed at once, from
//! inside the watcher, without an error to back off from. A server that ends
//! every watch right away would be asked again as fast as it answers — a
//! tight loop against the API server. client-go treats such "very short
//! watches" as errors; here the Kubernetes client gets a layer that spaces
//! the starts of each watch (same path and selectors) by at least
//! [`MIN_WATCH_INTERVAL`]. A healthy watch lasts minutes and never waits; a
//! watch cut by an API server restart waits at most a second.

use futures_util::future::BoxFuture;
use http::{Request, Uri};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, Service};

pub(crate) const MIN_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The layer; clones share the record of watch starts.
#[derive(Clone, Default)]
pub(crate) struct PaceWatches {
    starts: Arc<Mutex<HashMap<String, Instant>>>,
}

impl PaceWatches {
    /// Reserves the next start of the watch `uri` (if it is a watch) at or
    /// after `now`; returns how long to wait for it.
    fn reserve(&self, uri: &Uri, now: Instant) -> Duration {
        let Some(key) = watch_key(uri) else {
            return Duration::ZERO;
        };
        let mut starts = self
            .starts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Starts further back than the interval constrain nothing.
        starts.retain(|_, start| *start + MIN_WATCH_INTERVAL > now);
        let start = starts
            .get(&key)
            .map_or(now, |last| (*last + MIN_WATCH_INTERVAL).max(now));
        starts.insert(key, start);
        start - now
    }
}

/// `path?labelSelector&fieldSelector` of a watch request; `None` for others.
fn watch_key(uri: &Uri) -> Option<String> {
    let query = uri.query()?;
    let mut watch = false;
    let mut key = uri.path().to_owned();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "watch" => watch = value == "true" || value == "1",
            "labelSelector" | "fieldSelector" => {
                key.push('&');
                key.push_str(pair);
            }
            _ => {}
        }
    }
    watch.then_some(key)
}

impl<S> Layer<S> for PaceWatches {
    type Service = Paced<S>;

    fn layer(&self, inner: S) -> Paced<S> {
        Paced {
            inner,
            pacing: self.clone(),
        }
    }
}

/// A service whose watch requests are paced. `S` must be cheap to clone
/// (a `tower::buffer::Buffer`): a request that waits takes the instance that
/// was made ready for it along.
#[derive(Clone)]
pub(crate) struct Paced<S> {
    inner: S,
    pacing: PaceWatches,
}

impl<S, B> Service<Request<B>> for Paced<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let wait = self.pacing.reserve(request.uri(), Instant::now());
        if wait.is_zero() {
            return Box::pin(self.inner.call(request));
        }
        tracing::debug!(uri = %request.uri(), ?wait, "watch restarted within a second; pacing it");
        let fresh = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, fresh);
        Box::pin(async move {
            tokio::time::sleep(wait).await;
            ready.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().expect("a URI")
    }

    const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

    #[test]
    fn only_watches_have_keys_made_of_path_and_selectors() {
        let watch = uri(&format!(
            "{SLICES}?&watch=true&timeoutSeconds=290&labelSelector=kubernetes.io%2Fservice-name%3Decho&allowWatchBookmarks=true&resourceVersion=17"
        ));
        assert_eq!(
            watch_key(&watch).as_deref(),
            Some(&*format!(
                "{SLICES}&labelSelector=kubernetes.io%2Fservice-name%3Decho"
            ))
        );
        assert_eq!(
            watch_key(&uri(&format!("{SLICES}?labelSelector=a%3Db"))),
            None
        );
        assert_eq!(watch_key(&uri(SLICES)), None);
    }

    #[tokio::test]
    async fn restarts_of_one_watch_are_spaced_others_are_not() {
        let pacing = PaceWatches::default();
        let echo = uri(&format!(
            "{SLICES}?watch=true&labelSelector=s%3Decho&resourceVersion=1"
        ));
        let echo_later = uri(&format!(
            "{SLICES}?watch=true&labelSelector=s%3Decho&resourceVersion=9"
        ));
        let other = uri(&format!("{SLICES}?watch=true&labelSelector=s%3Dother"));
        let list = uri(&format!("{SLICES}?labelSelector=s%3Decho"));
        let now = Instant::now();

        assert_eq!(pacing.reserve(&echo, now), Duration::ZERO);
        // The same watch again at once, twice: one and two intervals later.
        assert_eq!(pacing.reserve(&echo_later, now), MIN_WATCH_INTERVAL);
        assert_eq!(pacing.reserve(&echo, now), 2 * MIN_WATCH_INTERVAL);
        // Other watches and lists are not held up.
        assert_eq!(pacing.reserve(&other, now), Duration::ZERO);
        assert_eq!(pacing.reserve(&list, now), Duration::ZERO);
        // Long after, no wait.
        assert_eq!(
            pacing.reserve(&echo, now + 10 * MIN_WATCH_INTERVAL),
            Duration::ZERO
        );
    }
}
