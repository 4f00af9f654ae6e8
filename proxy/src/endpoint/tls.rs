//! TLS to the pods of services that serve gRPC over TLS
//! (`SIDELB_BACKEND_TLS`).
//!
//! One client configuration for the whole proxy, trusting only the CAs of
//! `SIDELB_BACKEND_TLS_CA` (in-cluster CAs are private, so no system roots),
//! offering ALPN `h2` alone. The file is read at start and again when its
//! modification time or size changes, looked at on each new connection: the
//! kubelet updates a mounted Secret in place, and connections are rare
//! enough for one `stat` each. Each pool hands its endpoints a
//! [`Connector`] with the server name its certificates must carry.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sidelb_config::backend_tls::{self, BackendTls};
use sidelb_config::settings as s;
use sidelb_config::{ProxyConfig, ServiceKey};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A CA file the proxy cannot use.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{}: cannot read {path}: {source}", s::BACKEND_TLS_CA)]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {path} has no readable PEM certificate{}", s::BACKEND_TLS_CA, .why.as_deref().map(|w| format!(" ({w})")).unwrap_or_default())]
    NoCertificate { path: PathBuf, why: Option<String> },
    #[error("{}: {path}: {source}", s::BACKEND_TLS_CA)]
    Rustls {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{}: `{}` is not a server name", s::BACKEND_TLS, .0)]
    ServerName(String),
}

/// The services served over TLS, and the CAs their pods' certificates
/// chain to.
pub(crate) struct TlsServices {
    roots: Arc<Roots>,
    entries: Vec<BackendTls>,
    /// The server name of each entry.
    names: Vec<ServerName<'static>>,
}

impl TlsServices {
    /// From the configuration; `None` when every service is in cleartext.
    pub(crate) fn from_config(config: &ProxyConfig) -> Result<Option<Self>, CaError> {
        let Some(path) = config.backend_tls_ca.as_deref() else {
            return Ok(None);
        };
        if config.backend_tls.is_empty() {
            return Ok(None);
        }
        let names = config
            .backend_tls
            .iter()
            .map(|entry| {
                let name = entry.server_name();
                ServerName::try_from(name.clone()).map_err(|_| CaError::ServerName(name))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(TlsServices {
            roots: Roots::load(path)?,
            entries: config.backend_tls.clone(),
            names,
        }))
    }

    /// How the endpoints of `key` connect.
    pub(crate) fn connector(&self, key: &ServiceKey) -> Connector {
        match backend_tls::find(&self.entries, key).and_then(|i| self.names.get(i)) {
            Some(server_name) => Connector::Tls {
                roots: self.roots.clone(),
                server_name: server_name.clone(),
            },
            None => Connector::Plain,
        }
    }
}

/// Why a TLS connection to an endpoint could not be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub(crate) struct TlsFailure(String);

/// The trusted CAs, reloaded when their file changes.
pub(crate) struct Roots {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

struct Loaded {
    stamp: Option<(SystemTime, u64)>,
    config: Arc<rustls::ClientConfig>,
}

impl Roots {
    /// Reads `path`; an unusable file stops the proxy at start.
    fn load(path: &Path) -> Result<Arc<Self>, CaError> {
        let stamp = stamp(path);
        let config = client_config(path)?;
        Ok(Arc::new(Roots {
            path: path.to_owned(),
            loaded: Mutex::new(Loaded { stamp, config }),
        }))
    }

    /// The configuration of the file as it is now; a changed file that can
    /// no longer be used leaves the last good one in place.
    fn current(&self) -> Arc<rustls::ClientConfig> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.path);
        if now.is_some() && now != loaded.stamp {
            loaded.stamp = now;
            match client_config(&self.path) {
                Ok(config) => {
                    tracing::info!(path = %self.path.display(), "backend CA file changed: reloaded");
                    loaded.config = config;
                }
                Err(e) => tracing::warn!("{e}; the CAs read before stay in use"),
            }
        }
        loaded.config.clone()
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn client_config(path: &Path) -> Result<Arc<rustls::ClientConfig>, CaError> {
    let pem = std::fs::read(path).map_err(|source| CaError::Read {
        path: path.to_owned(),
        source,
    })?;
    let no_cert = |why: Option<String>| CaError::NoCertificate {
        path: path.to_owned(),
        why,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| no_cert(Some(e.to_string())))?;
        roots
            .add(cert)
            .map_err(|e| no_cert(Some(format!("a certificate is not usable as a CA: {e}"))))?;
    }
    if roots.is_empty() {
        return Err(no_cert(None));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| CaError::Rustls {
            path: path.to_owned(),
            source,
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// How a pool's endpoints talk over their TCP connections.
#[derive(Clone)]
pub(crate) enum Connector {
    /// HTTP/2 in cleartext (h2c).
    Plain,
    Tls {
        roots: Arc<Roots>,
        server_name: ServerName<'static>,
    },
}

impl Connector {
    /// The name certificates must be valid for, `None` in cleartext.
    pub(crate) fn server_name(&self) -> Option<String> {
        match self {
            Connector::Plain => None,
            Connector::Tls { server_name, .. } => Some(server_name.to_str().into_owned()),
        }
    }

    /// Opens the connection's session: a TLS handshake that verifies the
    /// certificate and agrees on `h2`, or nothing.
    pub(crate) async fn connect(&self, tcp: TcpStream) -> Result<Stream, TlsFailure> {
        let Connector::Tls { roots, server_name } = self else {
            return Ok(Stream::Plain(tcp));
        };
        let name = server_name.to_str().into_owned();
        let connector = tokio_rustls::TlsConnector::from(roots.current());
        let tls = connector
            .connect(server_name.clone(), tcp)
            .await
            .map_err(|e| TlsFailure(describe(&e, &name)))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(TlsFailure(NO_H2.into()));
        }
        Ok(Stream::Tls(Box::new(tls)))
    }
}

const NO_H2: &str = "the backend did not agree to HTTP/2 (ALPN `h2`); it must offer h2 over TLS";

/// A handshake failure in words an operator can act on.
fn describe(e: &std::io::Error, server_name: &str) -> String {
    use rustls::{CertificateError as C, Error as E};
    let not_tls = |why: &dyn std::fmt::Display| {
        format!(
            "handshake failed ({why}); does the backend serve TLS on this port? (its service is in {})",
            s::BACKEND_TLS
        )
    };
    let Some(rustls) = e.get_ref().and_then(|e| e.downcast_ref::<E>()) else {
        return not_tls(e);
    };
    match rustls {
        E::InvalidCertificate(C::UnknownIssuer) => format!(
            "unknown issuer: the certificate for {server_name} is not signed by a CA in {}",
            s::BACKEND_TLS_CA
        ),
        E::InvalidCertificate(C::BadSignature) => format!(
            "unknown issuer: the signature of the certificate for {server_name} does not verify with the CA of that name in {} (another CA of the same name?)",
            s::BACKEND_TLS_CA
        ),
        E::InvalidCertificate(C::NotValidForName) => {
            format!("certificate not valid for name {server_name}")
        }
        E::InvalidCertificate(C::NotValidForNameContext { presented, .. }) => format!(
            "certificate not valid for name {server_name} (it is valid for {}); if the backend is right, give the name it carries as `SERVICE=NAME` in {}",
            presented
                .iter()
                .map(|p| p.split('"').nth(1).unwrap_or(p))
                .collect::<Vec<_>>()
                .join(", "),
            s::BACKEND_TLS
        ),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            format!("the certificate for {server_name} has expired ({rustls})")
        }
        E::NoApplicationProtocol
        | E::AlertReceived(rustls::AlertDescription::NoApplicationProtocol) => NO_H2.into(),
        E::InvalidMessage(_) => not_tls(rustls),
        other => format!("handshake failed: {other}"),
    }
}

/// An endpoint connection's byte stream.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
