//! The serving certificate: loaded from PEM files, swapped in when they change.
//!
//! Certificates are rotated by rewriting the files (a Secret volume update,
//! cert-manager), not by restarting the injector. The files are polled: a
//! Secret volume changes by swapping a symlink, which file watchers see
//! unreliably, and reading two small files every few seconds is cheap. The
//! TLS config asks [`CertResolver`] for the certificate at every handshake, so
//! new connections get the new one while open connections carry on.
//!
//! A change that does not load (a key that does not match the certificate,
//! say, because only one file has been written so far) keeps the current
//! certificate and is retried when the files change again.

use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The ALPN protocols served, HTTP/2 first as kube-apiserver prefers it.
pub const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a PEM certificate chain: {source}")]
    Cert { path: PathBuf, source: pem::Error },
    #[error("{path} has no certificate")]
    NoCert { path: PathBuf },
    #[error("{path} is not a PEM private key: {source}")]
    Key { path: PathBuf, source: pem::Error },
    #[error("cannot use the key in {key} with the certificate in {cert}: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The two files of the serving certificate.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Hands out the current certificate at every handshake.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server configuration that serves `resolver`'s certificate with
/// ALPN `h2` and `http/1.1`.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Watches the files and swaps the certificate in the resolver.
pub struct Reloader {
    files: CertFiles,
    resolver: Arc<CertResolver>,
    /// The file contents last looked at, loaded or not.
    seen: (Vec<u8>, Vec<u8>),
}

impl Reloader {
    /// Loads the certificate; failing here stops the injector's start.
    pub fn load(files: CertFiles) -> Result<(Arc<CertResolver>, Reloader), TlsError> {
        let seen = (read(&files.cert)?, read(&files.key)?);
        let key = certified_key(&files, &seen.0, &seen.1)?;
        let resolver = Arc::new(CertResolver {
            current: ArcSwap::from_pointee(key),
        });
        let reloader = Reloader {
            files,
            resolver: resolver.clone(),
            seen,
        };
        Ok((resolver, reloader))
    }

    /// Reloads if either file changed: `None` when nothing changed.
    pub fn check(&mut self) -> Option<Result<(), TlsError>> {
        let now = match (read(&self.files.cert), read(&self.files.key)) {
            (Ok(cert), Ok(key)) => (cert, key),
            // Reported once; any readable content counts as a change after it.
            _ if self.seen == Default::default() => return None,
            (Err(e), _) | (_, Err(e)) => {
                self.seen = Default::default();
                return Some(Err(e));
            }
        };
        if now == self.seen {
            return None;
        }
        let loaded = certified_key(&self.files, &now.0, &now.1);
        self.seen = now;
        Some(loaded.map(|key| self.resolver.current.store(Arc::new(key))))
    }

    /// Checks every `interval`, forever.
    pub async fn run(mut self, interval: Duration, metrics: Arc<Metrics>) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            match self.check() {
                None => {}
                Some(Ok(())) => {
                    failing = false;
                    metrics.cert_reload(true);
                    tracing::info!(cert = %self.files.cert.display(), "reloaded the TLS certificate");
                }
                Some(Err(e)) => {
                    metrics.cert_reload(false);
                    if !failing {
                        tracing::warn!(error = %e, "keeping the current TLS certificate");
                    }
                    failing = true;
                }
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certified_key(files: &CertFiles, cert: &[u8], key: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Cert {
            path: files.cert.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|source| TlsError::Key {
        path: files.key.clone(),
        source,
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    })
}
