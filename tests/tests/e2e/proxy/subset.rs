//! Subsetting (`SIDELB_SUBSET_SIZE`), through the real proxy and backends:
//!
//! - a proxy with a subset of 3 over 8 backends sends its calls to exactly
//!   3, the others get none and no connection (`/endpoints` marks them
//!   `outside-subset`); restarted with the same pod name it chooses the
//!   same 3;
//! - a member removed from discovery is replaced by exactly one other
//!   backend, and the other two stay, keeping their counts;
//! - with the default size a service of 3 scaled to 5 is used whole;
//! - many proxies, each its own pod name, cover every backend between them.

use sidelb_config::settings;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const CALLS: u64 = 60;
/// Bound on the proxy's view settling after a change of the file.
const SETTLE: Duration = Duration::from_secs(20);

fn options(file: &EndpointsFile, pod: &str, subset: Option<&str>) -> ProxyOptions {
    let options = ProxyOptions::file_discovery(file)
        .upstream(ECHO)
        .env(settings::POD_NAME, pod);
    match subset {
        Some(size) => options.env(settings::SUBSET_SIZE, size),
        None => options,
    }
}

fn publish(file: &EndpointsFile, backends: &[&Backend]) {
    file.write(&[ServiceEndpoints::of(
        "echo",
        "default",
        50051,
        backends.iter().copied(),
    )])
    .expect("endpoints file written");
}

/// The addresses `/endpoints` shows as subset members and as outside it,
/// once `members` of them are ready and `outside` more are outside.
async fn wait_subset(
    proxy: &Proxy,
    members: usize,
    outside: usize,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let what = format!("{ECHO} to show {members} ready members and {outside} outside the subset");
    wait_until(&what, SETTLE, || async {
        let view = proxy.service_view(ECHO).await.ok()??;
        let by_state = |state: &str| -> BTreeSet<String> {
            view["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["state"] == state)
                .filter_map(|e| e["address"].as_str().map(str::to_owned))
                .collect()
        };
        let (ready, out) = (by_state("ready"), by_state("outside-subset"));
        let listed = view["endpoints"].as_array()?.len();
        (ready.len() == members && out.len() == outside && listed == members + outside)
            .then_some((ready, out))
    })
    .await
    .expect("the subset settles")
}

/// Names of the backends at `addrs`.
fn names(backends: &[Backend], addrs: &BTreeSet<String>) -> BTreeSet<String> {
    backends
        .iter()
        .filter(|b| addrs.contains(&b.addr().to_string()))
        .map(|b| b.name().to_owned())
        .collect()
}

async fn served(proxy: &Proxy) -> Tally {
    let client = proxy.connect(ECHO).await.expect("a client");
    let tally = unary_calls(&client, CALLS, &EchoRequest::default()).await;
    assert_eq!(tally.ok(), CALLS, "{tally}");
    tally
}

async fn subset_gauge(proxy: &Proxy) -> Option<f64> {
    let text = proxy.metrics().await.expect("/metrics");
    metrics::sum(
        &metrics::parse(&text),
        "sidelb_subset_endpoints",
        &[("service", ECHO)],
    )
}

#[tokio::test]
async fn a_proxy_uses_only_its_subset_and_the_same_one_after_a_restart() {
    let backends = Backend::spawn_all(
        &["a", "b", "c", "d", "e", "f", "g", "h"],
        BackendOptions::default(),
    )
    .await
    .expect("backends");
    let file = EndpointsFile::create(&[ServiceEndpoints::of("echo", "default", 50051, &backends)])
        .expect("endpoints file");
    let proxy = Proxy::spawn(options(&file, "client-1", Some("3")))
        .await
        .expect("proxy");
    let (members, outside) = wait_subset(&proxy, 3, 5).await;
    let chosen = names(&backends, &members);

    let view = proxy.service_view(ECHO).await.unwrap().unwrap();
    assert_eq!(view["subset_size"], 3, "{view}");
    for e in view["endpoints"].as_array().unwrap() {
        if e["state"] == "outside-subset" {
            assert_eq!(
                (e["connections"].as_u64(), e["requests"].as_u64()),
                (Some(0), Some(0)),
                "{e}"
            );
        }
    }
    assert_eq!(subset_gauge(&proxy).await, Some(3.0));

    let tally = served(&proxy).await;
    let used: BTreeSet<String> = tally.backends().keys().cloned().collect();
    assert_eq!(used, chosen, "calls go to the members only: {tally}");
    for b in backends
        .iter()
        .filter(|b| outside.contains(&b.addr().to_string()))
    {
        let stats = b.stats().await.expect("stats");
        assert_eq!(stats.calls, 0, "{} is outside the subset", b.name());
    }

    proxy.stop().await.expect("the proxy stops");
    let again = Proxy::spawn(options(&file, "client-1", Some("3")))
        .await
        .expect("proxy again");
    let (members_again, _) = wait_subset(&again, 3, 5).await;
    assert_eq!(
        members_again, members,
        "the same pod name chooses the same subset"
    );
    let used: BTreeSet<String> = served(&again).await.backends().keys().cloned().collect();
    assert_eq!(used, chosen);
}

#[tokio::test]
async fn a_member_that_goes_is_replaced_by_exactly_one_other() {
    let backends = Backend::spawn_all(
        &["a", "b", "c", "d", "e", "f", "g", "h"],
        BackendOptions::default(),
    )
    .await
    .expect("backends");
    let file = EndpointsFile::create(&[ServiceEndpoints::of("echo", "default", 50051, &backends)])
        .expect("endpoints file");
    let proxy = Proxy::spawn(options(&file, "client-2", Some("3")))
        .await
        .expect("proxy");
    let (members, _) = wait_subset(&proxy, 3, 5).await;
    served(&proxy).await;
    let requests_of = |view: &serde_json::Value| -> BTreeMap<String, u64> {
        view["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| Some((e["address"].as_str()?.to_owned(), e["requests"].as_u64()?)))
            .collect()
    };
    let before = requests_of(&proxy.service_view(ECHO).await.unwrap().unwrap());

    let gone = members.iter().next().unwrap().clone();
    let left: Vec<&Backend> = backends
        .iter()
        .filter(|b| b.addr().to_string() != gone)
        .collect();
    publish(&file, &left);
    let (now, outside) = wait_subset(&proxy, 3, 4).await;
    assert!(!now.contains(&gone) && !outside.contains(&gone));
    let stayed: BTreeSet<&String> = members.intersection(&now).collect();
    assert_eq!(stayed.len(), 2, "the other two stay: {members:?} → {now:?}");
    assert_eq!(
        now.difference(&members).count(),
        1,
        "one joins: {members:?} → {now:?}"
    );

    let after = requests_of(&proxy.service_view(ECHO).await.unwrap().unwrap());
    for addr in stayed {
        assert!(
            after[addr] >= before[addr] && before[addr] > 0,
            "{addr} keeps its counts: {} then {}",
            before[addr],
            after[addr]
        );
    }
    let used: BTreeSet<String> = served(&proxy).await.backends().keys().cloned().collect();
    assert_eq!(used, names(&backends, &now));
}

#[tokio::test]
async fn with_the_default_size_a_small_service_scaled_up_is_used_whole() {
    let mut setup = EchoSetup::start(&["a", "b", "c"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let view = setup.proxy.service_view(ECHO).await.unwrap().unwrap();
    assert_eq!(view["subset_size"], 64, "{view}");
    setup.backends.extend(
        Backend::spawn_all(&["d", "e"], BackendOptions::default())
            .await
            .expect("d and e start"),
    );
    setup.publish().expect("file rewritten");
    setup.wait_ready().await.expect("all five connected");
    let tally = served(&setup.proxy).await;
    for name in ["a", "b", "c", "d", "e"] {
        assert!(tally.served_by(name) > 0, "{name} serves: {tally}");
    }
    assert_eq!(subset_gauge(&setup.proxy).await, Some(5.0));
}

/// Each of [`PODS`] proxies picks 3 of 6 backends by its own pod name;
/// a backend is missed by all of them with chance 2⁻²⁰, so the test
/// fails about once in 170,000 runs (backend ports, hence the choices,
/// differ each run).
const PODS: usize = 20;

#[tokio::test]
async fn proxies_of_many_pods_cover_every_backend() {
    let names_all = ["a", "b", "c", "d", "e", "f"];
    let backends = Backend::spawn_all(&names_all, BackendOptions::default())
        .await
        .expect("backends");
    let file = EndpointsFile::create(&[ServiceEndpoints::of("echo", "default", 50051, &backends)])
        .expect("endpoints file");
    let mut clients_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut subsets = BTreeSet::new();
    for pod in 0..PODS {
        let proxy = Proxy::spawn(options(&file, &format!("client-{pod}"), Some("3")))
            .await
            .expect("proxy");
        let (members, _) = wait_subset(&proxy, 3, 3).await;
        let used: BTreeSet<String> = served(&proxy).await.backends().keys().cloned().collect();
        assert_eq!(used, names(&backends, &members));
        for name in used {
            *clients_of.entry(name).or_default() += 1;
        }
        subsets.insert(members);
        proxy.stop().await.expect("the proxy stops");
    }
    for name in names_all {
        assert!(
            clients_of.get(name).copied().unwrap_or(0) > 0,
            "{name} is in no subset: {clients_of:?}"
        );
    }
    assert!(subsets.len() > 1, "pod names choose different subsets");
}
