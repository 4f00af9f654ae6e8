//! A bounded soak: memory stops growing under rounds of hard traffic.
//!
//! Service echo has a fast backend, a slow one (every call waits 40 ms) and
//! a stuck one (SIGSTOP: its connection stays open, it reads nothing, its
//! calls never end). At most 48 requests may be in flight for the service
//! (`SIDELB_MAX_IN_FLIGHT`). Each round sends 400 calls of 8 KiB, 96 at a
//! time, each with a 300 ms `grpc-timeout`, and every fifth one is cancelled
//! by the client after 20 ms. So every round has calls that succeed, calls
//! refused for overload, calls that hit their deadline at the proxy (on the
//! stuck backend) and calls cancelled midway.
//!
//! The rounds are counted, not timed. After each one the proxy must have
//! nothing in flight, and its resident memory (`VmRSS` from /proc) after the
//! last round may exceed that after the warm-up rounds only by a generous
//! margin: a proxy that kept anything per call (a body, a stream, a timer)
//! would grow by megabytes per round.

use super::support::*;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::raw_grpc::RAW_CALL_TIMEOUT;
use sidelb_tests::harness::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tonic::Code;

const ROUNDS: usize = 8;
const WARM_UP: usize = 2;
const CALLS: usize = 400;
const CONCURRENCY: usize = 96;
const PAYLOAD: usize = 8 * 1024;
const MIB: u64 = 1024 * 1024;
/// Growth allowed between the end of the warm-up and the end of the soak.
const GROWTH: u64 = 4 * MIB;

/// How the calls of one round ended.
#[derive(Debug, Default)]
struct Round {
    ok: u64,
    deadline: u64,
    unavailable: u64,
    /// Given up by the client.
    cancelled: u64,
    other: u64,
}

/// One round on `raw` (whose `grpc-timeout` headers reach the proxy as
/// sent: a tonic client would give up at the deadline itself, before the
/// proxy answers it).
async fn round(raw: &Arc<RawGrpc>) -> Round {
    let mut calls = JoinSet::new();
    let mut outcome = Round::default();
    let request = EchoRequest {
        payload: vec![7; PAYLOAD].into(),
        ..EchoRequest::default()
    };
    for i in 0..CALLS {
        if calls.len() >= CONCURRENCY
            && let Some(Ok(code)) = calls.join_next().await
        {
            outcome.count(code);
        }
        let (raw, request) = (raw.clone(), request.clone());
        calls.spawn(async move {
            let messages = [request];
            let call = raw.call("Unary", &[("grpc-timeout", "300m")], &messages);
            let bound = if i % 5 == 0 {
                Duration::from_millis(20)
            } else {
                RAW_CALL_TIMEOUT
            };
            match tokio::time::timeout(bound, call).await {
                Ok(Ok(response)) => response.grpc_status().map(Code::from_i32),
                Ok(Err(_)) => Some(Code::Unknown),
                Err(_) => Some(Code::Cancelled),
            }
        });
    }
    while let Some(done) = calls.join_next().await {
        if let Ok(code) = done {
            outcome.count(code);
        }
    }
    outcome
}

impl Round {
    fn count(&mut self, code: Option<Code>) {
        match code {
            Some(Code::Ok) => self.ok += 1,
            Some(Code::DeadlineExceeded) => self.deadline += 1,
            Some(Code::Unavailable) => self.unavailable += 1,
            Some(Code::Cancelled) => self.cancelled += 1,
            _ => self.other += 1,
        }
    }
}

#[tokio::test]
async fn memory_stops_growing_under_slow_stuck_cancelled_and_refused_calls() {
    let fast = Backend::spawn("fast", BackendOptions::default())
        .await
        .expect("fast");
    let slow = Backend::spawn(
        "slow",
        BackendOptions {
            delay: Duration::from_millis(40),
            ..BackendOptions::default()
        },
    )
    .await
    .expect("slow");
    let mut stuck = Backend::spawn("stuck", BackendOptions::default())
        .await
        .expect("stuck");
    let setup = EchoSetup::with_backends(
        vec![fast, slow],
        &[
            ("SIDELB_MAX_IN_FLIGHT", "48"),
            ("SIDELB_EJECTION_FAILURES", "0"),
        ],
    )
    .await
    .expect("setup");
    // The stuck backend joins once connected, then stops.
    let mut all = setup.addrs();
    all.push(stuck.addr());
    setup
        .file
        .write(&[ServiceEndpoints::new("echo", "default", 50051, &all)])
        .expect("stuck added");
    setup
        .proxy
        .wait_ready(ECHO, &all)
        .await
        .expect("all connected");
    stuck.process().signal(libc::SIGSTOP).expect("SIGSTOP");
    let raw = Arc::new(
        RawGrpc::connect(setup.proxy.upstream_addr(ECHO).expect("listener"), ECHO)
            .await
            .expect("connects"),
    );

    let mut rss = Vec::new();
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        rounds.push(round(&raw).await);
        wait_until("nothing in flight after the round", WAIT, || async {
            let view = setup.proxy.service_view(ECHO).await.ok()??;
            (view["in_flight"] == 0).then_some(())
        })
        .await
        .expect("the round is over for the proxy too");
        rss.push(setup.proxy.rss_bytes().expect("VmRSS"));
    }
    let _ = stuck.process().signal(libc::SIGCONT);

    let report = format!("RSS after each round: {rss:?}; rounds: {rounds:?}");
    let warm = rss[WARM_UP - 1];
    let last = rss[ROUNDS - 1];
    assert!(
        last <= warm + GROWTH,
        "memory grew by {} KiB after the warm-up; {report}",
        last.saturating_sub(warm) / 1024
    );
    // Every kind of trouble happened, and the fast path kept working.
    let sum = |f: fn(&Round) -> u64| rounds.iter().map(f).sum::<u64>();
    assert!(sum(|r| r.ok) > 0, "{report}");
    assert!(sum(|r| r.deadline) > 0, "{report}");
    assert!(sum(|r| r.unavailable) > 0, "{report}");
    assert!(sum(|r| r.cancelled) > 0, "{report}");
    assert!(
        metric(
            &setup.proxy,
            "sidelb_overloaded_total",
            &[("service", ECHO)]
        )
        .await
            > 0.0,
        "{report}"
    );
}
