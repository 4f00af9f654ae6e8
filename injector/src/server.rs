//! The HTTPS server: TLS, HTTP/1.1 and HTTP/2, routing, limits.
//!
//! kube-apiserver calls the webhook over TLS with either ALPN protocol and on
//! a path with a query (`/mutate?timeout=10s`), so requests are routed on the
//! path alone and both protocols are served on one port. Each connection runs
//! in its own task; a slow or broken client costs one task, bounded by the
//! handshake, header and idle timeouts and the connection cap
//! ([`sidelb_serve`]: at the cap a new connection displaces the longest-idle
//! one, so held-open connections cannot keep the kubelet's probes or
//! kube-apiserver out), and never the server.
//!
//! At most [`MAX_REVIEWS`] reviews are read and answered at once, each up to
//! [`MAX_BODY`]: a review waits for its turn before its body is read, so a
//! burst of large reviews costs a few bodies of memory, not one per request.
//! One that waits longer than [`REVIEW_WAIT`] is answered `429` with
//! `Retry-After`; kube-apiserver counts any non-200 answer as a failed call
//! and applies the webhook's failure policy, as it does for a timeout, but
//! sooner and with the reason in its log.
//!
//! Errors the server answers itself are `meta/v1` Status documents, the shape
//! kube-apiserver reads a failed webhook call's reason from.

use crate::config::SidecarDefaults;
use crate::grant::{GRANT_TIMEOUT, Grants};
use crate::metrics::Metrics;
use crate::webhook;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::json;
use sidelb_config::names;
use sidelb_serve::{Admitted, Connections};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Largest AdmissionReview accepted; kube-apiserver's own request limit is
/// 3 MiB, and a review holds the object once (twice for UPDATE).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A review is small and sent at once; a body that trickles is given up on.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections open at once: each kube-apiserver keeps a few, the
/// kubelet probes on a new one each time.
pub const MAX_CONNECTIONS: usize = 256;
/// HTTP/2 flow-control window, per stream and per connection: what a
/// waiting review can have buffered before its turn (hyper's default is 1 MiB).
const WINDOW: u32 = 256 * 1024;
/// Reviews read and answered at once; a review takes a few milliseconds of
/// CPU, so a few at once keep both cores busy.
pub const MAX_REVIEWS: usize = 4;
/// How long a review waits for its turn before it is answered `429`, well
/// inside kube-apiserver's 10 s webhook timeout.
pub const REVIEW_WAIT: Duration = Duration::from_secs(2);
/// A connection with no review in flight for this long is closed (GOAWAY
/// first on HTTP/2, which kube-apiserver's client reconnects after).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What every request handler shares.
pub struct App {
    pub defaults: SidecarDefaults,
    pub metrics: Arc<Metrics>,
    /// Set when the injector grants injected namespaces the proxy's access.
    pub grants: Option<Grants>,
    /// Turns to read and answer a review, [`MAX_REVIEWS`] of them.
    reviews: Semaphore,
}

/// Accepts connections until `shutdown` completes, then lets open ones finish.
pub async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) {
    let (closing, closed) = watch::channel(false);
    let mut connections = JoinSet::new();
    let open = Connections::new(MAX_CONNECTIONS);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let admitted = match open.admit() {
                        Ok(admitted) => admitted,
                        Err(busy) => {
                            tracing::warn!(%peer, "{busy}");
                            continue;
                        }
                    };
                    let job = connection(tcp, peer, admitted, tls.clone(), app.clone(), closed.clone());
                    connections.spawn(job);
                }
                Err(e) => {
                    // Out of file descriptors, usually: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = closing.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "closing connections still open after the drain timeout"
        );
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    tls: TlsAcceptor,
    app: Arc<App>,
    mut closed: watch::Receiver<bool>,
) {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
        },
        () = admitted.displaced() => {
            return tracing::debug!(%peer, "closed during the TLS handshake to make room at the connection cap");
        }
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW);
    let service = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(route(&app, req).await) }
    });
    let closing = async move {
        let _ = closed.wait_for(|closed| *closed).await;
    };
    let ended =
        sidelb_serve::serve_connection(&builder, stream, service, admitted, IDLE_TIMEOUT, closing)
            .await;
    tracing::debug!(%peer, "connection {ended}");
}

async fn route(app: &App, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    match req.uri().path() {
        names::INJECTOR_MUTATE_PATH if method == Method::POST => mutate(app, req).await,
        names::INJECTOR_HEALTH_PATH | names::METRICS_PATH
            if method != Method::GET && method != Method::HEAD =>
        {
            status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("use GET, not {method}"),
            )
        }
        names::INJECTOR_MUTATE_PATH => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("use POST with an AdmissionReview, not {method}"),
        ),
        names::INJECTOR_HEALTH_PATH => {
            text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into())
        }
        names::METRICS_PATH => {
            let accept = req.headers().get(header::ACCEPT);
            let (body, content_type) = sidelb_config::exposition::negotiate(
                app.metrics.encode(),
                accept.and_then(|v| v.to_str().ok()),
            );
            text(StatusCode::OK, content_type, body.into())
        }
        path => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "no such path {path}; the webhook is {}",
                names::INJECTOR_MUTATE_PATH
            ),
        ),
    }
}

async fn mutate(app: &App, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let budget = grant_budget(req.uri().query());
    let too_large = || {
        app.metrics.admission("error", "too-large");
        status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("the AdmissionReview is larger than {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let Ok(Ok(_turn)) = tokio::time::timeout(REVIEW_WAIT, app.reviews.acquire()).await else {
        app.metrics.admission("error", "busy");
        tracing::warn!("answered a review 429: {MAX_REVIEWS} were in progress for {REVIEW_WAIT:?}");
        let message = format!(
            "sidelb-injector is busy: {MAX_REVIEWS} reviews were in progress for {REVIEW_WAIT:?}; retry"
        );
        let mut busy = status(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message);
        busy.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return busy;
    };
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    );
    let body = match read.await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return too_large(),
        Err(_) => {
            app.metrics.admission("error", "slow-body");
            let message = format!("the request body did not arrive within {BODY_READ_TIMEOUT:?}");
            return status(StatusCode::REQUEST_TIMEOUT, "Timeout", message);
        }
        Ok(Err(e)) => {
            app.metrics.admission("error", "unreadable");
            let message = format!("could not read the request body: {e}");
            return status(StatusCode::BAD_REQUEST, "BadRequest", message);
        }
    };
    let answer = webhook::mutate(&body, &app.defaults);
    let answer = match (answer, &app.grants) {
        (Ok(mut answer), Some(grants)) => {
            if let Some(namespace) = answer.grant.take() {
                grant(app, grants, &namespace, budget, &mut answer).await;
            }
            Ok(answer)
        }
        (answer, _) => answer,
    };
    match answer.and_then(|answer| Ok((answer.encode()?, answer.outcome))) {
        Ok((body, outcome)) => {
            app.metrics.admission(outcome.result, outcome.reason);
            text(StatusCode::OK, "application/json", body.into())
        }
        Err(e @ webhook::BadReview::Encode(_)) => {
            app.metrics.admission("error", "internal");
            tracing::error!(error = %e, "could not answer an admission request");
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.to_string(),
            )
        }
        Err(bad) => {
            app.metrics.admission("error", "malformed");
            tracing::warn!(error = %bad, "answered a malformed admission request with 400");
            status(StatusCode::BAD_REQUEST, "BadRequest", bad.to_string())
        }
    }
}

/// Grants the namespace's service accounts the proxy's read access; when
/// that fails the pod is still injected (its proxy then reports the 403),
/// and the user who created it is told why.
async fn grant(
    app: &App,
    grants: &Grants,
    namespace: &str,
    budget: Duration,
    answer: &mut webhook::Answer,
) {
    let result = grants.ensure(namespace, budget).await;
    app.metrics.grant(result.is_ok());
    if let Err(e) = result {
        tracing::warn!(namespace, error = %e, "could not grant the proxy's read access");
        answer.warn(format!(
            "sidelb-injector: could not give the service accounts of namespace {namespace} \
             read access to Services and EndpointSlices ({e}); until a later pod here \
             succeeds, this pod's proxy is refused by the API server (see the injector's log)"
        ));
    }
}

/// How long a grant may take: [`GRANT_TIMEOUT`], or half of the time
/// kube-apiserver gives this call (its `?timeout=` query) when that is less,
/// so that a slow grant never makes the webhook call itself time out.
fn grant_budget(query: Option<&str>) -> Duration {
    let given = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("timeout="))
        .and_then(|v| sidelb_config::value::duration(v, false).ok());
    given.map_or(GRANT_TIMEOUT, |t| GRANT_TIMEOUT.min(t / 2))
}

fn text(code: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// A `meta/v1` Status error.
fn status(code: StatusCode, reason: &str, message: String) -> Response<Full<Bytes>> {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    text(code, "application/json", body.to_string().into())
}

impl App {
    pub fn new(defaults: SidecarDefaults, metrics: Arc<Metrics>, grants: Option<Grants>) -> Self {
        App {
            defaults,
            metrics,
            grants,
            reviews: Semaphore::new(MAX_REVIEWS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_takes_at_most_half_the_webhook_call_s_timeout() {
        assert_eq!(grant_budget(None), GRANT_TIMEOUT);
        assert_eq!(grant_budget(Some("timeout=10s")), GRANT_TIMEOUT);
        assert_eq!(grant_budget(Some("timeout=1s")), Duration::from_millis(500));
        assert_eq!(grant_budget(Some("a=b&timeout=2s")), Duration::from_secs(1));
        assert_eq!(grant_budget(Some("timeout=soon")), GRANT_TIMEOUT);
    }
}
