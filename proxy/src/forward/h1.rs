//! Forwarding one HTTP/1.1 request to one endpoint, as HTTP/1.1.
//!
//! Endpoint connections for HTTP/1.1 are pooled by hyper's client, keyed by
//! the endpoint's address; the balancing, statistics and ejection are the
//! same as for HTTP/2. A request whose connection could not be opened never
//! reached an app and goes once to another endpoint, if its body has not
//! started to flow and the retry budget allows.

use super::error::ProxyError;
use crate::balancer::{Pool, Protocol};
use crate::endpoint::{Endpoint, InFlight};
use crate::http1::body::{BodyError, BodySlot, ChannelBody, untouched};
use crate::http1::head::RequestHead;
use crate::time::now_us;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sidelb_config::ProxyConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct H1Client {
    client: Client<HttpConnector, ChannelBody>,
}

impl H1Client {
    pub(crate) fn new(config: &ProxyConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .set_host(false)
            .build(connector);
        H1Client { client }
    }
}

/// The endpoint's response and the request's place on it, held until the
/// response body has been passed on.
pub(crate) struct Forwarded {
    pub(crate) response: http::Response<Incoming>,
    pub(crate) in_flight: InFlight,
}

pub(crate) async fn forward(
    client: &H1Client,
    pool: &Arc<Pool>,
    head: &RequestHead,
    slot: &BodySlot,
) -> Result<Forwarded, ProxyError> {
    if pool.tls_server_name().is_some() {
        return Err(ProxyError::Http1ToTls {
            service: pool.name().to_owned(),
        });
    }
    let wait = pool.config().connect_timeout;
    let mut failed: Option<Arc<Endpoint>> = None;
    loop {
        let ep = pool
            .pick_by_headers(&head.headers, Protocol::Http1, failed.as_deref(), wait)
            .await?;
        let in_flight = ep.start_request();
        let started = Instant::now();
        let req = request(head, &ep, slot);
        let awaiting = ep.await_answer();
        let answer = client.client.request(req).await;
        match answer {
            Ok(response) => {
                let elapsed = started.elapsed();
                ep.observe_latency(elapsed.as_micros() as f64, now_us());
                drop(awaiting);
                pool.observe_duration(elapsed);
                let status = response.status().as_u16();
                ep.count_status(None, status);
                if status == 429 {
                    ep.record_rate_limited(now_us());
                }
                if (502..=504).contains(&status) {
                    pool.record_failure(&ep);
                } else {
                    pool.record_success(&ep);
                }
                return Ok(Forwarded {
                    response,
                    in_flight,
                });
            }
            Err(e) if e.is_connect() && failed.is_none() && untouched(slot) => {
                pool.record_failure(&ep);
                if !pool.withdraw_retry() {
                    return Err(ProxyError::RetryBudget {
                        service: pool.name().to_owned(),
                        endpoint: ep.addr.to_string(),
                        why: describe(&e),
                    });
                }
                tracing::debug!(endpoint = %ep.addr, service = pool.name(), "request never reached the app: {}", describe(&e));
                failed = Some(ep);
            }
            Err(e) => {
                // The app's body failing is not the endpoint's failure.
                if let Some(why) = request_body_error(&e) {
                    return Err(ProxyError::RequestBody(why));
                }
                pool.record_failure(&ep);
                return Err(ProxyError::Upstream {
                    service: pool.name().to_owned(),
                    endpoint: ep.addr.to_string(),
                    why: describe(&e),
                });
            }
        }
    }
}

/// The error of the app's request body, if that is what ended the request.
fn request_body_error(e: &hyper_util::client::legacy::Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(body) = s.downcast_ref::<BodyError>() {
            return Some(body.0.clone());
        }
        source = s.source();
    }
    None
}

fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn request(head: &RequestHead, ep: &Endpoint, slot: &BodySlot) -> http::Request<ChannelBody> {
    let path = head.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri = format!("http://{}{}", ep.addr, path);
    let mut req = http::Request::new(ChannelBody::new(slot.clone(), head.framing));
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = uri.parse().unwrap_or_default();
    *req.headers_mut() = head.headers.clone();
    if !req.headers().contains_key(http::header::HOST)
        && let Ok(host) = http::HeaderValue::from_str(&head.authority)
    {
        req.headers_mut().insert(http::header::HOST, host);
    }
    req
}
