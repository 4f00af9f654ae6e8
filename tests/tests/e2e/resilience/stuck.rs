//! A stuck backend — its process stopped (SIGSTOP), so its connection stays
//! open and its kernel still takes bytes, but nothing ever answers — must
//! not attract calls.
//!
//! Its latency estimate never gets an answer to learn from, so only the time
//! it has had calls pending without answering any can tell it apart. Backends
//! a and b serve; k is stopped once connected. 400 calls are made, 8 at a
//! time, each given up by the client after 1 s (as an app's deadline
//! would). The calls that went to k are exactly those that fail; they must
//! be few (a tenth at most; a balancer fooled by k's silence sends it most
//! of them, as each of its calls ties up a caller for the whole second).

use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

const CALLS: usize = 400;
const CONCURRENCY: usize = 8;
const GIVE_UP: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_stuck_backend_gets_few_calls() {
    let mut setup = EchoSetup::start(&["a", "b", "k"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let client = setup.client().await.expect("client");
    // Warm: every endpoint has answered a few calls.
    let warm = unary_calls(&client, 30, &EchoRequest::default()).await;
    assert_eq!(warm.ok(), 30, "{warm}");
    let k = setup.backends.last_mut().expect("k");
    k.process().signal(libc::SIGSTOP).expect("SIGSTOP");

    let started = Instant::now();
    let mut calls = JoinSet::new();
    let (mut ok, mut given_up) = (0u64, 0u64);
    let mut count = |outcome: Result<Option<String>, _>| match outcome {
        Ok(Some(_)) => ok += 1,
        _ => given_up += 1,
    };
    for _ in 0..CALLS {
        if calls.len() >= CONCURRENCY
            && let Some(done) = calls.join_next().await
        {
            count(done.expect("joined"));
        }
        let mut client = client.clone();
        calls.spawn(async move {
            let call = client.unary(EchoRequest::default());
            match tokio::time::timeout(GIVE_UP, call).await {
                Ok(Ok(reply)) => Ok(Some(reply.into_inner().backend)),
                Ok(Err(status)) => Err(status.to_string()),
                Err(_) => Err("given up".to_owned()),
            }
        });
    }
    while let Some(done) = calls.join_next().await {
        count(done.expect("joined"));
    }
    let elapsed = started.elapsed();
    let k = setup.backends.last_mut().expect("k");
    let _ = k.process().signal(libc::SIGCONT);

    assert_eq!(ok + given_up, CALLS as u64);
    assert!(
        given_up <= CALLS as u64 / 10,
        "{given_up} of {CALLS} calls went to the stuck backend in {elapsed:?}"
    );
}
