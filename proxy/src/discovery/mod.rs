//! Where endpoints come from.
//!
//! A source implements [`Discover`]: given a Service port, it sends
//! [`Update`]s for as long as the receiver lives. Updates are small diffs
//! (reset / add / remove) so that the balancer keeps an unchanged endpoint's
//! connection and statistics; [`Publisher`] turns a source's "here is the
//! whole set now" into those diffs, so every source computes them the same way.

pub mod file;
pub mod kubernetes;

use sidelb_config::ServiceKey;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tokio::sync::{mpsc, watch};

/// One endpoint of a Service port, as discovery knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointMeta {
    pub addr: SocketAddr,
    /// Pod name or other label for humans (`/endpoints`, logs).
    pub name: Option<String>,
    /// Its zone, and the zones and nodes its EndpointSlice hints say it
    /// serves (`hints.forZones`, `hints.forNodes`; empty without hints):
    /// see `balancer::zone`.
    pub zone: Option<String>,
    pub for_zones: Vec<String>,
    pub for_nodes: Vec<String>,
}

impl EndpointMeta {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        EndpointMeta {
            addr,
            name: None,
            zone: None,
            for_zones: Vec::new(),
            for_nodes: Vec::new(),
        }
    }
}

/// A change to a Service port's endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// The whole set: endpoints not in it are removed, the others kept as they are.
    Reset(Vec<EndpointMeta>),
    Add(Vec<EndpointMeta>),
    Remove(Vec<SocketAddr>),
    /// The Service cannot be resolved; the text says why and what to do.
    /// Requests fail with it until a later update.
    NoService(String),
}

pub type UpdateRx = mpsc::UnboundedReceiver<Update>;

/// A source of endpoints.
pub trait Discover: Send + Sync + 'static {
    /// Starts or joins discovery of `service`. The source sends an initial
    /// [`Update::Reset`] or [`Update::NoService`] once it knows, then changes,
    /// until the receiver is dropped.
    fn subscribe(&self, service: &ServiceKey) -> UpdateRx;

    /// What this source is, for messages: `file /etc/endpoints.yaml`.
    fn describe(&self) -> String;

    /// The Services this source names by itself, and later changes to them:
    /// an endpoints file lists its Services, so the proxy keeps a pool for
    /// each (shown in `/endpoints`, connected before the first request).
    /// `None` for a source that only answers what it is asked (Kubernetes
    /// watches just the Services the pod uses).
    fn listed(&self) -> Option<watch::Receiver<Vec<ServiceKey>>> {
        None
    }

    /// Whether the source works, for `/ready`; `Err` says why not yet.
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Sends one subscriber the diffs between successive full sets.
#[derive(Debug)]
pub(crate) struct Publisher {
    tx: mpsc::UnboundedSender<Update>,
    last: Option<BTreeMap<SocketAddr, EndpointMeta>>,
    missing: Option<String>,
}

impl Publisher {
    pub(crate) fn new(tx: mpsc::UnboundedSender<Update>) -> Self {
        Publisher {
            tx,
            last: None,
            missing: None,
        }
    }

    /// Whether the subscriber has gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves once the subscriber has gone (its receiver dropped), so a
    /// source can stop work nobody waits for without polling.
    pub(crate) fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let tx = self.tx.clone();
        async move { tx.closed().await }
    }

    /// Publishes the full current set, as the smallest diff from the last one.
    pub(crate) fn publish(&mut self, endpoints: impl IntoIterator<Item = EndpointMeta>) {
        let next: BTreeMap<_, _> = endpoints.into_iter().map(|e| (e.addr, e)).collect();
        let update = match (&self.last, self.missing.take()) {
            (Some(last), None) => {
                let removed: Vec<_> = last
                    .keys()
                    .filter(|a| !next.contains_key(a))
                    .copied()
                    .collect();
                let added: Vec<_> = next
                    .values()
                    .filter(|e| last.get(&e.addr) != Some(e))
                    .cloned()
                    .collect();
                if !removed.is_empty() {
                    let _ = self.tx.send(Update::Remove(removed));
                }
                (!added.is_empty()).then_some(Update::Add(added))
            }
            _ => Some(Update::Reset(next.values().cloned().collect())),
        };
        if let Some(update) = update {
            let _ = self.tx.send(update);
        }
        self.last = Some(next);
    }

    /// Publishes that the service cannot be resolved (once per reason).
    pub(crate) fn publish_missing(&mut self, why: String) {
        if self.missing.as_deref() != Some(why.as_str()) {
            let _ = self.tx.send(Update::NoService(why.clone()));
            self.missing = Some(why);
            self.last = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16) -> EndpointMeta {
        EndpointMeta::new(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn drain(rx: &mut UpdateRx) -> Vec<Update> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn first_set_is_a_reset_then_diffs() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut p = Publisher::new(tx);
        p.publish([ep(1), ep(2)]);
        assert_eq!(drain(&mut rx), vec![Update::Reset(vec![ep(1), ep(2)])]);
        p.publish([ep(2), ep(3)]);
        assert_eq!(
            drain(&mut rx),
            vec![Update::Remove(vec![ep(1).addr]), Update::Add(vec![ep(3)])]
        );
        p.publish([ep(2), ep(3)]);
        assert!(drain(&mut rx).is_empty());
    }

    #[test]
    fn missing_then_found_is_a_reset() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut p = Publisher::new(tx);
        p.publish_missing("gone".into());
        p.publish_missing("gone".into());
        p.publish([ep(1)]);
        assert_eq!(
            drain(&mut rx),
            vec![Update::NoService("gone".into()), Update::Reset(vec![ep(1)])]
        );
    }
}
