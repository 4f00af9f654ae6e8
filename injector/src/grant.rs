//! Read access for the proxies of injected pods, granted namespace by namespace.
//!
//! Every injected proxy lists and watches Services and EndpointSlices with its
//! pod's service account, in the namespaces of the Services it calls. Binding
//! that to every service account in the cluster would let any pod read them
//! all; instead the chart binds the proxies' ClusterRole through one
//! ClusterRoleBinding with no subjects, and the injector adds to it the group
//! `system:serviceaccounts:<ns>` of each namespace where it injects a pod,
//! before it answers that pod's admission request, so the proxy's first list
//! is already allowed and labelling a namespace stays all a user does. The
//! chart lets the injector `get` and `update` that one binding and `bind`
//! that one ClusterRole, nothing else.

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Subject};
use kube::api::{Api, PostParams};
use sidelb_config::names::injector_env;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bound on one grant, all its API calls (less when the webhook's own
/// timeout is short: see the server), so a slow API server costs the pod a
/// warning, not its admission.
pub const GRANT_TIMEOUT: Duration = Duration::from_secs(2);

/// A namespace found in the binding is looked up again after this long, so
/// that one removed by hand, or a re-created binding, is mended by the next pod.
const RECHECK: Duration = Duration::from_secs(300);

/// Updates tried when other injectors change the binding at the same time.
const TRIES: usize = 3;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Every service account of the cluster, the group the cluster-wide grant binds.
const ALL_SERVICE_ACCOUNTS: &str = "system:serviceaccounts";

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error(
        "ClusterRoleBinding {0} does not exist: install the chart with rbac.create=true, \
         or unset {env} if access is granted otherwise",
        env = injector_env::PROXY_ROLE_BINDING
    )]
    Missing(String),
    #[error("ClusterRoleBinding {binding}: {source}")]
    Api {
        binding: String,
        source: kube::Error,
    },
    #[error("the admission request names no namespace")]
    NoNamespace,
    #[error("the API server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("ClusterRoleBinding {0} changed under each of {TRIES} updates")]
    Conflict(String),
}

/// The group of every service account in `namespace`.
pub fn namespace_group(namespace: &str) -> String {
    format!("{ALL_SERVICE_ACCOUNTS}:{namespace}")
}

pub struct Grants {
    api: Api<ClusterRoleBinding>,
    binding: String,
    /// Namespaces seen in the binding, and when.
    granted: Mutex<HashMap<String, Instant>>,
    /// One update at a time: concurrent pods of one namespace wait for the
    /// first one's update and then find it done.
    updating: tokio::sync::Mutex<()>,
}

impl Grants {
    pub fn new(client: kube::Client, binding: String) -> Self {
        Grants {
            api: Api::all(client),
            binding,
            granted: Mutex::new(HashMap::new()),
            updating: tokio::sync::Mutex::new(()),
        }
    }

    pub fn binding(&self) -> &str {
        &self.binding
    }

    /// Makes sure the service accounts of `namespace` are in the binding,
    /// within `budget`.
    pub async fn ensure(&self, namespace: &str, budget: Duration) -> Result<(), GrantError> {
        if namespace.is_empty() {
            return Err(GrantError::NoNamespace);
        }
        if self.fresh(namespace) {
            return Ok(());
        }
        tokio::time::timeout(budget, self.add(namespace))
            .await
            .unwrap_or(Err(GrantError::Timeout(budget)))
    }

    async fn add(&self, namespace: &str) -> Result<(), GrantError> {
        let _one = self.updating.lock().await;
        if self.fresh(namespace) {
            return Ok(());
        }
        let api_error = |source| GrantError::Api {
            binding: self.binding.clone(),
            source,
        };
        for _ in 0..TRIES {
            let binding = self
                .api
                .get_opt(&self.binding)
                .await
                .map_err(api_error)?
                .ok_or_else(|| GrantError::Missing(self.binding.clone()))?;
            let Some(updated) = with_namespace(binding, namespace) else {
                self.remember(namespace);
                return Ok(());
            };
            match self
                .api
                .replace(&self.binding, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        namespace,
                        binding = self.binding,
                        "granted the namespace's service accounts the proxy's read access"
                    );
                    self.remember(namespace);
                    return Ok(());
                }
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(api_error(e)),
            }
        }
        Err(GrantError::Conflict(self.binding.clone()))
    }

    fn fresh(&self, namespace: &str) -> bool {
        let granted = self.granted.lock().unwrap_or_else(|e| e.into_inner());
        granted
            .get(namespace)
            .is_some_and(|at| at.elapsed() < RECHECK)
    }

    fn remember(&self, namespace: &str) {
        let mut granted = self.granted.lock().unwrap_or_else(|e| e.into_inner());
        granted.insert(namespace.to_owned(), Instant::now());
    }
}

/// The binding with the group of `namespace` added; `None` when its
/// subjects already cover that namespace.
fn with_namespace(mut binding: ClusterRoleBinding, namespace: &str) -> Option<ClusterRoleBinding> {
    let group = namespace_group(namespace);
    let subjects = binding.subjects.get_or_insert_with(Vec::new);
    let covered = subjects
        .iter()
        .any(|s| s.kind == "Group" && (s.name == group || s.name == ALL_SERVICE_ACCOUNTS));
    if covered {
        return None;
    }
    subjects.push(Subject {
        kind: "Group".into(),
        api_group: Some(RBAC_GROUP.into()),
        name: group,
        namespace: None,
    });
    Some(binding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(groups: &[&str]) -> ClusterRoleBinding {
        let subjects: Vec<_> = groups
            .iter()
            .map(|g| serde_json::json!({"kind": "Group", "apiGroup": RBAC_GROUP, "name": g}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sidelb-proxy", "resourceVersion": "7"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "sidelb-proxy"},
            "subjects": subjects,
        }))
        .unwrap()
    }

    fn groups(binding: &ClusterRoleBinding) -> Vec<&str> {
        let subjects = binding.subjects.iter().flatten();
        subjects.map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn a_new_namespace_is_added_as_its_group_keeping_the_others() {
        let mut empty = binding(&[]);
        empty.subjects = None;
        let added = with_namespace(empty, "shop").unwrap();
        assert_eq!(groups(&added), ["system:serviceaccounts:shop"]);
        assert_eq!(added.metadata.resource_version.as_deref(), Some("7"));

        let added = with_namespace(binding(&["system:serviceaccounts:web"]), "shop").unwrap();
        assert_eq!(
            groups(&added),
            ["system:serviceaccounts:web", "system:serviceaccounts:shop"]
        );
        let subject = &added.subjects.unwrap()[1];
        assert_eq!(subject.api_group.as_deref(), Some(RBAC_GROUP));
        assert_eq!(subject.namespace, None);
    }

    #[test]
    fn a_namespace_already_covered_changes_nothing() {
        assert!(with_namespace(binding(&["system:serviceaccounts:shop"]), "shop").is_none());
        assert!(with_namespace(binding(&["system:serviceaccounts"]), "shop").is_none());
        // A service account of that name is not the namespace's group.
        let mut account = binding(&[]);
        account.subjects = Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "system:serviceaccounts:shop".into(),
            namespace: Some("shop".into()),
            api_group: None,
        }]);
        assert!(with_namespace(account, "shop").is_some());
    }
}
