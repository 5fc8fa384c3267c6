//! wss:// over loopback with certificates from a throwaway test CA.

use futures_util::{SinkExt, StreamExt};
mod common;

use common::certs::{ca, leaf, Ca};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::time::Duration;
use tether::tls::{self, ClientTrust};
use tether::{ClientConfig, Config, Error, Listener, Message, ServerConfig};
use tokio::io::AsyncReadExt;

/// A TLS echo server with a single certificate; returns its port.
async fn server(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>, config: Config) -> u16 {
    let tls = tls::server_config(chain, key).unwrap();
    echo(ServerConfig::default().with_config(config).with_tls(tls)).await
}

/// An echo server with `config`; returns its port.
async fn echo(config: ServerConfig) -> u16 {
    let listener = Listener::bind("127.0.0.1:0", config).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            tokio::spawn(async move {
                let Ok((mut ws, _)) = incoming.upgrade().await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_data() && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn trusting(ca: &Ca) -> ClientConfig {
    ClientConfig::default().with_trust(ClientTrust::Ca(vec![ca.cert.der().clone()]))
}

async fn tls_error(url: &str, config: &ClientConfig) -> String {
    match tether::connect_with(url, config).await {
        Err(Error::Tls(message)) => message,
        Err(other) => panic!("expected a TLS error, got {other}"),
        Ok(_) => panic!("expected a TLS error, connected"),
    }
}

#[tokio::test]
async fn wss_round_trip_with_a_private_ca() {
    let ca = ca();
    let (chain, key) = leaf(&ca, &["localhost", "127.0.0.1"], false);
    let port = server(chain, key, Config::default()).await;
    for url in [format!("wss://localhost:{port}/x"), format!("wss://127.0.0.1:{port}/x")] {
        let (mut ws, _) = tether::connect_with(&url, &trusting(&ca)).await.unwrap();
        ws.send(Message::text("over tls")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over tls"));
        ws.close().await.unwrap();
    }
}

#[tokio::test]
async fn untrusted_certificate_names_host_and_reason() {
    let ca = ca();
    let (chain, key) = leaf(&ca, &["localhost"], false);
    let port = server(chain, key, Config::default()).await;
    // The default trust (webpki roots) does not know the test CA.
    let message = tls_error(&format!("wss://localhost:{port}/"), &ClientConfig::default()).await;
    assert_eq!(
        message,
        "certificate of localhost rejected: it is not signed by a trusted CA (self-signed, or a private CA: pass it with --ca)"
    );
}

#[tokio::test]
async fn wrong_host_is_rejected() {
    let ca = ca();
    let (chain, key) = leaf(&ca, &["other.example"], false);
    let port = server(chain, key, Config::default()).await;
    let message = tls_error(&format!("wss://localhost:{port}/"), &trusting(&ca)).await;
    assert_eq!(message, "certificate of localhost rejected: it is not valid for the name localhost");
}

#[tokio::test]
async fn expired_certificate_is_rejected() {
    let ca = ca();
    let (chain, key) = leaf(&ca, &["localhost"], true);
    let port = server(chain, key, Config::default()).await;
    let message = tls_error(&format!("wss://localhost:{port}/"), &trusting(&ca)).await;
    assert_eq!(message, "certificate of localhost rejected: it has expired");
}

#[tokio::test]
async fn insecure_accepts_anything() {
    let ca = ca();
    let (chain, key) = leaf(&ca, &["other.example"], true);
    let port = server(chain, key, Config::default()).await;
    let config = ClientConfig::default().with_trust(ClientTrust::Insecure);
    let (mut ws, _) = tether::connect_with(&format!("wss://localhost:{port}/"), &config).await.unwrap();
    ws.send(Message::text("unchecked")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("unchecked"));
}

#[tokio::test]
async fn tls_handshake_times_out() {
    let ca = ca();
    let (chain, key) = leaf(&ca, &["localhost"], false);
    let port = server(chain, key, Config::default().with_handshake_timeout(Duration::from_millis(200))).await;
    // A TCP client that never starts TLS: the server gives up and closes.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.unwrap().unwrap();
    assert_eq!(n, 0);
}

#[test]
fn pem_files_load_and_errors_name_the_file() {
    let ca = ca();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca.cert, &ca.key)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tether-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    assert!(tls::server_config_from_pem_files(&cert_path, &key_path).is_ok());
    let missing = dir.join("missing.pem");
    let Err(Error::Tls(message)) = tls::server_config_from_pem_files(&missing, &key_path) else { panic!() };
    assert!(message.contains("missing.pem"), "{message}");
    let Err(Error::Tls(message)) = tls::server_config_from_pem_files(&key_path, &key_path) else { panic!() };
    assert!(message.contains("no certificate in"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// PEM files for a certificate for `names` signed by `ca`, written under `dir` as `stem`.
fn write_leaf(ca: &Ca, names: &[&str], dir: &std::path::Path, stem: &str) -> tls::CertSource {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&key, &ca.cert, &ca.key)
        .unwrap();
    let (cert_path, key_path) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    tls::CertSource { name: None, cert: cert_path, key: key_path }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A TLS handshake to 127.0.0.1:`port` sending `name` as SNI and checking the certificate
/// against `ca` and that name.
async fn handshake_as(port: u16, name: &str, ca: &Ca) -> Result<(), std::io::Error> {
    let config = tls::client_config(&ClientTrust::Ca(vec![ca.cert.der().clone()])).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map(drop)
}

async fn store_server(store: &std::sync::Arc<tls::CertStore>) -> u16 {
    echo(ServerConfig::default().with_tls(store.server_config().unwrap())).await
}

#[tokio::test]
async fn certificates_are_chosen_by_sni() {
    let ca = ca();
    let dir = temp_dir("sni");
    let default = write_leaf(&ca, &["localhost"], &dir, "default");
    let a = tls::CertSource { name: Some("A.example".into()), ..write_leaf(&ca, &["a.example"], &dir, "a") };
    let b = tls::CertSource { name: Some("b.example".into()), ..write_leaf(&ca, &["b.example"], &dir, "b") };
    let store = tls::CertStore::load(vec![default, a, b]).unwrap();
    let port = store_server(&store).await;
    // Each name verifies only if the server picked that name's certificate.
    handshake_as(port, "a.example", &ca).await.unwrap();
    handshake_as(port, "b.example", &ca).await.unwrap();
    handshake_as(port, "localhost", &ca).await.unwrap();
    // An unknown name gets the default certificate, which is not valid for it.
    assert!(handshake_as(port, "c.example", &ca).await.is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn reload_swaps_certificates_without_dropping_connections() {
    let (old_ca, new_ca) = (ca(), ca());
    let dir = temp_dir("reload");
    let source = write_leaf(&old_ca, &["localhost"], &dir, "server");
    let store = tls::CertStore::load(vec![source.clone()]).unwrap();
    let port = store_server(&store).await;
    let url = format!("wss://localhost:{port}/");
    let (mut open, _) = tether::connect_with(&url, &trusting(&old_ca)).await.unwrap();

    // New files, from another CA; a broken file set is refused and the old one kept.
    std::fs::write(&source.key, "not a key").unwrap();
    assert!(matches!(store.reload(), Err(Error::Tls(_))));
    handshake_as(port, "localhost", &old_ca).await.unwrap();
    let fresh = write_leaf(&new_ca, &["localhost"], &dir, "server");
    assert_eq!(fresh, source);
    store.reload().unwrap();

    handshake_as(port, "localhost", &new_ca).await.unwrap();
    assert!(handshake_as(port, "localhost", &old_ca).await.is_err());
    // The connection opened before the reload still works.
    open.send(Message::text("still here")).await.unwrap();
    assert_eq!(open.next().await.unwrap().unwrap(), Message::text("still here"));
    std::fs::remove_dir_all(&dir).unwrap();
}
