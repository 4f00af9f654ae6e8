//! `meta.k8s.io/v1` Tables, what kubectl's `get` asks for and prints.
//!
//! The real server renders columns per kind; the fake does the same for the kinds
//! sidelb works with and falls back to `Name`/`Age` (the server's default for any
//! other resource), so `kubectl get svc` reads like it would against a cluster.

use serde_json::{Value, json};

use super::meta;
use super::resources::ResourceType;

struct Column {
    name: &'static str,
    kind: &'static str,
    priority: u8,
}

const fn col(name: &'static str, kind: &'static str, priority: u8) -> Column {
    Column {
        name,
        kind,
        priority,
    }
}

fn columns(resource: &ResourceType) -> Vec<Column> {
    match resource.kind {
        "Service" => vec![
            col("Name", "string", 0),
            col("Type", "string", 0),
            col("Cluster-IP", "string", 0),
            col("External-IP", "string", 0),
            col("Port(s)", "string", 0),
            col("Age", "string", 0),
            col("Selector", "string", 1),
        ],
        "EndpointSlice" => vec![
            col("Name", "string", 0),
            col("AddressType", "string", 0),
            col("Ports", "string", 0),
            col("Endpoints", "string", 0),
            col("Age", "string", 0),
        ],
        "Namespace" => vec![
            col("Name", "string", 0),
            col("Status", "string", 0),
            col("Age", "string", 0),
        ],
        "Pod" => vec![
            col("Name", "string", 0),
            col("Ready", "string", 0),
            col("Status", "string", 0),
            col("Restarts", "string", 0),
            col("Age", "string", 0),
            col("IP", "string", 1),
            col("Node", "string", 1),
        ],
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
            vec![
                col("Name", "string", 0),
                col("Webhooks", "integer", 0),
                col("Age", "string", 0),
            ]
        }
        _ => vec![col("Name", "string", 0), col("Age", "string", 0)],
    }
}

fn text(object: &Value, pointer: &str) -> String {
    match object.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn array<'a>(object: &'a Value, pointer: &str) -> &'a [Value] {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn service_ports(object: &Value) -> String {
    let ports: Vec<String> = array(object, "/spec/ports")
        .iter()
        .map(|p| format!("{}/{}", text(p, "/port"), text(p, "/protocol")))
        .collect();
    or_none(ports.join(","))
}

fn slice_endpoints(object: &Value) -> String {
    let addresses: Vec<String> = array(object, "/endpoints")
        .iter()
        .flat_map(|e| {
            array(e, "/addresses")
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
        })
        .collect();
    match addresses.len() {
        0 => "<unset>".into(),
        n if n > 3 => format!("{} + {} more...", addresses[..3].join(","), n - 3),
        _ => addresses.join(","),
    }
}

fn cells(resource: &ResourceType, object: &Value) -> Vec<Value> {
    let name = json!(meta::name(object));
    let age = json!(meta::age(
        object
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
    ));
    match resource.kind {
        "Service" => {
            let selector = object
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|s| {
                    s.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let external = array(object, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| text(i, "/ip"))
                .collect::<Vec<_>>()
                .join(",");
            vec![
                name,
                json!(text(object, "/spec/type")),
                json!(or_none(text(object, "/spec/clusterIP"))),
                json!(or_none(external)),
                json!(service_ports(object)),
                age,
                json!(or_none(selector)),
            ]
        }
        "EndpointSlice" => {
            let ports: Vec<String> = array(object, "/ports")
                .iter()
                .map(|p| text(p, "/port"))
                .collect();
            let ports = if ports.is_empty() {
                "<unset>".to_string()
            } else {
                ports.join(",")
            };
            vec![
                name,
                json!(text(object, "/addressType")),
                json!(ports),
                json!(slice_endpoints(object)),
                age,
            ]
        }
        "Namespace" => vec![name, json!(text(object, "/status/phase")), age],
        "Pod" => {
            let total = array(object, "/spec/containers").len();
            let statuses = array(object, "/status/containerStatuses");
            let ready = statuses
                .iter()
                .filter(|s| s.get("ready") == Some(&json!(true)))
                .count();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|s| s.get("restartCount").and_then(Value::as_i64))
                .sum();
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(text(object, "/status/phase")),
                json!(restarts.to_string()),
                age,
                json!(or_none(text(object, "/status/podIP"))),
                json!(or_none(text(object, "/spec/nodeName"))),
            ]
        }
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
            vec![name, json!(array(object, "/webhooks").len()), age]
        }
        _ => vec![name, age],
    }
}

fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or(json!({}))
    })
}

/// A Table of `objects`. `headers` is false for watch events after the first, which
/// the real server sends without column definitions.
pub fn table(
    resource: &ResourceType,
    objects: &[Value],
    resource_version: u64,
    headers: bool,
) -> Value {
    let definitions: Vec<Value> = if headers {
        columns(resource)
            .iter()
            .map(|c| {
                let format = if c.name == "Name" { "name" } else { "" };
                json!({ "name": c.name, "type": c.kind, "format": format, "description": "", "priority": c.priority })
            })
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| json!({ "cells": cells(resource, o), "object": partial_metadata(o) }))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": resource_version.to_string() },
        "columnDefinitions": definitions,
        "rows": rows
    })
}

/// `PartialObjectMetadata` of one object, or the list form.
pub fn metadata_only(object: &Value) -> Value {
    partial_metadata(object)
}

pub fn metadata_list(objects: &[Value], list_metadata: Value) -> Value {
    let items: Vec<Value> = objects.iter().map(partial_metadata).collect();
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "items": items
    })
}
