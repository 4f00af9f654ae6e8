//! The resource types the fake API server serves.
//!
//! The store is generic over objects; this table is the only place that knows about
//! kinds. It drives discovery documents, URL routing, name validation and which
//! built-in behaviours (status subresource, generation, delete answer) apply, so
//! adding a resource is one entry here.

/// One resource type as kube-apiserver knows it (an `APIResource` plus storage habits).
#[derive(Debug)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Whether `<plural>/status` exists; its updates touch only `.status` and the main
    /// resource's updates leave `.status` alone.
    pub has_status: bool,
    /// `metadata.generation` starts at 1 and grows when anything but metadata/status changes.
    pub tracks_generation: bool,
    /// DELETE answers with the object rather than a `Status` of success.
    pub returns_deleted_object: bool,
    pub name_rule: NameRule,
    /// Field selector labels besides `metadata.name` and `metadata.namespace`.
    pub field_labels: &'static [&'static str],
}

/// Which DNS rule names of a resource follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    Subdomain,
    Label1123,
    Label1035,
}

pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `services` or `endpointslices.discovery.k8s.io`, as error messages name resources.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn scope(&self) -> &'static str {
        if self.namespaced {
            "Namespaced"
        } else {
            "Cluster"
        }
    }

    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name"
            || (self.namespaced && field == "metadata.namespace")
            || self.field_labels.contains(&field)
    }
}

const fn resource(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
) -> ResourceType {
    ResourceType {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        short_names: &[],
        categories: &[],
        has_status: false,
        tracks_generation: false,
        returns_deleted_object: false,
        name_rule: NameRule::Subdomain,
        field_labels: &[],
    }
}

const ALL: &[&str] = &["all"];

pub static RESOURCES: &[ResourceType] = &[
    ResourceType {
        short_names: &["ns"],
        has_status: true,
        returns_deleted_object: true,
        name_rule: NameRule::Label1123,
        field_labels: &["status.phase"],
        ..resource("", "v1", "Namespace", "namespaces", "namespace", false)
    },
    ResourceType {
        short_names: &["po"],
        categories: ALL,
        has_status: true,
        returns_deleted_object: true,
        field_labels: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ..resource("", "v1", "Pod", "pods", "pod", true)
    },
    ResourceType {
        short_names: &["svc"],
        categories: ALL,
        has_status: true,
        returns_deleted_object: true,
        name_rule: NameRule::Label1035,
        ..resource("", "v1", "Service", "services", "service", true)
    },
    ResourceType {
        short_names: &["ep"],
        ..resource("", "v1", "Endpoints", "endpoints", "endpoints", true)
    },
    ResourceType {
        short_names: &["cm"],
        ..resource("", "v1", "ConfigMap", "configmaps", "configmap", true)
    },
    ResourceType {
        field_labels: &["type"],
        ..resource("", "v1", "Secret", "secrets", "secret", true)
    },
    ResourceType {
        short_names: &["sa"],
        ..resource(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            "serviceaccount",
            true,
        )
    },
    ResourceType {
        short_names: &["ev"],
        ..resource("", "v1", "Event", "events", "event", true)
    },
    ResourceType {
        short_names: &["no"],
        has_status: true,
        field_labels: &["spec.unschedulable"],
        ..resource("", "v1", "Node", "nodes", "node", false)
    },
    ResourceType {
        tracks_generation: true,
        ..resource(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            "endpointslice",
            true,
        )
    },
    ResourceType {
        tracks_generation: true,
        ..resource(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            "mutatingwebhookconfiguration",
            false,
        )
    },
    ResourceType {
        tracks_generation: true,
        ..resource(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            "validatingwebhookconfiguration",
            false,
        )
    },
    ResourceType {
        short_names: &["deploy"],
        categories: ALL,
        has_status: true,
        tracks_generation: true,
        ..resource(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            "deployment",
            true,
        )
    },
    ResourceType {
        short_names: &["rs"],
        categories: ALL,
        has_status: true,
        tracks_generation: true,
        ..resource(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            "replicaset",
            true,
        )
    },
    ResourceType {
        short_names: &["sts"],
        categories: ALL,
        has_status: true,
        tracks_generation: true,
        ..resource(
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            "statefulset",
            true,
        )
    },
    ResourceType {
        short_names: &["ds"],
        categories: ALL,
        has_status: true,
        tracks_generation: true,
        ..resource("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true)
    },
    resource(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        true,
    ),
    ResourceType {
        short_names: &["pdb"],
        has_status: true,
        tracks_generation: true,
        ..resource(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            "poddisruptionbudget",
            true,
        )
    },
    resource(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        "role",
        true,
    ),
    resource(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        true,
    ),
    resource(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        false,
    ),
    resource(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
    ),
];

/// The resource served at `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of an object's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

/// Whether any resource is served under `group/version` (so the path is not a 404 page).
pub fn serves_group_version(group: &str, version: &str) -> bool {
    RESOURCES
        .iter()
        .any(|r| r.group == group && r.version == version)
}

/// The API groups in discovery order (core first), each with its one version.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

pub fn namespaces() -> &'static ResourceType {
    &RESOURCES[0]
}
