//! Shutting down inside the pod's grace period, and what a call still open
//! at the drain deadline sees.
//!
//! - A classic sidecar, run with the shutdown grace and drain timeout the
//!   real injector gives it in a pod with the default 30 s
//!   `terminationGracePeriodSeconds`, exits by itself before those 30 s
//!   after SIGTERM with a call held open through it all: the kubelet never
//!   has to kill it;
//! - a call still open at the drain deadline ends with gRPC status 14
//!   (UNAVAILABLE) and a message naming the deadline and
//!   `SIDELB_DRAIN_TIMEOUT`, whether its response had begun (trailers after
//!   the replies) or not (a trailers-only answer): the app's client gets a
//!   status, not a broken connection. The proxy then exits 0;
//! - an HTTP/1.1 request still waiting for its response at the deadline is
//!   answered 503 with the reason, and its connection is closed.

use serde_json::json;
use sidelb_config::settings::{DRAIN_TIMEOUT, SHUTDOWN_GRACE};
use sidelb_fake_apiserver::tls::TestCa;
use sidelb_tests::echo::pb::{EchoReply, EchoRequest};
use sidelb_tests::harness::client::request_channel;
use sidelb_tests::harness::*;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Sender;
use tonic::{Code, Status, Streaming};

/// Kubernetes' default `terminationGracePeriodSeconds`.
const POD_GRACE_PERIOD: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(10);
/// What the proxy logs when every connection open at the drain deadline
/// sent its answers and ended before the exit.
const ANSWERED: &str = "answered them UNAVAILABLE";

/// A bidi call with one reply received: its response has begun.
async fn hold(client: &Echo) -> (Sender<EchoRequest>, Streaming<EchoReply>) {
    let (send, requests) = request_channel(1);
    let mut replies = client
        .clone()
        .bidi(requests)
        .await
        .expect("bidi starts")
        .into_inner();
    send.send(EchoRequest::default()).await.expect("sent");
    replies.message().await.expect("reply").expect("some");
    (send, replies)
}

/// The status a call ended with at the deadline, checked to be the reason.
fn assert_drain_deadline(end: Result<Option<EchoReply>, Status>, what: &str) {
    let status = match end {
        Err(status) => status,
        Ok(reply) => panic!("{what}: a reply instead of the drain's status: {reply:?}"),
    };
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    for part in ["drain deadline", "SIDELB_DRAIN_TIMEOUT"] {
        assert!(status.message().contains(part), "{what}: {status:?}");
    }
}

/// The shutdown settings the real injector gives a classic sidecar of a pod
/// that does not set its grace period.
async fn classic_sidecar_env() -> Vec<(String, String)> {
    let ca = TestCa::new("sidelb e2e CA").expect("a CA");
    let mut injector = Injector::spawn_with_ca(&ca, [("SIDELB_PROXY_IMAGE", "sidelb/proxy:test")])
        .await
        .expect("sidelb-injector starts");
    let pod = json!({
        "metadata": {"annotations": {"sidelb.io/native-sidecar": "false"}},
        "spec": {"containers": [{"name": "app", "image": "app"}]},
    });
    let (env, warnings) = injector.sidecar_env(&pod).await.expect("admitted");
    assert!(warnings.is_empty(), "{warnings:?}");
    injector.stop().await.expect("stops");
    let shutdown: Vec<_> = env
        .into_iter()
        .filter(|(name, _)| [SHUTDOWN_GRACE, DRAIN_TIMEOUT].contains(&name.as_str()))
        .collect();
    assert_eq!(shutdown.len(), 2, "a grace and a drain: {shutdown:?}");
    shutdown
}

#[tokio::test]
async fn a_classic_sidecar_with_the_injectors_settings_exits_within_the_pods_grace() {
    let env = classic_sidecar_env().await;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut setup = EchoSetup::start(&["a"], BackendOptions::default(), &env)
        .await
        .expect("setup");
    let client = setup.client().await.expect("connects");
    let (send, mut replies) = hold(&client).await;

    let sigterm = Instant::now();
    setup.proxy.terminate().expect("SIGTERM");
    send.send(EchoRequest::default()).await.expect("sent");
    let reply = replies
        .message()
        .await
        .expect("the call goes on")
        .expect("a reply");
    assert_eq!(reply.received, 2);

    let end = tokio::time::timeout(POD_GRACE_PERIOD, replies.message())
        .await
        .expect("the call ends before the pod's grace period is over");
    assert_drain_deadline(end, "the held call");
    let left = POD_GRACE_PERIOD.saturating_sub(sigterm.elapsed());
    let status = setup
        .proxy
        .process()
        .wait(left)
        .await
        .expect("the proxy exits by itself before the kubelet would kill it");
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        sigterm.elapsed() < POD_GRACE_PERIOD,
        "{:?}",
        sigterm.elapsed()
    );
    let logs = setup.proxy.logs();
    assert!(
        logs.contains("SIDELB_SHUTDOWN_GRACE"),
        "it had a grace: {logs}"
    );
    assert!(logs.contains(ANSWERED), "{logs}");
}

#[tokio::test]
async fn calls_open_at_the_drain_deadline_end_with_unavailable_and_the_reason() {
    let mut setup = EchoSetup::start(
        &["a"],
        BackendOptions::default(),
        &[("SIDELB_DRAIN_TIMEOUT", "1s")],
    )
    .await
    .expect("setup");
    let client = setup.client().await.expect("connects");
    let (_send, mut begun) = hold(&client).await;
    let unanswered = {
        let client = client.clone();
        let request = EchoRequest {
            delay_ms: 60_000,
            ..EchoRequest::default()
        };
        tokio::spawn(async move { client.clone().unary(request).await })
    };
    wait_until("the unary call to reach the backend", WAIT, || async {
        let stats = setup.backends[0].stats().await.ok()?;
        (stats.in_flight == 2).then_some(())
    })
    .await
    .expect("two calls in flight");

    setup.proxy.terminate().expect("SIGTERM");
    let end = tokio::time::timeout(WAIT, begun.message())
        .await
        .expect("the call ends with the drain");
    assert_drain_deadline(end, "a call whose response had begun");
    let unary = tokio::time::timeout(WAIT, unanswered)
        .await
        .expect("the unary call ends with the drain")
        .expect("no panic");
    assert_drain_deadline(
        unary.map(|r| Some(r.into_inner())),
        "a call not yet answered",
    );
    let status = setup.proxy.wait_exit().await.expect("exits");
    assert_eq!(status.code(), Some(0), "{status}");
    let logs = setup.proxy.logs();
    assert!(
        logs.contains(ANSWERED),
        "every connection ended once its calls were answered, none left to the exit: {logs}"
    );
}

#[tokio::test]
async fn an_http1_request_waiting_at_the_deadline_gets_503_and_a_close() {
    let backend = Http1Backend::spawn("w1").await.expect("starts");
    let file = EndpointsFile::create(&[ServiceEndpoints::new(
        "web",
        "default",
        8080,
        &[backend.addr()],
    )])
    .expect("file");
    let options = ProxyOptions::file_discovery(&file)
        .upstream("web.default:8080")
        .env("SIDELB_DRAIN_TIMEOUT", "1s");
    let mut proxy = Proxy::spawn(options).await.expect("proxy ready");
    let addr = proxy.upstream_addr("web.default:8080").expect("listener");
    let mut conn = Http1Conn::connect(addr).await.expect("connects");
    let answered = conn
        .request(b"GET /first HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .expect("a response");
    assert_eq!(answered.status, 200, "{}", answered.text());
    // A request whose body never ends: the backend never answers it.
    conn.send(b"POST /held HTTP/1.1\r\nHost: web\r\nContent-Length: 10\r\n\r\nhalf")
        .await
        .expect("sent");
    wait_until("the held request to be in flight", WAIT, || async {
        let view = proxy.service_view("web.default:8080").await.ok()??;
        (view["in_flight"] == 1).then_some(())
    })
    .await
    .expect("in flight");

    proxy.terminate().expect("SIGTERM");
    let response = conn.response().await.expect("answered at the deadline");
    assert_eq!(response.status, 503, "{}", response.text());
    assert!(
        response.text().contains("SIDELB_DRAIN_TIMEOUT"),
        "{}",
        response.text()
    );
    assert_eq!(response.header("connection"), Some("close"));
    conn.wait_closed().await.expect("closed");
    let status = proxy.wait_exit().await.expect("exits");
    assert_eq!(status.code(), Some(0), "{status}");
    let logs = proxy.logs();
    assert!(logs.contains(ANSWERED), "{logs}");
}
