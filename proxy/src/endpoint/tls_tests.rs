//! The handshake's decisions against a real rustls server on loopback:
//! which certificates are trusted, for which name, with which protocol,
//! and the CA file read again when it changes.

use super::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use sidelb_config::PortRef;
use std::time::Duration;
use tokio::net::TcpListener;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca_named(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

fn ca() -> Ca {
    ca_named("cluster CA")
}

/// A TLS server on loopback with a certificate from `ca` for `name`,
/// offering `alpn`; it answers each handshake and holds the connection.
async fn server(ca: &Ca, name: &str, alpn: &[&[u8]]) -> std::net::SocketAddr {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .signed_by(&key, &ca.issuer)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    drop(tls);
                }
            });
        }
    });
    addr
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sidelb-tls-{}-{name}", std::process::id()))
}

fn write_ca(path: &Path, pem: &str, modified: SystemTime) {
    std::fs::write(path, pem).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(modified).unwrap();
}

fn connector(roots: &Arc<Roots>, name: &str) -> Connector {
    Connector::Tls {
        roots: roots.clone(),
        server_name: ServerName::try_from(name.to_owned()).unwrap(),
    }
}

async fn dial(connector: &Connector, addr: std::net::SocketAddr) -> Result<Stream, TlsFailure> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector.connect(tcp))
        .await
        .expect("the handshake ends")
}

const NAME: &str = "echo.default.svc";

#[tokio::test]
async fn a_trusted_certificate_for_the_name_with_h2_connects() {
    let ca = ca();
    let path = scratch("trusted");
    write_ca(&path, &ca.pem, SystemTime::now());
    let roots = Roots::load(&path).unwrap();
    let addr = server(&ca, NAME, &[b"h2"]).await;
    let stream = dial(&connector(&roots, NAME), addr)
        .await
        .expect("connects");
    assert!(matches!(stream, Stream::Tls(_)));
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn each_refusal_says_why() {
    let ca = ca();
    let path = scratch("refusals");
    write_ca(&path, &ca.pem, SystemTime::now());
    let roots = Roots::load(&path).unwrap();
    for other_ca in [ca_named("another CA"), ca_named("cluster CA")] {
        let foreign = server(&other_ca, NAME, &[b"h2"]).await;
        let err = dial(&connector(&roots, NAME), foreign)
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(err.starts_with("TLS: unknown issuer"), "{err}");
        assert!(err.contains("SIDELB_BACKEND_TLS_CA"), "{err}");
    }

    let elsewhere = server(&ca, "other.default.svc", &[b"h2"]).await;
    let err = dial(&connector(&roots, NAME), elsewhere)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("certificate not valid for name echo.default.svc")
            && err.contains("other.default.svc"),
        "{err}"
    );

    let http1 = server(&ca, NAME, &[b"http/1.1"]).await;
    let err = dial(&connector(&roots, NAME), http1)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("ALPN `h2`"), "{err}");

    let no_alpn = server(&ca, NAME, &[]).await;
    let err = dial(&connector(&roots, NAME), no_alpn)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("ALPN `h2`"), "{err}");
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn a_changed_ca_file_is_read_again_and_a_broken_one_keeps_the_last() {
    let (old, new) = (ca(), ca());
    let path = scratch("reload");
    let t0 = SystemTime::now() - Duration::from_secs(60);
    write_ca(&path, &old.pem, t0);
    let roots = Roots::load(&path).unwrap();
    let addr = server(&new, NAME, &[b"h2"]).await;
    assert!(dial(&connector(&roots, NAME), addr).await.is_err());

    write_ca(&path, &new.pem, t0 + Duration::from_secs(10));
    assert!(
        dial(&connector(&roots, NAME), addr).await.is_ok(),
        "reloaded"
    );

    write_ca(&path, "not a certificate", t0 + Duration::from_secs(20));
    assert!(
        dial(&connector(&roots, NAME), addr).await.is_ok(),
        "the last good CAs stay"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn an_unusable_ca_file_is_refused_naming_the_setting() {
    let missing = scratch("missing");
    let err = Roots::load(&missing).err().expect("refused").to_string();
    assert!(
        err.starts_with("SIDELB_BACKEND_TLS_CA: cannot read"),
        "{err}"
    );
    let empty = scratch("empty");
    std::fs::write(&empty, "no PEM here\n").unwrap();
    let err = Roots::load(&empty).err().expect("refused").to_string();
    assert!(err.contains("has no readable PEM certificate"), "{err}");
    std::fs::remove_file(&empty).unwrap();
}

#[test]
fn each_service_gets_its_server_name() {
    let ca = ca();
    let path = scratch("services");
    write_ca(&path, &ca.pem, SystemTime::now());
    let env = [
        ("POD_NAMESPACE", "shop"),
        (
            "SIDELB_BACKEND_TLS",
            "greeter,orders:grpc=orders.example.com",
        ),
        ("SIDELB_BACKEND_TLS_CA", path.to_str().unwrap()),
    ];
    let config = ProxyConfig::from_lookup(|k| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.to_string())
    })
    .unwrap();
    let services = TlsServices::from_config(&config)
        .unwrap()
        .expect("some TLS");
    let name = |svc: &str, port: PortRef| {
        services
            .connector(&ServiceKey::new(svc, "shop", port))
            .server_name()
    };
    assert_eq!(
        name("greeter", PortRef::Number(50051)).as_deref(),
        Some("greeter.shop.svc")
    );
    assert_eq!(
        name("orders", PortRef::Name("grpc".into())).as_deref(),
        Some("orders.example.com")
    );
    assert_eq!(name("orders", PortRef::Number(50051)), None);
    assert_eq!(name("billing", PortRef::Number(50051)), None);
    assert!(
        TlsServices::from_config(&ProxyConfig::defaults())
            .unwrap()
            .is_none()
    );
    std::fs::remove_file(&path).unwrap();
}
