//! HTTPS for the listener: a rustls server configuration made from a PEM
//! certificate chain and private key ([`Tls::from_pem`]), which
//! [`connections`](crate::connections) wraps each accepted connection in.
//!
//! Invariants:
//! - The provider is aws-lc-rs (the crypto build ferry already uses),
//!   chosen explicitly, so no process-wide default has to be installed;
//!   TLS 1.2 and 1.3 with rustls's default suites; ALPN offers `h2` and
//!   `http/1.1` (hyper detects which one the client speaks).
//! - A handshake counts against the header timeout: a client that opens
//!   a connection and never finishes its handshake is closed like one that
//!   never sends a request head.
//! - A key is never in `Debug` output or in an error message.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate and key cannot serve TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file holds no PEM certificate.
    #[error("the certificate file holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    /// A certificate block does not decode.
    #[error("a certificate in the certificate file does not decode: {0}")]
    BadCertificate(String),
    /// The key file holds no PEM private key.
    #[error("the key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {0}")]
    BadKey(String),
    /// rustls refused the pair (a key that does not match the certificate,
    /// an unsupported key type).
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Refused(String),
}

/// A TLS server configuration for the gateway's listener.
#[derive(Clone)]
pub struct Tls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// A configuration serving the PEM certificate chain `cert` (the
    /// server's first, then intermediates) with the PEM private key `key`.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        // The error of a key that does not decode names its kind only,
        // never its bytes.
        let key =
            PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::BadKey(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Refused(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Refused(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }
}
