"""The webhook's certificate: the caBundle the API server trusts signs the
certificate the injector serves, for the name the API server dials."""

import base64
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from chart import render


def verify_signed_by(cert, issuer):
    key = issuer.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    else:
        raise AssertionError(f"unexpected key type {type(key)}")


def served_and_trusted(r):
    """(CA from the caBundle, certificate and key from the Secret the injector mounts)."""
    bundles = {h["clientConfig"]["caBundle"] for h in r.webhook_configuration["webhooks"]}
    assert len(bundles) == 1
    ca = x509.load_pem_x509_certificate(base64.b64decode(bundles.pop()))
    secret = r.one("Secret")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["name"] == r.deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"]
    files = r.tls_secret()
    cert = x509.load_pem_x509_certificate(files["tls.crt"])
    key = serialization.load_pem_private_key(files["tls.key"], password=None)
    assert files["ca.crt"] == ca.public_bytes(serialization.Encoding.PEM)
    return ca, cert, key


def test_ca_bundle_signs_the_served_certificate():
    r = render()
    ca, cert, key = served_and_trusted(r)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.issuer == ca.subject
    verify_signed_by(cert, ca)
    # The key in the Secret is the certificate's.
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    # Valid now, for a server.
    now = datetime.datetime.now(datetime.timezone.utc)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - now > datetime.timedelta(days=3000)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages


def test_certificate_names_the_service_the_api_server_dials():
    for namespace, release in (("sidelb", "sidelb"), ("infra", "balancer")):
        r = render(namespace=namespace, release=release)
        _, cert, _ = served_and_trusted(r)
        service = r.webhook_configuration["webhooks"][0]["clientConfig"]["service"]
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
        assert f"{service['name']}.{service['namespace']}.svc" in names, names
        assert f"{service['name']}.{service['namespace']}.svc.cluster.local" in names
        assert service["name"] == r.one("Service")["metadata"]["name"]


def test_validity_is_configurable():
    _, cert, _ = served_and_trusted(render({"tls": {"validityDays": 30}}))
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert 29 <= days <= 31


def test_cert_manager_issues_the_secret_the_injector_mounts():
    r = render({"certManager": {"enabled": True}})
    certs = {c["metadata"]["name"]: c for c in r.all("Certificate")}
    issuers = {i["metadata"]["name"]: i for i in r.all("Issuer")}
    serving = certs["sidelb-injector"]
    mounted = r.deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"]
    assert serving["spec"]["secretName"] == mounted
    assert "sidelb-injector.sidelb.svc" in serving["spec"]["dnsNames"]
    assert "server auth" in serving["spec"]["usages"]
    # The chain the chart brings: self-signed issuer -> CA certificate -> CA issuer -> serving certificate.
    ca_issuer = issuers[serving["spec"]["issuerRef"]["name"]]
    ca_cert = next(c for c in certs.values() if c["spec"]["secretName"] == ca_issuer["spec"]["ca"]["secretName"])
    assert ca_cert["spec"]["isCA"] is True
    assert "selfSigned" in issuers[ca_cert["spec"]["issuerRef"]["name"]]["spec"]
    # The webhook trusts what issued the serving certificate.
    annotation = r.webhook_configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert annotation == f"{serving['metadata']['namespace']}/{serving['metadata']['name']}"
    for doc in r.all("Certificate") + r.all("Issuer"):
        assert doc["apiVersion"] == "cert-manager.io/v1"
        assert doc["metadata"]["namespace"] == "sidelb"


def test_cert_manager_with_an_existing_issuer():
    r = render({"certManager": {"enabled": True, "issuerRef": {"kind": "ClusterIssuer", "name": "corp-ca"}}})
    assert r.all("Issuer") == []
    (serving,) = r.all("Certificate")
    assert serving["spec"]["issuerRef"] == {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "corp-ca"}
