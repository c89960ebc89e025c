//! TLS for `wss://` (feature `tls`): the server's certificate and key, and
//! the roots a client trusts, as rustls configurations built once and shared
//! by every adapter (each wraps its sockets with its own rustls wrapper).
//!
//! rustls runs on the `ring` crypto provider, chosen per configuration (no
//! process-wide default is installed or needed).
//!
//! ```
//! use rtm_driver::tls::{ClientTls, ServerTls, TlsError};
//! // A server needs its certificate chain and private key, in PEM.
//! let err = ServerTls::from_pem(b"not a certificate", b"not a key").unwrap_err();
//! assert!(matches!(err, TlsError::NoCertificate));
//! // A client trusts Mozilla's roots unless told otherwise.
//! let _public = ClientTls::webpki_roots();
//! ```

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The PEM holds no `CERTIFICATE` section.
    #[error("no certificate found in the PEM")]
    NoCertificate,
    /// The PEM holds no private key (PKCS#8, PKCS#1 or SEC1).
    #[error("no private key found in the PEM")]
    NoPrivateKey,
    /// The PEM is malformed.
    #[error("bad PEM: {0}")]
    Pem(String),
    /// A file could not be read.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// rustls refused the material (a key that does not match the
    /// certificate, an unsupported key type, a malformed certificate, …).
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A server's TLS identity: what `wss://` clients are shown.
///
/// Give it to `ServerBuilder::tls`; the adapter's listener then speaks TLS on
/// every connection before the WebSocket upgrade.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

impl ServerTls {
    /// From a PEM certificate chain (leaf first) and its PEM private key.
    pub fn from_pem(cert_chain: &[u8], private_key: &[u8]) -> Result<ServerTls, TlsError> {
        let chain = certificates(cert_chain)?;
        let key = match PrivateKeyDer::from_pem_slice(private_key) {
            Ok(key) => key,
            Err(rustls_pki_types::pem::Error::NoItemsFound) => return Err(TlsError::NoPrivateKey),
            Err(err) => return Err(TlsError::Pem(err.to_string())),
        };
        let config = ServerConfig::builder_with_provider(Arc::new(ring_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(ServerTls::from_rustls(Arc::new(config)))
    }

    /// [`ServerTls::from_pem`] with the two PEM files (e.g. Let's Encrypt's
    /// `fullchain.pem` and `privkey.pem`).
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> Result<ServerTls, TlsError> {
        ServerTls::from_pem(&read(cert_chain.as_ref())?, &read(private_key.as_ref())?)
    }

    /// A rustls configuration built by the application (client
    /// certificates, session tickets, a custom provider, …).
    pub fn from_rustls(config: Arc<ServerConfig>) -> ServerTls {
        ServerTls { config }
    }

    /// The rustls configuration, for the adapter's acceptor.
    pub fn rustls_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }
}

/// Equal when they share one configuration (clones of each other).
impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for ServerTls {}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// What a client trusts when it connects to a `wss://` URL.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl ClientTls {
    /// Mozilla's root certificates (compiled in, from `webpki-roots`): what
    /// a browser would trust. The default.
    pub fn webpki_roots() -> ClientTls {
        static DEFAULT: OnceLock<ClientTls> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                let roots = RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                ClientTls::with_roots(roots)
            })
            .clone()
    }

    /// Trusts only the certificates in this PEM: a private CA's root, or a
    /// self-signed server certificate.
    pub fn trusting_pem(roots_pem: &[u8]) -> Result<ClientTls, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(roots_pem)? {
            roots.add(cert)?;
        }
        Ok(ClientTls::with_roots(roots))
    }

    /// A rustls configuration built by the application (client
    /// certificates, a custom verifier, …).
    pub fn from_rustls(config: Arc<ClientConfig>) -> ClientTls {
        ClientTls { config }
    }

    /// The rustls configuration, for the adapter's connector.
    pub fn rustls_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }

    fn with_roots(roots: RootCertStore) -> ClientTls {
        let config = ClientConfig::builder_with_provider(Arc::new(ring_provider()))
            .with_safe_default_protocol_versions()
            // ring's provider supports the safe default versions: this cannot fail.
            .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"))
            .with_root_certificates(roots)
            .with_no_client_auth();
        ClientTls::from_rustls(Arc::new(config))
    }
}

/// Equal when they share one configuration (clones of each other).
impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for ClientTls {}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

/// Every certificate in `pem`; at least one.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Pem(err.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(chain)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|err| TlsError::File {
        path: path.display().to_string(),
        message: err.to_string(),
    })
}

/// rustls' *ring* provider. rustls 0.23.48 deprecates it in favour of
/// aws-lc-rs, which has post-quantum key exchange but needs CMake and more
/// to build; ring needs a C compiler only, so it stays the choice here
/// (TLS 1.3 with X25519, P-256 and P-384), said once, in this function.
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}
