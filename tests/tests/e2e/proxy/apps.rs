//! A user's app in each language people write, unchanged but for the
//! address: it dials the proxy's upstream listener on ONE channel of its own
//! gRPC library, and every call kind, deadlines, cancellation and metadata
//! work through the proxy while its unary calls are spread over every
//! backend. `/metrics` shows that the app opened exactly one connection.
//!
//! The apps are those of `tests/apps/README.md` (Python, Go, Java, Node and
//! the tonic `sidelb-test-app`), built by `make deps`; each is first shown
//! against a backend alone in `backend::apps`.

use sidelb_tests::harness::*;

const TARGET: &str = "echo.default:50051";
const PODS: [&str; 3] = ["a", "b", "c"];
const CALLS: u32 = 60;

async fn app_connections(proxy: &Proxy) -> f64 {
    let text = proxy.metrics().await.expect("/metrics");
    metrics::sum(&metrics::parse(&text), "sidelb_app_connections_total", &[]).unwrap_or(0.0)
}

async fn balanced_over_one_connection(language: Language) {
    let mut pods = Vec::new();
    for name in PODS {
        pods.push(
            Backend::spawn(name, BackendOptions::default())
                .await
                .expect("backend starts"),
        );
    }
    let addrs: Vec<_> = pods.iter().map(Backend::addr).collect();
    let file = EndpointsFile::create(&[ServiceEndpoints::new("echo", "default", 50051, &addrs)])
        .expect("file");
    // Round-robin, so that a slow moment of one backend on a loaded machine
    // does not move the shares; the default balancer is shown in proxy::balance.
    let options = ProxyOptions::file_discovery(&file)
        .upstream(TARGET)
        .env("SIDELB_BALANCER", "round-robin");
    let proxy = Proxy::spawn(options).await.expect("proxy ready");
    proxy
        .wait_ready(TARGET, &addrs)
        .await
        .expect("all connected");
    let before = app_connections(&proxy).await;

    let app = AppClient {
        calls: CALLS,
        ..AppClient::new(language, proxy.upstream_addr(TARGET).expect("listener"))
    };
    let summary = app.run().await.expect("the app runs");

    let failed = summary.failed_checks(&app.checks());
    assert!(failed.is_empty(), "{language}: {failed:?}");
    for (name, check) in &summary.checks {
        assert!(
            !check.backends.is_empty() && check.backends.iter().all(|b| PODS.contains(&b.as_str())),
            "{language} {name} served by our backends: {check:?}"
        );
    }
    assert_eq!(
        summary.unary.statuses.get("OK"),
        Some(&u64::from(CALLS)),
        "{language}: {:?}",
        summary.unary
    );
    for pod in PODS {
        let got = summary.unary.by_backend.get(pod).copied().unwrap_or(0);
        assert!(
            got >= u64::from(CALLS) / 10,
            "{language}: {pod} got {got} of {CALLS}: {:?}",
            summary.unary
        );
    }
    let opened = app_connections(&proxy).await - before;
    assert_eq!(
        opened, 1.0,
        "{language}: the app's connections to the proxy"
    );
}

#[tokio::test]
async fn a_python_app_is_balanced_over_one_connection() {
    balanced_over_one_connection(Language::Python).await;
}

#[tokio::test]
async fn a_go_app_is_balanced_over_one_connection() {
    balanced_over_one_connection(Language::Go).await;
}

#[tokio::test]
async fn a_node_app_is_balanced_over_one_connection() {
    balanced_over_one_connection(Language::Node).await;
}

#[tokio::test]
async fn a_java_app_is_balanced_over_one_connection() {
    balanced_over_one_connection(Language::Java).await;
}

#[tokio::test]
async fn a_rust_app_is_balanced_over_one_connection() {
    balanced_over_one_connection(Language::Rust).await;
}
