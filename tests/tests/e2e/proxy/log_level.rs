//! The log filter changed while the proxy runs (`/log-level`).
//!
//! - `GET` shows the filter in force (`SIDELB_LOG` at first);
//! - `PUT` with a filter as the body applies it at once: a debug line the
//!   proxy writes for every call it answers with an error itself is absent
//!   before and present after, with no restart;
//! - a bad filter is refused with 400 and the parser's reason, and the old
//!   one stays in force; an oversized body gets 413, another method 405
//!   naming the two allowed.

use http::Method;
use sidelb_config::names::LOG_LEVEL_PATH;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
/// A service the endpoints file does not list: the proxy answers every
/// call for it with UNAVAILABLE itself.
const MISSING: &str = "missing.default:50051";
/// What the proxy logs at debug for such an answer.
const DEBUG_LINE: &str = "answering with an error";
const DEBUG_FILTER: &str = "info,sidelb_proxy::forward=debug";

async fn put(proxy: &Proxy, body: impl Into<bytes::Bytes>) -> (u16, String) {
    let (status, _, text) = http_get::send(proxy.admin_addr(), Method::PUT, LOG_LEVEL_PATH, body)
        .await
        .expect("PUT answered");
    (status.as_u16(), text)
}

async fn filter(proxy: &Proxy) -> String {
    let (status, body) = proxy.admin_get(LOG_LEVEL_PATH).await.expect("answered");
    assert_eq!(status.as_u16(), 200, "{body}");
    body.trim().to_owned()
}

async fn call_missing(proxy: &Proxy) {
    let raw = RawGrpc::connect(proxy.outbound_addr(), MISSING)
        .await
        .expect("connects");
    let response = raw
        .call("Unary", &[], &[EchoRequest::default()])
        .await
        .expect("answered");
    assert_eq!(
        response.grpc_status(),
        Some(14),
        "UNAVAILABLE from the proxy"
    );
}

async fn logged(proxy: &Proxy, what: &str, needle: &str) {
    wait_until(what, WAIT, || async {
        proxy.logs().contains(needle).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", proxy.logs()));
}

#[tokio::test]
async fn a_new_filter_applies_at_once_and_a_bad_one_is_refused() {
    let setup = EchoSetup::start(&["a"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let proxy = &setup.proxy;
    assert_eq!(filter(proxy).await, "info");

    call_missing(proxy).await;
    let (status, body) = put(proxy, format!("{DEBUG_FILTER}\n")).await;
    assert_eq!((status, body.trim()), (200, DEBUG_FILTER));
    // Logged after the call's answer: everything before it is in the log.
    logged(proxy, "the change to be logged", "log filter set to").await;
    let before = proxy.logs();
    let at = before.find("log filter set to").expect("logged");
    assert!(
        !before[..at].contains(DEBUG_LINE),
        "no debug line at `info`:\n{before}"
    );
    assert_eq!(filter(proxy).await, DEBUG_FILTER);

    call_missing(proxy).await;
    logged(proxy, "the debug line after the change", DEBUG_LINE).await;

    let (status, body) = put(proxy, "sidelb_proxy=loud").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.starts_with("invalid log filter `sidelb_proxy=loud`: ")
            && body
                .trim()
                .ends_with(&format!("; the filter stays `{DEBUG_FILTER}`")),
        "{body}"
    );
    assert_eq!(filter(proxy).await, DEBUG_FILTER, "the old filter stays");

    let (status, body) = put(proxy, "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("it is empty"), "{body}");

    let (status, body) = put(proxy, "debug,".repeat(1000)).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("4096 bytes"), "{body}");
    assert_eq!(filter(proxy).await, DEBUG_FILTER);

    let (status, headers, body) =
        http_get::send(proxy.admin_addr(), Method::DELETE, LOG_LEVEL_PATH, "")
            .await
            .expect("answered");
    assert_eq!(status.as_u16(), 405, "{body}");
    assert_eq!(
        headers
            .get(http::header::ALLOW)
            .and_then(|v| v.to_str().ok()),
        Some("GET, PUT")
    );

    let (status, body) = put(proxy, "warn").await;
    assert_eq!((status, body.trim()), (200, "warn"));
    assert_eq!(filter(proxy).await, "warn");
}
