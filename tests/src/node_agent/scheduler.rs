//! A minimal scheduler for the agent's nodes (there is no kube-scheduler):
//! each pod without a node, for the default scheduler, is bound through the
//! `binding` subresource to the agent's node whose labels match its
//! `nodeSelector` and that runs the fewest pods. Affinity, taints and
//! resources are not considered.

use super::node::NodeSpec;
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// The node for `pod` among `nodes`, given each node's pod count.
pub fn choose<'a>(
    pod: &Pod,
    nodes: &'a [NodeSpec],
    pods_on: impl Fn(&str) -> usize,
) -> Option<&'a NodeSpec> {
    let selector = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_selector.clone())
        .unwrap_or_default();
    nodes
        .iter()
        .filter(|node| {
            let labels = node.labels();
            selector
                .iter()
                .all(|(k, v)| labels.get(k).and_then(|l| l.as_str()) == Some(v.as_str()))
        })
        .min_by_key(|node| pods_on(&node.name))
}

/// Binds `pod` to `node`.
pub async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<()> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().context("pod without a name")?;
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            uid: None,
            ..Default::default()
        },
        target: ObjectReference {
            kind: Some("Node".into()),
            api_version: Some("v1".into()),
            name: Some(node.to_owned()),
            ..Default::default()
        },
    };
    let _: serde_json::Value = api
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await
        .with_context(|| format!("binding pod {namespace}/{name} to node {node}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    #[test]
    fn the_matching_node_with_fewest_pods_wins() {
        let nodes = vec![
            NodeSpec::parse("a:zone-1").expect("node"),
            NodeSpec::parse("b:zone-1").expect("node"),
            NodeSpec::parse("c:zone-2").expect("node"),
        ];
        let counts = |name: &str| match name {
            "a" => 3,
            "b" => 1,
            _ => 0,
        };
        let any = Pod::default();
        assert_eq!(
            choose(&any, &nodes, counts).map(|n| n.name.as_str()),
            Some("c")
        );
        let zone_1 = Pod {
            spec: Some(PodSpec {
                node_selector: Some(
                    [(
                        "topology.kubernetes.io/zone".to_owned(),
                        "zone-1".to_owned(),
                    )]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            choose(&zone_1, &nodes, counts).map(|n| n.name.as_str()),
            Some("b")
        );
        let nowhere = Pod {
            spec: Some(PodSpec {
                node_selector: Some([("disk".to_owned(), "ssd".to_owned())].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(choose(&nowhere, &nodes, counts).is_none());
    }
}
