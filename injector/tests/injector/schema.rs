//! Every patched pod is a valid Kubernetes 1.33 Pod (strict schema, through
//! kubernetes-validate), and the proxy passes Pod Security `restricted`.

use crate::support::TestInjector;
use crate::support::client::Proto;
use crate::support::kube_validate;
use crate::support::pod_security;
use crate::support::reviews::{bare, job, proxy, set, with_annotations};
use serde_json::{Value, json};

fn automount_off(mut review: Value) -> Value {
    set(
        &mut review,
        "/request/object/spec/automountServiceAccountToken",
        json!(false),
    );
    review
}

#[tokio::test]
async fn every_patched_pod_is_valid_and_the_proxy_is_restricted() {
    let server = TestInjector::with_args(&["--default-balancer=least-request"]).await;
    let classic = [("sidelb.io/native-sidecar", "false")];
    let tuned = [
        (
            "sidelb.io/upstreams",
            "greeter.default:50051=15001,orders.shop:grpc=15002",
        ),
        ("sidelb.io/proxy-cpu-request", "50m"),
        ("sidelb.io/proxy-cpu-limit", "1"),
        ("sidelb.io/proxy-memory-request", "32Mi"),
        ("sidelb.io/proxy-memory-limit", "128Mi"),
        ("sidelb.io/shutdown-grace", "5s"),
    ];
    let cases = [
        ("bare, native", bare()),
        ("bare, classic", with_annotations(bare(), &classic)),
        ("job, native", job()),
        ("job, classic", with_annotations(job(), &classic)),
        ("bare, automount off", automount_off(bare())),
        (
            "job, automount off, classic",
            automount_off(with_annotations(job(), &classic)),
        ),
        ("bare, tuned", with_annotations(bare(), &tuned)),
    ];
    let mut pods = Vec::new();
    for (name, review) in cases {
        let answer = server.review(Proto::H2, &review).await;
        let pod = answer.patched(&review);
        let violations = pod_security::violations(proxy(&pod).0, &pod);
        assert!(violations.is_empty(), "{name}: {violations:#?}");
        pods.push((name.to_owned(), pod));
    }
    kube_validate::assert_valid(&pods);
    server.stop().await;
}

#[test]
fn the_validators_catch_what_they_check() {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "x-"},
        "spec": {
            "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
            "containers": [{
                "name": "bad",
                "image": "x",
                "ports": [{"containerPort": 80, "hostPort": 80}],
                "volumeMounts": [{"name": "host", "mountPath": "/host"}],
                "securityContext": {"privileged": true, "runAsUser": 0, "capabilities": {"add": ["SYS_ADMIN"]}}
            }]
        }
    });
    let found = pod_security::violations(&pod["spec"]["containers"][0], &pod);
    for rule in [
        "Privileged",
        "Capabilities (baseline)",
        "Host Ports",
        "Privilege Escalation",
        "Running as Non-root:",
        "Running as Non-root user",
        "Seccomp (restricted)",
        "Capabilities (restricted): must drop ALL",
        "Volume Types",
    ] {
        assert!(
            found.iter().any(|v| v.starts_with(rule)),
            "{rule} not in {found:#?}"
        );
    }
    let mut typo = pod.clone();
    set(
        &mut typo,
        "/spec/containers/0/restartPolicyy",
        json!("Always"),
    );
    let result =
        std::panic::catch_unwind(|| kube_validate::assert_valid(&[("typo".to_owned(), typo)]));
    let message = result.expect_err("strict validation refuses unknown fields");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("restartPolicyy"), "{message}");
}
