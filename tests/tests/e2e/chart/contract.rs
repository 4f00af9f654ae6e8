//! The chart's copies of the proxy's settings are generated from
//! `sidelb_config::SETTINGS` and checked here, so they cannot drift:
//!
//! - `charts/sidelb/files/proxy-settings.json`: every setting a pod annotation
//!   can set, with the injector variable that sets its default for all pods.
//!   The chart's templates read it to turn `proxy.settings` into those
//!   variables; its tests check `values.schema.json` against it.
//! - The annotation table in `charts/sidelb/README.md`.
//!
//! Run with `SIDELB_UPDATE_CHART=1` to rewrite both.

use serde_json::{Value, json};
use sidelb_config::names;
use sidelb_config::settings::{self, SETTINGS};
use std::path::PathBuf;

const BEGIN: &str = "<!-- annotations:begin -->";
const END: &str = "<!-- annotations:end -->";

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/sidelb")
}

fn settings_json() -> String {
    let settings: Vec<Value> = SETTINGS
        .iter()
        .filter_map(|s| {
            Some(json!({
                "annotation": s.annotation?,
                "env": s.env,
                "injectorEnv": s.injector_default_env()?,
                "default": s.default,
                "accepted": s.kind.accepted(),
                "help": s.help,
            }))
        })
        .collect();
    let doc = json!({
        "comment": "Generated from sidelb-config's SETTINGS by tests/tests/e2e/chart/contract.rs; do not edit: run `SIDELB_UPDATE_CHART=1 cargo test -p sidelb-tests --test e2e -- chart::contract`.",
        "settings": settings,
    });
    serde_json::to_string_pretty(&doc).unwrap() + "\n"
}

/// The chart value that sets the default of an annotated setting for every
/// pod, where it has a dedicated one (the others are `proxy.settings.<name>`).
fn chart_value(annotation: &str) -> Option<&'static str> {
    match annotation {
        "sidelb.io/balancer" => Some("proxy.balancer"),
        "sidelb.io/log-level" => Some("proxy.logLevel"),
        // Per workload by nature: no chart-wide default.
        "sidelb.io/upstreams" | "sidelb.io/backend-tls" => Some(""),
        _ => None,
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn annotation_table() -> String {
    let mut out = String::from(
        "| annotation | default | chart-wide default | accepted values | meaning |\n|---|---|---|---|---|\n",
    );
    let mut row = |annotation: &str, default: &str, chart: &str, accepted: &str, help: &str| {
        out.push_str(&format!(
            "| `{annotation}` | {default} | {chart} | {} | {} |\n",
            cell(accepted),
            cell(help)
        ));
    };
    let code = |v: &str| {
        if v.is_empty() {
            "empty".to_owned()
        } else {
            format!("`{v}`")
        }
    };

    // Read by the injector itself.
    row(
        names::INJECT,
        "—",
        "—",
        &format!("`{}`", names::INJECT_DISABLED),
        "on a pod (label or annotation): never inject it. As a pod label, `enabled` selects the pod in any namespace; as a namespace label, `enabled` selects every pod in it and `disabled` none",
    );
    row(
        names::NATIVE_SIDECAR,
        "`true`",
        "`proxy.nativeSidecar`",
        "`true` or `false`",
        "`true`: the proxy is a native sidecar, started and ready before the app; `false`: a regular first container",
    );
    for (annotation, value, what) in [
        (
            names::PROXY_CPU_REQUEST,
            "proxy.resources.requests.cpu",
            "CPU request",
        ),
        (
            names::PROXY_MEMORY_REQUEST,
            "proxy.resources.requests.memory",
            "memory request",
        ),
        (
            names::PROXY_CPU_LIMIT,
            "proxy.resources.limits.cpu",
            "CPU limit",
        ),
        (
            names::PROXY_MEMORY_LIMIT,
            "proxy.resources.limits.memory",
            "memory limit",
        ),
    ] {
        row(
            annotation,
            "chart value",
            &format!("`{value}`"),
            "a Kubernetes quantity (`100m`, `64Mi`); empty: none",
            &format!("the proxy container's {what}"),
        );
    }

    // The proxy's own settings.
    for s in SETTINGS {
        let Some(annotation) = s.annotation else {
            continue;
        };
        let chart = match chart_value(annotation) {
            Some("") => "—".to_owned(),
            Some(value) => format!("`{value}`"),
            None => format!(
                "`proxy.settings.{}`",
                annotation.trim_start_matches("sidelb.io/")
            ),
        };
        let help = format!("{} (proxy variable `{}`)", s.help, s.env);
        row(
            annotation,
            &code(s.default),
            &chart,
            &s.kind.accepted(),
            &help,
        );
    }

    row(
        names::BACKEND_TLS_CA,
        "—",
        "—",
        "`secret:NAME` or `configmap:NAME` (of the pod's namespace)",
        &format!(
            "the CAs of the backends in `sidelb.io/backend-tls`: the object's key `{key}` is mounted read-only into the proxy at `{dir}/{key}` and set as `{env}`; required with `sidelb.io/backend-tls`",
            key = names::BACKEND_CA_KEY,
            dir = names::BACKEND_CA_DIR,
            env = settings::BACKEND_TLS_CA
        ),
    );

    // Written by the injector.
    row(
        names::INJECTED,
        "—",
        "—",
        "set by the injector",
        "the injector's version, on every pod it added the proxy to",
    );
    out
}

/// Compares `path`'s `[begin, end)` section with `expected`, or rewrites it.
fn check(path: &PathBuf, current: &str, expected: &str, updated: impl FnOnce() -> String) {
    if current == expected {
        return;
    }
    if std::env::var_os("SIDELB_UPDATE_CHART").is_some() {
        std::fs::write(path, updated()).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
    } else {
        panic!(
            "{} is out of date with sidelb-config's SETTINGS; run `SIDELB_UPDATE_CHART=1 cargo test -p sidelb-tests --test e2e -- chart::contract`. Expected:\n{expected}",
            path.display()
        );
    }
}

#[test]
fn chart_settings_file_matches_settings() {
    let path = chart_dir().join("files/proxy-settings.json");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    let expected = settings_json();
    check(&path, &current, &expected, || expected.clone());
}

#[test]
fn chart_readme_lists_every_annotation() {
    let path = chart_dir().join("README.md");
    let readme = std::fs::read_to_string(&path).expect("charts/sidelb/README.md");
    let (Some(start), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("charts/sidelb/README.md has no {BEGIN} … {END} section");
    };
    let current = &readme[start + BEGIN.len()..end];
    let expected = format!("\n{}", annotation_table());
    check(&path, current, &expected, || {
        format!("{}{BEGIN}{expected}{}", &readme[..start], &readme[end..])
    });
}

#[test]
fn injector_defaults_follow_the_rule_the_chart_relies_on() {
    // The chart sets SIDELB_DEFAULT_BALANCER and SIDELB_DEFAULT_LOG by name.
    let by = |env| {
        settings::Setting::by_env(env)
            .unwrap()
            .injector_default_env()
    };
    assert_eq!(
        by(settings::BALANCER).as_deref(),
        Some("SIDELB_DEFAULT_BALANCER")
    );
    assert_eq!(by(settings::LOG).as_deref(), Some("SIDELB_DEFAULT_LOG"));
    for annotation in [
        "sidelb.io/balancer",
        "sidelb.io/log-level",
        "sidelb.io/upstreams",
    ] {
        assert!(
            settings::Setting::by_annotation(annotation).is_some(),
            "{annotation} is no longer a setting"
        );
    }
}
