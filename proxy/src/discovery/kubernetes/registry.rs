//! Which Services are watched, so that each is watched once.
//!
//! Subscribing to a Service port hands the subscriber to the Service's watch
//! task, starting the task if there is none. A task whose last subscriber
//! has gone retires here, under the same lock subscribers are handed over
//! with, so a subscriber arriving at that moment is either taken by the
//! retiring task or given a new one — never lost to a task that is ending.
//!
//! The registry only hands subscribers over; what one is (a port and where
//! its updates go) is the watch task's business, so it is generic over it.

use super::ServiceRef;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::sync::mpsc;

pub(crate) struct Registry<Subscriber> {
    watches: Mutex<HashMap<ServiceRef, Watch<Subscriber>>>,
    /// Tells a retiring task's entry from a newer one for the same Service.
    next_generation: AtomicU64,
}

struct Watch<Subscriber> {
    generation: u64,
    joining: mpsc::UnboundedSender<Subscriber>,
}

impl<Subscriber> Default for Registry<Subscriber> {
    fn default() -> Self {
        Registry {
            watches: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(0),
        }
    }
}

impl<Subscriber> Registry<Subscriber> {
    /// Hands `subscriber` to the task watching `service`, or calls `start`
    /// with the receiving end for a new task (and its generation).
    pub(crate) fn join(
        &self,
        service: &ServiceRef,
        subscriber: Subscriber,
        start: impl FnOnce(mpsc::UnboundedReceiver<Subscriber>, u64),
    ) {
        let mut watches = lock(&self.watches);
        let subscriber = match watches.get(service) {
            Some(watch) => match watch.joining.send(subscriber) {
                Ok(()) => return,
                // The task is gone (it can only have panicked): replace it.
                Err(mpsc::error::SendError(subscriber)) => subscriber,
            },
            None => subscriber,
        };
        let generation = self.next_generation.fetch_add(1, Relaxed);
        let (joining, receiver) = mpsc::unbounded_channel();
        // Cannot fail: the receiver is right here.
        let _ = joining.send(subscriber);
        watches.insert(
            service.clone(),
            Watch {
                generation,
                joining,
            },
        );
        start(receiver, generation);
    }

    /// Called by a task with no subscribers left: returns a subscriber that
    /// joined meanwhile (the task carries on), or removes the task's entry
    /// (the task ends).
    pub(crate) fn retire(
        &self,
        service: &ServiceRef,
        generation: u64,
        joining: &mut mpsc::UnboundedReceiver<Subscriber>,
    ) -> Option<Subscriber> {
        let mut watches = lock(&self.watches);
        if let Ok(subscriber) = joining.try_recv() {
            return Some(subscriber);
        }
        if watches
            .get(service)
            .is_some_and(|w| w.generation == generation)
        {
            watches.remove(service);
        }
        None
    }

    /// The Services watched now.
    pub(crate) fn watched(&self) -> Vec<ServiceRef> {
        let mut services: Vec<_> = lock(&self.watches).keys().cloned().collect();
        services.sort();
        services
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
