//! Bad configuration, at start and while running.
//!
//! - a malformed endpoints file at start (a bad entry, bad YAML, no file):
//!   the proxy exits non-zero with a message naming the file and the entry;
//! - a malformed `SIDELB_UPSTREAMS` (or another setting): it exits non-zero
//!   naming the variable and the entry;
//! - a malformed rewrite of the endpoints file while running is logged, the
//!   last good endpoints stay in use (calls keep succeeding on them), and a
//!   later good rewrite is applied.

use sidelb_config::settings;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::proxy::run_to_exit;
use sidelb_tests::harness::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn valid_service() -> ServiceEndpoints {
    ServiceEndpoints::new(
        "echo",
        "default",
        50051,
        &["127.0.0.1:50061".parse().expect("addr")],
    )
}

fn assert_says(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} is not in:\n{text}");
    }
}

#[tokio::test]
async fn a_malformed_endpoints_file_at_start_stops_the_proxy_naming_file_and_entry() {
    let file = EndpointsFile::create(&[valid_service()]).expect("file");
    let path = file.path().display().to_string();
    for (text, needles) in [
        (
            "services:\n  - name: echo\n    port: 50051\n    endpoints: [\"127.0.0.1:50061\"]\n  \
             - name: orders\n    namespace: shop\n    port: 8080\n    endpoints: [\"127.0.0.1:1\", \"not-an-address\"]\n",
            vec!["services[1] (orders)", "`not-an-address`", "ip:port"],
        ),
        (
            "services:\n  - name: echo\n    port: 70000\n",
            vec!["services[0] (echo)", "port 70000"],
        ),
        ("services: [oops\n", vec!["expected `services:`"]),
    ] {
        file.write_raw(text).expect("written");
        let exited = run_to_exit(ProxyOptions::file_discovery(&file))
            .await
            .expect("the proxy exits by itself");
        assert!(!exited.status.success(), "{text:?}: {exited:?}");
        let mut needles = needles;
        needles.push(&path);
        assert_says(&exited.stderr, &needles);
    }

    let missing = format!("{path}.missing");
    let exited =
        run_to_exit(ProxyOptions::new().env("SIDELB_DISCOVERY", format!("file:{missing}")))
            .await
            .expect("the proxy exits by itself");
    assert!(!exited.status.success(), "{exited:?}");
    assert_says(&exited.stderr, &[&missing, "cannot read"]);
}

#[tokio::test]
async fn malformed_settings_stop_the_proxy_naming_the_entry() {
    let file = EndpointsFile::create(&[valid_service()]).expect("file");
    for (variable, value, needles) in [
        (
            "SIDELB_UPSTREAMS",
            "echo.default:50051=15001,orders.shop=15002",
            vec!["SIDELB_UPSTREAMS", "`orders.shop=15002`", "no `:port`"],
        ),
        (
            "SIDELB_UPSTREAMS",
            "echo.default:50051=localhost",
            vec![
                "SIDELB_UPSTREAMS",
                "`echo.default:50051=localhost`",
                "`localhost`",
            ],
        ),
        (
            "SIDELB_UPSTREAMS",
            "echo:50051=15001,other:50051=15001",
            vec!["SIDELB_UPSTREAMS", "`other:50051=15001`", "15001"],
        ),
        (
            "SIDELB_BALANCER",
            "random",
            vec!["SIDELB_BALANCER", "random"],
        ),
    ] {
        let exited = run_to_exit(ProxyOptions::file_discovery(&file).env(variable, value))
            .await
            .expect("the proxy exits by itself");
        assert_eq!(
            exited.status.code(),
            Some(2),
            "{variable}={value}: {exited:?}"
        );
        assert_says(&exited.stderr, &needles);
    }
}

#[tokio::test]
async fn a_malformed_rewrite_keeps_the_last_good_endpoints_until_a_good_one() {
    let mut setup = EchoSetup::start(&["a", "b"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let client = setup.client().await.expect("one connection");
    let c = Backend::spawn("c", BackendOptions::default())
        .await
        .expect("c starts");

    // A rewrite that would replace a and b by c, but is malformed.
    let bad = format!(
        "services:\n  - name: echo\n    namespace: default\n    port: 50051\n    endpoints: [\"{}\", \"c:50051\"]\n",
        c.addr()
    );
    setup.file.write_raw(&bad).expect("written");
    let path = setup.file.path().display().to_string();
    wait_until("the proxy to log the bad file", WAIT, || async {
        let logs = setup.proxy.logs();
        (logs.contains("keeping the last good endpoints") && logs.contains(&path)).then_some(())
    })
    .await
    .expect("logged");
    let logs = setup.proxy.logs();
    assert!(
        logs.contains("`c:50051`"),
        "the log names the bad entry:\n{logs}"
    );

    let tally = unary_calls(&client, 100, &EchoRequest::default()).await;
    assert_eq!(tally.ok(), 100, "{tally}");
    assert!(
        tally.served_by("a") > 0 && tally.served_by("b") > 0,
        "{tally}"
    );
    assert_eq!(tally.served_by("c"), 0, "{tally}");

    // A good rewrite is applied: c only.
    setup.backends.push(c);
    setup.backends.drain(..2);
    setup.publish().expect("rewritten");
    setup.wait_ready().await.expect("c alone");
    let tally = unary_calls(&client, 50, &EchoRequest::default()).await;
    assert_eq!((tally.ok(), tally.served_by("c")), (50, 50), "{tally}");
}

#[tokio::test]
async fn json_logs_are_one_flat_object_per_line_even_when_the_start_fails() {
    let file = EndpointsFile::create(&[valid_service()]).expect("file");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let taken = taken.local_addr().expect("its address").to_string();
    let exited = run_to_exit(
        ProxyOptions::file_discovery(&file)
            .env(settings::LOG_FORMAT, "json")
            .env(settings::ADMIN_ADDR, taken.as_str()),
    )
    .await
    .expect("the proxy exits by itself");
    assert_eq!(exited.status.code(), Some(1), "{exited:?}");
    let lines: Vec<serde_json::Value> = exited
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty());
    let failure = lines
        .iter()
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no error logged: {}", exited.stderr));
    let message = failure["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot start") && message.contains(&taken),
        "the message is a top-level field naming the address: {failure}"
    );
}
