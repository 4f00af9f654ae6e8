//! Reading a request: which resource a path names, its query parameters, and which
//! representation the client accepts.
//!
//! Paths follow kube-apiserver's layout (`/api/v1/namespaces/NS/pods/NAME/status`,
//! `/apis/GROUP/VERSION/...`, the legacy `/watch/` prefix). The `Accept` header picks
//! between plain JSON, YAML, `Table` (kubectl's `get`), `PartialObjectMetadata` and
//! aggregated discovery, the way content negotiation works on the real server.

use std::collections::HashMap;

use super::resources::{self, ResourceType};
use super::status::ApiError;

/// What a request path names.
#[derive(Debug)]
pub enum Route {
    Version,
    Health,
    CoreGroup,
    CoreResources,
    Groups,
    Group(String),
    GroupResources(String, String),
    Resource(ResourcePath),
    Fake(String),
    /// A served group version that has no such resource: a 404 `Status`.
    NoSuchResource,
    /// Anything else: the plain-text `404 page not found`.
    NotFound,
}

#[derive(Debug, Clone)]
pub struct ResourcePath {
    pub resource: &'static ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The deprecated `/watch/` path form.
    pub watch: bool,
}

pub fn route(path: &str) -> Route {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["fake", rest @ ..] => Route::Fake(rest.join("/")),
        ["api"] => Route::CoreGroup,
        ["api", "v1"] => Route::CoreResources,
        ["api", "v1", rest @ ..] => resource_route("", "v1", rest),
        ["apis"] => Route::Groups,
        ["apis", group] if resources::group_versions().iter().any(|(g, _)| g == group) => {
            Route::Group(group.to_string())
        }
        ["apis", group, version] if resources::serves_group_version(group, version) => {
            Route::GroupResources(group.to_string(), version.to_string())
        }
        ["apis", group, version, rest @ ..] if resources::serves_group_version(group, version) => {
            resource_route(group, version, rest)
        }
        _ => Route::NotFound,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Route {
    let (watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let lookup = |plural: &str| resources::find(group, version, plural);
    let is_namespace_subresource = |s: &str| matches!(s, "status" | "finalize");
    let (resource, namespace, name, subresource) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(tail.is_empty() && is_namespace_subresource(plural)) =>
        {
            let Some(resource) = lookup(plural) else {
                return Route::NoSuchResource;
            };
            if !resource.namespaced {
                return Route::NoSuchResource;
            }
            match tail {
                [] => (resource, Some(*ns), None, None),
                [name] => (resource, Some(*ns), Some(*name), None),
                [name, sub] => (resource, Some(*ns), Some(*name), Some(*sub)),
                _ => return Route::NotFound,
            }
        }
        [plural, tail @ ..] => {
            let Some(resource) = lookup(plural) else {
                return Route::NoSuchResource;
            };
            let (name, sub) = match tail {
                [] => (None, None),
                [name] => (Some(*name), None),
                [name, sub] => (Some(*name), Some(*sub)),
                _ => return Route::NotFound,
            };
            if resource.namespaced && name.is_some() {
                return Route::NotFound;
            }
            (resource, None, name, sub)
        }
        [] => return Route::NotFound,
    };
    if let Some(sub) = subresource
        && !(resource.has_status && sub == "status")
        && !(resource.plural == "namespaces" && sub == "finalize")
    {
        return Route::NoSuchResource;
    }
    Route::Resource(ResourcePath {
        resource,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        subresource: subresource.map(str::to_string),
        watch,
    })
}

/// Decoded query parameters (the last value of a repeated key wins).
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        let mut map = HashMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(k), percent_decode(v));
        }
        Self(map)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// `true`/`1` are true, as Go's `strconv.ParseBool` reads them.
    pub fn flag(&self, key: &str) -> bool {
        matches!(
            self.get(key),
            Some("true" | "1" | "t" | "T" | "TRUE" | "True")
        )
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The representation a response is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    Table,
    PartialMetadata,
    AggregatedDiscovery,
}

/// Where a response is negotiated: resource reads allow tables and metadata, discovery
/// roots allow the aggregated form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Resource,
    DiscoveryRoot,
}

/// Picks the first acceptable media range of `Accept` (q-values are not weighed).
pub fn negotiate(accept: Option<&str>, offer: Offer) -> Result<Output, ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Output::Json);
    };
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let essence = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: HashMap<&str, &str> = parts.filter_map(|p| p.split_once('=')).collect();
        let json = matches!(
            essence.as_str(),
            "application/json" | "*/*" | "application/*"
        );
        if essence == "application/yaml" && !params.contains_key("as") {
            return Ok(Output::Yaml);
        }
        if !json {
            continue;
        }
        let group = params.get("g").copied().unwrap_or("");
        let version = params.get("v").copied().unwrap_or("");
        match params.get("as").copied() {
            None => return Ok(Output::Json),
            Some("Table")
                if offer == Offer::Resource
                    && group == "meta.k8s.io"
                    && matches!(version, "v1" | "v1beta1") =>
            {
                return Ok(Output::Table);
            }
            Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                if offer == Offer::Resource && group == "meta.k8s.io" && version == "v1" =>
            {
                return Ok(Output::PartialMetadata);
            }
            Some("APIGroupDiscoveryList")
                if offer == Offer::DiscoveryRoot
                    && group == "apidiscovery.k8s.io"
                    && version == "v2" =>
            {
                return Ok(Output::AggregatedDiscovery);
            }
            Some(_) => continue,
        }
    }
    Err(ApiError::not_acceptable())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_namespaced_and_cluster_paths() {
        let Route::Resource(p) =
            route("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/x")
        else {
            panic!()
        };
        assert_eq!(
            (p.resource.plural, p.namespace.as_deref(), p.name.as_deref()),
            ("endpointslices", Some("default"), Some("x"))
        );
        let Route::Resource(p) = route("/api/v1/namespaces/default") else {
            panic!()
        };
        assert_eq!(
            (p.resource.plural, p.name.as_deref()),
            ("namespaces", Some("default"))
        );
        let Route::Resource(p) = route("/api/v1/namespaces/default/status") else {
            panic!()
        };
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let Route::Resource(p) = route("/api/v1/watch/namespaces/a/pods") else {
            panic!()
        };
        assert!(p.watch);
        assert!(matches!(route("/api/v1/nopes"), Route::NoSuchResource));
        assert!(matches!(route("/apis/nope/v1/x"), Route::NotFound));
    }

    #[test]
    fn kubectl_accept_headers() {
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            negotiate(Some(table), Offer::Resource).unwrap(),
            Output::Table
        );
        let discovery = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(
            negotiate(Some(discovery), Offer::DiscoveryRoot).unwrap(),
            Output::AggregatedDiscovery
        );
        assert_eq!(
            negotiate(Some(discovery), Offer::Resource).unwrap(),
            Output::Json
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf"), Offer::Resource)
                .unwrap_err()
                .code,
            406
        );
    }

    #[test]
    fn query_values_are_decoded() {
        let q = Query::parse(Some(
            "labelSelector=kubernetes.io%2Fservice-name%3Dweb&watch=1&x",
        ));
        assert_eq!(
            q.get("labelSelector"),
            Some("kubernetes.io/service-name=web")
        );
        assert!(q.flag("watch"));
        assert_eq!(q.get("x"), Some(""));
        assert_eq!(Query::parse(Some("a=%zz%2")).get("a"), Some("%zz%2"));
    }
}
