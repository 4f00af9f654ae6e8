//! What each `Echo` call does, and the counters that `Stats` reports.
//!
//! The rules, the same for every method:
//! - a call is counted when it starts (`Stats` itself is never counted);
//! - the backend's own delay (`--delay-ms`) is waited once, before anything
//!   else: it is a slow backend, not a slow request;
//! - with `--fail-every N`, every Nth call fails at once with `--fail-code`:
//!   a flaky backend, for outlier-ejection scenarios;
//! - a request with `fail_code` fails the call as soon as it is received;
//! - each reply is preceded by its request's `delay_ms`;
//! - a call that is cancelled (client gone, deadline) is dropped by tonic, and
//!   the in-flight count follows because it is held by a guard.

use super::pb::echo_server::Echo;
use super::pb::{EchoReply, EchoRequest, StatsReply, StatsRequest};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tonic::{Code, Request, Response, Status, Streaming};

/// How one backend instance behaves, from its flags.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Its name, returned in every reply.
    pub name: String,
    /// Waited at the start of every call.
    pub delay: Duration,
    /// Every Nth call fails with `fail_code`; 0: never.
    pub fail_every: u64,
    pub fail_code: Code,
}

/// The `Echo` service of one backend instance.
#[derive(Debug)]
pub struct EchoService {
    behaviour: Behaviour,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    unary: AtomicU64,
    server_stream: AtomicU64,
    client_stream: AtomicU64,
    bidi: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

#[derive(Clone, Copy)]
enum Method {
    Unary,
    ServerStream,
    ClientStream,
    Bidi,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

impl EchoService {
    pub fn new(behaviour: Behaviour) -> Self {
        EchoService {
            behaviour,
            counters: Arc::default(),
        }
    }

    /// Counts a new call and applies the backend-wide behaviour to it.
    async fn start(&self, method: Method) -> Result<Call, Status> {
        let counters = &self.counters;
        let number = counters.calls.fetch_add(1, Relaxed) + 1;
        let per_method = match method {
            Method::Unary => &counters.unary,
            Method::ServerStream => &counters.server_stream,
            Method::ClientStream => &counters.client_stream,
            Method::Bidi => &counters.bidi,
        };
        per_method.fetch_add(1, Relaxed);
        let call = Call::new(self.behaviour.name.clone(), counters.clone());
        if !self.behaviour.delay.is_zero() {
            tokio::time::sleep(self.behaviour.delay).await;
        }
        let every = self.behaviour.fail_every;
        if every > 0 && number.is_multiple_of(every) {
            let message = format!("call {number}: this backend fails every {every} calls");
            return Err(call.fail(Status::new(self.behaviour.fail_code, message)));
        }
        Ok(call)
    }
}

/// One call being served: keeps the in-flight count while it lives.
struct Call {
    backend: String,
    counters: Arc<Counters>,
    replies: u64,
    received: u64,
    received_bytes: u64,
}

impl Call {
    fn new(backend: String, counters: Arc<Counters>) -> Self {
        let now = counters.in_flight.fetch_add(1, Relaxed) + 1;
        counters.peak_in_flight.fetch_max(now, Relaxed);
        Call {
            backend,
            counters,
            replies: 0,
            received: 0,
            received_bytes: 0,
        }
    }

    fn fail(&self, status: Status) -> Status {
        self.counters.failed.fetch_add(1, Relaxed);
        status
    }

    /// Takes in one request: counts it, and fails the call if it asks to.
    fn receive(&mut self, request: &EchoRequest) -> Result<(), Status> {
        self.received += 1;
        self.received_bytes += request.payload.len() as u64;
        match request.fail_code {
            0 => Ok(()),
            code => Err(self.fail(Status::new(
                Code::from_i32(code),
                request.fail_message.clone(),
            ))),
        }
    }

    /// The next reply to `request`, after its delay.
    async fn reply(&mut self, request: &EchoRequest) -> EchoReply {
        if request.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(request.delay_ms.into())).await;
        }
        let payload = match request.reply_size {
            0 => request.payload.clone(),
            size => Bytes::from(vec![0u8; size as usize]),
        };
        let sequence = self.replies;
        self.replies += 1;
        EchoReply {
            backend: self.backend.clone(),
            payload,
            sequence,
            received: self.received,
            received_bytes: self.received_bytes,
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Replies asked for by one request on a streaming method.
fn reply_count(request: &EchoRequest) -> u32 {
    request.reply_count.max(1)
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let mut call = self.start(Method::Unary).await?;
        let request = request.into_inner();
        call.receive(&request)?;
        Ok(Response::new(call.reply(&request).await))
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<Self::ServerStreamStream>, Status> {
        let mut call = self.start(Method::ServerStream).await?;
        let request = request.into_inner();
        call.receive(&request)?;
        let replies = stream::unfold((call, request, 0), |(mut call, request, sent)| async move {
            if sent == reply_count(&request) {
                return None;
            }
            let reply = call.reply(&request).await;
            Some((Ok(reply), (call, request, sent + 1)))
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        let mut call = self.start(Method::ClientStream).await?;
        let mut requests = request.into_inner();
        let mut last = EchoRequest::default();
        while let Some(request) = requests.message().await? {
            call.receive(&request)?;
            last = request;
        }
        Ok(Response::new(call.reply(&last).await))
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::BidiStream>, Status> {
        let call = self.start(Method::Bidi).await?;
        let state = BidiState {
            call,
            requests: request.into_inner(),
            current: None,
            ended: false,
        };
        Ok(Response::new(Box::pin(stream::unfold(
            state,
            BidiState::next,
        ))))
    }

    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsReply>, Status> {
        let c = &self.counters;
        Ok(Response::new(StatsReply {
            backend: self.behaviour.name.clone(),
            calls: c.calls.load(Relaxed),
            unary: c.unary.load(Relaxed),
            server_stream: c.server_stream.load(Relaxed),
            client_stream: c.client_stream.load(Relaxed),
            bidi: c.bidi.load(Relaxed),
            failed: c.failed.load(Relaxed),
            in_flight: c.in_flight.load(Relaxed),
            peak_in_flight: c.peak_in_flight.load(Relaxed),
        }))
    }
}

/// A bidi call between two replies: the request being answered and how many
/// replies it still asks for.
struct BidiState {
    call: Call,
    requests: Streaming<EchoRequest>,
    current: Option<(EchoRequest, u32)>,
    ended: bool,
}

impl BidiState {
    async fn next(mut self) -> Option<(Result<EchoReply, Status>, Self)> {
        if self.ended {
            return None;
        }
        loop {
            if let Some((request, left)) = self.current.take()
                && left > 0
            {
                let reply = self.call.reply(&request).await;
                self.current = Some((request, left - 1));
                return Some((Ok(reply), self));
            }
            let received = match self.requests.next().await {
                None => return None,
                Some(received) => received,
            };
            let checked = received.and_then(|request| {
                self.call.receive(&request)?;
                Ok(request)
            });
            match checked {
                Ok(request) => {
                    let left = reply_count(&request);
                    self.current = Some((request, left));
                }
                Err(status) => {
                    self.ended = true;
                    return Some((Err(status), self));
                }
            }
        }
    }
}
