//! Continuous load in the background: the client that "keeps going" while a
//! test changes the world (adds, drains or kills backends, rewrites the
//! endpoints file).
//!
//! Bounded in calls and in time, like every loop of the harness; it stops by
//! itself when either bound is reached, and is aborted when dropped. Counts
//! are read as a running total or per window ([`Load::take_window`]), so a
//! test can wait for a condition on recent calls only, e.g. "the new backend
//! serves calls" or "the drained backend gets no more calls".

use super::client::Echo;
use super::tally::{Tally, unary_call};
use crate::echo::pb::EchoRequest;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Bounds of a [`Load`].
#[derive(Clone, Copy, Debug)]
pub struct LoadLimits {
    /// Calls in flight at once, all on the one connection.
    pub concurrency: usize,
    /// Stop after this many calls in all.
    pub max_calls: u64,
    /// Stop after this long.
    pub max_duration: Duration,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            concurrency: 4,
            max_calls: 100_000,
            max_duration: Duration::from_secs(30),
        }
    }
}

#[derive(Default)]
struct Counts {
    total: Tally,
    window: Tally,
    started: u64,
}

/// Unary calls running in the background.
pub struct Load {
    counts: Arc<Mutex<Counts>>,
    stop: watch::Sender<bool>,
    workers: JoinSet<()>,
    running: Arc<AtomicUsize>,
}

impl Load {
    /// Starts `limits.concurrency` workers sending `request` through `client`.
    /// Must be called within a tokio runtime.
    pub fn start(client: &Echo, request: EchoRequest, limits: LoadLimits) -> Load {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let (stop, stopped) = watch::channel(false);
        let deadline = Instant::now() + limits.max_duration;
        let mut workers = JoinSet::new();
        let concurrency = limits.concurrency.max(1);
        let running = Arc::new(AtomicUsize::new(concurrency));
        for _ in 0..concurrency {
            let (client, request, counts) = (client.clone(), request.clone(), counts.clone());
            let (stopped, running) = (stopped.clone(), running.clone());
            workers.spawn(async move {
                loop {
                    let go_on = !*stopped.borrow() && Instant::now() < deadline;
                    let claimed = go_on
                        && counts.lock().is_ok_and(|mut c| {
                            c.started += 1;
                            c.started <= limits.max_calls
                        });
                    if !claimed {
                        running.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    let mut tally = Tally::default();
                    unary_call(&client, &request, &mut tally).await;
                    if let Ok(mut c) = counts.lock() {
                        c.total.merge(&tally);
                        c.window.merge(&tally);
                    }
                }
            });
        }
        Load {
            counts,
            stop,
            workers,
            running,
        }
    }

    /// Everything counted since the start.
    pub fn total(&self) -> Tally {
        self.counts
            .lock()
            .map(|c| c.total.clone())
            .unwrap_or_default()
    }

    /// What was counted since the previous window, and a new window starts.
    pub fn take_window(&self) -> Tally {
        self.counts
            .lock()
            .map(|mut c| std::mem::take(&mut c.window))
            .unwrap_or_default()
    }

    /// Whether every worker has stopped (a limit was reached).
    pub fn is_finished(&self) -> bool {
        self.running.load(Ordering::Relaxed) == 0
    }

    /// Stops the workers after their current call and returns the total.
    pub async fn stop(mut self) -> Tally {
        let _ = self.stop.send(true);
        while self.workers.join_next().await.is_some() {}
        self.total()
    }
}
