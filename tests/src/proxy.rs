//! A TCP proxy on a loopback port (`127.0.0.1:0`) in front of one target (a nats-server),
//! for fault tests: it passes bytes through, delays every chunk, or cuts the link —
//! every open connection dropped and new ones closed at once — until healed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the proxy does with the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Through as they come.
    Pass,
    /// Each chunk, either way, held this long before it is written on.
    Latency(Duration),
    /// Every connection dropped, new ones accepted and closed at once.
    Partition,
}

/// A running proxy; it stops (and drops its connections) when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards to `target`, in `Mode::Pass`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, rx) = watch::channel(Mode::Pass);
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(listener, target, rx, accepted.clone()));
        Ok(Proxy {
            addr,
            target,
            mode,
            accepted,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The proxy as a NATS URL.
    pub fn nats_url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Connections accepted so far (closed ones included).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Switches the mode; `Partition` drops every open connection at once.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept loop owns the connections' tasks: aborting it drops them all.
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Receiver<Mode>,
    accepted: Arc<AtomicU64>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            incoming = listener.accept() => {
                let Ok((client, _)) = incoming else {
                    // Out of descriptors, or the like: try again shortly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                accepted.fetch_add(1, Ordering::Relaxed);
                if *mode.borrow() == Mode::Partition {
                    drop(client);
                    continue;
                }
                connections.spawn(connection(client, target, mode.clone()));
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One client connection and its upstream, until either side closes or a partition.
async fn connection(client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let Ok(upstream) = TcpStream::connect(target).await else {
        // The target is down: the client sees its connection closed, as it would.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (up_read, up_write) = upstream.into_split();
    let (to_up, to_client) = (mode.clone(), mode.clone());
    let cut = async {
        loop {
            if *mode.borrow_and_update() == Mode::Partition {
                return;
            }
            if mode.changed().await.is_err() {
                // The proxy is gone: wait to be aborted with it.
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = pump(client_read, up_write, to_up) => {}
        _ = pump(up_read, client_write, to_client) => {}
        () = cut => {}
    }
}

/// Copies `from` to `to`, delaying each chunk while the mode says so.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = match *mode.borrow() {
            Mode::Latency(d) => Some(d),
            Mode::Pass | Mode::Partition => None,
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo() -> std::io::Result<SocketAddr> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        Ok(addr)
    }

    async fn round_trip(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"ping").await?;
        let mut got = vec![0u8; 4];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    #[tokio::test]
    async fn passes_delays_cuts_and_heals() -> anyhow::Result<()> {
        let proxy = Proxy::start(echo().await?).await?;
        assert_eq!(round_trip(proxy.addr()).await?, b"ping");

        proxy.set(Mode::Latency(Duration::from_millis(100)));
        let t = std::time::Instant::now();
        assert_eq!(round_trip(proxy.addr()).await?, b"ping");
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );

        proxy.set(Mode::Pass);
        let mut open = TcpStream::connect(proxy.addr()).await?;
        open.write_all(b"ping").await?;
        let mut got = [0u8; 4];
        open.read_exact(&mut got).await?;
        proxy.set(Mode::Partition);
        // The open connection is dropped: the next read ends.
        let n = tokio::time::timeout(Duration::from_secs(2), open.read(&mut got)).await??;
        assert_eq!(n, 0);
        assert!(round_trip(proxy.addr()).await.is_err());

        proxy.set(Mode::Pass);
        assert_eq!(round_trip(proxy.addr()).await?, b"ping");
        assert!(proxy.accepted() >= 5);
        Ok(())
    }
}
