//! A backend that dies (SIGKILL) is skipped at once and reconnected with
//! growing waits, never in a loop.
//!
//! The proxy's reconnect backoff (DESIGN: exponential with jitter) waits 50 ms
//! doubling up to 5 s, of which half is fixed and half random ("equal
//! jitter"). So however fast the machine, the n-th failed attempt cannot come
//! before the sum of the fixed halves of the n-1 waits before it: from the
//! time actually elapsed the test knows how many attempts are possible at
//! most, and checks the proxy's own count (`sidelb_connect_failures_total`)
//! against it. A retry loop without backoff would make hundreds; a fixed
//! pace of a few per second would exceed the bound too. That the waits are
//! jittered is checked on the backoff function itself (its unit test), since
//! jitter cannot be told from counts.

use super::support::*;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use std::time::Duration;
use tokio::time::Instant;

/// Fixed part of the wait after the k-th failed attempt in a row: half of
/// 50 ms × 2^k, capped at half of 5 s.
fn fixed_wait(k: u32) -> Duration {
    (Duration::from_millis(50) * 2u32.pow(k.min(16))).min(Duration::from_secs(5)) / 2
}

/// The most attempts the backoff allows within `elapsed` of the first one.
fn most_attempts(elapsed: Duration) -> u32 {
    let mut attempts = 1;
    let mut at = Duration::ZERO;
    loop {
        at += fixed_wait(attempts);
        if at > elapsed {
            return attempts;
        }
        attempts += 1;
    }
}

#[test]
fn the_bound_follows_the_backoff() {
    assert_eq!(most_attempts(Duration::ZERO), 1);
    assert_eq!(most_attempts(Duration::from_millis(50)), 2);
    assert_eq!(most_attempts(Duration::from_millis(749)), 4);
    assert_eq!(most_attempts(Duration::from_secs(4)), 7);
    // A fixed 50 ms pace would make 80 attempts in 4 s.
}

#[tokio::test]
async fn a_dead_backend_is_skipped_and_reconnected_with_growing_waits() {
    let mut setup = EchoSetup::start(&["a", "b"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let client = setup.client().await.expect("one connection");
    let b = setup.backends.pop().expect("b");
    let b_addr = b.addr();
    b.kill().expect("SIGKILL");
    let killed = Instant::now();

    // Skipped at once: from the moment the proxy sees the connection gone,
    // every call goes to a and succeeds.
    wait_until("the proxy to see b down", WAIT, || async {
        let view = endpoint_view(&setup.proxy, b_addr).await?;
        (view["connection"] != "ready").then_some(())
    })
    .await
    .expect("b seen down");
    let tally = unary_calls(&client, 50, &EchoRequest::default()).await;
    assert_eq!(tally.served_by("a"), 50, "{tally}");

    // It keeps trying...
    wait_until("three failed reconnects to b", WAIT, || async {
        let failures = endpoint_metric(&setup.proxy, "sidelb_connect_failures_total", b_addr).await;
        (failures >= 3.0).then_some(())
    })
    .await
    .expect("reconnects");
    // ...but over a few seconds no more often than the backoff allows,
    // while calls go on succeeding on a.
    let window = Duration::from_secs(4);
    let mut served = Tally::default();
    while killed.elapsed() < window {
        served.merge(&unary_calls(&client, 10, &EchoRequest::default()).await);
    }
    let failures = endpoint_metric(&setup.proxy, "sidelb_connect_failures_total", b_addr).await;
    let elapsed = killed.elapsed();
    let most = most_attempts(elapsed);
    assert!(
        failures as u32 <= most,
        "{failures} connection attempts to the dead b in {elapsed:?}; its backoff allows at most {most}"
    );
    assert_eq!(served.served_by("a"), served.total(), "{served}");
}
