//! Certificate rotation: new handshakes get the new certificate, open
//! connections carry on, and a half-written pair changes nothing.

use crate::support::client::{self, Proto};
use crate::support::pki::{self, Ca};
use crate::support::reviews::bare;
use crate::support::{MUTATE, TestInjector, eventually};
use std::time::Duration;

const BOUND: Duration = Duration::from_secs(20);

#[tokio::test]
async fn new_connections_get_the_new_certificate_and_open_ones_carry_on() {
    let server = TestInjector::start().await;
    let mut open = server.connect(Proto::H2).await;
    let mut open_h1 = server.connect(Proto::H1).await;
    let first = open.peer_cert.clone();

    let next = server.ca.leaf("second");
    next.write(server.dir.path());
    eventually("serving the new certificate", BOUND, || async {
        server.connect(Proto::H1).await.peer_cert == next.cert_der
    })
    .await;
    assert_ne!(first, next.cert_der);
    assert_eq!(server.connect(Proto::H2).await.peer_cert, next.cert_der);

    for conn in [&mut open, &mut open_h1] {
        let reply = conn.post(MUTATE, bare().to_string()).await;
        assert_eq!(
            reply.status, 200,
            "a connection from before the reload still works"
        );
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"sidelb_injector_cert_reloads_total{result="ok"} 1"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_half_written_pair_keeps_the_current_certificate() {
    let server = TestInjector::start().await;
    let current = server.connect(Proto::H2).await.peer_cert;
    let next = server.ca.leaf("second");
    // Only the certificate so far: the key on disk does not match it.
    pki::replace(&server.cert, &next.cert_pem);
    eventually("the failed reload counted", BOUND, || async {
        server
            .metrics()
            .await
            .contains(r#"sidelb_injector_cert_reloads_total{result="error"} 1"#)
    })
    .await;
    assert_eq!(server.connect(Proto::H2).await.peer_cert, current);

    pki::replace(&server.key, &next.key_pem);
    eventually("serving the new certificate", BOUND, || async {
        server.connect(Proto::H2).await.peer_cert == next.cert_der
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_ca_is_served_once_the_files_change() {
    let server = TestInjector::start().await;
    let new_ca = Ca::new("rotated CA");
    let new_pem = new_ca.pem();
    assert!(
        client::connect(server.addr, &new_pem, Proto::H2)
            .await
            .is_err(),
        "not trusted yet"
    );
    new_ca.leaf("rotated").write(server.dir.path());
    eventually("trusted by the new CA bundle", BOUND, || async {
        client::connect(server.addr, &new_pem, Proto::H2)
            .await
            .is_ok()
    })
    .await;
    server.stop().await;
}
