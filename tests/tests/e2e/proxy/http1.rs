//! HTTP/1.1 through the proxy, and the protections of its listeners.
//!
//! - HTTP/1.1 requests reach an HTTP/1.1-only backend as HTTP/1.1, with
//!   method, path, query, headers and body intact (hop-by-hop headers
//!   dropped), Content-Length and chunked bodies each keeping their framing,
//!   chunked responses, many requests on one kept-alive connection balanced
//!   over the backends, on an upstream listener and by `Host`;
//! - an HTTP/1.1-only backend is used whatever the state of the proxy's
//!   HTTP/2 connection attempts to it (it refuses them);
//! - a backend that drops the connection is a 502 with a text body;
//! - ambiguous framing (Content-Length with Transfer-Encoding in either
//!   order, two Content-Lengths even equal or differing in case, a list in
//!   one, a length that is not plain digits or too large, a
//!   Transfer-Encoding other than exactly chunked, twice, folded or with a
//!   space before its colon, chunked on HTTP/1.0, a NUL in a header) is a
//!   400, the connection is closed, and nothing reaches a backend;
//! - a malformed chunked body (a bad size, data longer than its size, a
//!   bare LF, a size overflowing, a bad trailer) ends the request with 400
//!   saying so and closes the connection: the bytes after it are never read
//!   as another request, no whole request reaches a backend, and the
//!   backends are not blamed for it;
//! - a header block over 64 KiB is refused: 431 and a close on HTTP/1.1
//!   (HTTP/2 in proxy::errors), while a large header under the limit passes;
//! - a connection that sends nothing, or not a whole request head or HTTP/2
//!   preface, is closed after `SIDELB_HEADER_READ_TIMEOUT`, and so is an
//!   HTTP/2 connection whose request head (HEADERS without END_HEADERS) is
//!   never finished: GOAWAY(PROTOCOL_ERROR).

use sidelb_tests::harness::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const WEB: &str = "web.default:8080";
const WAIT: Duration = Duration::from_secs(10);

struct Web {
    backends: Vec<Http1Backend>,
    proxy: Proxy,
    _file: EndpointsFile,
}

async fn web(env: &[(&str, &str)]) -> Web {
    let mut backends = Vec::new();
    for name in ["w1", "w2"] {
        backends.push(Http1Backend::spawn(name).await.expect("starts"));
    }
    let addrs: Vec<_> = backends.iter().map(Http1Backend::addr).collect();
    let file = EndpointsFile::create(&[ServiceEndpoints::new("web", "default", 8080, &addrs)])
        .expect("file");
    let mut options = ProxyOptions::file_discovery(&file).upstream(WEB);
    for (name, value) in env {
        options = options.env(name, *value);
    }
    let proxy = Proxy::spawn(options).await.expect("proxy ready");
    Web {
        backends,
        proxy,
        _file: file,
    }
}

impl Web {
    fn listener(&self) -> std::net::SocketAddr {
        self.proxy.upstream_addr(WEB).expect("listener")
    }

    async fn requests_served(&self) -> u64 {
        let mut total = 0;
        for backend in &self.backends {
            total += backend.stats().await.expect("stats").requests;
        }
        total
    }
}

#[tokio::test]
async fn http1_is_forwarded_as_http1_balanced_on_one_kept_alive_connection() {
    let web = web(&[]).await;
    let mut conn = Http1Conn::connect(web.listener()).await.expect("connects");
    let mut served = std::collections::BTreeMap::new();
    for n in 0..20 {
        let request = format!(
            "GET /hello/{n}?q=a%20b HTTP/1.1\r\nHost: {WEB}\r\nX-Test: v{n}\r\n\
             Connection: keep-alive, x-private\r\nX-Private: secret\r\n\r\n"
        );
        let response = conn.request(request.as_bytes()).await.expect("answered");
        assert_eq!(response.status, 200, "{}", response.text());
        assert_ne!(response.header("connection"), Some("close"));
        let echo = response.echo().expect("echo");
        assert_eq!(echo.version, "HTTP/1.1");
        assert_eq!(
            (echo.method.as_str(), echo.path.as_str()),
            ("GET", &*format!("/hello/{n}?q=a%20b"))
        );
        assert_eq!(echo.header("x-test"), [format!("v{n}")]);
        assert_eq!(echo.header("host"), [WEB]);
        assert!(echo.header("x-private").is_empty(), "hop-by-hop: {echo:?}");
        assert_eq!(
            response.header("x-sidelb-backend"),
            Some(echo.backend.as_str())
        );
        *served.entry(echo.backend).or_insert(0) += 1;
    }
    assert_eq!(served.len(), 2, "one connection, both backends: {served:?}");

    // A body with a length keeps its length…
    let body = "x".repeat(100 * 1024);
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: {WEB}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let echo = conn
        .request(request.as_bytes())
        .await
        .expect("answered")
        .echo()
        .expect("echo");
    assert_eq!(
        (echo.method.as_str(), echo.body_bytes),
        ("POST", body.len())
    );
    assert!(echo.body == body);
    assert_eq!(echo.header("content-length"), [body.len().to_string()]);
    assert!(echo.header("transfer-encoding").is_empty());

    // …a chunked one stays chunked, sent in pieces…
    conn.send(
        format!("PUT /chunks HTTP/1.1\r\nHost: {WEB}\r\nTransfer-Encoding: chunked\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("head");
    for piece in ["first,", "second,", "third"] {
        conn.send(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes())
            .await
            .expect("chunk");
    }
    conn.send(b"0\r\n\r\n").await.expect("last chunk");
    let echo = conn
        .response()
        .await
        .expect("answered")
        .echo()
        .expect("echo");
    assert_eq!(
        (echo.method.as_str(), echo.body.as_str()),
        ("PUT", "first,second,third")
    );
    assert_eq!(echo.header("transfer-encoding"), ["chunked"]);
    assert!(echo.header("content-length").is_empty());

    // …and a response without a length comes back chunked.
    let request = format!("GET /stream?chunks=5 HTTP/1.1\r\nHost: {WEB}\r\n\r\n");
    let response = conn.request(request.as_bytes()).await.expect("answered");
    assert!(response.chunked, "{response:?}");
    assert_eq!(response.echo().expect("echo").path, "/stream?chunks=5");
    assert_eq!(
        web.requests_served().await,
        23,
        "each request reached one backend once"
    );

    // The authority listener routes HTTP/1.1 by Host.
    let mut conn = Http1Conn::connect(web.proxy.outbound_addr())
        .await
        .expect("connects");
    for host in ["web:8080", "web.default.svc.cluster.local:8080"] {
        let request = format!("GET /by-host HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let response = conn.request(request.as_bytes()).await.expect("answered");
        assert_eq!(response.status, 200, "{host}: {}", response.text());
        assert_eq!(response.echo().expect("echo").header("host"), [host]);
    }
}

#[tokio::test]
async fn an_http1_only_backend_is_used_whatever_its_http2_state() {
    // The proxy tries an HTTP/2 connection to every endpoint; an
    // HTTP/1.1-only server fails each, and the proxy marks it `no-http2` and
    // tries again only rarely. With a short connect timeout, a request that
    // waited for an HTTP/2 connection would give up.
    let web = web(&[("SIDELB_CONNECT_TIMEOUT", "100ms")]).await;
    wait_until("both backends seen without HTTP/2", WAIT, || async {
        for backend in &web.backends {
            if backend.stats().await.ok()?.connections < 1 {
                return None;
            }
        }
        let view = web.proxy.service_view(WEB).await.ok()??;
        let endpoints = view["endpoints"].as_array()?;
        (endpoints.len() == 2 && endpoints.iter().all(|e| e["connection"] == "no-http2"))
            .then_some(())
    })
    .await
    .expect("the proxy marks them no-http2");

    let mut conn = Http1Conn::connect(web.listener()).await.expect("connects");
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let request = format!("GET / HTTP/1.1\r\nHost: {WEB}\r\n\r\n");
        let response = conn.request(request.as_bytes()).await.expect("answered");
        assert_eq!(response.status, 200, "{}", response.text());
        served.insert(response.echo().expect("echo").backend);
    }
    assert_eq!(served.len(), 2, "{served:?}");
}

#[tokio::test]
async fn a_backend_that_drops_the_connection_is_a_502() {
    let web = web(&[]).await;
    let mut conn = Http1Conn::connect(web.listener()).await.expect("connects");
    let request = format!("GET /close HTTP/1.1\r\nHost: {WEB}\r\n\r\n");
    let response = conn.request(request.as_bytes()).await.expect("answered");
    assert_eq!(response.status, 502, "{}", response.text());
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    let text = response.text();
    assert!(text.contains(WEB) && text.contains("failed"), "{text}");
    assert_eq!(
        web.requests_served().await,
        1,
        "not retried: the backend may have acted on it"
    );
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_never_forwarded() {
    let web = web(&[]).await;
    let head = format!("POST /smuggle HTTP/1.1\r\nHost: {WEB}\r\n");
    for (framing, body) in [
        (
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        ("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
        ("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
        ("Transfer-Encoding: gzip\r\n", "hello"),
        (
            "Transfer-Encoding: gzip, chunked\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding: chunked, identity\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        ("Transfer-Encoding: identity\r\n", "hello"),
        ("Transfer-Encoding: xchunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        ("Transfer-Encoding : chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        (
            "Transfer-Encoding: gzip\r\n chunked\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        ("Content-Length: 5\r\ncontent-length: 5\r\n", "hello"),
        ("Content-Length: 5, 5\r\n", "hello"),
        ("Content-Length: +5\r\n", "hello"),
        ("Content-Length: 0x5\r\n", "hello"),
        ("Content-Length: 99999999999999999999999\r\n", "hello"),
        ("Content-Length: 5\r\nX-Nul: a\0b\r\n", "hello"),
    ] {
        let mut conn = Http1Conn::connect(web.listener()).await.expect("connects");
        let request =
            format!("{head}{framing}\r\n{body}GET /after HTTP/1.1\r\nHost: {WEB}\r\n\r\n");
        let response = conn.request(request.as_bytes()).await.expect("answered");
        assert_eq!(response.status, 400, "{framing:?}: {}", response.text());
        assert_eq!(response.header("connection"), Some("close"), "{framing:?}");
        conn.wait_closed()
            .await
            .unwrap_or_else(|e| panic!("{framing:?}: {e:#}"));
    }
    // Whole requests: chunked on HTTP/1.0, where only a length or the
    // connection's end delimits a body.
    for request in [format!(
        "POST /smuggle HTTP/1.0\r\nHost: {WEB}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )] {
        let mut conn = Http1Conn::connect(web.listener()).await.expect("connects");
        let response = conn.request(request.as_bytes()).await.expect("answered");
        assert_eq!(response.status, 400, "{request:?}: {}", response.text());
        conn.wait_closed()
            .await
            .unwrap_or_else(|e| panic!("{request:?}: {e:#}"));
    }
    assert_eq!(web.requests_served().await, 0, "nothing reached a backend");
}

#[tokio::test]
async fn a_malformed_chunked_body_ends_the_connection_and_smuggles_nothing() {
    let web = web(&[]).await;
    let head =
        format!("POST /chunks HTTP/1.1\r\nHost: {WEB}\r\nTransfer-Encoding: chunked\r\n\r\n");
    // After each bad body, a request that must never be read as one.
    let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: {WEB}\r\n\r\n");
    for body in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX\r\n0\r\n\r\n",
        "5\nhello\r\n0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
        "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
    ] {
        let mut conn = Http1Conn::connect(web.listener()).await.expect("connects");
        conn.send(format!("{head}{body}{smuggled}").as_bytes())
            .await
            .expect("sent");
        let answer = conn
            .read_until_closed(WAIT)
            .await
            .unwrap_or_else(|e| panic!("{body:?}: the connection stays open: {e:#}"));
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 400") && text.contains("malformed chunked body"),
            "{body:?}: {text}"
        );
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            1,
            "{body:?}: one answer only, the smuggled request is never read: {text}"
        );
    }
    for backend in &web.backends {
        let stats = backend.stats().await.expect("stats");
        assert_eq!(
            stats.requests,
            0,
            "no whole request reached {}",
            backend.name()
        );
    }
    // The app's bad bodies are not the backends' failures: none is counted
    // against them (enough of those would eject healthy backends).
    let view = web
        .proxy
        .service_view(WEB)
        .await
        .expect("view")
        .expect("web");
    for endpoint in view["endpoints"].as_array().expect("endpoints") {
        assert_eq!(endpoint["failures"], 0, "{endpoint}");
    }
}

#[tokio::test]
async fn header_blocks_over_64_kib_are_refused() {
    let web = web(&[]).await;
    let big = "h".repeat(70 * 1024);
    let fine = "h".repeat(10 * 1024);

    let mut conn = Http1Conn::connect(web.listener()).await.expect("connects");
    let request = format!("GET / HTTP/1.1\r\nHost: {WEB}\r\nX-Fine: {fine}\r\n\r\n");
    let response = conn.request(request.as_bytes()).await.expect("answered");
    assert_eq!(response.status, 200, "under the limit: {}", response.text());
    assert_eq!(
        response.echo().expect("echo").header("x-fine"),
        [fine.as_str()]
    );
    let request = format!("GET / HTTP/1.1\r\nHost: {WEB}\r\nX-Big: {big}\r\n\r\n");
    // The proxy may answer before it has read all of it.
    let _ = conn.send(request.as_bytes()).await;
    let response = conn.response().await.expect("answered");
    assert_eq!(response.status, 431, "{}", response.text());
    conn.wait_closed().await.expect("closed");
    assert_eq!(
        web.requests_served().await,
        1,
        "only the request under the limit"
    );

    // HTTP/2 answers on the stream and keeps the connection: proxy::errors.
}

#[tokio::test]
async fn silent_and_incomplete_connections_are_closed_after_the_header_read_timeout() {
    let web = web(&[("SIDELB_HEADER_READ_TIMEOUT", "1s")]).await;
    // Well within the 10 s default, so the setting is what closed them.
    let bound = Duration::from_secs(5);

    let mut silent = Http1Conn::connect(web.listener()).await.expect("connects");
    let mut partial_head = Http1Conn::connect(web.listener()).await.expect("connects");
    partial_head
        .send(format!("GET / HTTP/1.1\r\nHost: {WEB}\r\nX-Slow: ").as_bytes())
        .await
        .expect("sent");
    let mut partial_preface = tokio::net::TcpStream::connect(web.listener())
        .await
        .expect("connects");
    partial_preface
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("sent");
    let mut preface_only = tokio::net::TcpStream::connect(web.listener())
        .await
        .expect("connects");
    preface_only
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("sent");

    silent
        .wait_closed_within(bound)
        .await
        .expect("a silent connection is closed");
    let response = partial_head.response().await.expect("answered");
    assert_eq!(response.status, 408, "{}", response.text());
    partial_head
        .wait_closed_within(bound)
        .await
        .expect("then closed");
    // HTTP/2: a request head (HEADERS without END_HEADERS) never finished.
    // Once it is open nothing else may come on the connection, so only the
    // timeout can end it.
    let mut partial_block = RawH2::connect(web.listener()).await.expect("connects");
    partial_block
        .until(bound, |f| f.kind == raw_h2::SETTINGS && f.flags == 0)
        .await
        .expect("the proxy's SETTINGS, acknowledged");
    let fields = [
        (&b":method"[..], &b"GET"[..]),
        (b":scheme", b"http"),
        (b":path", b"/"),
    ];
    partial_block
        .send(&raw_h2::frame(
            raw_h2::HEADERS,
            0,
            1,
            &raw_h2::header_block(&fields),
        ))
        .await
        .expect("sent");
    let frames = partial_block
        .until_closed(bound)
        .await
        .expect("an unfinished request head is closed");
    let goaway = frames.iter().find(|f| f.kind == raw_h2::GOAWAY);
    assert_eq!(
        goaway.and_then(raw_h2::Frame::error_code),
        Some(raw_h2::PROTOCOL_ERROR),
        "{frames:?}"
    );
    for (what, stream) in [
        ("a partial preface", partial_preface),
        ("a preface without SETTINGS", preface_only),
    ] {
        // The proxy's HTTP/2 server may have sent its own SETTINGS first.
        let mut conn = Http1Conn::from_stream(stream);
        conn.read_until_closed(bound)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
    }
    assert_eq!(web.requests_served().await, 0);

    // A connection that sends its request in time is served.
    let mut prompt = Http1Conn::connect(web.listener()).await.expect("connects");
    let response = prompt
        .request(format!("GET / HTTP/1.1\r\nHost: {WEB}\r\n\r\n").as_bytes())
        .await
        .expect("answered");
    assert_eq!(response.status, 200);
}
