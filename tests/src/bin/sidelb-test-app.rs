//! `sidelb-test-app`: the Rust one of the apps in the languages people write
//! (`tests/apps/README.md`): tonic on ONE channel to the address it is given,
//! N unary calls and one call of each streaming kind plus metadata,
//! large-message, failure, deadline and cancellation checks, then the JSON
//! summary every app prints (`harness::AppSummary`) on stdout.
//!
//! tonic has two ways of its own that the other libraries do not share:
//! a deadline (`Request::set_timeout`, sent as `grpc-timeout` too) that its
//! own timer ends first is reported as CANCELLED "Timeout expired", not
//! DEADLINE_EXCEEDED, so `deadline` takes either; and a call is cancelled by
//! dropping it (RST_STREAM CANCEL), after which the client holds no status,
//! so `cancel` reports the drop and the next call. A unary response merges headers and
//! trailers, so `metadata` reads them apart on a one-reply server stream.

use clap::Parser;
use sidelb_tests::echo::BACKEND_HEADER;
use sidelb_tests::echo::pb::{EchoReply, EchoRequest};
use sidelb_tests::harness::apps::{AppSummary, Check, UnarySummary};
use sidelb_tests::harness::{Echo, client};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Status};

#[derive(Parser, Debug)]
#[command(version)]
struct Flags {
    /// HOST:PORT to dial.
    #[arg(long)]
    target: SocketAddr,
    /// `:authority` to send (default: the target).
    #[arg(long)]
    authority: Option<String>,
    /// Unary calls to tally.
    #[arg(long, default_value_t = 100)]
    calls: u32,
    /// Size of the large-message check (0: skip it).
    #[arg(long, default_value_t = 5 * 1024 * 1024)]
    large_bytes: u32,
    /// Seconds per call.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

/// How tonic words a call its own deadline timer ended.
const TONIC_TIMEOUT: &str = "Timeout expired";

/// Echoed back by the backend, as every `x-echo-*` key is.
const TRACE: &str = "x-echo-trace";

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn failed(status: &Status) -> Check {
    Check::new(
        false,
        format!("{}: {}", code_name(status.code()), status.message()),
        &[],
    )
}

fn values<'a>(md: &'a MetadataMap, key: &str) -> Vec<&'a str> {
    md.get_all(key)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

fn shown(md: &MetadataMap) -> String {
    let mut parts: Vec<String> = md
        .clone()
        .into_headers()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("?")))
        .collect();
    parts.sort();
    parts.join(", ")
}

struct App {
    echo: Echo,
    timeout: Duration,
}

impl App {
    fn request(&self, message: EchoRequest) -> Request<EchoRequest> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    fn payload(text: &str) -> EchoRequest {
        EchoRequest {
            payload: text.as_bytes().to_vec().into(),
            ..Default::default()
        }
    }

    async fn call(&self, message: EchoRequest) -> Result<EchoReply, Status> {
        let request = self.request(message);
        self.echo
            .clone()
            .unary(request)
            .await
            .map(|r| r.into_inner())
    }

    async fn unary(&self, calls: u32) -> UnarySummary {
        let mut by_backend = BTreeMap::new();
        let mut statuses = BTreeMap::new();
        for i in 0..calls {
            let (backend, code) = match self.call(Self::payload(&format!("rust-{i}"))).await {
                Ok(reply) => (Some(reply.backend), Code::Ok),
                Err(status) => (
                    values(status.metadata(), BACKEND_HEADER)
                        .first()
                        .map(|b| b.to_string()),
                    status.code(),
                ),
            };
            *statuses.entry(code_name(code).to_string()).or_insert(0) += 1;
            if let Some(backend) = backend {
                *by_backend.entry(backend).or_insert(0) += 1;
            }
        }
        UnarySummary {
            calls: calls.into(),
            by_backend,
            statuses,
        }
    }

    async fn server_stream(&self) -> Result<Check, Status> {
        const REPLIES: u32 = 5;
        let request = self.request(EchoRequest {
            reply_count: REPLIES,
            ..Self::payload("ss")
        });
        let mut stream = self.echo.clone().server_stream(request).await?.into_inner();
        let mut got = Vec::new();
        while let Some(reply) = stream.message().await? {
            got.push(reply);
        }
        let sequences: Vec<u64> = got.iter().map(|r| r.sequence).collect();
        let ok = sequences == (0..u64::from(REPLIES)).collect::<Vec<_>>()
            && got.iter().all(|r| r.payload.as_ref() == b"ss");
        let backends: Vec<&str> = got.iter().map(|r| r.backend.as_str()).collect();
        Ok(Check::new(
            ok,
            format!("sequences {sequences:?}"),
            &backends,
        ))
    }

    async fn client_stream(&self) -> Result<Check, Status> {
        const MESSAGES: u64 = 4;
        let requests = (0..MESSAGES).map(|_| Self::payload("0123456789"));
        let mut request = Request::new(futures_util::stream::iter(requests));
        request.set_timeout(self.timeout);
        let reply = self.echo.clone().client_stream(request).await?.into_inner();
        let ok = reply.received == MESSAGES && reply.received_bytes == 10 * MESSAGES;
        Ok(Check::new(
            ok,
            format!(
                "received {} messages, {} bytes",
                reply.received, reply.received_bytes
            ),
            &[&reply.backend],
        ))
    }

    async fn bidi(&self) -> Result<Check, Status> {
        const MESSAGES: u64 = 3;
        const REPLIES_EACH: u32 = 2;
        let requests = (0..MESSAGES).map(|i| EchoRequest {
            reply_count: REPLIES_EACH,
            ..Self::payload(&format!("b{i}"))
        });
        let mut request = Request::new(futures_util::stream::iter(requests));
        request.set_timeout(self.timeout);
        let mut stream = self.echo.clone().bidi(request).await?.into_inner();
        let mut got = Vec::new();
        while let Some(reply) = stream.message().await? {
            got.push(reply);
        }
        let expected: Vec<(Vec<u8>, u64)> = (0..MESSAGES)
            .flat_map(|i| (0..REPLIES_EACH).map(move |_| (format!("b{i}").into_bytes(), i + 1)))
            .collect();
        let actual: Vec<(Vec<u8>, u64)> = got
            .iter()
            .map(|r| (r.payload.to_vec(), r.received))
            .collect();
        let in_order = got.iter().zip(0u64..).all(|(r, i)| r.sequence == i);
        let backends: Vec<&str> = got.iter().map(|r| r.backend.as_str()).collect();
        Ok(Check::new(
            actual == expected && in_order,
            format!("{} replies", got.len()),
            &backends,
        ))
    }

    async fn metadata(&self) -> Result<Check, Status> {
        let mut request = self.request(EchoRequest {
            reply_count: 1,
            ..Self::payload("md")
        });
        let md = request.metadata_mut();
        md.insert(TRACE, MetadataValue::from_static("rust-123"));
        md.insert("x-other", MetadataValue::from_static("not-echoed"));
        let response = self.echo.clone().server_stream(request).await?;
        let headers = response.metadata().clone();
        let mut stream = response.into_inner();
        let mut backend = String::new();
        while let Some(reply) = stream.message().await? {
            backend = reply.backend;
        }
        let trailers = stream.trailers().await?.unwrap_or_default();
        let ok = values(&headers, TRACE) == ["rust-123"]
            && values(&trailers, TRACE) == ["rust-123"]
            && values(&headers, "x-other").is_empty()
            && values(&headers, BACKEND_HEADER) == [backend.as_str()];
        Ok(Check::new(
            ok,
            format!(
                "headers [{}], trailers [{}]",
                shown(&headers),
                shown(&trailers)
            ),
            &[&backend],
        ))
    }

    async fn large(&self, size: u32) -> Result<Check, Status> {
        let bytes = usize::try_from(size).unwrap_or(usize::MAX);
        let up = self
            .call(EchoRequest {
                payload: vec![b'u'; bytes].into(),
                ..Default::default()
            })
            .await?;
        let down = self
            .call(EchoRequest {
                reply_size: size,
                ..Default::default()
            })
            .await?;
        let ok = up.payload.len() == bytes
            && up.payload.first() == Some(&b'u')
            && down.payload.len() == bytes;
        Ok(Check::new(
            ok,
            format!(
                "echoed {} bytes, received {} bytes",
                up.payload.len(),
                down.payload.len()
            ),
            &[&up.backend, &down.backend],
        ))
    }

    async fn failure(&self) -> Check {
        let asked = EchoRequest {
            fail_code: Code::FailedPrecondition as i32,
            fail_message: "asked to fail".into(),
            ..Default::default()
        };
        match self.call(asked).await {
            Ok(_) => Check::new(false, "the call succeeded", &[]),
            Err(status) => {
                let backends = values(status.metadata(), BACKEND_HEADER);
                let ok = status.code() == Code::FailedPrecondition
                    && status.message() == "asked to fail"
                    && !backends.is_empty();
                Check::new(
                    ok,
                    format!("{}: {}", code_name(status.code()), status.message()),
                    &backends,
                )
            }
        }
    }

    /// A plain call on the same channel: the backend that answered, and its status.
    async fn afterwards(&self) -> (String, Code) {
        match self.call(Self::payload("after")).await {
            Ok(reply) => (reply.backend, Code::Ok),
            Err(status) => (String::new(), status.code()),
        }
    }

    async fn deadline(&self) -> Check {
        let mut request = Request::new(EchoRequest {
            delay_ms: 5000,
            ..Self::payload("slow")
        });
        request.set_timeout(Duration::from_millis(200));
        let (code, message) = match self.echo.clone().unary(request).await {
            Ok(_) => (Code::Ok, String::new()),
            Err(status) => (status.code(), status.message().to_string()),
        };
        // tonic's own timer, which races the far end's DEADLINE_EXCEEDED,
        // ends the call as CANCELLED "Timeout expired".
        let expired =
            code == Code::DeadlineExceeded || (code == Code::Cancelled && message == TONIC_TIMEOUT);
        let (backend, next) = self.afterwards().await;
        Check::new(
            expired && next == Code::Ok,
            format!(
                "200 ms deadline on a 5 s call: {} ({message}); next call: {}",
                code_name(code),
                code_name(next)
            ),
            &[&backend],
        )
    }

    async fn cancel(&self) -> Result<Check, Status> {
        let request = self.request(EchoRequest {
            reply_count: 50,
            delay_ms: 200,
            ..Self::payload("c")
        });
        let mut stream = self.echo.clone().server_stream(request).await?.into_inner();
        let first = stream.message().await?;
        drop(stream);
        let (backend, next) = self.afterwards().await;
        let first = first.map(|r| r.backend).unwrap_or_default();
        Ok(Check::new(
            !first.is_empty() && next == Code::Ok,
            format!(
                "dropped after the first reply (tonic's cancel); next call: {}",
                code_name(next)
            ),
            &[&first, &backend],
        ))
    }
}

fn outcome(result: Result<Check, Status>) -> Check {
    result.unwrap_or_else(|status| failed(&status))
}

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    let authority = flags
        .authority
        .clone()
        .unwrap_or_else(|| flags.target.to_string());
    let echo = match client::connect_with_authority(flags.target, &authority).await {
        Ok(echo) => echo,
        Err(err) => {
            eprintln!("sidelb-test-app: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let app = App {
        echo,
        timeout: Duration::try_from_secs_f64(flags.timeout).unwrap_or(Duration::from_secs(10)),
    };
    let unary = app.unary(flags.calls).await;
    let mut checks = BTreeMap::new();
    checks.insert("server_stream".into(), outcome(app.server_stream().await));
    checks.insert("client_stream".into(), outcome(app.client_stream().await));
    checks.insert("bidi".into(), outcome(app.bidi().await));
    checks.insert("metadata".into(), outcome(app.metadata().await));
    checks.insert("failure".into(), app.failure().await);
    checks.insert("deadline".into(), app.deadline().await);
    checks.insert("cancel".into(), outcome(app.cancel().await));
    if flags.large_bytes > 0 {
        checks.insert("large".into(), outcome(app.large(flags.large_bytes).await));
    }
    let summary = AppSummary {
        language: "rust".into(),
        target: flags.target.to_string(),
        unary,
        checks,
    };
    match serde_json::to_string(&summary) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("sidelb-test-app: {err}");
            ExitCode::FAILURE
        }
    }
}
