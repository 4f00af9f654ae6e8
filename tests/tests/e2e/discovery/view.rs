//! What the proxy makes of discovery, seen from outside: its `/endpoints`
//! view of a Service, and calls through it. Shared by the tests on the real
//! control plane ([`super::real`]) and on the fake API server
//! ([`super::cluster`]).

use anyhow::{Context, Result, bail};
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use std::time::Duration;

/// Bound on anything discovery-driven (covers the watcher's backoff after a
/// few errors in a row).
pub const WAIT: Duration = Duration::from_secs(60);

/// What the proxy's `/endpoints` says about one service.
#[derive(Debug, Default)]
pub struct Known {
    pub resolution: String,
    pub message: Option<String>,
    /// Pod names of the endpoints in use (not draining), sorted.
    pub pods: Vec<String>,
    /// Their addresses, sorted.
    pub addresses: Vec<String>,
}

/// `/endpoints` for `service` (`svc.ns:port`), if the proxy has a pool for it.
pub async fn known(proxy: &Proxy, service: &str) -> Result<Option<Known>> {
    let view = proxy.endpoints().await?;
    let Some(entry) = view["services"]
        .as_array()
        .context("/endpoints has no services")?
        .iter()
        .find(|s| s["service"] == service)
    else {
        return Ok(None);
    };
    let mut known = Known {
        resolution: entry["resolution"].as_str().unwrap_or_default().to_owned(),
        message: entry["message"].as_str().map(str::to_owned),
        ..Known::default()
    };
    for endpoint in entry["endpoints"].as_array().into_iter().flatten() {
        if endpoint["state"] == "draining" {
            continue;
        }
        known
            .pods
            .push(endpoint["name"].as_str().unwrap_or("?").to_owned());
        known
            .addresses
            .push(endpoint["address"].as_str().unwrap_or("?").to_owned());
    }
    known.pods.sort();
    known.addresses.sort();
    Ok(Some(known))
}

/// Waits until the proxy balances `service` over exactly `pods`.
pub async fn wait_for_pods(proxy: &Proxy, service: &str, pods: &[&str]) {
    let mut wanted: Vec<String> = pods.iter().map(|p| (*p).to_owned()).collect();
    wanted.sort();
    let what = format!("{service} to have endpoints {wanted:?}");
    let outcome = wait_until(&what, WAIT, || async {
        let known = known(proxy, service).await.ok().flatten()?;
        (known.resolution == "resolved" && known.pods == wanted).then_some(())
    })
    .await;
    if let Err(e) = outcome {
        let now = known(proxy, service).await;
        panic!("{e:#}; the proxy knows {now:?}");
    }
}

/// Waits until the proxy says `service` cannot be resolved; returns why.
pub async fn wait_for_no_service(proxy: &Proxy, service: &str) -> String {
    let what = format!("{service} to be unresolvable");
    wait_until(&what, WAIT, || async {
        let known = known(proxy, service).await.ok().flatten()?;
        (known.resolution == "no-service")
            .then_some(known.message)
            .flatten()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// `n` calls through `client`; every one must succeed. Returns who served them.
pub async fn all_ok(client: &Echo, n: u64) -> Tally {
    let tally = unary_calls(client, n, &EchoRequest::default()).await;
    assert_eq!(tally.ok(), n, "every call succeeds: {tally}");
    tally
}

/// Keeps calling until `pod` has served a call; bounded by [`WAIT`].
pub async fn wait_until_served_by(load: &Load, pod: &str) {
    let what = format!("{pod} to serve calls");
    wait_until(&what, WAIT, || async {
        (load.total().served_by(pod) > 0).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}: {}", load.total()));
}

/// One call that must fail with UNAVAILABLE made by the proxy (no backend
/// answered); returns its message.
pub async fn unavailable_message(client: &Echo) -> Result<String> {
    let mut client = client.clone();
    match client.unary(EchoRequest::default()).await {
        Ok(reply) => bail!("expected UNAVAILABLE, {} answered", reply.get_ref().backend),
        Err(status) => {
            if status.code() != tonic::Code::Unavailable {
                bail!("expected UNAVAILABLE, got {status:?}");
            }
            if let Some(backend) = tally::backend_of(&status) {
                bail!("expected the proxy's own UNAVAILABLE, {backend} answered");
            }
            Ok(status.message().to_owned())
        }
    }
}

/// A client through the proxy's upstream listener for `target`.
pub async fn client(proxy: &Proxy, target: &str) -> Echo {
    proxy.connect(target).await.expect("client connects")
}
