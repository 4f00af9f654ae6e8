//! Counting where calls landed and how they ended.
//!
//! A [`Tally`] attributes every response to a backend by the
//! `x-sidelb-backend` header, which the test backend puts on every response,
//! successful or not. A failed call without that header never got an answer
//! from a backend: its status was made by the proxy (or the client's
//! transport), and it is counted as unattributed. That distinction is what
//! proxy tests assert on ("no request failed at the proxy").
//!
//! The messages of those proxy-made failures are kept too
//! ([`Tally::proxy_failures`]), so a test can say which endpoint a failure was
//! blamed on.
//!
//! [`unary_calls`] and [`unary_calls_concurrently`] run a bounded number of
//! calls, each bounded by [`CALL_TIMEOUT`], and return the tally.

use super::client::Echo;
use crate::echo::BACKEND_HEADER;
use crate::echo::pb::{EchoReply, EchoRequest};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tonic::{Code, Response, Status};

/// Bound on one call made by the harness; a call past it counts as timed out.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where calls landed and how they ended. Serialised as JSON by the
/// client app `sidelb-test-client`, which runs inside pods.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    by_backend: BTreeMap<String, u64>,
    by_code: BTreeMap<i32, u64>,
    unattributed: u64,
    /// `CODE: message` of each unattributed failure, counted.
    proxy_failures: BTreeMap<String, u64>,
    timed_out: u64,
}

impl Tally {
    /// Counts the outcome of one unary call.
    pub fn record(&mut self, outcome: &Result<Response<EchoReply>, Status>) {
        match outcome {
            Ok(response) => self.record_reply(response.get_ref()),
            Err(status) => self.record_status(status),
        }
    }

    /// Counts a successful call answered by `reply`.
    pub fn record_reply(&mut self, reply: &EchoReply) {
        *self.by_backend.entry(reply.backend.clone()).or_default() += 1;
        *self.by_code.entry(Code::Ok as i32).or_default() += 1;
    }

    /// Counts a failed call.
    pub fn record_status(&mut self, status: &Status) {
        *self.by_code.entry(status.code() as i32).or_default() += 1;
        match backend_of(status) {
            Some(backend) => *self.by_backend.entry(backend).or_default() += 1,
            None => {
                self.unattributed += 1;
                let key = format!("{:?}: {}", status.code(), status.message());
                *self.proxy_failures.entry(key).or_default() += 1;
            }
        }
    }

    /// Counts a call the harness gave up on after [`CALL_TIMEOUT`].
    pub fn record_timeout(&mut self) {
        self.timed_out += 1;
    }

    /// Adds `other`'s counts to this one.
    pub fn merge(&mut self, other: &Tally) {
        for (backend, n) in &other.by_backend {
            *self.by_backend.entry(backend.clone()).or_default() += n;
        }
        for (code, n) in &other.by_code {
            *self.by_code.entry(*code).or_default() += n;
        }
        self.unattributed += other.unattributed;
        for (failure, n) in &other.proxy_failures {
            *self.proxy_failures.entry(failure.clone()).or_default() += n;
        }
        self.timed_out += other.timed_out;
    }

    /// Calls counted, whatever their outcome.
    pub fn total(&self) -> u64 {
        self.by_code.values().sum::<u64>() + self.timed_out
    }

    /// Calls answered by backend `name` (successfully or not).
    pub fn served_by(&self, name: &str) -> u64 {
        self.by_backend.get(name).copied().unwrap_or(0)
    }

    /// Calls answered per backend.
    pub fn backends(&self) -> &BTreeMap<String, u64> {
        &self.by_backend
    }

    /// Calls that ended with `code`.
    pub fn count(&self, code: Code) -> u64 {
        self.by_code.get(&(code as i32)).copied().unwrap_or(0)
    }

    pub fn ok(&self) -> u64 {
        self.count(Code::Ok)
    }

    /// Failed calls that no backend answered (the proxy's own errors).
    pub fn unattributed(&self) -> u64 {
        self.unattributed
    }

    /// The unattributed failures as `CODE: message`, with their counts.
    pub fn proxy_failures(&self) -> &BTreeMap<String, u64> {
        &self.proxy_failures
    }

    pub fn timed_out(&self) -> u64 {
        self.timed_out
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} calls;", self.total())?;
        for (backend, n) in &self.by_backend {
            write!(f, " {backend}={n}")?;
        }
        write!(f, ";")?;
        for (code, n) in &self.by_code {
            write!(f, " {:?}={n}", Code::from_i32(*code))?;
        }
        if self.unattributed > 0 {
            write!(f, "; {} not from a backend:", self.unattributed)?;
            for (failure, n) in &self.proxy_failures {
                write!(f, " [{n}× {failure}]")?;
            }
        }
        if self.timed_out > 0 {
            write!(f, "; {} timed out", self.timed_out)?;
        }
        Ok(())
    }
}

/// The backend named in a failed call's metadata, if a backend answered.
pub fn backend_of(status: &Status) -> Option<String> {
    let value = status.metadata().get(BACKEND_HEADER)?;
    value.to_str().ok().map(str::to_string)
}

/// One unary call, bounded by [`CALL_TIMEOUT`], counted into `tally`.
pub async fn unary_call(client: &Echo, request: &EchoRequest, tally: &mut Tally) {
    let mut client = client.clone();
    match tokio::time::timeout(CALL_TIMEOUT, client.unary(request.clone())).await {
        Ok(outcome) => tally.record(&outcome),
        Err(_) => tally.record_timeout(),
    }
}

/// `calls` unary calls of `request`, one after the other.
pub async fn unary_calls(client: &Echo, calls: u64, request: &EchoRequest) -> Tally {
    let mut tally = Tally::default();
    for _ in 0..calls {
        unary_call(client, request, &mut tally).await;
    }
    tally
}

/// `calls` unary calls of `request`, `concurrency` at a time, all on the
/// client's one connection.
pub async fn unary_calls_concurrently(
    client: &Echo,
    calls: u64,
    concurrency: usize,
    request: &EchoRequest,
) -> Tally {
    let started = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, request, started) = (client.clone(), request.clone(), started.clone());
        workers.spawn(async move {
            let mut tally = Tally::default();
            while started.fetch_add(1, Ordering::Relaxed) < calls {
                unary_call(&client, &request, &mut tally).await;
            }
            tally
        });
    }
    let mut tally = Tally::default();
    while let Some(worker) = workers.join_next().await {
        if let Ok(part) = worker {
            tally.merge(&part);
        }
    }
    tally
}
