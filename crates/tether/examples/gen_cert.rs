//! Writes a throwaway test CA and a server certificate for localhost, 127.0.0.1 and ::1, as
//! PEM files, for the TLS runs of Autobahn and the interop peers.
//!
//! usage: gen_cert DIR   (writes DIR/ca.pem, DIR/cert.pem, DIR/key.pem)

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};

/// A name of its own for each certificate: with equal subject and issuer names, OpenSSL-based
/// peers take the server certificate for a self-signed one.
fn named(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).ok_or("usage: gen_cert DIR")?);
    std::fs::create_dir_all(&dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = named("tether test CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = named("localhost");
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("cert.pem"), cert.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    println!("wrote {}/{{ca,cert,key}}.pem", dir.display());
    Ok(())
}
