//! TLS material as PEM bytes: good PEM loads every certificate, bad PEM
//! gives a typed error saying what is wrong. (The core reads no files; the
//! CLI's tests cover reading them.)

use rcgen::{generate_simple_self_signed, CertifiedKey, KeyPair};
use sipline::transport::{TlsConfig, TlsConfigError};

fn self_signed(name: &str) -> CertifiedKey<KeyPair> {
    generate_simple_self_signed(vec![name.to_owned()]).expect("self-signed certificate")
}

#[test]
fn roots_pem_loads_every_certificate() {
    let (a, b) = (self_signed("a.example"), self_signed("b.example"));
    let pem = format!("{}\n{}", a.cert.pem(), b.cert.pem());
    let tls = TlsConfig::default().with_roots_pem(pem.as_bytes()).expect("two roots");
    assert_eq!(tls.roots.len(), 2);
    assert_eq!(tls.roots[0].as_ref(), a.cert.der().as_ref());
    assert_eq!(tls.roots[1].as_ref(), b.cert.der().as_ref());
    // Roots add up.
    let tls = tls.with_roots_pem(a.cert.pem().as_bytes()).expect("one more");
    assert_eq!(tls.roots.len(), 3);
}

#[test]
fn identity_pem_loads_chain_and_key() {
    let leaf = self_signed("sip.example");
    let ca = self_signed("ca.example");
    let chain = format!("{}{}", leaf.cert.pem(), ca.cert.pem());
    let tls = TlsConfig::default()
        .with_identity_pem(chain.as_bytes(), leaf.signing_key.serialize_pem().as_bytes())
        .expect("identity");
    assert_eq!(tls.chain.len(), 2);
    assert_eq!(tls.chain[0].as_ref(), leaf.cert.der().as_ref());
    assert!(tls.key.is_some());
}

#[test]
fn pem_without_certificates_is_no_certificate() {
    let err = TlsConfig::default().with_roots_pem(b"not a certificate\n").unwrap_err();
    assert_eq!(err, TlsConfigError::NoCertificate);
    let key = self_signed("sip.example").signing_key.serialize_pem();
    let err = TlsConfig::default().with_roots_pem(key.as_bytes()).unwrap_err();
    assert_eq!(err, TlsConfigError::NoCertificate);
    let err = TlsConfig::default().with_identity_pem(key.as_bytes(), key.as_bytes()).unwrap_err();
    assert_eq!(err, TlsConfigError::NoCertificate);
}

#[test]
fn identity_pem_without_a_key_is_no_key() {
    let leaf = self_signed("sip.example");
    let cert = leaf.cert.pem();
    let err = TlsConfig::default().with_identity_pem(cert.as_bytes(), cert.as_bytes()).unwrap_err();
    assert_eq!(err, TlsConfigError::NoKey);
}

#[test]
fn broken_pem_is_unreadable() {
    let broken = "-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n";
    let err = TlsConfig::default().with_roots_pem(broken.as_bytes()).unwrap_err();
    assert!(matches!(err, TlsConfigError::Unreadable(_)), "{err:?}");
}
