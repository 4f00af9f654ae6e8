//! A layer around the whole gRPC server that echoes `x-echo-*` request
//! metadata and names the backend on every response.
//!
//! It works at the HTTP level rather than in each method because tonic gives a
//! handler no way to add trailers to a successful response, and because the
//! same code then covers every method and every outcome: a normal response
//! gets the echoed keys as headers and again in its trailers; a failure that
//! tonic sends as a trailers-only response gets them in its only header block.
//! The `x-sidelb-backend` header goes on every response, so that a failed call
//! can still be attributed to the instance that failed it. A backend told to
//! report its load adds an ORCA report (`endpoint-load-metrics-bin`) the
//! same way, as a gRPC server using ORCA's per-call reports does.

use super::{BACKEND_HEADER, ECHO_PREFIX};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Wraps a gRPC server with [`EchoMetadata`].
#[derive(Clone, Debug)]
pub struct EchoMetadataLayer {
    backend: HeaderValue,
    load_report: Option<HeaderValue>,
}

impl EchoMetadataLayer {
    /// `backend` is the instance's name; a name that is not a valid header
    /// value is replaced by `invalid-name` rather than refused.
    pub fn new(backend: &str) -> Self {
        let backend = HeaderValue::from_str(backend)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-name"));
        EchoMetadataLayer {
            backend,
            load_report: None,
        }
    }

    /// Every answer also carries an ORCA load report saying `cpu_utilization`
    /// at 100 requests a second (when given).
    pub fn reporting_load(mut self, cpu_utilization: Option<f64>) -> Self {
        self.load_report = cpu_utilization.map(orca_report);
        self
    }
}

/// The report's header value: an `xds.data.orca.v3.OrcaLoadReport` with
/// `cpu_utilization` (field 1) and `rps_fractional` (field 6), base64.
fn orca_report(cpu_utilization: f64) -> HeaderValue {
    use base64::Engine;
    let mut message = vec![(1 << 3) | 1];
    message.extend_from_slice(&cpu_utilization.to_le_bytes());
    message.push((6 << 3) | 1);
    message.extend_from_slice(&100f64.to_le_bytes());
    let text = base64::engine::general_purpose::STANDARD.encode(message);
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl<S> Layer<S> for EchoMetadataLayer {
    type Service = EchoMetadata<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let mut added = Vec::new();
        if let Some(report) = &self.load_report {
            added.push((HeaderName::from_static(LOAD_REPORT), report.clone()));
        }
        EchoMetadata {
            inner,
            backend: self.backend.clone(),
            added,
        }
    }
}

#[derive(Clone, Debug)]
pub struct EchoMetadata<S> {
    inner: S,
    backend: HeaderValue,
    /// Trailers (or trailers-only headers) of every answer besides the echoed ones.
    added: Vec<(HeaderName, HeaderValue)>,
}

/// The trailer of ORCA's per-call load reports.
const LOAD_REPORT: &str = "endpoint-load-metrics-bin";

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for EchoMetadata<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<EchoTrailers<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let mut echoed = echoed_metadata(request.headers());
        let added = self.added.clone();
        let backend = self.backend.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            let headers = response.headers_mut();
            headers.insert(BACKEND_HEADER, backend);
            for (name, value) in &echoed {
                headers.append(name.clone(), value.clone());
            }
            // A trailers-only answer has its trailers among these headers.
            if headers.contains_key("grpc-status") {
                for (name, value) in &added {
                    headers.append(name.clone(), value.clone());
                }
            }
            echoed.extend(added);
            Ok(response.map(|inner| EchoTrailers { inner, echoed }))
        })
    }
}

fn echoed_metadata(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with(ECHO_PREFIX))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// A response body whose trailers get the echoed metadata added.
#[derive(Debug)]
pub struct EchoTrailers<B> {
    inner: B,
    echoed: Vec<(HeaderName, HeaderValue)>,
}

impl<B> Body for EchoTrailers<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &mut polled
            && let Some(trailers) = frame.trailers_mut()
        {
            for (name, value) in std::mem::take(&mut self.echoed) {
                trailers.append(name, value);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
