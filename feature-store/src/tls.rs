//! TLS for the gRPC listener: rustls with the ring provider, optional verification of
//! client certificates against a CA (mTLS), and certificates reloaded when their files
//! change — a renewed certificate is served to new connections without a restart, and
//! connections already open keep theirs. A reload that fails (a half-written file)
//! keeps the configuration that works and says why.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::TlsConfig;
use crate::{Error, Result};

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The files a server's TLS configuration is built from.
#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

impl Files {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [self.cert.as_path(), self.key.as_path()]
            .into_iter()
            .chain(self.client_ca.as_deref())
    }

    /// Each file's modification time: a change in any is a reason to reload.
    fn stamps(&self) -> Vec<Option<SystemTime>> {
        self.paths()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }
}

/// The current server configuration, replaced whole on reload.
#[derive(Clone)]
pub struct ServerTls {
    files: Files,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The TLS the configuration asks for: None without `tls.cert_file`.
    pub fn from_config(config: &TlsConfig) -> Result<Option<ServerTls>> {
        let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) else {
            return Ok(None);
        };
        let files = Files {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: config.client_ca_file.clone(),
        };
        let built = build(&files)?;
        Ok(Some(ServerTls {
            files,
            current: Arc::new(RwLock::new(Arc::new(built))),
        }))
    }

    /// Whether clients must present a certificate the client CA signed.
    pub fn verifies_clients(&self) -> bool {
        self.files.client_ca.is_some()
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    /// Rebuilds the configuration from the files; on failure keeps the one in use.
    fn reload(&self) -> Result<()> {
        let built = build(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(built);
        Ok(())
    }

    /// Reloads whenever a file's modification time changes, every `interval`, until
    /// `shutdown`.
    pub async fn follow(self, interval: Duration, shutdown: CancellationToken) {
        let mut seen = self.files.stamps();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let now = self.files.stamps();
            if now == seen {
                continue;
            }
            match self.reload() {
                Ok(()) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                    seen = now;
                }
                // Retried at the next tick: a file may be half written.
                Err(e) => {
                    tracing::warn!(error = %e, "TLS files changed but do not load; the previous certificate stays in use")
                }
            }
        }
    }

    /// Connections of `listener` after their handshake, as a stream tonic serves.
    /// Handshakes run apart from the accept loop, so a slow client holds back nobody.
    pub fn incoming(
        self,
        listener: TcpListener,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsStream<TcpStream>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let handshakes = tasks.clone();
        fstore_substrate::task::spawn_named(tasks, "tls-accept", async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small gRPC frames must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                let acceptor = self.acceptor();
                let tx = tx.clone();
                fstore_substrate::task::spawn_named(&handshakes, "tls-handshake", async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "a TLS handshake failed"),
                        Err(_) => tracing::debug!("a TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

fn tls_error(what: &Path, e: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{}: {e}", what.display()))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(path, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// A rustls server configuration from the files: HTTP/2 only (gRPC), TLS 1.2 and 1.3.
fn build(files: &Files) -> Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| tls_error(&files.key, e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| tls_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| tls_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(&files.cert, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
