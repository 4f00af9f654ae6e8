//! The ConfigMaps and Secrets a pod refers to, read from the API server
//! each time they are needed (env at container start, volumes at every
//! resync), so that changes reach volumes as the kubelet's sync does.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};
use std::collections::BTreeMap;

/// Key → bytes of one ConfigMap or Secret.
pub type Data = BTreeMap<String, Vec<u8>>;

#[derive(Clone)]
pub struct Objects {
    client: Client,
}

impl Objects {
    pub fn new(client: Client) -> Objects {
        Objects { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `data` and `binaryData` of ConfigMap `namespace/name`; `None` if it does not exist.
    pub async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<Data>> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let found = api
            .get_opt(name)
            .await
            .with_context(|| format!("reading ConfigMap {namespace}/{name}"))?;
        Ok(found.map(|cm| {
            let mut data: Data = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            for (k, v) in cm.binary_data.unwrap_or_default() {
                data.insert(k, v.0);
            }
            data
        }))
    }

    /// `data` of Secret `namespace/name`; `None` if it does not exist.
    pub async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Data>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let found = api
            .get_opt(name)
            .await
            .with_context(|| format!("reading Secret {namespace}/{name}"))?;
        Ok(found.map(|secret| {
            let mut data: Data = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in secret.string_data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            data
        }))
    }
}
