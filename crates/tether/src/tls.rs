//! TLS for `wss://`, with rustls and its ring provider.
//!
//! The crypto provider is passed explicitly to every rustls builder: tether never relies on
//! a process-wide default, so the "no process-level CryptoProvider available" panic that
//! rustls raises when two providers are compiled in cannot happen to a tether user.

use crate::Error;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The crypto provider tether uses everywhere.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(what: impl std::fmt::Display) -> Error {
    Error::Tls(what.to_string())
}

/// A server TLS configuration from a certificate chain and its private key, with ALPN
/// `http/1.1` (the protocol a WebSocket upgrade starts in).
///
/// # Errors
///
/// [`Error::Tls`] when the key does not match the certificate or is unsupported.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let config = server_builder()?
        .with_single_cert(chain, key)
        .map_err(|e| tls_err(format!("certificate and key do not fit: {e}")))?;
    Ok(with_alpn(config))
}

/// The server builder every tether server config starts from: our provider, safe versions,
/// no client certificates.
fn server_builder(
) -> Result<rustls::ConfigBuilder<rustls::ServerConfig, rustls::server::WantsServerCert>, Error> {
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth())
}

/// ALPN `http/1.1`: the protocol a WebSocket upgrade starts in.
fn with_alpn(mut config: rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A server TLS configuration from PEM files: the certificate chain, then the private key.
///
/// # Errors
///
/// [`Error::Tls`] naming the file that cannot be read or holds no certificate or key.
pub fn server_config_from_pem_files(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, Error> {
    let chain = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls_err(format!("cannot read a private key from {}: {e}", key.display())))?;
    server_config(chain, key)
}

/// Every certificate in a PEM file.
///
/// # Errors
///
/// [`Error::Tls`] when the file cannot be read or holds no certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_err(format!("cannot read certificates from {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_err(format!("no certificate in {}", path.display())));
    }
    Ok(certs)
}

/// Where one server certificate comes from: PEM files, and the SNI name it answers for
/// (`None`: the default, for clients that send no name or a name no other entry has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSource {
    /// The server name (compared without case), or `None` for the default certificate.
    pub name: Option<String>,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

#[derive(Debug, Default)]
struct Certs {
    default: Option<Arc<CertifiedKey>>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

/// Server certificates chosen by SNI, which can be reloaded from their files while the server
/// runs: connections already open keep going, new handshakes get the new certificates.
#[derive(Debug)]
pub struct CertStore {
    sources: Vec<CertSource>,
    certs: RwLock<Arc<Certs>>,
}

impl CertStore {
    /// Loads every source.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] naming the file that cannot be read, or a key that does not match its
    /// certificate.
    pub fn load(sources: Vec<CertSource>) -> Result<Arc<Self>, Error> {
        let certs = Self::read(&sources)?;
        Ok(Arc::new(Self { sources, certs: RwLock::new(Arc::new(certs)) }))
    }

    fn read(sources: &[CertSource]) -> Result<Certs, Error> {
        let provider = provider();
        let mut certs = Certs::default();
        for source in sources {
            let chain = load_certs(&source.cert)?;
            let key = PrivateKeyDer::from_pem_file(&source.key).map_err(|e| {
                tls_err(format!("cannot read a private key from {}: {e}", source.key.display()))
            })?;
            let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
                tls_err(format!("{} and {} do not fit: {e}", source.cert.display(), source.key.display()))
            })?;
            let certified = Arc::new(certified);
            match &source.name {
                Some(name) => {
                    certs.by_name.insert(name.to_ascii_lowercase(), certified);
                }
                None => certs.default = Some(certified),
            }
        }
        Ok(certs)
    }

    /// Reads every file again and swaps the whole set at once. On any error the old set
    /// stays in use.
    ///
    /// # Errors
    ///
    /// As [`CertStore::load`].
    pub fn reload(&self) -> Result<(), Error> {
        let fresh = Arc::new(Self::read(&self.sources)?);
        *self.certs.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// A server TLS configuration that takes its certificates from this store, with ALPN
    /// `http/1.1`.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] from rustls.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, Error> {
        Ok(with_alpn(server_builder()?.with_cert_resolver(self.clone())))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.read().unwrap_or_else(|e| e.into_inner()).clone();
        hello
            .server_name()
            .and_then(|name| certs.by_name.get(&name.to_ascii_lowercase()).cloned())
            .or_else(|| certs.default.clone())
    }
}

/// Which server certificates a client trusts.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum ClientTrust {
    /// The Mozilla root set compiled in (webpki-roots): the same on every machine, and
    /// independent of the system's store. The default.
    #[default]
    WebPki,
    /// These CA certificates only (a private CA, or a test CA).
    Ca(Vec<CertificateDer<'static>>),
    /// No check at all. For development only: anyone on the path can read and change the
    /// connection.
    Insecure,
}

/// A client TLS configuration for `trust`, with ALPN `http/1.1`.
///
/// # Errors
///
/// [`Error::Tls`] when a CA certificate cannot be used.
pub fn client_config(trust: &ClientTrust) -> Result<Arc<rustls::ClientConfig>, Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let mut config = match trust {
        ClientTrust::WebPki => {
            let roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        ClientTrust::Ca(certs) => {
            let mut roots = RootCertStore::empty();
            for cert in certs {
                roots.add(cert.clone()).map_err(|e| tls_err(format!("unusable CA certificate: {e}")))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        ClientTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(provider())))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS server name for a URL host: a DNS name, or an IP address (IPv6 without brackets).
///
/// # Errors
///
/// [`Error::Tls`] for a host that is neither.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| tls_err(format!("{host:?} is not a valid TLS server name")))
}

/// Turns a failed TLS handshake into a message that names the host and the reason.
pub(crate) fn describe_handshake_failure(host: &str, e: std::io::Error) -> Error {
    let reason = match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(cert)) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "it has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "it is not valid yet".to_owned()
            }
            CertificateError::UnknownIssuer => {
                "it is not signed by a trusted CA (self-signed, or a private CA: pass it with --ca)"
                    .to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("it is not valid for the name {host}")
            }
            other => format!("{other:?}"),
        },
        // The first bytes back were not a TLS record: a plain HTTP server's answer.
        Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
            return Error::Tls(format!(
                "the server at {host} did not answer TLS (a plain ws:// server? try ws:// instead of wss://)"
            ))
        }
        Some(other) => other.to_string(),
        None => return Error::Tls(format!("tls handshake with {host} failed: {e}")),
    };
    Error::Tls(format!("certificate of {host} rejected: {reason}"))
}

/// Accepts every certificate, still checking that the handshake signatures are valid.
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
