//! Active gRPC health checking (`SIDELB_HEALTH_CHECK=grpc`): a backend whose
//! `grpc.health.v1.Health` turns NOT_SERVING gets no new calls, within a
//! bound, until it says SERVING again, and `/endpoints` and `/metrics` say
//! so; with every backend NOT_SERVING calls fail with UNAVAILABLE naming the
//! setting. With checks off (the default) the same flip changes nothing. A
//! backend without `Watch` is polled with `Check`; one without the Health
//! service is used unchecked, as gRPC clients do.

use sidelb_config::settings;
use sidelb_tests::echo::health::HealthMode;
use sidelb_tests::echo::health_pb::health_check_response::ServingStatus;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::Code;

/// Bound on a Watch stream carrying a change to the proxy.
const WATCHED: Duration = Duration::from_secs(10);
/// Bound on a change seen by polling (`Check` every 5 s).
const POLLED: Duration = Duration::from_secs(20);
const CALLS: u64 = 90;
const CONCURRENCY: usize = 3;
const GRPC: [(&str, &str); 1] = [(settings::HEALTH_CHECK, "grpc")];

/// Backends `names`, each with its own health file (SERVING at first) and
/// `mode`, behind a proxy with `env`.
async fn start(
    dir: &ScratchDir,
    backends: &[(&str, HealthMode)],
    env: &[(&str, &str)],
) -> EchoSetup {
    start_with(dir, backends, BackendOptions::default(), env).await
}

async fn start_with(
    dir: &ScratchDir,
    backends: &[(&str, HealthMode)],
    options: BackendOptions,
    env: &[(&str, &str)],
) -> EchoSetup {
    let mut started = Vec::new();
    for (name, mode) in backends {
        let file = health_file(dir, name);
        write_health(&file, "SERVING").expect("health file");
        let options = BackendOptions {
            health: *mode,
            health_file: Some(file),
            ..options.clone()
        };
        started.push(Backend::spawn(name, options).await.expect("backend starts"));
    }
    EchoSetup::with_backends(started, env).await.expect("setup")
}

fn health_file(dir: &ScratchDir, name: &str) -> PathBuf {
    dir.path().join(format!("{name}.health"))
}

/// `name`'s entry in `/endpoints`.
async fn endpoint(setup: &EchoSetup, name: &str) -> serde_json::Value {
    setup
        .proxy
        .endpoint_view(ECHO, setup.backend(name).addr())
        .await
        .expect("/endpoints")
        .unwrap_or_else(|| panic!("{name} is not listed"))
}

/// Waits until `/endpoints` shows `name` with `health`; how long it took.
async fn wait_health(setup: &EchoSetup, name: &str, health: &str, within: Duration) -> Duration {
    let started = Instant::now();
    wait_until(&format!("{name} shown {health}"), within, || async {
        (endpoint(setup, name).await["health"] == health).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    started.elapsed()
}

async fn calls(setup: &EchoSetup) -> Tally {
    let client = setup.client().await.expect("one connection");
    unary_calls_concurrently(&client, CALLS, CONCURRENCY, &EchoRequest::default()).await
}

#[tokio::test]
async fn a_not_serving_backend_gets_no_new_calls_until_it_serves_again() {
    let dir = ScratchDir::new("health-check").expect("scratch dir");
    let watched = [
        ("a", HealthMode::Watch),
        ("b", HealthMode::Watch),
        ("c", HealthMode::Watch),
    ];
    let setup = start(&dir, &watched, &GRPC).await;
    for name in ["a", "b", "c"] {
        wait_health(&setup, name, "serving", WATCHED).await;
        assert_eq!(endpoint(&setup, name).await["health_via"], "watch");
    }
    let view = setup.proxy.service_view(ECHO).await.unwrap().unwrap();
    assert_eq!(view["health_check"], "grpc", "{view}");
    let before = calls(&setup).await;
    assert_eq!(before.ok(), CALLS, "{before}");
    assert!(before.served_by("c") > 0, "{before}");

    // Calls in flight on c when it turns NOT_SERVING go on.
    let client = setup.client().await.unwrap();
    let held = EchoRequest {
        delay_ms: 3000,
        ..EchoRequest::default()
    };
    let held = tokio::spawn(async move { unary_calls_concurrently(&client, 30, 30, &held).await });
    wait_until("held calls on c", WATCHED, || async {
        let stats = setup.backend("c").stats().await.ok()?;
        (stats.in_flight > 0).then_some(())
    })
    .await
    .unwrap();

    write_health(&health_file(&dir, "c"), "NOT_SERVING").unwrap();
    let took = wait_health(&setup, "c", "not-serving", WATCHED).await;
    eprintln!("NOT_SERVING reached /endpoints in {took:?}");
    assert_eq!(endpoint(&setup, "c").await["state"], "not-serving");
    let during = calls(&setup).await;
    assert_eq!(during.ok(), CALLS, "a and b take every call: {during}");
    assert_eq!(during.served_by("c"), 0, "{during}");
    let held = held.await.expect("held calls");
    assert_eq!(held.ok(), 30, "{held}");
    assert!(held.served_by("c") > 0, "{held}");

    let c = setup.backend("c").addr().to_string();
    let samples = metrics::parse(&setup.proxy.metrics().await.expect("/metrics"));
    let gauge = metrics::sum(
        &samples,
        "sidelb_endpoints",
        &[("service", ECHO), ("state", "not-serving")],
    );
    assert_eq!(gauge, Some(1.0), "one endpoint not serving");
    let turned = metrics::sum(
        &samples,
        "sidelb_health_transitions_total",
        &[("service", ECHO), ("health", "not-serving")],
    );
    assert_eq!(turned, Some(1.0), "c turned not-serving once ({c})");

    write_health(&health_file(&dir, "c"), "SERVING").unwrap();
    wait_health(&setup, "c", "serving", WATCHED).await;
    wait_until("c to get calls again", WATCHED, || async {
        (calls(&setup).await.served_by("c") > 0).then_some(())
    })
    .await
    .unwrap();

    for name in ["a", "b", "c"] {
        write_health(&health_file(&dir, name), "NOT_SERVING").unwrap();
    }
    for name in ["a", "b", "c"] {
        wait_health(&setup, name, "not-serving", WATCHED).await;
    }
    let client = setup.client().await.unwrap();
    let refused = client
        .clone()
        .unary(EchoRequest::default())
        .await
        .expect_err("no backend serves");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("3 of its 3 endpoints answer NOT_SERVING")
            && refused.message().contains("SIDELB_HEALTH_CHECK=grpc"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn with_health_checks_off_a_not_serving_backend_keeps_its_calls() {
    let dir = ScratchDir::new("health-check-off").expect("scratch dir");
    let watched = [
        ("a", HealthMode::Watch),
        ("b", HealthMode::Watch),
        ("c", HealthMode::Watch),
    ];
    let setup = start(&dir, &watched, &[]).await;
    write_health(&health_file(&dir, "c"), "NOT_SERVING").unwrap();
    wait_until("c to say NOT_SERVING", WATCHED, || async {
        matches!(
            setup.backend("c").health().await,
            Ok(ServingStatus::NotServing)
        )
        .then_some(())
    })
    .await
    .unwrap();
    let tally = calls(&setup).await;
    assert_eq!(tally.ok(), CALLS, "{tally}");
    assert!(tally.served_by("c") > 0, "unchecked, c is used: {tally}");
    let view = setup.proxy.service_view(ECHO).await.unwrap().unwrap();
    assert_eq!(view["health_check"], "off", "{view}");
    let c = endpoint(&setup, "c").await;
    assert!(c.get("health").is_none(), "{c}");
    assert_eq!(c["state"], "ready", "{c}");
}

#[tokio::test]
async fn a_backend_without_watch_is_polled_and_one_without_health_is_used_unchecked() {
    let dir = ScratchDir::new("health-check-modes").expect("scratch dir");
    let backends = [
        ("watched", HealthMode::Watch),
        ("polled", HealthMode::CheckOnly),
        ("unchecked", HealthMode::None),
    ];
    let setup = start(&dir, &backends, &GRPC).await;
    wait_health(&setup, "watched", "serving", WATCHED).await;
    wait_health(&setup, "polled", "serving", POLLED).await;
    wait_health(&setup, "unchecked", "unimplemented", POLLED).await;
    assert_eq!(endpoint(&setup, "polled").await["health_via"], "polling");
    let unchecked = endpoint(&setup, "unchecked").await;
    assert!(unchecked.get("health_via").is_none(), "{unchecked}");
    let tally = calls(&setup).await;
    assert_eq!(tally.ok(), CALLS, "{tally}");
    for name in ["watched", "polled", "unchecked"] {
        assert!(tally.served_by(name) > 0, "{name}: {tally}");
    }

    write_health(&health_file(&dir, "polled"), "NOT_SERVING").unwrap();
    let took = wait_health(&setup, "polled", "not-serving", POLLED).await;
    eprintln!("NOT_SERVING seen by polling in {took:?}");
    let tally = calls(&setup).await;
    assert_eq!(tally.ok(), CALLS, "{tally}");
    assert_eq!(tally.served_by("polled"), 0, "{tally}");
    assert!(tally.served_by("unchecked") > 0, "{tally}");
}

#[tokio::test]
async fn the_watch_stream_counts_against_the_backends_stream_limit() {
    // One stream at a time: the Watch holds it, so calls go on an extra
    // connection rather than queue behind a stream that never ends.
    let dir = ScratchDir::new("health-check-limit").expect("scratch dir");
    let one_stream = BackendOptions {
        max_concurrent_streams: Some(1),
        ..BackendOptions::default()
    };
    let setup = start_with(&dir, &[("a", HealthMode::Watch)], one_stream, &GRPC).await;
    wait_health(&setup, "a", "serving", WATCHED).await;
    let client = setup.client().await.expect("one connection");
    let tally = unary_calls(&client, 20, &EchoRequest::default()).await;
    assert_eq!(tally.served_by("a"), 20, "{tally}");
    let a = endpoint(&setup, "a").await;
    assert!(a["connections"].as_u64().is_some_and(|n| n >= 2), "{a}");
}
