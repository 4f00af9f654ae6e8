//! Forwarding one HTTP/2 request (one stream) to one endpoint.
//!
//! The request is balanced on its own: pick an endpoint, open a stream on
//! its connection, and copy headers, body and trailers both ways at once
//! (so every gRPC streaming kind works). If the endpoint provably never
//! handed the request to its app (`REFUSED_STREAM`, a `GOAWAY` below our
//! stream, a connection that would not take a stream), it is sent once more
//! to another endpoint, if the service's retry budget allows. Nothing else
//! is retried: the app may have acted on it.
//!
//! `grpc-timeout` bounds the whole exchange; a client's `RST_STREAM` drops
//! the upstream stream, which resets it with CANCEL. So does the drain
//! deadline of a proxy shutting down, which answers the app's gRPC call
//! with UNAVAILABLE and the reason (trailers, or trailers-only if nothing
//! was answered yet): a status the app's client can retry on, where a cut
//! connection is an I/O error mid-call. A plain HTTP/2 request gets 503, or
//! RST_STREAM once its response has begun.

use super::body::{PumpError, RequestBody, pump_response};
use super::error::ProxyError;
use super::grpc;
use crate::balancer::{Pool, Protocol};
use crate::drain::Deadline;
use crate::endpoint::Endpoint;
use crate::endpoint::load_report::LoadReport;
use crate::time::now_us;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{Request, Response};
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Instant;

/// The app's side of the exchange: what has been answered so far.
struct Downstream {
    respond: Option<SendResponse<Bytes>>,
    tx: Option<SendStream<Bytes>>,
    grpc: bool,
}

enum Failure {
    Proxy(ProxyError),
    /// The app reset its stream or went away: nothing to answer.
    ClientGone,
    /// The endpoint reset the stream: pass the reset on.
    Reset(Reason),
}

impl From<ProxyError> for Failure {
    fn from(e: ProxyError) -> Self {
        Failure::Proxy(e)
    }
}

/// What a finished exchange reports, for statistics.
struct Done {
    grpc_status: Option<u16>,
    http_status: u16,
}

/// Serves one request from the app, until it ends or the drain `deadline`.
pub(crate) async fn serve(
    pool: Result<Arc<Pool>, ProxyError>,
    req: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    mut deadline: Deadline,
) {
    let grpc = grpc::is_grpc(req.headers());
    let mut down = Downstream {
        respond: Some(respond),
        tx: None,
        grpc,
    };
    let pool = match pool {
        Ok(pool) => pool,
        Err(e) => return down.fail(&e),
    };
    let _admission = match pool.admit() {
        Ok(admission) => admission,
        Err(e) => return down.fail(&e.into()),
    };
    let timeout = if grpc {
        req.headers()
            .get(&grpc::GRPC_TIMEOUT)
            .and_then(grpc::parse_timeout)
    } else {
        None
    };
    let bounded = async {
        match timeout {
            Some(timeout) => {
                match tokio::time::timeout(timeout, exchange(&pool, req, &mut down)).await {
                    Ok(r) => r,
                    Err(_) => Err(Failure::Proxy(ProxyError::DeadlineExceeded {
                        service: pool.name().to_owned(),
                        timeout,
                    })),
                }
            }
            None => exchange(&pool, req, &mut down).await,
        }
    };
    let result = tokio::select! {
        r = bounded => r,
        () = deadline.passed() => Err(Failure::Proxy(ProxyError::DrainDeadline {
            timeout: pool.config().drain_timeout,
        })),
    };
    match result {
        Ok(()) | Err(Failure::ClientGone) => {}
        Err(Failure::Proxy(e)) => {
            count_local(&pool, &down, &e);
            down.fail(&e);
        }
        Err(Failure::Reset(reason)) => down.reset(reason),
    }
}

fn count_local(pool: &Pool, down: &Downstream, e: &ProxyError) {
    let (grpc_status, http) = if down.grpc {
        (Some(e.grpc_status()), 200)
    } else {
        (None, e.http_status().as_u16())
    };
    let endpoint = match e {
        ProxyError::Upstream { endpoint, .. } | ProxyError::RetryBudget { endpoint, .. } => {
            endpoint.as_str()
        }
        _ => "",
    };
    pool.count_local(endpoint, grpc_status, http);
}

impl Downstream {
    /// Tells the app about an error the proxy hit.
    fn fail(&mut self, e: &ProxyError) {
        let message = e.to_string();
        if let Some(mut respond) = self.respond.take() {
            tracing::debug!("answering with an error: {message}");
            if self.grpc {
                let _ =
                    respond.send_response(grpc::error_response(e.grpc_status(), &message), true);
            } else {
                let (parts, body) = grpc::http_error(e.http_status(), &message).into_parts();
                if let Ok(mut tx) = respond.send_response(Response::from_parts(parts, ()), false) {
                    let _ = tx.send_data(Bytes::from(body), true);
                }
            }
        } else if let Some(tx) = self.tx.as_mut() {
            if self.grpc {
                let _ = tx.send_trailers(grpc::error_trailers(e.grpc_status(), &message));
            } else {
                tx.send_reset(Reason::INTERNAL_ERROR);
            }
        }
    }

    fn reset(&mut self, reason: Reason) {
        if let Some(respond) = self.respond.as_mut() {
            respond.send_reset(reason);
        } else if let Some(tx) = self.tx.as_mut() {
            tx.send_reset(reason);
        }
    }
}

/// How one attempt at an endpoint ended.
enum Attempt {
    Done(Done),
    /// The request never reached the endpoint's app: safe to send elsewhere.
    NotSent(String),
    Failed(Failure),
}

async fn exchange(
    pool: &Arc<Pool>,
    req: Request<RecvStream>,
    down: &mut Downstream,
) -> Result<(), Failure> {
    let (head, body) = req.into_parts();
    let mut body = RequestBody::new(body);
    let wait = pool.config().connect_timeout;
    let mut failed: Option<Arc<Endpoint>> = None;
    loop {
        let ep = match (
            pool.pick_by_headers(&head.headers, Protocol::Http2, failed.as_deref(), wait)
                .await,
            &failed,
        ) {
            (Ok(ep), _) => ep,
            // Only the endpoint that refused is left: a fresh stream there
            // is as safe as anywhere (its refusal proved nothing ran).
            (Err(_), Some(_)) => pool
                .pick(Protocol::Http2, None, wait)
                .await
                .map_err(|e| Failure::Proxy(e.into()))?,
            (Err(e), None) => return Err(Failure::Proxy(e.into())),
        };
        let why = match attempt(pool, &ep, &head, &mut body, down).await {
            Attempt::Done(done) => {
                ep.count_status(done.grpc_status, done.http_status);
                return Ok(());
            }
            Attempt::Failed(f) => return Err(f),
            Attempt::NotSent(why) => why,
        };
        tracing::debug!(endpoint = %ep.addr, service = pool.name(), "request never reached the app: {why}");
        let retry_error = |why: String| ProxyError::RetryBudget {
            service: pool.name().to_owned(),
            endpoint: ep.addr.to_string(),
            why,
        };
        if failed.is_some() || !body.is_replayable() {
            return Err(Failure::Proxy(ProxyError::Upstream {
                service: pool.name().to_owned(),
                endpoint: ep.addr.to_string(),
                why: format!("{why}, and the request could not be sent elsewhere"),
            }));
        }
        if !pool.withdraw_retry() {
            return Err(Failure::Proxy(retry_error(why)));
        }
        failed = Some(ep);
    }
}

fn request_head(head: &http::request::Parts) -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.headers_mut() = head.headers.clone();
    req
}

/// Whether an error proves the endpoint's app never saw the stream.
fn never_processed(e: &h2::Error) -> bool {
    e.is_remote() && (e.is_go_away() || e.reason() == Some(Reason::REFUSED_STREAM))
}

/// Why a stream could not be opened or was not processed, in words an
/// operator reads in a `grpc-message` (h2's own text for a GOAWAY with
/// NO_ERROR is "not a result of an error").
fn refusal(e: &h2::Error) -> String {
    match e.reason() {
        Some(Reason::REFUSED_STREAM) if e.is_remote() && !e.is_go_away() => {
            "it refused the stream (REFUSED_STREAM)".into()
        }
        Some(reason) if e.is_remote() && e.is_go_away() => {
            format!("it is closing its connection (GOAWAY {reason:?})")
        }
        _ => format!("its connection refused a new stream: {e}"),
    }
}

async fn attempt(
    pool: &Pool,
    ep: &Arc<Endpoint>,
    head: &http::request::Parts,
    body: &mut RequestBody,
    down: &mut Downstream,
) -> Attempt {
    let wait = pool.config().connect_timeout;
    let Some((send, slot)) = ep.open_stream(wait).await else {
        return Attempt::NotSent("its connection is closing".into());
    };
    let in_flight = ep.start_request();
    let started = Instant::now();
    let mut send = match send.ready().await {
        Ok(send) => send,
        Err(e) => {
            slot.mark_closed();
            return Attempt::NotSent(refusal(&e));
        }
    };
    let (response, mut up_tx) = match send.send_request(request_head(head), body.is_empty()) {
        Ok(r) => r,
        Err(e) => {
            slot.mark_closed();
            return Attempt::NotSent(refusal(&e));
        }
    };
    let awaiting = ep.await_answer();
    let Some(respond) = down.respond.as_mut() else {
        return Attempt::Failed(Failure::ClientGone);
    };
    let keep = AtomicBool::new(true);
    let mut body_done = body.is_empty();
    let pump = body.pump(&mut up_tx, &keep);
    tokio::pin!(pump);
    tokio::pin!(response);

    let response = loop {
        tokio::select! {
            biased;
            r = &mut response => break r,
            r = &mut pump, if !body_done => {
                body_done = true;
                if let Err(PumpError::Recv(_)) = r {
                    return Attempt::Failed(Failure::ClientGone);
                }
            }
            _ = poll_fn(|cx| respond.poll_reset(cx)) => return Attempt::Failed(Failure::ClientGone),
        }
    };
    let response = match response {
        Ok(r) => r,
        Err(e) if never_processed(&e) => {
            if e.is_go_away() {
                slot.mark_closed();
            }
            return Attempt::NotSent(refusal(&e));
        }
        Err(e) => return Attempt::Failed(upstream_failure(pool, ep, e)),
    };
    keep.store(false, Relaxed);
    let elapsed = started.elapsed();
    ep.observe_latency(elapsed.as_micros() as f64, now_us());
    drop(awaiting);
    pool.observe_duration(elapsed);

    let (parts, mut resp_body) = response.into_parts();
    let http_status = parts.status.as_u16();
    let head_status = grpc::status_of(&parts.headers);
    let head_load = LoadReport::from_headers(&parts.headers);
    let eos = resp_body.is_end_stream();
    let Some(mut respond) = down.respond.take() else {
        return Attempt::Failed(Failure::ClientGone);
    };
    let tx = match respond.send_response(Response::from_parts(parts, ()), eos) {
        Ok(tx) => down.tx.insert(tx),
        Err(_) => return Attempt::Failed(Failure::ClientGone),
    };
    let (grpc_status, load) = if eos {
        (head_status, head_load)
    } else {
        let copy = pump_response(&mut resp_body, tx);
        tokio::pin!(copy);
        loop {
            tokio::select! {
                r = &mut copy => match r {
                    Ok(end) => break (end.grpc_status.or(head_status), end.load.or(head_load)),
                    Err(PumpError::Send) => return Attempt::Failed(Failure::ClientGone),
                    Err(PumpError::Recv(e)) => return Attempt::Failed(upstream_failure(pool, ep, e)),
                },
                r = &mut pump, if !body_done => {
                    body_done = true;
                    if let Err(PumpError::Recv(_)) = r {
                        return Attempt::Failed(Failure::ClientGone);
                    }
                }
            }
        }
    };
    if let Some(report) = &load {
        ep.record_load_report(report, now_us());
    }
    if grpc_status == Some(grpc::RESOURCE_EXHAUSTED) || http_status == 429 {
        ep.record_rate_limited(now_us());
    }
    let failed = matches!(grpc_status, Some(grpc::UNAVAILABLE | grpc::INTERNAL))
        || matches!(http_status, 502..=504);
    if failed {
        pool.record_failure(ep);
    } else {
        pool.record_success(ep);
    }
    drop(in_flight);
    Attempt::Done(Done {
        grpc_status,
        http_status,
    })
}

/// The endpoint's stream failed after the request may have reached its app.
fn upstream_failure(pool: &Pool, ep: &Endpoint, e: h2::Error) -> Failure {
    match e.reason() {
        Some(reason) if e.is_reset() && e.is_remote() => {
            if reason != Reason::CANCEL && reason != Reason::NO_ERROR {
                pool.record_failure(ep);
            }
            Failure::Reset(reason)
        }
        _ => {
            pool.record_failure(ep);
            Failure::Proxy(ProxyError::Upstream {
                service: pool.name().to_owned(),
                endpoint: ep.addr.to_string(),
                why: format!("the stream broke: {e}"),
            })
        }
    }
}
