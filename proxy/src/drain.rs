//! Graceful shutdown: tell every connection to stop taking new requests,
//! wait (bounded) until the last one has finished, and at the deadline tell
//! the requests still open to end with a reason, so the app sees an answer
//! it can act on (retry elsewhere) rather than a cut connection.
//!
//! Each connection task holds a [`Drain`]; when they are all dropped, the
//! proxy is drained. Each request task holds a [`Deadline`], which only
//! listens: a request ends with its connection.

use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long connections get, once the deadline has passed, to send their
/// last answers before the proxy exits anyway (an app that reads nothing
/// more cannot hold it). Answering takes milliseconds; the injector's
/// margin before the kubelet's kill covers this.
pub(crate) const DEADLINE_FLUSH: Duration = Duration::from_secs(1);

/// Where the shutdown is, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    Draining,
    /// The drain timeout passed: requests still open are ended.
    Deadline,
}

/// Held by every connection task.
#[derive(Clone)]
pub(crate) struct Drain {
    signal: watch::Receiver<Phase>,
    _alive: mpsc::Sender<()>,
}

impl Drain {
    /// Resolves once draining has begun.
    pub(crate) async fn signaled(&mut self) {
        let _ = self.signal.wait_for(|p| *p >= Phase::Draining).await;
    }

    pub(crate) fn is_draining(&self) -> bool {
        *self.signal.borrow() >= Phase::Draining
    }

    /// The deadline, for a request of this connection.
    pub(crate) fn deadline(&self) -> Deadline {
        Deadline(self.signal.clone())
    }
}

/// Tells a request that the drain timeout has passed.
#[derive(Clone)]
pub(crate) struct Deadline(watch::Receiver<Phase>);

impl Deadline {
    /// Resolves once the drain timeout has passed (at once if it has);
    /// never while the proxy serves on.
    pub(crate) async fn passed(&mut self) {
        if self.0.wait_for(|p| *p == Phase::Deadline).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Every request finished within the drain timeout.
    InTime,
    /// At the timeout, the requests still open were ended with a reason.
    AtDeadline,
    /// Some connections had not sent their last answers after
    /// [`DEADLINE_FLUSH`] either.
    Cut,
}

pub(crate) struct DrainController {
    signal: watch::Sender<Phase>,
    alive_tx: mpsc::Sender<()>,
    alive_rx: mpsc::Receiver<()>,
}

impl Default for DrainController {
    fn default() -> Self {
        Self::new()
    }
}

impl DrainController {
    pub(crate) fn new() -> Self {
        let (signal, _) = watch::channel(Phase::Serving);
        let (alive_tx, alive_rx) = mpsc::channel(1);
        DrainController {
            signal,
            alive_tx,
            alive_rx,
        }
    }

    pub(crate) fn watch(&self) -> Drain {
        Drain {
            signal: self.signal.subscribe(),
            _alive: self.alive_tx.clone(),
        }
    }

    /// Signals every holder and waits up to `timeout` for them to finish;
    /// then tells the requests still open that the deadline has passed and
    /// waits up to [`DEADLINE_FLUSH`] more.
    pub(crate) async fn drain(self, timeout: Duration) -> Drained {
        let DrainController {
            signal,
            alive_tx,
            mut alive_rx,
        } = self;
        signal.send_replace(Phase::Draining);
        drop(alive_tx);
        if tokio::time::timeout(timeout, alive_rx.recv()).await.is_ok() {
            return Drained::InTime;
        }
        signal.send_replace(Phase::Deadline);
        match tokio::time::timeout(DEADLINE_FLUSH, alive_rx.recv()).await {
            Ok(_) => Drained::AtDeadline,
            Err(_) => Drained::Cut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const TIMEOUT: Duration = Duration::from_millis(100);
    /// Far above what a loaded machine adds to a timer.
    const SLACK: Duration = Duration::from_secs(5);

    /// A connection task that ends once its request has ended at the
    /// deadline; a `stubborn` one never ends.
    fn connection(drain: Drain, stubborn: bool) -> tokio::task::JoinHandle<&'static str> {
        tokio::spawn(async move {
            let _held = &drain;
            if stubborn {
                std::future::pending::<()>().await;
            }
            drain.deadline().passed().await;
            "ended at the deadline"
        })
    }

    #[tokio::test]
    async fn requests_finished_in_time_see_no_deadline() {
        let controller = DrainController::new();
        let mut drain = controller.watch();
        let mut deadline = drain.deadline();
        assert!(!drain.is_draining());
        let task = tokio::spawn(async move {
            drain.signaled().await;
            assert!(drain.is_draining());
        });
        assert_eq!(controller.drain(SLACK).await, Drained::InTime);
        task.await.expect("the connection ended");
        let passed = tokio::time::timeout(TIMEOUT, deadline.passed()).await;
        assert!(passed.is_err(), "no deadline after a drain in time");
    }

    #[tokio::test]
    async fn at_the_timeout_open_requests_are_told_and_then_the_drain_ends() {
        let controller = DrainController::new();
        let tasks = [
            connection(controller.watch(), false),
            connection(controller.watch(), false),
        ];
        let started = Instant::now();
        assert_eq!(controller.drain(TIMEOUT).await, Drained::AtDeadline);
        let took = started.elapsed();
        assert!(
            took >= TIMEOUT && took < TIMEOUT + DEADLINE_FLUSH,
            "{took:?}"
        );
        for task in tasks {
            assert_eq!(task.await.expect("ended"), "ended at the deadline");
        }
    }

    #[tokio::test]
    async fn a_connection_that_does_not_end_is_left_after_the_flush() {
        let controller = DrainController::new();
        let _polite = connection(controller.watch(), false);
        let _stubborn = connection(controller.watch(), true);
        let started = Instant::now();
        assert_eq!(controller.drain(TIMEOUT).await, Drained::Cut);
        let took = started.elapsed();
        assert!(
            took >= TIMEOUT + DEADLINE_FLUSH && took < TIMEOUT + DEADLINE_FLUSH + SLACK,
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_deadline_looked_at_after_it_passed_resolves_at_once() {
        let controller = DrainController::new();
        let mut deadline = controller.watch().deadline();
        assert_eq!(controller.drain(TIMEOUT).await, Drained::InTime);
        let controller = DrainController::new();
        let drain = controller.watch();
        let mut late = drain.deadline();
        let _stubborn = connection(drain, true);
        assert_eq!(controller.drain(TIMEOUT).await, Drained::Cut);
        tokio::time::timeout(SLACK, late.passed())
            .await
            .expect("resolves once it looks, the controller gone");
        let passed = tokio::time::timeout(TIMEOUT, deadline.passed()).await;
        assert!(passed.is_err(), "that drain ended in time");
    }
}
