//! A real `nats-server -js` for tests: a free loopback port (`-p -1`, read back from the
//! ports file), its own temporary store, and stop / kill / restart on the same port and
//! store. It never touches 127.0.0.1:4222. The binary is `NATS_SERVER_BIN`, else the
//! one `scripts/install-nats` put under `.tools/`; a missing or old one (< 2.11) fails
//! with how to install the right one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The package's directory as the test runner gives it at run time (`cargo test` and
/// nextest set `CARGO_MANIFEST_DIR`), else as it was at build time: a test binary may be
/// reused from a build in another clone that shares the target directory.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    )
}

/// A running nats-server, killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    extra: Vec<String>,
}

const INSTALL: &str =
    "run scripts/install-nats (scripts/test does) or set NATS_SERVER_BIN to a nats-server >= 2.11";

/// The nats-server binary to test with, checked for version.
pub fn server_binary() -> anyhow::Result<PathBuf> {
    let bin = match std::env::var_os("NATS_SERVER_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let root = manifest_dir().join("..");
            let tools = root.join(".tools");
            let found = std::fs::read_dir(&tools).ok().and_then(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path().join("bin").join("nats-server"))
                    .find(|p| p.is_file())
            });
            match found {
                Some(p) => p,
                None => bail!("nats-server not found under {}: {INSTALL}", tools.display()),
            }
        }
    };
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}: {INSTALL}", bin.display()))?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let version = text
        .split_whitespace()
        .last()
        .unwrap_or("")
        .trim_start_matches('v')
        .to_string();
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (2, 11) {
        bail!(
            "{} is nats-server {version}, too old (per-key TTL needs 2.11): {INSTALL}",
            bin.display()
        );
    }
    Ok(bin)
}

impl NatsServer {
    /// A single JetStream server.
    pub fn start() -> anyhow::Result<NatsServer> {
        Self::start_with(Vec::new())
    }

    /// A JetStream server with extra command-line arguments.
    pub fn start_with(extra: Vec<String>) -> anyhow::Result<NatsServer> {
        let mut server = NatsServer {
            bin: server_binary()?,
            dir: tempfile::tempdir()?,
            child: None,
            port: 0,
            extra,
        };
        server.spawn(None)?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("js")
    }

    fn spawn(&mut self, port: Option<u16>) -> anyhow::Result<()> {
        let ports = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports)?;
        let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
        let log = std::fs::File::create(self.dir.path().join("server.log"))?;
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
            .arg(self.store_dir())
            .arg("--ports_file_dir")
            .arg(&ports)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(p) = read_port(&ports) {
                self.port = p;
                break;
            }
            if Instant::now() > deadline {
                // The log goes with the temporary directory: say what it says.
                let log =
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "nats-server wrote no ports file in 10 s; its log ends: {:?}",
                    tail.into_iter().rev().collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Wait until it accepts connections.
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("nats-server is not accepting on port {}", self.port);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, waiting for the process to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn(Some(port)) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    self.kill();
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_port(dir: &Path) -> Option<u16> {
    for entry in std::fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let text = std::fs::read_to_string(entry.path()).ok()?;
        // {"nats":["nats://127.0.0.1:PORT"], ...} (`tls://` when TLS is required)
        let after = text.split_once("\"nats\":[\"")?.1.split_once("://")?.1;
        let port: String = after
            .split(':')
            .nth(1)?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(p) = port.parse() {
            return Some(p);
        }
    }
    None
}

/// A JetStream cluster of nats-servers on loopback, routed to each other.
#[derive(Debug)]
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub fn start(n: usize) -> anyhow::Result<NatsCluster> {
        Self::start_with(n, &[])
    }

    /// A cluster whose nodes all get `extra` arguments too (`--no_advertise`: clients
    /// know only the URLs they were given, so a proxy in front of a node cannot be
    /// bypassed by a URL the cluster told them).
    pub fn start_with(n: usize, extra: &[&str]) -> anyhow::Result<NatsCluster> {
        // Route ports must be known before any node starts: the one use of free_port.
        let cluster_ports = (0..n)
            .map(|_| crate::process::free_port())
            .collect::<anyhow::Result<Vec<u16>>>()?;
        let mut nodes = Vec::with_capacity(n);
        for (i, port) in cluster_ports.iter().enumerate() {
            let routes: Vec<String> = cluster_ports
                .iter()
                .filter(|p| *p != port)
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            let mut args = vec![
                "--cluster_name".into(),
                "fstore-test".into(),
                "--server_name".into(),
                format!("n{i}"),
                "--cluster".into(),
                format!("nats://127.0.0.1:{port}"),
                "--routes".into(),
                routes.join(","),
            ];
            args.extend(extra.iter().map(|a| a.to_string()));
            nodes.push(NatsServer::start_with(args)?);
        }
        Ok(NatsCluster { nodes })
    }

    /// Every node's client URL, comma-separated (what `--nats` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}
