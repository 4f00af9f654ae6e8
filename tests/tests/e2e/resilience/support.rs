//! What several scenarios read from the proxy: metrics and one endpoint's
//! entry in `/endpoints`.

use serde_json::Value;
use sidelb_tests::harness::metrics::{parse, sum};
use sidelb_tests::harness::{ECHO, Proxy};
use std::net::SocketAddr;
use std::time::Duration;

/// Bound on every wait of these scenarios.
pub const WAIT: Duration = Duration::from_secs(30);

/// The sum of the samples of `name` with `labels` (0 when there are none).
pub async fn metric(proxy: &Proxy, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = proxy.metrics().await.expect("/metrics");
    sum(&parse(&text), name, labels).unwrap_or(0.0)
}

/// A metric of [`ECHO`] for the endpoint at `addr`.
pub async fn endpoint_metric(proxy: &Proxy, name: &str, addr: SocketAddr) -> f64 {
    let endpoint = addr.to_string();
    metric(proxy, name, &[("service", ECHO), ("endpoint", &endpoint)]).await
}

/// `/endpoints`' entry for the endpoint of [`ECHO`] at `addr`.
pub async fn endpoint_view(proxy: &Proxy, addr: SocketAddr) -> Option<Value> {
    let view = proxy.service_view(ECHO).await.ok()??;
    view["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .cloned()
}
