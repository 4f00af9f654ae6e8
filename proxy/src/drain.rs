//! Graceful shutdown: tell every connection to stop taking new requests,
//! then wait (bounded) until the last one has finished.
//!
//! Each connection task holds a [`Drain`]; when they are all dropped, the
//! proxy is drained.

use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Held by every connection task.
#[derive(Clone)]
pub(crate) struct Drain {
    signal: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

impl Drain {
    /// Resolves once draining has begun.
    pub(crate) async fn signaled(&mut self) {
        let _ = self.signal.wait_for(|draining| *draining).await;
    }

    pub(crate) fn is_draining(&self) -> bool {
        *self.signal.borrow()
    }
}

pub(crate) struct DrainController {
    signal: watch::Sender<bool>,
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
        let (signal, _) = watch::channel(false);
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

    /// Signals every holder and waits up to `timeout` for them to finish.
    /// Returns whether everything finished in time.
    pub(crate) async fn drain(self, timeout: Duration) -> bool {
        let DrainController {
            signal,
            alive_tx,
            mut alive_rx,
        } = self;
        let _ = signal.send(true);
        drop(alive_tx);
        tokio::time::timeout(timeout, alive_rx.recv()).await.is_ok()
    }
}
