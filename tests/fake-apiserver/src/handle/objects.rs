//! Objects, read and written by the test directly rather than through a client.
//!
//! Writes take the server's write path (defaults, validation, resourceVersions, watch
//! events) but not admission webhooks; create through a client to exercise those.
//! Objects are named by `apiVersion` and `kind`, as in a manifest; a namespaced kind
//! with no namespace given lives in `default`.
//!
//! [`FakeApiServer::route_service`] stands in for a Service's endpoints: the server
//! runs no Pods, so a webhook named by Service reference is reached at the address the
//! test gives.

use std::net::SocketAddr;

use serde_json::Value;

use super::super::crud;
use super::super::delete;
use super::super::meta;
use super::super::resources::{self, ResourceType};
use super::super::status::ApiError;
use super::FakeApiServer;

impl FakeApiServer {
    /// Creates an object (`apiVersion`, `kind`, `metadata.namespace` or `default`).
    pub fn create(&self, object: Value) -> Result<Value, ApiError> {
        crud::create_direct(&self.shared, object)
    }

    /// Replaces an object (conditionally, if it carries a resourceVersion).
    pub fn replace(&self, object: Value) -> Result<Value, ApiError> {
        crud::replace_direct(&self.shared, object)
    }

    /// Creates the object or replaces whatever is stored under its name.
    pub fn apply(&self, mut object: Value) -> Result<Value, ApiError> {
        meta::metadata_mut(&mut object).remove("resourceVersion");
        match crud::create_direct(&self.shared, object.clone()) {
            Err(err) if err.reason == "AlreadyExists" => crud::replace_direct(&self.shared, object),
            other => other,
        }
    }

    /// Applies a JSON merge patch to a stored object.
    pub fn patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        merge_patch: &Value,
    ) -> Result<Value, ApiError> {
        let resource = Self::resource(api_version, kind)?;
        crud::merge_patch_direct(
            &self.shared,
            resource,
            Self::namespace(resource, namespace),
            name,
            merge_patch,
        )
    }

    /// Deletes an object (only marks it, if it has finalizers).
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let resource = Self::resource(api_version, kind)?;
        delete::delete_direct(
            &self.shared,
            resource,
            Self::namespace(resource, namespace),
            name,
        )
    }

    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let resource = Self::resource(api_version, kind).ok()?;
        self.shared
            .store
            .get(resource, Self::namespace(resource, namespace), name)
    }

    /// Objects of a kind, in one namespace or (with `None`) all.
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        match Self::resource(api_version, kind) {
            Ok(resource) => self.shared.store.list(resource, namespace).0,
            Err(_) => Vec::new(),
        }
    }

    fn resource(api_version: &str, kind: &str) -> Result<&'static ResourceType, ApiError> {
        resources::by_kind(api_version, kind).ok_or_else(|| {
            ApiError::bad_request(format!(
                "no kind {kind:?} is registered for version {api_version:?}"
            ))
        })
    }

    fn namespace<'a>(resource: &ResourceType, namespace: Option<&'a str>) -> &'a str {
        match (resource.namespaced, namespace) {
            (false, _) => "",
            (true, Some(ns)) => ns,
            (true, None) => "default",
        }
    }

    /// Sends webhook calls for Service `namespace/name:port` to `addr`.
    pub fn route_service(&self, namespace: &str, name: &str, port: u16, addr: SocketAddr) {
        if let Ok(mut services) = self.shared.webhook_services.lock() {
            services.insert((namespace.to_string(), name.to_string(), port), addr);
        }
    }
}
