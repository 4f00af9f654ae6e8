//! The agent's Node objects: registered with a Ready condition, addresses,
//! capacity and labels (`kubernetes.io/hostname`, `topology.kubernetes.io/zone`
//! when given), then kept alive as the kubelet does, by renewing a Lease in
//! `kube-node-lease` and re-posting the Ready condition.

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::net::Ipv4Addr;
use std::time::Duration;

/// How often the Lease is renewed and the Ready condition re-posted.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
const LEASE_SECONDS: i32 = 40;
/// Pods one node accepts (the kubelet's default).
const MAX_PODS: u32 = 110;

/// One Node the agent plays the kubelet for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub zone: Option<String>,
}

impl NodeSpec {
    /// `NAME` or `NAME:ZONE`.
    pub fn parse(text: &str) -> Result<NodeSpec> {
        let (name, zone) = match text.split_once(':') {
            Some((name, zone)) => (name, Some(zone.to_owned())),
            None => (text, None),
        };
        anyhow::ensure!(
            !name.is_empty(),
            "node {text:?}: the name is empty (give NAME or NAME:ZONE)"
        );
        Ok(NodeSpec {
            name: name.to_owned(),
            zone,
        })
    }

    pub fn labels(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut labels = serde_json::Map::new();
        labels.insert("kubernetes.io/hostname".into(), json!(self.name));
        labels.insert("kubernetes.io/os".into(), json!("linux"));
        labels.insert(
            "kubernetes.io/arch".into(),
            json!(
                std::env::consts::ARCH
                    .replace("x86_64", "amd64")
                    .replace("aarch64", "arm64")
            ),
        );
        if let Some(zone) = &self.zone {
            labels.insert("topology.kubernetes.io/zone".into(), json!(zone));
        }
        labels
    }
}

/// Creates the Node (or takes over an existing one of that name) and posts its status.
pub async fn register(client: &Client, spec: &NodeSpec, address: Ipv4Addr) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": spec.name, "labels": spec.labels() },
    }))?;
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = json!({ "metadata": { "labels": spec.labels() } });
            api.patch(&spec.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Err(err) => return Err(err).with_context(|| format!("registering node {}", spec.name)),
    }
    post_status(client, spec, address).await
}

/// The Ready condition, addresses, capacity; and the Lease.
pub async fn post_status(client: &Client, spec: &NodeSpec, address: Ipv4Addr) -> Result<()> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let capacity = json!({
        "cpu": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).to_string(),
        "memory": "8Gi",
        "pods": MAX_PODS.to_string(),
    });
    let status = json!({
        "status": {
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "sidelb-node-agent is posting ready status",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }],
            "addresses": [
                { "type": "InternalIP", "address": address.to_string() },
                { "type": "Hostname", "address": spec.name },
            ],
            "capacity": capacity,
            "allocatable": capacity,
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": "", "osImage": "sidelb-node-agent",
                "containerRuntimeVersion": "sidelb-node-agent://0",
                "kubeletVersion": "v0.0.0-sidelb-node-agent", "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
            },
        }
    });
    let api: Api<Node> = Api::all(client.clone());
    api.patch_status(&spec.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("posting the status of node {}", spec.name))?;
    renew_lease(client, &spec.name).await
}

async fn renew_lease(client: &Client, node: &str) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(node.to_owned()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_owned()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(now),
            ..Default::default()
        }),
    };
    let params = PatchParams::apply("sidelb-node-agent").force();
    let mut lease = serde_json::to_value(&lease)?;
    lease["apiVersion"] = json!("coordination.k8s.io/v1");
    lease["kind"] = json!("Lease");
    api.patch(node, &params, &Patch::Apply(&lease))
        .await
        .with_context(|| format!("renewing the Lease of node {node}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_named_with_an_optional_zone() {
        let plain = NodeSpec::parse("node-a").expect("name");
        assert_eq!(plain.zone, None);
        let zoned = NodeSpec::parse("node-b:zone-1").expect("name:zone");
        assert_eq!(zoned.zone.as_deref(), Some("zone-1"));
        assert_eq!(zoned.labels()["topology.kubernetes.io/zone"], "zone-1");
        assert!(NodeSpec::parse(":zone").is_err());
    }
}
