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
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port (bound and released; used for child servers' --listen).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
