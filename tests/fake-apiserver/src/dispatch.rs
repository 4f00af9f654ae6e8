//! One request, start to end: authentication, injected faults, accounting, routing to
//! discovery or to a resource verb, and every failure turned into a `Status`.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::Shared;
use super::crud;
use super::delete;
use super::discovery;
use super::faults::Mode;
use super::list_watch;
use super::request::{self, Offer, Output, Query, ResourcePath, Route};
use super::response::{self, Body};
use super::status::ApiError;

const MAX_BODY: usize = 3 * 1024 * 1024;

pub async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let method = request.method().clone();
    let target = request
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    let response = serve(&shared, request)
        .await
        .unwrap_or_else(|err| response::error(&err));
    tracing::info!(%method, %target, status = response.status().as_u16(), "request");
    Ok(response)
}

fn accept(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
}

async fn serve(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = request.into_parts();
    let route = request::route(parts.uri.path());
    let query = Query::parse(parts.uri.query());
    match &route {
        Route::Health => return Ok(response::text(StatusCode::OK, "ok")),
        Route::Fake(command) => return control(shared, command, &query),
        _ => {}
    }
    authenticate(shared, &parts)?;
    shared.stats.count_api_request();
    if shared.faults.pass().await == Mode::Fail {
        return Err(ApiError::internal(
            "injected fault: the fake API server fails every request",
        ));
    }
    let ok = |value: &serde_json::Value| Ok(response::json(StatusCode::OK, value));
    match route {
        Route::Version => ok(&discovery::version()),
        Route::CoreGroup | Route::Groups => {
            let core = matches!(route, Route::CoreGroup);
            if request::negotiate(accept(&parts), Offer::DiscoveryRoot)?
                == Output::AggregatedDiscovery
            {
                let body = discovery::aggregated(core);
                return Ok(response::json_as(
                    StatusCode::OK,
                    &body,
                    discovery::AGGREGATED_CONTENT_TYPE,
                ));
            }
            if core {
                let address = shared
                    .server_address
                    .lock()
                    .map(|a| a.clone())
                    .unwrap_or_default();
                ok(&discovery::core_versions(&address))
            } else {
                ok(&discovery::groups())
            }
        }
        Route::CoreResources => ok(&discovery::resource_list("", "v1")),
        Route::Group(group) => {
            discovery::group(&group).map_or_else(|| Err(ApiError::no_such_resource()), |g| ok(&g))
        }
        Route::GroupResources(group, version) => ok(&discovery::resource_list(&group, &version)),
        Route::NoSuchResource => Err(ApiError::no_such_resource()),
        Route::NotFound | Route::Health | Route::Fake(_) => Ok(response::text(
            StatusCode::NOT_FOUND,
            "404 page not found\n",
        )),
        Route::Resource(path) => resource(shared, &path, &query, parts, body).await,
    }
}

fn authenticate(shared: &Shared, parts: &Parts) -> Result<(), ApiError> {
    let Some(token) = &shared.settings.token else {
        return Ok(());
    };
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented == Some(token.as_str()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

fn verb(method: &Method, path: &ResourcePath, query: &Query) -> Result<&'static str, ApiError> {
    let named = path.name.is_some();
    Ok(match *method {
        Method::GET if path.watch || query.flag("watch") => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => return Err(ApiError::method_not_allowed()),
    })
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => Err(ApiError {
            code: 413,
            reason: "RequestEntityTooLarge",
            message: format!("Request entity too large: limit is {MAX_BODY}: {err}"),
            details: None,
        }),
    }
}

async fn resource(
    shared: &Arc<Shared>,
    path: &ResourcePath,
    query: &Query,
    parts: Parts,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let verb = verb(&parts.method, path, query)?;
    let resource = path.resource;
    shared.stats.count(resource.plural, verb);
    if shared
        .faults
        .is_forbidden(resource.group, resource.plural, verb)
    {
        return Err(ApiError::forbidden(
            &shared.settings.user,
            verb,
            resource,
            path.namespace.as_deref(),
            path.name.as_deref(),
        ));
    }
    let output = request::negotiate(accept(&parts), Offer::Resource)?;
    let writes = |answer: crud::Answer| Ok(answer.into_response(resource, output));
    match verb {
        "watch" => list_watch::watch(shared, path, query, output),
        "list" => list_watch::list(shared, path, query, output),
        "get" => crud::get(shared, path, output),
        "create" => {
            let object = crud::decode_body(&read_body(body).await?, &parts.headers)?;
            writes(crud::create(shared, path, query, object).await?)
        }
        "update" => {
            let object = crud::decode_body(&read_body(body).await?, &parts.headers)?;
            writes(crud::replace(shared, path, query, object).await?)
        }
        "patch" => {
            let bytes = read_body(body).await?;
            writes(crud::patch(shared, path, query, &bytes, &parts.headers).await?)
        }
        _ => {
            let bytes = read_body(body).await?;
            writes(delete::delete(shared, path, query, &bytes)?)
        }
    }
}

/// `/fake/...`: the fault hooks over HTTP, for demos and tests in other languages.
fn control(shared: &Shared, command: &str, query: &Query) -> Result<Response<Body>, ApiError> {
    let group = query.get("group").unwrap_or("");
    let resource = query.get("resource").unwrap_or("");
    match command {
        "drop-watches" => shared.store.drop_watches(),
        "restart-with-compaction" => {
            shared.store.drop_watches();
            shared.store.compact();
        }
        "fault" => {
            let mode = match query.get("mode").unwrap_or("normal") {
                "fail" => Mode::Fail,
                "hang" => Mode::Hang,
                "normal" => Mode::Normal,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown fault mode {other:?}; use normal, fail or hang"
                    )));
                }
            };
            shared.faults.set_mode(mode);
        }
        "forbid" => shared
            .faults
            .forbid(group, resource, query.get("verb").unwrap_or("*")),
        "allow" => shared.faults.allow(group, resource),
        "clear" => shared.faults.clear(),
        "stats" => return Ok(response::json(StatusCode::OK, &shared.stats.snapshot())),
        _ => {
            return Ok(response::text(
                StatusCode::NOT_FOUND,
                "404 page not found\n",
            ));
        }
    }
    Ok(response::json(
        StatusCode::OK,
        &json!({ "ok": true, "resourceVersion": shared.store.resource_version().to_string() }),
    ))
}
