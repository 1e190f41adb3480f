//! TLS material from files: PEM certificate chains, keys and roots, and the
//! system's trusted roots (through `rustls-native-certs`, which reads the
//! platform's store: on Linux the OpenSSL locations such as
//! `/etc/ssl/certs`, honouring `SSL_CERT_FILE` / `SSL_CERT_DIR`).

use crate::transport::{TlsConfig, TlsConfigError};
use std::path::{Path, PathBuf};

/// Why TLS material could not be loaded from files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFileError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A file's contents are unusable.
    #[error("{path}: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: TlsConfigError,
    },
    /// The system's store yielded no certificate.
    #[error("no trusted roots found in the system's store: {0}")]
    NoSystemRoots(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read { path: path.to_owned(), source })
}

fn config_error(path: &Path) -> impl FnOnce(TlsConfigError) -> TlsFileError + '_ {
    move |source| TlsFileError::Config { path: path.to_owned(), source }
}

impl TlsConfig {
    /// Our certificate chain (leaf first) and private key from PEM files.
    ///
    /// ```no_run
    /// # fn f() -> Result<(), sipline::driver::files::TlsFileError> {
    /// let tls = sipline::transport::TlsConfig::default()
    ///     .with_identity_pem_files("cert.pem".as_ref(), "key.pem".as_ref())?
    ///     .with_system_roots()?;
    /// # let _ = tls; Ok(()) }
    /// ```
    pub fn with_identity_pem_files(self, chain: &Path, key: &Path) -> Result<Self, TlsFileError> {
        let (chain_pem, key_pem) = (read(chain)?, read(key)?);
        self.with_identity_pem(&chain_pem, &key_pem).map_err(|e| match e {
            TlsConfigError::NoKey => config_error(key)(e),
            e => config_error(chain)(e),
        })
    }

    /// Adds the certificates of a PEM file to the trusted roots.
    pub fn with_roots_pem_file(self, roots: &Path) -> Result<Self, TlsFileError> {
        let pem = read(roots)?;
        self.with_roots_pem(&pem).map_err(config_error(roots))
    }

    /// Adds the system's trusted roots. Unreadable entries of the store
    /// are skipped; an error only when no root at all was found.
    pub fn with_system_roots(mut self) -> Result<Self, TlsFileError> {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            let why = found.errors.first().map_or_else(|| "the store is empty".to_owned(), ToString::to_string);
            return Err(TlsFileError::NoSystemRoots(why));
        }
        for e in &found.errors {
            tracing::debug!(error = %e, "skipped an entry of the system's root store");
        }
        self.roots.extend(found.certs);
        Ok(self)
    }
}
