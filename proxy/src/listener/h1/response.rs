//! Writing HTTP/1.1 responses to the app.
//!
//! The response keeps the endpoint's framing where it can (a known length
//! stays a Content-Length) and is chunked otherwise, which also carries
//! trailers; an HTTP/1.0 client gets a body delimited by closing the
//! connection.

use crate::http1::head::{connection_tokens, strip_hop_by_hop};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method, Response, StatusCode, Version, header};
use http_body::Body;
use http_body_util::BodyExt;
use std::io;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// How the request that is being answered shapes the response.
pub(crate) struct Answering {
    pub(crate) method: Method,
    pub(crate) version: Version,
    pub(crate) keep_alive: bool,
}

/// Why a response stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("writing to the app: {0}")]
    Io(#[from] io::Error),
    #[error("the endpoint's response body failed: {0}")]
    Body(String),
}

/// Writes `res`; returns whether the connection may be kept open.
pub(crate) async fn write<W, B>(
    wr: &mut W,
    res: Response<B>,
    answering: &Answering,
) -> Result<bool, WriteError>
where
    W: AsyncWrite + Unpin,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let (mut parts, body) = res.into_parts();
    let tokens = connection_tokens(&parts.headers);
    strip_hop_by_hop(&mut parts.headers, &tokens);
    let status = parts.status;
    let bodiless = answering.method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut keep_alive = answering.keep_alive;
    let framing = if bodiless {
        Out::None
    } else if let Some(n) = body.size_hint().exact() {
        parts.headers.insert(header::CONTENT_LENGTH, n.into());
        Out::Length
    } else if answering.version == Version::HTTP_11 {
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(
            header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        );
        Out::Chunked
    } else {
        parts.headers.remove(header::CONTENT_LENGTH);
        keep_alive = false;
        Out::Close
    };
    let mut head = BytesMut::with_capacity(256);
    put_head(
        &mut head,
        status,
        &parts.headers,
        keep_alive,
        answering.version,
    );
    if bodiless {
        wr.write_all(&head).await?;
        return Ok(keep_alive);
    }
    let mut body = std::pin::pin!(body);
    let mut pending = head;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| WriteError::Body(e.to_string()))?;
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => {
                if framing == Out::Chunked {
                    pending.put_slice(format!("{:x}\r\n", data.len()).as_bytes());
                }
                if data.len() < 8192 {
                    pending.put_slice(&data);
                } else {
                    wr.write_all(&pending).await?;
                    pending.clear();
                    wr.write_all(&data).await?;
                }
                if framing == Out::Chunked {
                    pending.put_slice(b"\r\n");
                }
                wr.write_all(&pending).await?;
                pending.clear();
            }
            Err(frame) => {
                if let (Ok(trailers), Out::Chunked) = (frame.into_trailers(), framing) {
                    pending.put_slice(b"0\r\n");
                    put_headers(&mut pending, &trailers);
                    pending.put_slice(b"\r\n");
                    wr.write_all(&pending).await?;
                    return Ok(keep_alive);
                }
            }
        }
    }
    if framing == Out::Chunked {
        pending.put_slice(b"0\r\n\r\n");
    }
    wr.write_all(&pending).await?;
    Ok(keep_alive)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    Length,
    Chunked,
    Close,
}

fn put_head(
    out: &mut BytesMut,
    status: StatusCode,
    headers: &HeaderMap,
    keep_alive: bool,
    version: Version,
) {
    let version = if version == Version::HTTP_10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    out.put_slice(
        format!(
            "{version} {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .as_bytes(),
    );
    put_headers(out, headers);
    match (keep_alive, version) {
        (false, _) => out.put_slice(b"connection: close\r\n"),
        (true, "HTTP/1.0") => out.put_slice(b"connection: keep-alive\r\n"),
        _ => {}
    }
    out.put_slice(b"\r\n");
}

fn put_headers(out: &mut BytesMut, headers: &HeaderMap) {
    for (name, value) in headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
}

/// Writes an error the proxy made: status and a text body.
pub(crate) async fn write_error<W: AsyncWrite + Unpin>(
    wr: &mut W,
    status: StatusCode,
    message: &str,
    answering: &Answering,
) -> Result<bool, WriteError> {
    let res = crate::forward::grpc::http_error(status, message)
        .map(|text| http_body_util::Full::new(Bytes::from(text)).map_err(|never| match never {}));
    write::<W, http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>>(
        wr,
        res.map(BodyExt::boxed),
        answering,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn answering(version: Version) -> Answering {
        Answering {
            method: Method::GET,
            version,
            keep_alive: true,
        }
    }

    #[tokio::test]
    async fn known_length_and_hop_by_hop() {
        let mut res = Response::new(Full::new(Bytes::from_static(b"hi")));
        res.headers_mut()
            .insert("connection", "x-private".parse().unwrap());
        res.headers_mut().insert("x-private", "1".parse().unwrap());
        res.headers_mut().insert("x-public", "2".parse().unwrap());
        let mut out = Vec::new();
        assert!(
            write(&mut out, res, &answering(Version::HTTP_11))
                .await
                .unwrap()
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nx-public: 2\r\ncontent-length: 2\r\n\r\nhi"
        );
    }

    #[tokio::test]
    async fn chunked_with_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames = futures_util::stream::iter(vec![
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(b"abc"))),
            Ok(http_body::Frame::trailers(trailers)),
        ]);
        let mut out = Vec::new();
        write(
            &mut out,
            Response::new(StreamBody::new(frames)),
            &answering(Version::HTTP_11),
        )
        .await
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\ngrpc-status: 0\r\n\r\n"
        );
    }
}
