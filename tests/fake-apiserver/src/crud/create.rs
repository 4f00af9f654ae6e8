//! Creating an object: POST to a collection, and the test handle's create.
//!
//! Before admission the object gets its type and namespace checked and the scheme's
//! defaults; mutating webhooks then see it as kube-apiserver would send it. After
//! admission come the system fields (`generateName`, uid, creationTimestamp, a Service's
//! clusterIP), validation, and the store, which answers 409 `AlreadyExists`. A dry run
//! stops short of the store.

use std::sync::Arc;

use http::StatusCode;
use serde_json::Value;

use super::super::Shared;
use super::super::admission::{self, Operation};
use super::super::defaults;
use super::super::meta;
use super::super::request::{Query, ResourcePath};
use super::super::resources::ResourceType;
use super::super::status::ApiError;
use super::checks::{
    check_namespace, check_type, ensure_namespace_accepts, invalid_unless_empty, resource_of,
};
use super::{Answer, dry_run};

/// The end of a create: system fields, validation, store.
fn commit_create(
    shared: &Shared,
    resource: &'static ResourceType,
    namespace: &str,
    mut object: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    defaults::prepare_for_create(resource, &mut object, &shared.cluster_ips);
    invalid_unless_empty(resource, &object)?;
    if dry_run {
        if shared
            .store
            .get(resource, namespace, meta::name(&object))
            .is_some()
        {
            return Err(ApiError::already_exists(resource, meta::name(&object)));
        }
        return Ok(object);
    }
    shared.store.create(resource, namespace, object)
}

/// Everything before admission of a create; returns the object and its namespace.
fn prepare_create(
    shared: &Shared,
    resource: &'static ResourceType,
    url_namespace: Option<&str>,
    mut object: Value,
) -> Result<(Value, String), ApiError> {
    check_type(resource, &mut object)?;
    let namespace = check_namespace(resource, url_namespace, &mut object)?;
    ensure_namespace_accepts(shared, resource, &namespace, meta::name(&object))?;
    defaults::apply_scheme_defaults(resource, &mut object);
    Ok((object, namespace))
}

pub async fn create(
    shared: &Arc<Shared>,
    path: &ResourcePath,
    query: &Query,
    object: Value,
) -> Result<Answer, ApiError> {
    if path.name.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    create_object(
        shared,
        path.resource,
        path.namespace.as_deref(),
        object,
        dry_run(query),
    )
    .await
}

pub(super) async fn create_object(
    shared: &Arc<Shared>,
    resource: &'static ResourceType,
    url_namespace: Option<&str>,
    object: Value,
    dry_run: bool,
) -> Result<Answer, ApiError> {
    let (object, namespace) = prepare_create(shared, resource, url_namespace, object)?;
    let attributes = admission::Attributes {
        resource,
        subresource: None,
        namespace: &namespace,
        operation: Operation::Create,
        old: None,
        dry_run,
    };
    let admitted = admission::mutate(shared, &attributes, object).await?;
    let stored = commit_create(shared, resource, &namespace, admitted.object, dry_run)?;
    Ok(Answer {
        code: StatusCode::CREATED,
        object: stored,
        warnings: admitted.warnings,
    })
}

pub fn create_direct(shared: &Shared, object: Value) -> Result<Value, ApiError> {
    let resource = resource_of(&object)?;
    let namespace = meta::namespace(&object).unwrap_or("default").to_string();
    let (mut object, namespace) = prepare_create(shared, resource, Some(&namespace), object)?;
    if resource.kind == "Pod" && shared.settings.service_account_admission {
        defaults::service_account_admission(&mut object);
    }
    commit_create(shared, resource, &namespace, object, false)
}
