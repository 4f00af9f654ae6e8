//! The injector writes what the proxy reads: the injected container's
//! environment, with the downward API resolved as the kubelet would, parses
//! with the proxy's own configuration code.

use crate::support::TestInjector;
use crate::support::client::Proto;
use crate::support::reviews::{job, proxy, with_annotations};
use serde_json::Value;
use sidelb_config::{Balancer, ProxyConfig, SETTINGS, settings};
use std::collections::BTreeMap;
use std::time::Duration;

const POD_NAME: &str = "invoice-run-28911230-x7k2q";
const NODE_NAME: &str = "pool-a-7f3c";

/// The variables as the kubelet would set them for `container` in `pod`.
fn resolved_env(container: &Value, pod: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for var in container["env"].as_array().expect("env") {
        let name = var["name"].as_str().expect("name").to_owned();
        let value = match var["value"].as_str() {
            Some(v) => v.to_owned(),
            None => match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => POD_NAME.to_owned(),
                Some("spec.nodeName") => NODE_NAME.to_owned(),
                Some("metadata.namespace") => pod["metadata"]["namespace"]
                    .as_str()
                    .expect("namespace")
                    .to_owned(),
                other => panic!("{name}: unexpected source {other:?}"),
            },
        };
        assert!(
            env.insert(name.clone(), value).is_none(),
            "{name} is set twice"
        );
    }
    env
}

fn parse(env: &BTreeMap<String, String>) -> ProxyConfig {
    for name in env.keys() {
        assert!(
            ProxyConfig::env_names().any(|n| n == name),
            "the proxy does not read {name}"
        );
    }
    ProxyConfig::from_lookup(|k| env.get(k).cloned())
        .unwrap_or_else(|e| panic!("the proxy refuses {env:?}: {e}"))
}

#[tokio::test]
async fn the_proxy_parses_the_injected_environment() {
    let server = TestInjector::start().await;
    let review = with_annotations(
        job(),
        &[
            ("sidelb.io/balancer", "round-robin"),
            ("sidelb.io/log-level", "sidelb_proxy=debug,warn"),
            ("sidelb.io/native-sidecar", "false"),
            ("sidelb.io/connect-timeout", "250ms"),
        ],
    );
    let answer = server.review(Proto::H2, &review).await;
    let pod = answer.patched(&review);
    let env = resolved_env(proxy(&pod).0, &pod);
    let config = parse(&env);
    assert_eq!(config.balancer, Balancer::RoundRobin);
    assert_eq!(config.log, "sidelb_proxy=debug,warn");
    assert_eq!(config.connect_timeout, Duration::from_millis(250));
    assert_eq!(config.admin_addr, "0.0.0.0:4191".parse().unwrap());
    assert_eq!(config.pod_name, POD_NAME);
    assert_eq!(config.pod_namespace, "billing");
    assert_eq!(
        config.shutdown_grace,
        Duration::from_secs(10),
        "a classic sidecar outlives the app"
    );
    let services: Vec<String> = config
        .upstreams
        .iter()
        .map(|u| u.service.to_string())
        .collect();
    assert_eq!(
        services,
        ["ledger.billing:grpc", "rates.pricing:50051"],
        "short names take the pod's namespace"
    );
    server.stop().await;
}

#[tokio::test]
async fn every_annotated_setting_reaches_the_proxy() {
    let server = TestInjector::start().await;
    let annotated: Vec<_> = SETTINGS.iter().filter(|s| s.annotation.is_some()).collect();
    let values: Vec<(&str, &str)> = annotated
        .iter()
        .map(|s| {
            (
                s.annotation.unwrap_or_default(),
                match (s.env, s.default) {
                    (settings::HASH_HEADER, _) => "x-user-id",
                    (settings::SUBSET_SIZE, _) => "16",
                    (settings::HEALTH_CHECK, _) => "grpc",
                    (settings::BACKEND_TLS, _) => "greeter.shop:50051=greeter.example.com",
                    (_, "") => "greeter:50051=15001",
                    (_, default) => default,
                },
            )
        })
        .collect();
    let with_ca: Vec<(&str, &str)> = values
        .iter()
        .copied()
        .chain([("sidelb.io/backend-tls-ca", "secret:greeter-ca")])
        .collect();
    let review = with_annotations(job(), &with_ca);
    let answer = server.review(Proto::H1, &review).await;
    assert!(answer.allowed, "{answer:?}");
    let pod = answer.patched(&review);
    let env = resolved_env(proxy(&pod).0, &pod);
    assert_eq!(
        env.get(settings::BACKEND_TLS_CA).map(String::as_str),
        Some("/var/run/sidelb/backend-ca/ca.crt")
    );
    for (setting, (_, value)) in annotated.iter().zip(&values) {
        assert_eq!(
            env.get(setting.env).map(String::as_str),
            Some(*value),
            "{}",
            setting.env
        );
    }
    let config = parse(&env);
    assert_eq!(config.subset_size, 16);
    assert_eq!(config.health_check, sidelb_config::HealthCheck::Grpc);
    assert_eq!(config.backend_tls[0].server_name(), "greeter.example.com");
    server.stop().await;
}
