//! TLS flags for server subcommands.

use anyhow::{bail, Context as _};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub(crate) struct TlsArgs {
    /// Serve wss:// with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve wss:// with a certificate for localhost generated at start (development only);
    /// prints its SHA-256 fingerprint.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    tls_self_signed: bool,
}

impl TlsArgs {
    pub(crate) fn server_config(&self) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        if self.tls_self_signed {
            return self_signed().map(Some);
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let config = tether::tls::server_config_from_pem_files(cert, key)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(Some(config))
            }
            (None, None) => Ok(None),
            _ => bail!("--tls-cert and --tls-key go together"),
        }
    }
}

fn self_signed() -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let cert = rcgen::generate_simple_self_signed(names).context("cannot generate a certificate")?;
    let der = cert.cert.der().clone();
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    let fingerprint: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    eprintln!("self-signed certificate for localhost, 127.0.0.1 and ::1 (development only)");
    eprintln!("SHA-256 fingerprint {}", fingerprint.join(":"));
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der());
    tether::tls::server_config(vec![der], key.into()).map_err(|e| anyhow::anyhow!("{e}"))
}
