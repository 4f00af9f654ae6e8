//! Building responses: encoded objects, `Status` errors, and the streaming body of a
//! watch (newline-delimited JSON events, sent chunked as they happen).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use serde_json::Value;
use tokio::sync::mpsc;

use super::request::Output;
use super::status::ApiError;

pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn with_type(code: StatusCode, content_type: &str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = code;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

pub fn json(code: StatusCode, value: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    with_type(code, "application/json", full(bytes))
}

pub fn json_as(code: StatusCode, value: &Value, content_type: &str) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    with_type(code, content_type, full(bytes))
}

/// `value` in the negotiated encoding (YAML when asked for, JSON otherwise).
pub fn encoded(code: StatusCode, value: &Value, output: Output) -> Response<Body> {
    match output {
        Output::Yaml => {
            let text = serde_saphyr::to_string(value).unwrap_or_default();
            with_type(code, "application/yaml", full(text))
        }
        _ => json(code, value),
    }
}

pub fn error(err: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(code, &err.to_status())
}

pub fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    with_type(code, "text/plain; charset=utf-8", full(body))
}

/// A response body fed by a channel; it ends when the sender is dropped.
pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// A 200 streaming response and the sender that writes its chunks.
pub fn stream() -> (mpsc::Sender<Bytes>, Response<Body>) {
    let (tx, rx) = mpsc::channel(64);
    let response = with_type(StatusCode::OK, "application/json", ChannelBody(rx).boxed());
    (tx, response)
}
