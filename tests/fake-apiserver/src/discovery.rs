//! Discovery documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/GROUP[/VERSION]`,
//! and the aggregated `apidiscovery.k8s.io/v2` form of `/api` and `/apis`.
//!
//! kubectl resolves `svc`, `endpointslices` or `ns` to a group, version and resource
//! from these, and kube's `Discovery` reads them too. Both forms are generated from
//! the resource table, so they always agree with what the server routes.

use serde_json::{Value, json};

use super::resources::{self, ResourceType, VERBS};

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [ { "clientCIDR": "0.0.0.0/0", "serverAddress": server_address } ]
    })
}

fn group_object(group: &str, version: &str) -> Value {
    let gv = json!({ "groupVersion": format!("{group}/{version}"), "version": version });
    json!({ "name": group, "versions": [gv.clone()], "preferredVersion": gv })
}

fn named_groups() -> impl Iterator<Item = (&'static str, &'static str)> {
    resources::group_versions()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
}

pub fn groups() -> Value {
    let groups: Vec<Value> = named_groups().map(|(g, v)| group_object(g, v)).collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

pub fn group(name: &str) -> Option<Value> {
    let (g, v) = named_groups().find(|(g, _)| *g == name)?;
    let mut group = group_object(g, v);
    group["kind"] = json!("APIGroup");
    group["apiVersion"] = json!("v1");
    Some(group)
}

fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static ResourceType> + 'a {
    resources::RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

fn subresources(r: &ResourceType) -> Vec<(&'static str, &'static [&'static str])> {
    let mut subs: Vec<(&'static str, &'static [&'static str])> = Vec::new();
    if r.has_status {
        subs.push(("status", &["get", "patch", "update"]));
    }
    if r.plural == "namespaces" {
        subs.push(("finalize", &["update"]));
    }
    subs
}

pub fn resource_list(group: &str, version: &str) -> Value {
    let mut list = Vec::new();
    for r in in_group_version(group, version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        list.push(entry);
        for (sub, verbs) in subresources(r) {
            list.push(json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": verbs,
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list })
}

fn aggregated_group(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = in_group_version(group, version)
        .map(|r| {
            let kind = json!({ "group": r.group, "version": r.version, "kind": r.kind });
            let mut entry = json!({
                "resource": r.plural,
                "responseKind": kind,
                "scope": r.scope(),
                "singularResource": r.singular,
                "verbs": VERBS,
            });
            if !r.short_names.is_empty() {
                entry["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                entry["categories"] = json!(r.categories);
            }
            let subs: Vec<Value> = subresources(r)
                .into_iter()
                .map(|(sub, verbs)| json!({ "subresource": sub, "responseKind": kind, "verbs": verbs }))
                .collect();
            if !subs.is_empty() {
                entry["subresources"] = json!(subs);
            }
            entry
        })
        .collect();
    json!({
        "metadata": { "name": group, "creationTimestamp": null },
        "versions": [ { "version": version, "resources": resources, "freshness": "Current" } ]
    })
}

/// `/api` (`core`) or `/apis` in the aggregated `APIGroupDiscoveryList` form.
pub fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = resources::group_versions()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, v)| aggregated_group(g, v))
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items
    })
}

pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
