//! The live page at the admin server's `GET /`, in headless Chromium while
//! a load runs through the proxy (file discovery, backends of
//! `echo.default:50051`):
//!
//! - it loads and keeps itself up to date with no request to any host but
//!   the admin address, and no script error;
//! - it shows the three pods, each with a share of the requests;
//! - a fourth backend added to the endpoints file appears and takes a share;
//! - a backend killed is marked (unreachable, connecting, or ejected for
//!   the calls it failed) and its share falls to nothing;
//! - a backend failing every call is marked ejected, with the time left,
//!   and its errors are shown by status.
//!
//! That `/` answers loopback clients only is in `admin_access`.

use sidelb_config::settings;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::browser::{PageRow, PageView};
use sidelb_tests::harness::*;
use std::net::SocketAddr;
use std::time::Duration;

/// Bound on each thing the page should come to show: its window is 5 s and
/// it polls every second, on a busy machine.
const SHOWN_WITHIN: Duration = Duration::from_secs(30);

fn row(view: &PageView, addr: SocketAddr) -> Option<&PageRow> {
    view.service(ECHO)?.row(addr)
}

/// The row of `addr` once `check` holds for it.
async fn wait_row(
    page: &LivePage,
    what: &str,
    addr: SocketAddr,
    check: impl Fn(&PageRow) -> bool,
) -> PageRow {
    page.wait_for(what, SHOWN_WITHIN, |view| {
        row(view, addr).filter(|r| check(r)).cloned()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn has_share(r: &PageRow) -> bool {
    r.state == "ready" && r.share.is_some_and(|s| s > 0.0) && r.rate.is_some_and(|r| r > 0.0)
}

#[tokio::test]
async fn the_live_page_shows_pods_shares_and_states_as_they_change() {
    let mut setup = EchoSetup::start(
        &["a", "b", "c"],
        BackendOptions::default(),
        &[(settings::EJECTION_BASE_TIME, "2m")],
    )
    .await
    .expect("setup");
    let client = setup.client().await.expect("one connection");
    // Paced (each call waits 5 ms at the backend), so the load leaves the
    // machine to the browser.
    let request = EchoRequest {
        delay_ms: 5,
        ..EchoRequest::default()
    };
    let limits = LoadLimits {
        concurrency: 4,
        max_calls: 200_000,
        max_duration: Duration::from_secs(240),
    };
    let load = Load::start(&client, request, limits);

    let admin = setup.proxy.admin_addr();
    let page = LivePage::open(admin).await.expect("the page opens");
    let addrs = setup.addrs();
    let view = page
        .wait_for("the three pods, each with a share", SHOWN_WITHIN, |view| {
            let service = view.service(ECHO)?;
            let shown = addrs.iter().all(|a| service.row(*a).is_some_and(has_share));
            (shown && service.rows.len() == 3).then(|| view.clone())
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(view.requests.hosts, [admin.to_string()], "{view:#?}");
    assert!(view.requests.count >= 2, "the page polls: {view:#?}");
    assert!(view.problems.is_empty(), "{:?}", view.problems);
    assert!(view.title.contains("1 service"), "{}", view.title);
    for r in &view.service(ECHO).expect("listed").rows {
        assert!(r.text.contains("ready"), "state as text too: {r:?}");
    }

    // A fourth pod appears and takes a share.
    setup.backends.push(
        Backend::spawn("d", BackendOptions::default())
            .await
            .expect("d"),
    );
    let d = setup.backend("d").addr();
    setup.publish().expect("file rewritten");
    wait_row(&page, "d with a share", d, has_share).await;

    // A pod killed is marked, and its share falls to nothing.
    let c = setup.backend("c").addr();
    let at = setup
        .backends
        .iter()
        .position(|b| b.addr() == c)
        .expect("c");
    setup.backends.remove(at).kill().expect("c killed");
    let gone = wait_row(&page, "c marked and without a share", c, |r| {
        r.state != "ready" && r.share == Some(0.0)
    })
    .await;
    let marks = ["unreachable", "connecting", "ejected"];
    assert!(marks.iter().any(|m| gone.text.contains(m)), "{gone:?}");

    // A pod failing every call is ejected, with the time left and its errors.
    let failing = BackendOptions {
        fail_every: 1,
        ..BackendOptions::default()
    };
    let f = Backend::spawn("f", failing).await.expect("f");
    let f_addr = f.addr();
    let mut listed = setup.addrs();
    listed.push(c);
    listed.push(f_addr);
    setup
        .file
        .write(&[ServiceEndpoints::new("echo", "default", 50051, &listed)])
        .expect("file rewritten");
    let ejected = wait_row(&page, "f ejected with its errors", f_addr, |r| {
        r.state == "ejected" && r.errors > 0
    })
    .await;
    assert!(
        ejected.text.contains("ejected") && ejected.text.contains("left"),
        "{ejected:?}"
    );
    assert!(ejected.text.contains("UNAVAILABLE"), "{ejected:?}");

    let view = page.view().expect("a view");
    assert_eq!(view.requests.hosts, [admin.to_string()], "{view:#?}");
    assert!(view.problems.is_empty(), "{:?}", view.problems);
    page.close().await.expect("the browser closes");
    load.stop().await;
}
