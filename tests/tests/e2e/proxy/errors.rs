//! Routing by authority, and the errors the proxy answers itself.
//!
//! - every authority form of DESIGN.md (`svc`, `svc.ns`, `svc.ns.svc`,
//!   `svc.ns.svc.<domain>`, each with its port) reaches the right Service
//!   port, relative to `POD_NAMESPACE` and `SIDELB_CLUSTER_DOMAIN`;
//! - a service with no endpoints, a service not in the endpoints file, an
//!   authority that names no service, a service whose endpoints are all
//!   dead: each a trailers-only gRPC response, `grpc-status` 14, with a
//!   `grpc-message` that names the service or authority and says what to do;
//!   over HTTP/1.1 and plain HTTP/2 the same errors are 503 with that text;
//! - request headers over 64 KiB: a gRPC status 14 that says so (431 for
//!   plain HTTP/2), never sent to a backend, the connection still serving;
//! - overload: with `SIDELB_MAX_IN_FLIGHT=2`, a third call to the service
//!   fails at once with UNAVAILABLE naming it, on the same connection or
//!   another, while other services on that connection are still served.

use sidelb_tests::echo::BACKEND_HEADER;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

/// Backends behind several services, and the file that says so:
/// `echo.default:50051` → a, `echo.other:50051` → b, `echo.default:7000` →
/// c, `empty.default:50051` → none, `dead.default:50051` → k1, k2.
struct World {
    backends: Vec<Backend>,
    file: EndpointsFile,
}

impl World {
    async fn new() -> World {
        let backends = Backend::spawn_all(&["a", "b", "c", "k1", "k2"], BackendOptions::default())
            .await
            .expect("backends start");
        let by_name = |n: &str| backends.iter().find(|b| b.name() == n).expect("named");
        let services = [
            ServiceEndpoints::of("echo", "default", 50051, [by_name("a")]),
            ServiceEndpoints::of("echo", "other", 50051, [by_name("b")]),
            ServiceEndpoints::of("echo", "default", 7000, [by_name("c")]),
            ServiceEndpoints::new("empty", "default", 50051, &[]),
            ServiceEndpoints::of("dead", "default", 50051, [by_name("k1"), by_name("k2")]),
        ];
        let file = EndpointsFile::create(&services).expect("file");
        World { backends, file }
    }

    async fn proxy(&self, env: &[(&str, &str)], upstreams: &[&str]) -> Proxy {
        let mut options = ProxyOptions::file_discovery(&self.file);
        for (name, value) in env {
            options = options.env(name, *value);
        }
        for upstream in upstreams {
            options = options.upstream(upstream);
        }
        Proxy::spawn(options).await.expect("proxy ready")
    }
}

/// The backend that answered, or `None` if the proxy answered itself.
fn answered_by(response: &RawResponse) -> Option<String> {
    let header = response
        .headers
        .get(BACKEND_HEADER)
        .or_else(|| response.trailers.as_ref()?.get(BACKEND_HEADER))?;
    Some(header.to_str().expect("ascii").to_string())
}

#[tokio::test]
async fn every_authority_form_routes_to_its_service() {
    let world = World::new().await;
    let proxy = world.proxy(&[], &[]).await;
    let raw = RawGrpc::connect(proxy.outbound_addr(), "unused")
        .await
        .expect("connects");
    for (authority, backend) in [
        ("echo:50051", "a"),
        ("echo.default:50051", "a"),
        ("echo.default.svc:50051", "a"),
        ("echo.default.svc.cluster.local:50051", "a"),
        ("ECHO.Default.svc.cluster.local.:50051", "a"),
        ("echo.other:50051", "b"),
        ("echo.other.svc:50051", "b"),
        ("echo.other.svc.cluster.local:50051", "b"),
        ("echo:7000", "c"),
        ("echo.default.svc.cluster.local:7000", "c"),
    ] {
        let response = raw
            .call_at(authority, "Unary", &[], &[EchoRequest::default()])
            .await
            .expect("answered");
        assert_eq!(response.grpc_status(), Some(0), "{authority}: {response:?}");
        assert_eq!(
            answered_by(&response).as_deref(),
            Some(backend),
            "{authority}"
        );
    }

    // Short names are relative to the pod's namespace, long ones to the
    // cluster's domain.
    let proxy = world
        .proxy(
            &[
                ("POD_NAMESPACE", "other"),
                ("SIDELB_CLUSTER_DOMAIN", "corp.example"),
            ],
            &[],
        )
        .await;
    let raw = RawGrpc::connect(proxy.outbound_addr(), "unused")
        .await
        .expect("connects");
    for (authority, backend) in [
        ("echo:50051", Some("b")),
        ("echo.default:50051", Some("a")),
        ("echo.default.svc.corp.example:50051", Some("a")),
        ("echo.default.svc.cluster.local:50051", None),
    ] {
        let response = raw
            .call_at(authority, "Unary", &[], &[EchoRequest::default()])
            .await
            .expect("answered");
        assert_eq!(
            answered_by(&response).as_deref(),
            backend,
            "{authority}: {response:?}"
        );
    }
}

/// A trailers-only UNAVAILABLE made by the proxy; returns its message.
fn proxy_unavailable(response: &RawResponse, context: &str) -> String {
    assert!(response.is_trailers_only(), "{context}: {response:?}");
    assert_eq!(response.status, 200, "{context}");
    assert_eq!(
        response.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/grpc"[..]),
        "{context}"
    );
    assert_eq!(
        response.grpc_status(),
        Some(Code::Unavailable as i32),
        "{context}: {response:?}"
    );
    assert_eq!(answered_by(response), None, "{context}: made by the proxy");
    response.grpc_message().expect("a grpc-message").to_string()
}

fn assert_says(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} is not in: {message}");
    }
}

/// The errors, with what each message must say.
fn expectations(world: &World) -> Vec<(&'static str, Vec<String>)> {
    let path = world.file.path().display().to_string();
    let unknown = |a: &str| {
        vec![
            format!("`{a}`"),
            "dial `service.namespace:port`".into(),
            "SIDELB_UPSTREAMS".into(),
        ]
    };
    vec![
        (
            "empty.default:50051",
            vec![
                "empty.default:50051".into(),
                "no endpoints".into(),
                "ready pods".into(),
            ],
        ),
        (
            "missing.default:50051",
            vec![
                "missing.default:50051".into(),
                "not in the endpoints file".into(),
                path,
                "add it".into(),
            ],
        ),
        ("10.1.2.3:50051", unknown("10.1.2.3:50051")),
        ("echo", unknown("echo")),
        ("a.b.c:80", unknown("a.b.c:80")),
        (
            "dead.default:50051",
            vec![
                "dead.default:50051".into(),
                "all 2 endpoints".into(),
                "failing".into(),
                "check that".into(),
            ],
        ),
    ]
}

/// Kills the backends of `dead.default:50051` once the proxy has used them,
/// and waits until it has seen them die.
async fn kill_the_dead_service(world: &mut World, proxy: &Proxy) {
    let raw = RawGrpc::connect(proxy.outbound_addr(), "dead.default:50051")
        .await
        .expect("connects");
    let alive = raw
        .call("Unary", &[], &[EchoRequest::default()])
        .await
        .expect("answered");
    assert_eq!(alive.grpc_status(), Some(0), "alive first: {alive:?}");
    for name in ["k1", "k2"] {
        let at = world
            .backends
            .iter()
            .position(|b| b.name() == name)
            .expect("named");
        world.backends.remove(at).kill().expect("SIGKILL");
    }
    wait_until("the proxy to see k1 and k2 down", WAIT, || async {
        let view = proxy.service_view("dead.default:50051").await.ok()??;
        let endpoints = view["endpoints"].as_array()?;
        endpoints
            .iter()
            .all(|e| e["state"] == "down" || e["state"] == "ejected")
            .then_some(())
    })
    .await
    .expect("seen down");
}

#[tokio::test]
async fn each_error_is_a_grpc_status_that_says_what_to_do() {
    let mut world = World::new().await;
    let proxy = world.proxy(&[], &["empty.default:50051"]).await;
    kill_the_dead_service(&mut world, &proxy).await;
    let raw = RawGrpc::connect(proxy.outbound_addr(), "unused")
        .await
        .expect("connects");
    for (authority, needles) in expectations(&world) {
        let response = raw
            .call_at(authority, "Unary", &[], &[EchoRequest::default()])
            .await
            .expect("answered");
        let message = proxy_unavailable(&response, authority);
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        assert_says(&message, &needles);
    }

    // The same on an upstream listener, and through a gRPC library.
    let listener = proxy
        .upstream_addr("empty.default:50051")
        .expect("listener");
    let mut client = client::connect(listener).await.expect("connects");
    let status = client
        .unary(EchoRequest::default())
        .await
        .expect_err("no endpoints");
    assert_eq!(status.code(), Code::Unavailable);
    assert_says(status.message(), &["empty.default:50051", "no endpoints"]);
}

#[tokio::test]
async fn the_same_errors_over_http1_and_plain_http2_are_503_with_text() {
    let mut world = World::new().await;
    let proxy = world.proxy(&[], &[]).await;
    kill_the_dead_service(&mut world, &proxy).await;
    for (authority, needles) in expectations(&world) {
        let mut http1 = Http1Conn::connect(proxy.outbound_addr())
            .await
            .expect("connects");
        let request = format!("GET /x HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        let response = http1.request(request.as_bytes()).await.expect("answered");
        assert_eq!(response.status, 503, "{authority}: {}", response.text());
        assert!(
            response
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/plain")),
            "{authority}: {response:?}"
        );
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        assert_says(&response.text(), &needles);

        let plain = RawGrpc::connect(proxy.outbound_addr(), authority)
            .await
            .expect("connects")
            .request("GET", "/x", &[], bytes::Bytes::new())
            .await
            .expect("answered");
        assert_eq!(plain.status, 503, "{authority}: {plain:?}");
        let text = String::from_utf8_lossy(&plain.body);
        assert_says(&text, &needles);
        assert!(
            plain.headers.get("grpc-status").is_none(),
            "not gRPC: {plain:?}"
        );
    }
}

#[tokio::test]
async fn over_the_in_flight_limit_calls_fail_at_once_naming_the_service() {
    let world = World::new().await;
    let proxy = world.proxy(&[("SIDELB_MAX_IN_FLIGHT", "2")], &[]).await;
    let raw = Arc::new(
        RawGrpc::connect(proxy.outbound_addr(), "echo.default:50051")
            .await
            .expect("connects"),
    );
    let slow = EchoRequest {
        delay_ms: 60_000,
        ..Default::default()
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        let (raw, slow) = (raw.clone(), slow.clone());
        held.push(tokio::spawn(async move {
            raw.call("Unary", &[], &[slow]).await
        }));
    }
    let a = &world.backends[0];
    wait_until("two calls in flight at a", WAIT, || async {
        (a.stats().await.ok()?.in_flight == 2).then_some(())
    })
    .await
    .expect("two in flight");

    // The third, on the same connection and on a new one: refused at once
    // (the held calls would take a minute).
    let third = raw
        .call("Unary", &[], &[EchoRequest::default()])
        .await
        .expect("answered");
    let message = proxy_unavailable(&third, "a third call");
    assert_says(&message, &["echo.default:50051", "SIDELB_MAX_IN_FLIGHT"]);
    let mut client = client::connect_with_authority(proxy.outbound_addr(), "echo.default:50051")
        .await
        .expect("connects");
    let status = client
        .unary(EchoRequest::default())
        .await
        .expect_err("over the limit");
    assert_eq!(status.code(), Code::Unavailable);
    assert_says(
        status.message(),
        &["echo.default:50051", "SIDELB_MAX_IN_FLIGHT"],
    );

    // The limit is per service: another one is served on the same connection.
    let other = raw
        .call_at("echo.other:50051", "Unary", &[], &[EchoRequest::default()])
        .await
        .expect("answered");
    assert_eq!(other.grpc_status(), Some(0), "{other:?}");
    assert_eq!(answered_by(&other).as_deref(), Some("b"));

    // Once the held calls are gone, the service takes calls again.
    for call in held {
        call.abort();
    }
    wait_until("the held calls to end", WAIT, || async {
        (a.stats().await.ok()?.in_flight == 0).then_some(())
    })
    .await
    .expect("ended");
    let again = raw
        .call("Unary", &[], &[EchoRequest::default()])
        .await
        .expect("answered");
    assert_eq!(again.grpc_status(), Some(0), "{again:?}");
    assert_eq!(
        a.stats().await.expect("stats").calls,
        3,
        "the two held and the last one: the refused calls never reached a"
    );
}

#[tokio::test]
async fn http2_headers_over_the_limit_are_refused_on_their_own_stream() {
    let setup = EchoSetup::start(&["a"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let raw = RawGrpc::connect(setup.proxy.upstream_addr(ECHO).expect("listener"), ECHO)
        .await
        .expect("connects");
    let big = "x".repeat(70_000);
    let refused = raw
        .call(
            "Unary",
            &[("x-big", big.as_str())],
            &[EchoRequest::default()],
        )
        .await
        .expect("answered");
    assert!(refused.is_trailers_only(), "{refused:?}");
    assert_eq!(refused.grpc_status(), Some(14));
    assert_says(
        refused.grpc_message().unwrap_or_default(),
        &["over the proxy's limit of 65536", "send less metadata"],
    );
    let plain = raw
        .request("GET", "/x", &[("x-big", big.as_str())], bytes::Bytes::new())
        .await
        .expect("answered");
    assert_eq!(plain.status, 431, "{plain:?}");
    assert_says(
        &String::from_utf8_lossy(&plain.body),
        &["send less metadata"],
    );

    // The connection serves on (10 KB: the backend's own limit is 16 KiB).
    let fits = "x".repeat(10_000);
    let ok = raw
        .call(
            "Unary",
            &[("x-fits", fits.as_str())],
            &[EchoRequest::default()],
        )
        .await
        .expect("answered");
    assert_eq!(ok.grpc_status(), Some(0), "{ok:?}");
    let stats = setup.backend("a").stats().await.expect("stats");
    assert_eq!(
        stats.calls, 1,
        "the refused requests never reached the backend"
    );
}
