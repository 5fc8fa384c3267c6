//! TLS flags for server subcommands.

use anyhow::{bail, Context as _};
use std::path::PathBuf;
use std::sync::Arc;
use tether::tls::{CertSource, CertStore};

#[derive(Debug, clap::Args)]
pub(crate) struct TlsArgs {
    /// Serve wss:// with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// An extra certificate for one server name, chosen by SNI: NAME=CERT,KEY (repeatable;
    /// needs --tls-cert/--tls-key as the default). SIGHUP reloads every certificate file.
    #[arg(long = "tls-sni", value_name = "NAME=CERT,KEY", requires = "tls_cert")]
    tls_sni: Vec<String>,
    /// Serve wss:// with a certificate for localhost generated at start (development only);
    /// prints its SHA-256 fingerprint.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_sni"])]
    tls_self_signed: bool,
}

/// A server's TLS: the rustls configuration, and the store to reload on SIGHUP (for
/// certificates read from files).
pub(crate) struct ServerTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
    pub(crate) store: Option<Arc<CertStore>>,
}

impl TlsArgs {
    /// `config`, serving TLS when these flags ask for it (certificate files reloaded on
    /// SIGHUP); and whether it does.
    pub(crate) fn apply(&self, config: tether::ServerConfig) -> anyhow::Result<(tether::ServerConfig, bool)> {
        let Some(tls) = self.server_tls()? else { return Ok((config, false)) };
        if let Some(store) = tls.store {
            reload_on_sighup(store)?;
        }
        Ok((config.with_tls(tls.config), true))
    }

    pub(crate) fn server_tls(&self) -> anyhow::Result<Option<ServerTls>> {
        if self.tls_self_signed {
            return Ok(Some(ServerTls { config: self_signed()?, store: None }));
        }
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (None, None) => return Ok(None),
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        let mut sources = vec![CertSource { name: None, cert, key }];
        for entry in &self.tls_sni {
            let parsed = entry.split_once('=').and_then(|(name, files)| Some((name, files.split_once(',')?)));
            let Some((name, (cert, key))) = parsed else {
                bail!("--tls-sni {entry:?} must look like NAME=CERT,KEY");
            };
            sources.push(CertSource { name: Some(name.to_owned()), cert: cert.into(), key: key.into() });
        }
        let store = CertStore::load(sources).map_err(|e| anyhow::anyhow!("{e}"))?;
        let config = store.server_config().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Some(ServerTls { config, store: Some(store) }))
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

/// Reloads the certificate files on every SIGHUP; a failed reload keeps the old certificates.
pub(crate) fn reload_on_sighup(store: Arc<CertStore>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match store.reload() {
                Ok(()) => tracing::info!("certificates reloaded"),
                Err(e) => tracing::warn!("certificate reload failed, keeping the old ones: {e}"),
            }
        }
    });
    Ok(())
}
