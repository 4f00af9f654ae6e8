//! The end-to-end test harness: real processes on 127.0.0.1, started and
//! stopped by the test, and clients that count where every call landed.
//!
//! - [`Backend`]: a `sidelb-test-backend` process; [`BackendOptions`] for slow,
//!   flaky or stream-limited ones.
//! - [`EndpointsFile`]: the file of `SIDELB_DISCOVERY=file:PATH`, rewritten atomically.
//! - [`Proxy`]: a `sidelb-proxy` process, on free ports, ready when returned.
//! - [`EchoSetup`]: named backends behind [`ECHO`] and a proxy in front, all
//!   connected: the start of most proxy tests.
//! - [`client`]: an `Echo` client on one HTTP/2 connection.
//! - [`Tally`], [`unary_calls`], [`Load`]: calls run in bounded numbers and
//!   time, counted per backend and per status.
//! - [`AppClient`]: the same checks from an app in another language (Python,
//!   Go, Java, Node, Rust) on its own gRPC library, read as one [`AppSummary`].
//! - [`OpenCall`]: a bidi call held open on a known backend.
//! - [`RawGrpc`]: a call at the HTTP/2 level, to see trailers-only responses
//!   and far-end deadlines that gRPC libraries hide.
//! - [`RawH2`]: HTTP/2 frames written and read by hand, malformed ones included.
//! - [`RefusingBackend`]: a backend that refuses every stream (`REFUSED_STREAM`).
//! - [`metrics`]: the proxy's `/metrics`, parsed and queried by labels.
//! - [`Http1Conn`], [`Http1Backend`]: HTTP/1.1 byte for byte (malformed
//!   framing included) and a backend that echoes what reached it.
//! - [`LivePage`]: the proxy's live page in headless Chromium, read as shown.
//! - [`Injector`]: a `sidelb-injector` process serving a given certificate.
//! - [`Kubectl`]: the real `kubectl` against a kubeconfig, in its own scratch dir.
//! - [`ControlPlane`]: the real control plane of `make cluster` (kube-apiserver,
//!   kube-controller-manager, etcd), a private one or the running one.
//! - [`PodNet`]: a pod's network namespace and an outside one, to tell a
//!   loopback client from one that reaches the pod IP.
//! - [`kube_cluster::Kube`]: a private control plane with a node agent and an admin
//!   client: objects applied, Deployments scaled and restarted, pods awaited.
//! - [`NodeAgent`]: a `sidelb-node-agent` playing the kubelet against a real control plane.
//! - [`wait_until`]: the only way to wait: a condition, a bound, no sleeps.
//! - [`Process`]: the guard under all of these: killed on drop, logs kept and
//!   printed when a test fails.
//!
//! The binaries are found in the cargo target directory ([`binary_path`]);
//! build them first (`cargo build --workspace --bins`).
//!
//! # A proxy test
//!
//! ```no_run
//! use sidelb_tests::echo::pb::EchoRequest;
//! use sidelb_tests::harness::*;
//! use std::time::Duration;
//!
//! # async fn example() -> anyhow::Result<()> {
//! // Two backends behind Service echo.default:50051.
//! let a = Backend::spawn("a", BackendOptions::default()).await?;
//! let b = Backend::spawn("b", BackendOptions::default()).await?;
//! let mut service = ServiceEndpoints::new("echo", "default", 50051, &[a.addr(), b.addr()]);
//! let file = EndpointsFile::create(&[service.clone()])?;
//! let proxy = Proxy::spawn(ProxyOptions::file_discovery(&file).upstream("echo.default:50051")).await?;
//!
//! // One connection, many requests: every backend gets some.
//! let client = proxy.connect("echo.default:50051").await?;
//! let tally = unary_calls(&client, 200, &EchoRequest::default()).await;
//! assert_eq!(tally.ok(), 200, "{tally}");
//! assert!(tally.served_by("a") > 0 && tally.served_by("b") > 0, "{tally}");
//!
//! // A third backend appears while the client keeps going: it gets calls.
//! let c = Backend::spawn("c", BackendOptions::default()).await?;
//! let load = Load::start(&client, EchoRequest::default(), LoadLimits::default());
//! service.endpoints.push(c.addr().to_string());
//! file.write(&[service])?;
//! wait_until("c to serve calls", Duration::from_secs(10), || async {
//!     (load.total().served_by("c") > 0).then_some(())
//! })
//! .await?;
//! let tally = load.stop().await;
//! assert_eq!(tally.unattributed(), 0, "the proxy failed calls itself: {tally}");
//! # Ok(())
//! # }
//! ```

pub mod apps;
pub mod backend;
pub mod binary;
pub mod browser;
pub mod chart;
pub mod client;
pub mod cluster_ip;
pub mod control_plane;
pub mod endpoints_file;
pub mod http1;
pub mod http_get;
pub mod injector;
pub mod kube_cluster;
pub mod kubectl;
pub mod load;
pub mod metrics;
pub mod netns;
pub mod node_agent;
pub mod open_call;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod raw_grpc;
pub mod raw_h2;
pub mod refusing;
pub mod scratch;
pub mod setup;
pub mod tally;
pub mod wait;

pub use apps::{AppClient, AppSummary, Language};
pub use backend::{Backend, BackendOptions, write_health};
pub use binary::binary_path;
pub use browser::LivePage;
pub use client::Echo;
pub use control_plane::ControlPlane;
pub use endpoints_file::{EndpointsFile, ServiceEndpoints};
pub use http1::{Http1Backend, Http1Conn, Http1Echo, Http1Response};
pub use injector::Injector;
pub use kubectl::{Kubectl, kubectl_present};
pub use load::{Load, LoadLimits};
pub use netns::PodNet;
pub use node_agent::NodeAgent;
pub use open_call::OpenCall;
pub use process::Process;
pub use proxy::{Proxy, ProxyOptions};
pub use raw_grpc::{PlainResponse, RawGrpc, RawResponse};
pub use raw_h2::RawH2;
pub use refusing::RefusingBackend;
pub use scratch::ScratchDir;
pub use setup::{ECHO, EchoSetup};
pub use tally::{Tally, unary_calls, unary_calls_concurrently};
pub use wait::wait_until;
