//! Certificates the tests make for themselves (rcgen): one CA, a server certificate for
//! `localhost` and `127.0.0.1`, and a client certificate, as PEM files in a directory
//! that lives as long as the test process. Every TLS harness of a process shares them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// The PEM files.
#[derive(Debug)]
pub struct Certs {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

static CERTS: OnceLock<Certs> = OnceLock::new();

/// This process's certificates, made on first use.
pub fn certs() -> anyhow::Result<&'static Certs> {
    if let Some(c) = CERTS.get() {
        return Ok(c);
    }
    let made = make()?;
    Ok(CERTS.get_or_init(|| made))
}

/// A new CA in `dir` (`<name>-ca.pem`) and a server certificate it signed for
/// `localhost` and `127.0.0.1` (`<name>-server.pem`, `.key`), with the issuer for more.
fn authority(dir: &Path, name: &str) -> anyhow::Result<(Issuer<'static, KeyPair>, [PathBuf; 3])> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("fstore test CA {name}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let (cert, key) = leaf(
        &issuer,
        vec!["localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let paths = [
        write(dir, &format!("{name}-ca.pem"), &ca.pem())?,
        write(dir, &format!("{name}-server.pem"), &cert)?,
        write(dir, &format!("{name}-server.key"), &key)?,
    ];
    Ok((issuer, paths))
}

/// A certificate `issuer` signs for `names`, and its key, as PEM.
fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Another CA and a server certificate it signed, in `dir`: `[ca, cert, key]`. What a
/// certificate rotation to a new authority looks like.
pub fn another_authority(dir: &Path, name: &str) -> anyhow::Result<[PathBuf; 3]> {
    Ok(authority(dir, name)?.1)
}

fn make() -> anyhow::Result<Certs> {
    let dir = tempfile::tempdir()?;
    let (issuer, [ca, server_cert, server_key]) = authority(dir.path(), "main")?;
    let (client_cert, client_key) = leaf(
        &issuer,
        vec!["fstore-client".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    Ok(Certs {
        ca,
        server_cert,
        server_key,
        client_cert: write(dir.path(), "client.pem", &client_cert)?,
        client_key: write(dir.path(), "client.key", &client_key)?,
        _dir: dir,
    })
}

impl Certs {
    /// What a client of a TLS harness presents: trusts the CA, shows the client
    /// certificate.
    pub fn client(&self) -> fstore::client::ClientTls {
        fstore::client::ClientTls {
            ca_file: Some(self.ca.clone()),
            cert_file: Some(self.client_cert.clone()),
            key_file: Some(self.client_key.clone()),
            domain: None,
        }
    }

    /// `config` serving gRPC over TLS with client certificates required (with its own
    /// certificate files if it names them), and reaching NATS over TLS with the client
    /// certificate and `user`/`password`.
    pub fn secure(&self, config: &mut fstore::Config, user: &str, password: &str) {
        let tls = &mut config.tls;
        if tls.cert_file.is_none() {
            tls.cert_file = Some(self.server_cert.clone());
            tls.key_file = Some(self.server_key.clone());
        }
        tls.client_ca_file.get_or_insert_with(|| self.ca.clone());
        config.nats.ca_file = Some(self.ca.clone());
        config.nats.cert_file = Some(self.client_cert.clone());
        config.nats.key_file = Some(self.client_key.clone());
        config.nats.user = Some(user.to_string());
        config.nats.password = Some(password.to_string());
    }

    /// nats-server arguments: TLS with this server certificate, client certificates
    /// required, and one user.
    pub fn nats_args(&self, user: &str, password: &str) -> Vec<String> {
        let p = |p: &PathBuf| p.display().to_string();
        vec![
            "--tls".into(),
            "--tlscert".into(),
            p(&self.server_cert),
            "--tlskey".into(),
            p(&self.server_key),
            "--tlsverify".into(),
            "--tlscacert".into(),
            p(&self.ca),
            "--user".into(),
            user.into(),
            "--pass".into(),
            password.into(),
        ]
    }
}
