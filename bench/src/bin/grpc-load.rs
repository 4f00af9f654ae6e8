//! `grpc-load`: open-loop gRPC unary load at a fixed rate that judges every
//! call the way a gRPC client does, for `bench/rollout.py`.
//!
//! h2load counts HTTP statuses, but a gRPC failure is usually an HTTP 200
//! whose trailers say `grpc-status: 14`; this tool reads the status of every
//! call (trailers, or trailers-only headers; a non-200 HTTP status or a
//! broken stream is a failure too). Like a gRPC channel it reconnects when
//! its connection closes, and a call that provably never reached the server
//! (refused before it was sent, `REFUSED_STREAM`, or above a `GOAWAY`'s last
//! stream) is sent once more on a fresh connection, as gRPC's transparent
//! retry does; nothing else is retried.
//!
//! Calls start on schedule whatever the answers (open loop, so a slow
//! moment shows in the latencies instead of lowering the rate), until
//! `--duration-ms` or SIGINT, then the calls in flight finish. Each call
//! is one line of `--log`: start (µs after the first call), latency (µs),
//! outcome (`ok`, or what failed). The first stdout line is
//! `started UNIX_MICROS`; the last a JSON summary.
//!
//! ```text
//! grpc-load --target 127.0.0.1:PORT --authority svc.ns:port --rate 2000 \
//!     --connections 4 --duration-ms 10000 --log calls.log
//! ```

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Request};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

struct Flags {
    target: SocketAddr,
    authority: String,
    path: String,
    rate: u64,
    connections: usize,
    duration: Duration,
    timeout: Duration,
    /// Asked of the backend per call (`EchoRequest.delay_ms`), so calls are
    /// in flight when a backend goes.
    delay_ms: u32,
    log: String,
}

fn usage() -> ! {
    eprintln!(
        "usage: grpc-load --target IP:PORT --authority HOST:PORT [--path /pkg.Svc/Method] \
         --rate CALLS_PER_S --connections N --duration-ms MS [--timeout-ms MS] [--delay-ms MS] --log FILE"
    );
    std::process::exit(2)
}

fn flags() -> Flags {
    let mut f = Flags {
        target: SocketAddr::from(([127, 0, 0, 1], 0)),
        authority: String::new(),
        path: "/sidelb.test.Echo/Unary".into(),
        rate: 1000,
        connections: 4,
        duration: Duration::from_secs(10),
        timeout: Duration::from_secs(5),
        delay_ms: 0,
        log: "calls.log".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        let num = |v: &str| v.parse::<u64>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--target" => f.target = value.parse().unwrap_or_else(|_| usage()),
            "--authority" => f.authority = value,
            "--path" => f.path = value,
            "--rate" => f.rate = num(&value).max(1),
            "--connections" => f.connections = num(&value).max(1) as usize,
            "--duration-ms" => f.duration = Duration::from_millis(num(&value)),
            "--timeout-ms" => f.timeout = Duration::from_millis(num(&value)),
            "--delay-ms" => f.delay_ms = num(&value) as u32,
            "--log" => f.log = value,
            _ => usage(),
        }
    }
    if f.target.port() == 0 || f.authority.is_empty() {
        usage()
    }
    f
}

/// One HTTP/2 connection, opened again when it has closed.
struct Channel {
    target: SocketAddr,
    current: tokio::sync::Mutex<Connection>,
}

#[derive(Default)]
struct Connection {
    open: Option<(SendRequest<Bytes>, JoinHandle<()>)>,
    /// Counts connections opened, so that many calls refused by the same
    /// closing connection open one new connection, not one each.
    generation: u64,
}

impl Channel {
    /// The connection to use; a new one if the current one has closed or is
    /// the one (`stale`) a call was just refused on.
    async fn sender(&self, stale: Option<u64>) -> Result<(SendRequest<Bytes>, u64), String> {
        let mut current = self.current.lock().await;
        if let Some((sender, driver)) = current.open.as_ref()
            && stale != Some(current.generation)
            && !driver.is_finished()
        {
            return Ok((sender.clone(), current.generation));
        }
        // A closing connection finishes its streams on its own.
        current.open = None;
        let tcp = TcpStream::connect(self.target)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        // Windows as large as a gRPC channel's, so that answers waiting to
        // be read never count as abuse (h2 limits small frames buffered
        // unread to half the connection window).
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 23)
            .handshake(tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        current.generation += 1;
        current.open = Some((sender.clone(), driver));
        Ok((sender, current.generation))
    }
}

/// How one attempt ended.
enum Attempt {
    Done(Result<(), String>),
    /// Never processed by the server: may be sent again (on a new
    /// connection, if it was refused on this generation's).
    NotSent(String, u64),
}

fn never_processed(e: &h2::Error) -> bool {
    e.is_remote() && (e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM))
}

fn grpc_status(headers: &HeaderMap) -> Option<&str> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok())
}

/// A gRPC-framed `EchoRequest` with only `delay_ms` (field 2) set.
fn request_body(delay_ms: u32) -> Bytes {
    let mut proto = Vec::new();
    if delay_ms > 0 {
        proto.push(0x10);
        let mut v = delay_ms;
        while v >= 0x80 {
            proto.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        proto.push(v as u8);
    }
    let mut framed = vec![0];
    framed.extend_from_slice(&(proto.len() as u32).to_be_bytes());
    framed.extend_from_slice(&proto);
    Bytes::from(framed)
}

async fn attempt(
    channel: &Channel,
    stale: Option<u64>,
    authority: &str,
    path: &str,
    body: &Bytes,
) -> Attempt {
    let (sender, generation) = match channel.sender(stale).await {
        Ok(s) => s,
        Err(e) => return Attempt::Done(Err(e)),
    };
    let mut sender = match sender.ready().await {
        Ok(s) => s,
        Err(e) => return Attempt::NotSent(format!("not ready: {e}"), generation),
    };
    let request = Request::post(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a valid request");
    let (response, mut sending) = match sender.send_request(request, false) {
        Ok(r) => r,
        Err(e) => return Attempt::NotSent(format!("refused: {e}"), generation),
    };
    let _ = sending.send_data(body.clone(), true);
    let response = match response.await {
        Ok(r) => r,
        Err(e) if never_processed(&e) => {
            let stale = if e.is_go_away() { generation } else { u64::MAX };
            return Attempt::NotSent(e.to_string(), stale);
        }
        Err(e) => return Attempt::Done(Err(format!("stream: {e}"))),
    };
    let (head, mut body) = response.into_parts();
    if head.status != http::StatusCode::OK {
        return Attempt::Done(Err(format!("http {}", head.status.as_u16())));
    }
    if let Some(status) = grpc_status(&head.headers) {
        let status = status.to_owned();
        return Attempt::Done(if status == "0" {
            Ok(())
        } else {
            Err(format!("grpc {status}"))
        });
    }
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(chunk) => {
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            Err(e) => return Attempt::Done(Err(format!("body: {e}"))),
        }
    }
    Attempt::Done(match body.trailers().await {
        Ok(Some(t)) => match grpc_status(&t) {
            Some("0") => Ok(()),
            Some(s) => Err(format!("grpc {s}")),
            None => Err("no grpc-status".into()),
        },
        Ok(None) => Err("no trailers".into()),
        Err(e) => Err(format!("trailers: {e}")),
    })
}

async fn call(channel: &Channel, authority: &str, path: &str, body: &Bytes) -> Result<(), String> {
    match attempt(channel, None, authority, path, body).await {
        Attempt::Done(r) => r,
        Attempt::NotSent(_, stale) => {
            match attempt(channel, Some(stale), authority, path, body).await {
                Attempt::Done(r) => r,
                Attempt::NotSent(why, _) => Err(format!("not sent twice: {why}")),
            }
        }
    }
}

type Record = (u64, u64, String);

fn main() {
    let f = flags();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let records: Arc<Mutex<Vec<Record>>> = Arc::default();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default();
    println!("started {unix}");
    let _ = std::io::stdout().flush();
    runtime.block_on(async {
        let start = Instant::now();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = stop.send(true);
            }
        });
        let authority: Arc<str> = f.authority.clone().into();
        let path: Arc<str> = f.path.clone().into();
        let body = request_body(f.delay_ms);
        let mut schedulers = Vec::new();
        let period = Duration::from_secs_f64(f.connections as f64 / f.rate as f64);
        for i in 0..f.connections {
            let channel = Arc::new(Channel {
                target: f.target,
                current: tokio::sync::Mutex::default(),
            });
            let (records, authority, path) = (records.clone(), authority.clone(), path.clone());
            let body = body.clone();
            let (duration, timeout) = (f.duration, f.timeout);
            let mut stopped = stopped.clone();
            let offset = period.mul_f64(i as f64 / f.connections as f64);
            schedulers.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(start + offset, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut calls = tokio::task::JoinSet::new();
                loop {
                    let at = tokio::select! {
                        at = tick.tick() => at,
                        _ = stopped.wait_for(|stop| *stop) => break,
                    };
                    if at.duration_since(start) >= duration {
                        break;
                    }
                    let (channel, records) = (channel.clone(), records.clone());
                    let (authority, path, body) = (authority.clone(), path.clone(), body.clone());
                    calls.spawn(async move {
                        let began = Instant::now();
                        let outcome =
                            tokio::time::timeout(timeout, call(&channel, &authority, &path, &body))
                                .await;
                        let latency = began.elapsed().as_micros() as u64;
                        let outcome = match outcome {
                            Ok(Ok(())) => "ok".to_owned(),
                            Ok(Err(e)) => e.replace(char::is_whitespace, "_"),
                            Err(_) => "timeout".to_owned(),
                        };
                        let offset = began.duration_since(start).as_micros() as u64;
                        if let Ok(mut r) = records.lock() {
                            r.push((offset, latency, outcome));
                        }
                    });
                    while calls.try_join_next().is_some() {}
                }
                while calls.join_next().await.is_some() {}
            }));
        }
        for s in schedulers {
            let _ = s.await;
        }
    });
    let mut records = records.lock().map(|r| r.clone()).unwrap_or_default();
    records.sort();
    let mut log = std::io::BufWriter::new(std::fs::File::create(&f.log).expect("log file"));
    for (at, latency, outcome) in &records {
        let _ = writeln!(log, "{at} {latency} {outcome}");
    }
    let _ = log.flush();
    let ok = records.iter().filter(|r| r.2 == "ok").count();
    println!(
        "{{\"sent\": {}, \"ok\": {ok}, \"failed\": {}}}",
        records.len(),
        records.len() - ok
    );
}
