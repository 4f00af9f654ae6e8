//! The kubelet's probes: `httpGet` (HTTP or HTTPS, the certificate not
//! verified, as the kubelet does), `tcpSocket`, `grpc` (`grpc.health.v1`) and
//! `exec` (inside the container's namespaces). Each try is bounded by the
//! probe's `timeoutSeconds`; the outcome is success or a reason.

use super::container::{Identity, exec_in};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// What a probe runs against.
#[derive(Clone, Debug)]
pub struct Target {
    pub ip: IpAddr,
    pub ports: Vec<ContainerPort>,
    pub pid: Option<u32>,
    pub env: Vec<(String, String)>,
    pub identity: Identity,
}

/// The probe's timing, with the API's defaults.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(probe: &Probe) -> Timing {
        let secs = |v: Option<i32>, default: u64| {
            Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
        };
        let count = |v: Option<i32>, default: u32| {
            v.and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// One try of `probe`: `Ok` on success, else why it failed.
pub async fn check(probe: &Probe, target: &Target) -> Result<()> {
    let timeout = Timing::of(probe).timeout;
    match tokio::time::timeout(timeout, try_once(probe, target, timeout)).await {
        Ok(outcome) => outcome,
        Err(_) => bail!("no answer within {timeout:?}"),
    }
}

async fn try_once(probe: &Probe, target: &Target, timeout: Duration) -> Result<()> {
    if let Some(http) = &probe.http_get {
        let port = port(&http.port, &target.ports)?;
        let host = http.host.as_deref().filter(|h| !h.is_empty());
        let ip: IpAddr = match host {
            Some(h) => h
                .parse()
                .with_context(|| format!("httpGet host {h:?} is not an IP address"))?,
            None => target.ip,
        };
        let addr = SocketAddr::new(ip, port);
        let path = http.path.as_deref().unwrap_or("/");
        let headers: Vec<(String, String)> = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let status = if http.scheme.as_deref() == Some("HTTPS") {
            let tls = tokio_rustls::TlsConnector::from(unverified_tls()?)
                .connect(ServerName::IpAddress(ip.into()), tcp)
                .await
                .with_context(|| format!("TLS with {addr}"))?;
            get(tls, addr, path, &headers).await?
        } else {
            get(tcp, addr, path, &headers).await?
        };
        if !(200..400).contains(&status) {
            bail!("HTTP probe failed with statuscode: {status}");
        }
        return Ok(());
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = port(&tcp.port, &target.ports)?;
        let addr = SocketAddr::new(target.ip, port);
        TcpStream::connect(addr)
            .await
            .with_context(|| format!("dial tcp {addr}"))?;
        return Ok(());
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).context("grpc probe port out of range")?;
        return grpc_health(
            SocketAddr::new(target.ip, port),
            grpc.service.clone().unwrap_or_default(),
            timeout,
        )
        .await;
    }
    if let Some(exec) = &probe.exec {
        let pid = target.pid.context("the container is not running")?;
        let words = exec.command.clone().unwrap_or_default();
        let (code, output) = exec_in(pid, &words, &target.env, target.identity).await?;
        if code != 0 {
            bail!("command {words:?} exited with {code}: {}", output.trim());
        }
        return Ok(());
    }
    bail!("the probe names no handler (httpGet, tcpSocket, grpc or exec)")
}

/// A port given by number or by the name of one of the container's ports.
fn port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).with_context(|| format!("port {n} out of range")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            let found = ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()));
            let port =
                found.with_context(|| format!("the container has no port named {name:?}"))?;
            u16::try_from(port.container_port).context("port out of range")
        }
    }
}

async fn get(
    stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
) -> Result<u16> {
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let mut request = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "kube-probe/sidelb-node-agent");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new())?)
        .await?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    connection.abort();
    Ok(status)
}

fn unverified_tls() -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The kubelet does not verify the certificate of an HTTPS probe.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: i32 = 1;

async fn grpc_health(addr: SocketAddr, service: String, timeout: Duration) -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(timeout)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let response = grpc
        .unary(
            tonic::Request::new(HealthCheckRequest { service }),
            path,
            codec,
        )
        .await
        .map_err(|status| {
            anyhow::anyhow!("health check: {} {}", status.code(), status.message())
        })?;
    let status = response.into_inner().status;
    if status != SERVING {
        bail!("service unhealthy (responded with status {status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_ports_resolve_against_the_container() {
        let ports = vec![ContainerPort {
            name: Some("admin".into()),
            container_port: 4191,
            ..Default::default()
        }];
        assert_eq!(
            port(&IntOrString::String("admin".into()), &ports).expect("named"),
            4191
        );
        assert_eq!(port(&IntOrString::Int(8080), &ports).expect("number"), 8080);
        let err = port(&IntOrString::String("grpc".into()), &ports).expect_err("unknown");
        assert!(err.to_string().contains("\"grpc\""), "{err}");
    }

    #[test]
    fn probe_timing_takes_the_api_defaults() {
        let timing = Timing::of(&Probe::default());
        assert_eq!(timing.period, Duration::from_secs(10));
        assert_eq!(timing.timeout, Duration::from_secs(1));
        assert_eq!((timing.success_threshold, timing.failure_threshold), (1, 3));
    }
}
