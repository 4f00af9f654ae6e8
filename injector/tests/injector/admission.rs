//! Which pods get the proxy, and what the patch does to each kind of pod.

use crate::support::client::Proto;
use crate::support::reviews::{
    self, bare, env_values, job, names, proxy, with_annotations, with_labels,
};
use crate::support::{Admission, TestInjector};
use serde_json::{Value, json};

const VERSION: &str = env!("CARGO_PKG_VERSION");

async fn inject(server: &TestInjector, proto: Proto, review: &Value) -> (Admission, Value) {
    let answer = server.review(proto, review).await;
    assert_eq!(answer.uid, review["request"]["uid"].as_str().unwrap());
    assert!(answer.allowed, "{answer:?}");
    let pod = answer.patched(review);
    (answer, pod)
}

/// What the patch must leave alone: the app's containers, and everything
/// else the pod had.
fn assert_app_untouched(before: &Value, after: &Value) {
    let without_proxy = |list: &Value| -> Value {
        Value::Array(
            list.as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["name"] != "sidelb-proxy")
                .cloned()
                .collect(),
        )
    };
    for list in ["containers", "initContainers"] {
        let original = before["spec"][list].clone();
        let kept = without_proxy(&after["spec"][list]);
        if original.is_null() {
            assert_eq!(kept, json!([]), "{list}");
        } else {
            assert_eq!(kept, original, "{list} changed");
        }
    }
    for (key, value) in before["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
    {
        assert_eq!(
            &after["metadata"]["annotations"][key], value,
            "annotation {key}"
        );
    }
    assert_eq!(after["metadata"]["labels"], before["metadata"]["labels"]);
    assert_eq!(
        after["metadata"]["generateName"],
        before["metadata"]["generateName"]
    );
    assert!(
        after["metadata"]["name"].is_null(),
        "the pod has no name yet"
    );
}

#[tokio::test]
async fn bare_pod_gets_a_native_sidecar_over_both_protocols() {
    let server = TestInjector::start().await;
    for proto in Proto::BOTH {
        let review = bare();
        let (answer, pod) = inject(&server, proto, &review).await;
        assert_app_untouched(&review["request"]["object"], &pod);
        let ops = answer.patch.as_ref().unwrap();
        let paths: Vec<&str> = ops
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            ["/spec/initContainers", "/metadata/annotations"],
            "{proto:?}"
        );
        assert!(ops.as_array().unwrap().iter().all(|op| op["op"] == "add"));

        assert_eq!(names(&pod, "initContainers"), ["sidelb-proxy"]);
        assert_eq!(names(&pod, "containers"), ["web"]);
        let (sidecar, native) = proxy(&pod);
        assert!(native);
        assert_eq!(sidecar["restartPolicy"], "Always");
        assert_eq!(sidecar["image"], "registry.example/sidelb/proxy:test");
        assert_eq!(sidecar["imagePullPolicy"], "IfNotPresent");
        assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/ready");
        assert_eq!(sidecar["startupProbe"]["httpGet"]["port"], "sidelb-admin");
        assert_eq!(sidecar["readinessProbe"]["httpGet"]["path"], "/ready");
        assert_eq!(sidecar["livenessProbe"]["httpGet"]["path"], "/live");
        assert_eq!(
            sidecar["ports"],
            json!([{"name": "sidelb-admin", "containerPort": 4191, "protocol": "TCP"}])
        );
        assert_eq!(
            sidecar["resources"],
            json!({"requests": {"cpu": "10m", "memory": "20Mi"}, "limits": {"memory": "64Mi"}})
        );
        assert!(
            sidecar["volumeMounts"].is_null(),
            "automounting is on: the API server mounts the token"
        );
        let env = env_values(sidecar);
        assert_eq!(env["SIDELB_ADMIN_ADDR"], "0.0.0.0:4191");
        assert!(
            !env.contains_key("SIDELB_SHUTDOWN_GRACE"),
            "a native sidecar stops after the app"
        );
        assert!(
            !env.contains_key("SIDELB_BALANCER"),
            "unset: the proxy's default applies"
        );
        assert_eq!(
            pod["metadata"]["annotations"],
            json!({"sidelb.io/injected": VERSION})
        );
        assert!(pod["spec"]["volumes"].is_null());
    }
    server.stop().await;
}

#[tokio::test]
async fn pod_with_init_containers_annotations_and_volumes_keeps_them() {
    let server = TestInjector::start().await;
    let review = job();
    let (answer, pod) = inject(&server, Proto::H2, &review).await;
    assert_app_untouched(&review["request"]["object"], &pod);
    let paths: Vec<&str> = answer
        .patch
        .as_ref()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/spec/initContainers/0",
            "/metadata/annotations/sidelb.io~1injected"
        ]
    );
    assert_eq!(names(&pod, "initContainers"), ["sidelb-proxy", "migrate"]);
    assert_eq!(
        pod["spec"]["volumes"],
        review["request"]["object"]["spec"]["volumes"]
    );
    assert_eq!(
        pod["metadata"]["annotations"]["sidelb.io/injected"],
        VERSION
    );
    let env = env_values(proxy(&pod).0);
    assert_eq!(
        env["SIDELB_UPSTREAMS"],
        "ledger:grpc=15001,rates.pricing:50051=15002"
    );
    server.stop().await;
}

#[tokio::test]
async fn classic_sidecar_by_annotation_or_injector_default() {
    let server = TestInjector::start().await;
    let review = with_annotations(job(), &[("sidelb.io/native-sidecar", "false")]);
    let (answer, pod) = inject(&server, Proto::H1, &review).await;
    assert_app_untouched(&review["request"]["object"], &pod);
    assert_eq!(
        answer.patch.as_ref().unwrap()[0]["path"],
        "/spec/containers/0"
    );
    assert_eq!(names(&pod, "containers"), ["sidelb-proxy", "invoice"]);
    assert_eq!(names(&pod, "initContainers"), ["migrate"]);
    let (sidecar, native) = proxy(&pod);
    assert!(!native);
    assert!(sidecar["restartPolicy"].is_null());
    assert!(sidecar["startupProbe"].is_null());
    let env = env_values(sidecar);
    assert_eq!(
        (
            env["SIDELB_SHUTDOWN_GRACE"].as_str(),
            env["SIDELB_DRAIN_TIMEOUT"].as_str()
        ),
        ("10s", "18s"),
        "fitted into the pod's 30 s grace period"
    );
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(
        annotations["kubectl.kubernetes.io/default-container"], "invoice",
        "kubectl still picks the app"
    );

    let review = with_annotations(
        bare(),
        &[
            ("sidelb.io/native-sidecar", "false"),
            ("sidelb.io/shutdown-grace", "25s"),
        ],
    );
    let (_, pod) = inject(&server, Proto::H2, &review).await;
    let env = env_values(proxy(&pod).0);
    assert_eq!(env["SIDELB_SHUTDOWN_GRACE"], "25s");
    assert_eq!(env["SIDELB_DRAIN_TIMEOUT"], "3s", "what is left of 30 s");
    server.stop().await;

    let server = TestInjector::with_args(&["--native-sidecar=false"]).await;
    let (_, pod) = inject(&server, Proto::H2, &bare()).await;
    assert_eq!(names(&pod, "containers"), ["sidelb-proxy", "web"]);
    assert!(pod["spec"]["initContainers"].is_null());
    let review = with_annotations(bare(), &[("sidelb.io/native-sidecar", "true")]);
    let (_, pod) = inject(&server, Proto::H2, &review).await;
    assert_eq!(names(&pod, "initContainers"), ["sidelb-proxy"]);
    server.stop().await;
}

fn with_period(review: Value, seconds: Option<i64>) -> Value {
    let mut review = review;
    let pointer = "/request/object/spec/terminationGracePeriodSeconds";
    match seconds {
        Some(s) => reviews::set(&mut review, pointer, json!(s)),
        None => {
            let spec = review["request"]["object"]["spec"].as_object_mut();
            spec.expect("a spec")
                .remove("terminationGracePeriodSeconds");
        }
    }
    review
}

/// The sidecar's shutdown grace and drain timeout as injected.
fn shutdown_env(pod: &Value) -> (Option<String>, Option<String>) {
    let env = env_values(proxy(pod).0);
    (
        env.get("SIDELB_SHUTDOWN_GRACE").cloned(),
        env.get("SIDELB_DRAIN_TIMEOUT").cloned(),
    )
}

#[tokio::test]
async fn grace_and_drain_fit_the_pods_grace_period() {
    let server = TestInjector::start().await;
    let some = |s: &str| Some(s.to_owned());
    let cases = [
        // native, period, (grace, drain)
        (false, None, (some("10s"), some("18s"))),
        (false, Some(30), (some("10s"), some("18s"))),
        (false, Some(60), (some("10s"), some("48s"))),
        (false, Some(5), (some("1666ms"), some("1667ms"))),
        (false, Some(0), (None, some("1ms"))),
        (true, None, (None, some("28s"))),
        (true, Some(60), (None, some("30s"))),
        (true, Some(0), (None, some("1ms"))),
    ];
    for (native, period, expected) in cases {
        let native_value = native.to_string();
        let review = with_annotations(bare(), &[("sidelb.io/native-sidecar", &native_value)]);
        let review = with_period(review, period);
        let (answer, pod) = inject(&server, Proto::H2, &review).await;
        assert_eq!(shutdown_env(&pod), expected, "native {native}, {period:?}");
        assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    }
    server.stop().await;
}

#[tokio::test]
async fn given_grace_and_drain_outlasting_the_period_are_admitted_with_a_warning() {
    let server = TestInjector::start().await;
    let review = with_annotations(
        bare(),
        &[
            ("sidelb.io/native-sidecar", "false"),
            ("sidelb.io/shutdown-grace", "20s"),
            ("sidelb.io/drain-timeout", "20s"),
        ],
    );
    let (answer, pod) = inject(&server, Proto::H1, &with_period(review.clone(), None)).await;
    assert_eq!(shutdown_env(&pod), (Some("20s".into()), Some("20s".into())));
    assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
    for part in [
        "sidelb.io/shutdown-grace `20s`",
        "sidelb.io/drain-timeout `20s`",
        "terminationGracePeriodSeconds of 30s",
    ] {
        assert!(
            answer.warnings[0].contains(part),
            "{part}: {:?}",
            answer.warnings
        );
    }
    let (answer, _) = inject(&server, Proto::H1, &with_period(review, Some(45))).await;
    assert!(
        answer.warnings.is_empty(),
        "40 s fit in 45 s: {:?}",
        answer.warnings
    );
    server.stop().await;

    let server = TestInjector::with_args(&["--default-drain-timeout=40s"]).await;
    let (answer, pod) = inject(&server, Proto::H2, &bare()).await;
    assert_eq!(shutdown_env(&pod), (None, Some("40s".into())));
    assert!(
        answer
            .warnings
            .iter()
            .any(|w| w.contains("sidelb.io/drain-timeout `40s`")),
        "the injector's own default counts as given: {:?}",
        answer.warnings
    );
    server.stop().await;
}

#[tokio::test]
async fn a_backend_ca_secret_or_config_map_is_mounted_for_the_proxy() {
    let server = TestInjector::start().await;
    for (value, source, name_field) in [
        ("secret:ca", "secret", "secretName"),
        ("configmap:shop-ca", "configMap", "name"),
    ] {
        let object_name = value.split_once(':').unwrap().1;
        let review = with_annotations(
            job(),
            &[
                (
                    "sidelb.io/backend-tls",
                    "greeter,orders.shop:50051=orders.example.com",
                ),
                ("sidelb.io/backend-tls-ca", value),
            ],
        );
        let (answer, pod) = inject(&server, Proto::H2, &review).await;
        assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
        assert_app_untouched(&review["request"]["object"], &pod);
        let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
        let ca = volumes
            .iter()
            .find(|v| v["name"] == "sidelb-backend-ca")
            .expect("the CA volume");
        assert_eq!(
            ca[source],
            json!({name_field: object_name, "items": [{"key": "ca.crt", "path": "ca.crt"}], "defaultMode": 0o444}),
            "{value}"
        );
        let (sidecar, _) = proxy(&pod);
        assert_eq!(
            sidecar["volumeMounts"],
            json!([{"name": "sidelb-backend-ca", "mountPath": "/var/run/sidelb/backend-ca", "readOnly": true}])
        );
        let env = env_values(sidecar);
        assert_eq!(
            env["SIDELB_BACKEND_TLS_CA"],
            "/var/run/sidelb/backend-ca/ca.crt"
        );
        assert_eq!(
            env["SIDELB_BACKEND_TLS"],
            "greeter,orders.shop:50051=orders.example.com"
        );
        for container in pod["spec"]["containers"].as_array().unwrap() {
            assert!(
                container["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|m| m["name"] != "sidelb-backend-ca"),
                "only the proxy mounts the CA"
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn automount_off_gets_a_token_for_the_proxy_only() {
    let server = TestInjector::start().await;
    for review in [bare(), job()] {
        let mut review = review;
        reviews::set(
            &mut review,
            "/request/object/spec/automountServiceAccountToken",
            json!(false),
        );
        let (answer, pod) = inject(&server, Proto::H2, &review).await;
        assert_app_untouched(&review["request"]["object"], &pod);
        let before = review["request"]["object"]["spec"]["volumes"]
            .as_array()
            .map_or(0, Vec::len);
        let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
        assert_eq!(volumes.len(), before + 1);
        let token = volumes.last().unwrap();
        assert_eq!(token["name"], "sidelb-proxy-token");
        let sources = &token["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(
            sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        let (sidecar, _) = proxy(&pod);
        assert_eq!(
            sidecar["volumeMounts"],
            json!([{"name": "sidelb-proxy-token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}])
        );
        let paths: Vec<&str> = answer
            .patch
            .as_ref()
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["path"].as_str().unwrap())
            .collect();
        let volume_path = if before == 0 {
            "/spec/volumes"
        } else {
            "/spec/volumes/-"
        };
        assert!(paths.contains(&volume_path), "{paths:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn left_alone_when_disabled_or_already_injected() {
    let server = TestInjector::start().await;
    let disabled_label = with_labels(bare(), &[("sidelb.io/inject", "disabled")]);
    let disabled_annotation = with_annotations(job(), &[("sidelb.io/inject", "disabled")]);
    let mut classic_injected = bare();
    let sidecar = json!({"name": "sidelb-proxy", "image": "registry.example/sidelb/proxy:old"});
    reviews::set(
        &mut classic_injected,
        "/request/object/spec/containers/1",
        sidecar,
    );
    for review in [disabled_label, disabled_annotation, classic_injected] {
        for proto in Proto::BOTH {
            server
                .review(proto, &review)
                .await
                .assert_unchanged(&review);
        }
    }
    // Disabled wins over invalid annotations: the pod is not ours to judge.
    let disabled_and_bad = with_annotations(
        bare(),
        &[
            ("sidelb.io/inject", "disabled"),
            ("sidelb.io/balancer", "random"),
        ],
    );
    server
        .review(Proto::H2, &disabled_and_bad)
        .await
        .assert_unchanged(&disabled_and_bad);
    server.stop().await;
}

#[tokio::test]
async fn reinvocation_adds_nothing() {
    let server = TestInjector::start().await;
    for native in ["true", "false"] {
        let review = with_annotations(job(), &[("sidelb.io/native-sidecar", native)]);
        let (_, mut pod) = inject(&server, Proto::H2, &review).await;
        // Between the calls, built-in admission mounts the token into the new container.
        let (_, native_list) = proxy(&pod);
        let list = if native_list {
            "initContainers"
        } else {
            "containers"
        };
        let mount = json!([{"name": "kube-api-access-q8x2m", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]);
        reviews::set(&mut pod, &format!("/spec/{list}/0/volumeMounts"), mount);
        let again = reviews::readmission(review, pod, "c0ffee00-0000-4000-8000-000000000001");
        let answer = server.review(Proto::H2, &again).await;
        answer.assert_unchanged(&again);
    }
    server.stop().await;
}

#[tokio::test]
async fn anything_but_a_pod_create_is_allowed_unchanged() {
    let server = TestInjector::start().await;
    let cases = [
        reviews::update_of(bare()),
        reviews::fixture("pod-delete"),
        reviews::fixture("service-create"),
        reviews::fixture("pod-binding-create"),
    ];
    for review in &cases {
        for proto in Proto::BOTH {
            server.review(proto, review).await.assert_unchanged(review);
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn settings_come_from_annotations_over_injector_defaults() {
    let server = TestInjector::with_args(&[
        "--default-balancer=least-request",
        "--default-log=debug",
        "--proxy-cpu-limit=500m",
    ])
    .await;
    let review = with_annotations(
        bare(),
        &[
            ("sidelb.io/balancer", "round-robin"),
            ("sidelb.io/upstreams", "greeter:50051=15001"),
            ("sidelb.io/proxy-memory-limit", "128Mi"),
            ("sidelb.io/proxy-cpu-request", "0.05"),
        ],
    );
    let (_, pod) = inject(&server, Proto::H2, &review).await;
    let sidecar = proxy(&pod).0;
    let env = env_values(sidecar);
    assert_eq!(env["SIDELB_BALANCER"], "round-robin", "the annotation wins");
    assert_eq!(
        env["SIDELB_LOG"], "debug",
        "the injector's default fills in"
    );
    assert_eq!(env["SIDELB_UPSTREAMS"], "greeter:50051=15001");
    assert_eq!(
        sidecar["resources"],
        json!({"requests": {"cpu": "0.05", "memory": "20Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}})
    );
    let (_, plain) = inject(&server, Proto::H2, &bare()).await;
    assert_eq!(
        env_values(proxy(&plain).0)["SIDELB_BALANCER"],
        "least-request"
    );
    server.stop().await;
}

#[tokio::test]
async fn unknown_sidelb_annotations_are_warned_about() {
    let server = TestInjector::start().await;
    let review = with_annotations(
        bare(),
        &[("sidelb.io/balancr", "round-robin"), ("other.io/x", "y")],
    );
    let (answer, _) = inject(&server, Proto::H2, &review).await;
    assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
    assert!(
        answer.warnings[0].contains("sidelb.io/balancr"),
        "{:?}",
        answer.warnings
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_results() {
    let server = TestInjector::start().await;
    server.review(Proto::H2, &bare()).await;
    server
        .review(Proto::H2, &reviews::fixture("pod-delete"))
        .await;
    server
        .review(
            Proto::H2,
            &with_annotations(bare(), &[("sidelb.io/balancer", "x")]),
        )
        .await;
    let text = server.metrics().await;
    for line in [
        r#"sidelb_injector_admission_requests_total{result="injected",reason="native-sidecar"} 1"#,
        r#"sidelb_injector_admission_requests_total{result="skipped",reason="not-create"} 1"#,
        r#"sidelb_injector_admission_requests_total{result="refused",reason="invalid-annotation"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    server.stop().await;
}
