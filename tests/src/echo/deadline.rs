//! `grpc-timeout` as a real gRPC server honours it: the call ends with
//! `DEADLINE_EXCEEDED` (4) when its deadline passes, streams included.
//!
//! tonic's own handling is not that: it answers `CANCELLED` ("Timeout
//! expired"), and only while the response headers are pending, so a stream
//! that has started is never cut. A proxy test that checks which status a
//! deadline produces needs the backend to behave like grpc-go or grpc-java,
//! hence this layer. It sits inside tonic's timeout and arms its timer first,
//! so it always fires first; the handler's future or stream is dropped then,
//! which cancels the call like a client's `RST_STREAM` would.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

const GRPC_TIMEOUT: &str = "grpc-timeout";
const DEADLINE_EXCEEDED: &str = "4";
const MESSAGE: &str = "deadline exceeded at the backend";

/// Wraps a gRPC server with [`Deadline`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Deadline<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<DeadlineBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let deadline = grpc_timeout(request.headers()).map(|timeout| Instant::now() + timeout);
        let response = self.inner.call(request);
        let Some(deadline) = deadline else {
            return Box::pin(async move {
                Ok(response.await?.map(|body| DeadlineBody::new(body, None)))
            });
        };
        Box::pin(async move {
            tokio::select! {
                biased;
                response = response => {
                    let sleep = Box::pin(tokio::time::sleep_until(deadline));
                    Ok(response?.map(|body| DeadlineBody::new(body, Some(sleep))))
                }
                () = tokio::time::sleep_until(deadline) => Ok(trailers_only()),
            }
        })
    }
}

/// `grpc-timeout`'s value (`8 digits` then `H M S m u n`), if valid.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (amount, unit) = value.split_at(value.len() - 1);
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

fn deadline_status() -> HeaderMap {
    let mut status = HeaderMap::new();
    status.insert("grpc-status", HeaderValue::from_static(DEADLINE_EXCEEDED));
    status.insert("grpc-message", HeaderValue::from_static(MESSAGE));
    status
}

fn trailers_only<B>() -> Response<DeadlineBody<B>> {
    let mut response = Response::new(DeadlineBody {
        inner: None,
        deadline: None,
    });
    *response.headers_mut() = deadline_status();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A response body cut at the deadline: then it drops the handler's stream
/// and ends with `DEADLINE_EXCEEDED` trailers.
pub struct DeadlineBody<B> {
    inner: Option<B>,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<B> DeadlineBody<B> {
    fn new(inner: B, deadline: Option<Pin<Box<Sleep>>>) -> Self {
        DeadlineBody {
            inner: Some(inner),
            deadline,
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if self.inner.is_none() {
            return Poll::Ready(None);
        }
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            self.inner = None;
            self.deadline = None;
            return Poll::Ready(Some(Ok(Frame::trailers(deadline_status()))));
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            // The call has ended by itself: the deadline no longer applies.
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => self.deadline = None,
            Poll::Ready(None) => self.inner = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_refuses_bad_values() {
        let parse = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(GRPC_TIMEOUT, HeaderValue::from_static(value));
            grpc_timeout(&headers)
        };
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("4S"), Some(Duration::from_secs(4)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "5x", "-1S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
