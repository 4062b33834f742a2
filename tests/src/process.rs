//! The `fstore` binary as a child process, for multi-process and fault tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The `fstore` binary next to the test executable (scripts/test builds it first), or
/// `FSTORE_BIN`.
pub fn fstore_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("FSTORE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    // target/debug/deps/<test> -> target/debug/fstore
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("fstore"))
        .context("no target directory")?;
    if !bin.is_file() {
        bail!(
            "{} is missing: build it with `cargo build -p fstore` (scripts/test does)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A child process killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `fstore ARGS`, logging to `log_dir/name.log`.
    pub fn fstore(
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        log_dir: &std::path::Path,
    ) -> anyhow::Result<Proc> {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(fstore_binary()?)
            .args(args)
            .envs(env.iter().copied())
            .env("FSTORE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + timeout;
            while c.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    bail!("{} did not exit within {timeout:?} of SIGTERM", self.name);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The URL a `serve` or `dev` started with `--listen 127.0.0.1:0` reports once it
    /// listens (`fstore serve is listening on URL`): the port the process itself bound,
    /// which no other process can take in between. Fails when the process exits first
    /// or `timeout` passes, with the end of its log.
    pub async fn listening(&mut self, timeout: Duration) -> anyhow::Result<String> {
        self.reported(timeout, "is listening on ", "its address")
            .await
    }

    /// The address of `/metrics` a process started with `server.metrics_listen =
    /// 127.0.0.1:0` reports (`metrics on http://ADDR/metrics`).
    pub async fn metrics_addr(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::net::SocketAddr> {
        let url = self
            .reported(timeout, "metrics on http://", "its metrics address")
            .await?;
        let addr = url.trim_end_matches("/metrics");
        addr.parse()
            .with_context(|| format!("{} reported metrics on {addr:?}", self.name))
    }

    /// The first word after `marker` in the log, waited for.
    async fn reported(
        &mut self,
        timeout: Duration,
        marker: &str,
        what: &str,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if let Some(word) = text
                .split_once(marker)
                .and_then(|(_, rest)| rest.split_whitespace().next())
            {
                return Ok(word.to_string());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!(
                    "{} exited ({status}) before reporting {what}:\n{}",
                    self.name,
                    tail(&text)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not report {what} within {timeout:?}:\n{}",
                    self.name,
                    tail(&text)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The last lines of a log, for an error message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port, bound and released: another process can take it before the
/// caller binds it again, so it is only for what cannot report its own port (the route
/// ports of a nats-server cluster, which every node must know before any starts).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The environment of `serve --nats` and `worker` processes in tests that run them
/// without API keys: the default tenant, quick heartbeats, a small feature log.
pub const OPEN_ENV: [(&str, &str); 4] = [
    ("FSTORE_NATS__HEARTBEAT", "500ms"),
    ("FSTORE_AUTH__ENABLED", "false"),
    ("FSTORE_SERVER__DEFAULT_TENANT", "default"),
    // JetStream reserves the log's max bytes from the free disk (default 10 GiB).
    ("FSTORE_LOG__MAX_BYTES", "268435456"),
];

/// A `worker --nats url ARGS…` and a `serve --nats url` replica without keys
/// ([`OPEN_ENV`]), logging into `dir`: the worker, the replica, and its address.
pub async fn open_worker_and_serve(
    url: &str,
    worker_args: &[&str],
    dir: &std::path::Path,
) -> anyhow::Result<(Proc, Proc, String)> {
    let mut args = vec!["worker", "--nats", url];
    args.extend_from_slice(worker_args);
    let worker = Proc::fstore("worker", &args, &OPEN_ENV, dir)?;
    let mut serve = Proc::fstore(
        "serve",
        &["serve", "--nats", url, "--listen", "127.0.0.1:0"],
        &OPEN_ENV,
        dir,
    )?;
    let addr = serve.listening(Duration::from_secs(60)).await?;
    Ok((worker, serve, addr))
}

/// `fstore dev --listen 127.0.0.1:0 ARGS…` with its feature log in `dir` (not the
/// working directory) and `env`, logging into `dir`: the process and its address.
pub async fn dev(
    args: &[&str],
    env: &[(&str, &str)],
    dir: &std::path::Path,
) -> anyhow::Result<(Proc, String)> {
    let log = dir.join("log").display().to_string();
    let mut all_args = vec!["dev", "--listen", "127.0.0.1:0"];
    all_args.extend_from_slice(args);
    let mut all_env = vec![("FSTORE_LOG__DIR", log.as_str())];
    all_env.extend_from_slice(env);
    let mut p = Proc::fstore("dev", &all_args, &all_env, dir)?;
    let url = p.listening(Duration::from_secs(60)).await?;
    Ok((p, url))
}
