//! A layer around the whole gRPC server that echoes `x-echo-*` request
//! metadata and names the backend on every response.
//!
//! It works at the HTTP level rather than in each method because tonic gives a
//! handler no way to add trailers to a successful response, and because the
//! same code then covers every method and every outcome: a normal response
//! gets the echoed keys as headers and again in its trailers; a failure that
//! tonic sends as a trailers-only response gets them in its only header block.
//! The `x-sidelb-backend` header goes on every response, so that a failed call
//! can still be attributed to the instance that failed it.

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
}

impl EchoMetadataLayer {
    /// `backend` is the instance's name; a name that is not a valid header
    /// value is replaced by `invalid-name` rather than refused.
    pub fn new(backend: &str) -> Self {
        let backend = HeaderValue::from_str(backend)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-name"));
        EchoMetadataLayer { backend }
    }
}

impl<S> Layer<S> for EchoMetadataLayer {
    type Service = EchoMetadata<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EchoMetadata {
            inner,
            backend: self.backend.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct EchoMetadata<S> {
    inner: S,
    backend: HeaderValue,
}

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
        let echoed = echoed_metadata(request.headers());
        let backend = self.backend.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            let headers = response.headers_mut();
            headers.insert(BACKEND_HEADER, backend);
            for (name, value) in &echoed {
                headers.append(name.clone(), value.clone());
            }
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
