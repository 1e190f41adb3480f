//! Test PKI made on the spot with `rcgen` (Ed25519 keys: fixed-size
//! signatures keep TLS record sizes, and so simulated timings, stable).

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
    PKCS_ED25519,
};
use sipline::transport::TlsConfig;

/// The Unix time the simulations give the core as "now" (2026-11-21).
pub const SIM_UNIX_TIME: u64 = 1_795_219_200;

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub pem: String,
    /// Its certificate, DER.
    pub der: Vec<u8>,
}

/// A leaf certificate and its key.
pub struct Leaf {
    /// Certificate chain (leaf, then the CA), PEM.
    pub chain_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// Certificate chain, DER.
    pub chain_der: Vec<Vec<u8>>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

fn key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ED25519).expect("Ed25519 key generation")
}

impl Ca {
    /// A new root CA called `name`.
    pub fn new(name: &str) -> Ca {
        Ca::with_key(name, key())
    }

    /// A new root CA called `name` with an ECDSA P-256 key, for peers that
    /// read no Ed25519 (linphone's mbedtls 2.28 cannot parse a certificate
    /// an Ed25519 key signed; OpenSSL-based Kamailio reads both).
    pub fn new_ecdsa(name: &str) -> Ca {
        Ca::with_key(name, KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key generation"))
    }

    fn with_key(name: &str, key: KeyPair) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2040, 1, 1);
        let cert = params.self_signed(&key).expect("self-signed CA");
        Ca { pem: cert.pem(), der: cert.der().to_vec(), issuer: Issuer::new(params, key) }
    }

    /// A leaf for `names` valid in the years `from..until` (Jan 1st).
    pub fn issue_valid(&self, names: &[&str], from: i32, until: i32) -> Leaf {
        self.issue_key(names, from, until, &key())
    }

    /// A leaf for `names`, valid 2020–2040, with an ECDSA P-256 key, for
    /// peers built on OpenSSL (Kamailio): OpenSSL 3.0 does not read the
    /// PKCS#8 v2 form `ring` writes Ed25519 keys in.
    ///
    /// Each IP address in `names` is also written as a DNS name: mbedtls
    /// 2.28 (linphone) matches a server's name only against DNS names.
    pub fn issue_ecdsa(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key generation");
        self.issue_key_with(names, 2020, 2040, &key, true)
    }

    fn issue_key(&self, names: &[&str], from: i32, until: i32, key: &KeyPair) -> Leaf {
        self.issue_key_with(names, from, until, key, false)
    }

    fn issue_key_with(&self, names: &[&str], from: i32, until: i32, key: &KeyPair, ips_as_dns: bool) -> Leaf {
        let owned: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(owned).expect("leaf params");
        if ips_as_dns {
            for ip in names.iter().filter(|n| n.parse::<std::net::IpAddr>().is_ok()) {
                if let Ok(name) = (*ip).to_owned().try_into() {
                    params.subject_alt_names.push(rcgen::SanType::DnsName(name));
                }
            }
        }
        params.not_before = date_time_ymd(from, 1, 1);
        params.not_after = date_time_ymd(until, 1, 1);
        let cert = params.signed_by(key, &self.issuer).expect("leaf signed");
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.pem),
            key_pem: key.serialize_pem(),
            chain_der: vec![cert.der().to_vec(), self.der.clone()],
            key_der: key.serialize_der(),
        }
    }

    /// A leaf for `names`, valid 2020–2040.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        self.issue_valid(names, 2020, 2040)
    }
}

impl Leaf {
    /// A TLS config presenting this leaf (read from PEM, as a runtime
    /// would from files) and trusting `roots`.
    pub fn tls(&self, roots: &[&Ca]) -> TlsConfig {
        let mut config =
            TlsConfig::default().with_identity_pem(self.chain_pem.as_bytes(), self.key_pem.as_bytes()).expect("PEM");
        for ca in roots {
            config = config.with_roots_pem(ca.pem.as_bytes()).expect("CA PEM");
        }
        config
    }
}

/// A TLS config with no certificate of its own, trusting `roots`.
pub fn trusting(roots: &[&Ca]) -> TlsConfig {
    roots.iter().fold(TlsConfig::default(), |c, ca| c.with_root_der(ca.der.clone()))
}
