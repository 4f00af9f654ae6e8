//! How a watch is retried: exponential backoff after failures, none after
//! `410 Gone`.
//!
//! `kube`'s watcher retries by itself on its next poll; how long to wait
//! before that poll is left to the caller. Its stock backoff resets on every
//! successful item, and the watcher yields one (`Init`) before each list, so
//! a list that keeps failing — API server down, RBAC missing — would be
//! retried about every second forever. Here only progress resets the
//! backoff: objects listed or changed. A run of failures waits 0.8 s,
//! doubling to 30 s (plus up to a quarter of jitter, so that proxies
//! restarted together do not retry together); a failure long after the last
//! one starts a new run. `410 Gone` is not a failure of the API server but
//! its answer to a resourceVersion it no longer has: the relist it calls for
//! happens at once (a server that answered 410 to every watch would still
//! see each watch at most once a second, see [`super::pacing`]).

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};
use std::time::Duration;
use tokio::time::Instant;

pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(800);
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(30);
/// Failures further apart than this (well over the longest delay) belong
/// to different runs.
pub(crate) const NEW_RUN_AFTER: Duration = Duration::from_secs(120);

/// What a watch did next.
pub(crate) enum Step<K> {
    Event(Event<K>),
    /// The history expired (410 Gone); the watcher lists again at once.
    Expired,
    /// A failure; the watch is retried after `retry_in`.
    Failed {
        error: watcher::Error,
        /// This failure's number in the current run (1 for the first).
        in_a_row: u32,
        retry_in: Duration,
    },
}

/// A `kube` watcher with the retry policy above.
pub(crate) struct RetryingWatch<K> {
    events: BoxStream<'static, watcher::Result<Event<K>>>,
    failures: u32,
    last_failure: Option<Instant>,
    resume_at: Option<Instant>,
}

impl<K> RetryingWatch<K> {
    pub(crate) fn new(
        events: impl Stream<Item = watcher::Result<Event<K>>> + Send + 'static,
    ) -> Self {
        RetryingWatch {
            events: events.boxed(),
            failures: 0,
            last_failure: None,
            resume_at: None,
        }
    }

    /// The next step, after the delay the last failure called for. Safe to
    /// cancel (in `select!`): the delay and the watcher's state are kept.
    pub(crate) async fn next(&mut self) -> Step<K> {
        if let Some(at) = self.resume_at {
            tokio::time::sleep_until(at).await;
            self.resume_at = None;
        }
        let Some(item) = self.events.next().await else {
            // The watcher never ends; if it did, there is nothing more to say.
            return std::future::pending().await;
        };
        match item {
            Ok(Event::Init) => Step::Event(Event::Init),
            Ok(event) => {
                self.failures = 0;
                self.last_failure = None;
                Step::Event(event)
            }
            Err(watcher::Error::WatchError(status)) if status.code == 410 => Step::Expired,
            Err(error) => {
                let now = Instant::now();
                if self
                    .last_failure
                    .is_some_and(|last| now.saturating_duration_since(last) > NEW_RUN_AFTER)
                {
                    self.failures = 0;
                }
                self.failures += 1;
                self.last_failure = Some(now);
                let retry_in = delay(self.failures, fastrand::f64());
                self.resume_at = Some(now + retry_in);
                Step::Failed {
                    error,
                    in_a_row: self.failures,
                    retry_in,
                }
            }
        }
    }
}

/// The wait after the `failures`-th failure in a row, `jitter` in [0, 1).
pub(crate) fn delay(failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let base = FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY);
    base + base.mul_f64(jitter.clamp(0.0, 1.0) / 4.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use k8s_openapi::api::core::v1::Service;
    use kube::core::Status;

    #[test]
    fn delays_double_from_the_first_to_the_cap_with_bounded_jitter() {
        let delays: Vec<u64> = (1..=8).map(|n| delay(n, 0.0).as_millis() as u64).collect();
        assert_eq!(delays, [800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
        assert_eq!(delay(1000, 0.0), MAX_DELAY);
        assert_eq!(delay(1, 0.999_999).as_millis(), 999);
        assert!(delay(40, 0.999) < MAX_DELAY + MAX_DELAY / 4);
    }

    fn failure() -> watcher::Result<Event<Service>> {
        Err(watcher::Error::NoResourceVersion)
    }

    fn in_a_row(step: Step<Service>) -> Option<u32> {
        match step {
            Step::Failed { in_a_row, .. } => Some(in_a_row),
            _ => None,
        }
    }

    #[tokio::test]
    async fn only_progress_resets_the_run_and_410_is_not_a_failure() {
        let gone = Err(watcher::Error::WatchError(Box::new(
            Status::failure("too old resource version", "Expired").with_code(410),
        )));
        let items = vec![
            Ok(Event::Init),
            failure(),
            Ok(Event::Init),
            failure(),
            gone,
            Ok(Event::Init),
            Ok(Event::InitDone),
            failure(),
        ];
        let mut watch = RetryingWatch::new(stream::iter(items));
        // Keep the test quick: no waiting between the scripted items.
        let mut next = async || {
            let step = watch.next().await;
            watch.resume_at = None;
            step
        };
        assert!(matches!(next().await, Step::Event(Event::Init)));
        assert_eq!(in_a_row(next().await), Some(1));
        assert!(matches!(next().await, Step::Event(Event::Init)));
        assert_eq!(in_a_row(next().await), Some(2), "Init is no progress");
        assert!(matches!(next().await, Step::Expired));
        assert!(matches!(next().await, Step::Event(Event::Init)));
        assert!(matches!(next().await, Step::Event(Event::InitDone)));
        assert_eq!(
            in_a_row(next().await),
            Some(1),
            "a completed list is progress"
        );
    }
}
