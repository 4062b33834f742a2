//! Real `fstore serve` and `fstore worker` processes for the soak and the chaos run: each
//! started with the environment it is given, a serve replica on `--listen 127.0.0.1:0`
//! with the URL it reports, restarted under a new log file (the old one is kept), and
//! stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use fstore_tests::process::Proc;
use fstore_tests::{TestClient, wait_until};

/// Bound on a process's start: reporting its address, accepting calls.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings every process of a bench run gets: short timings for a test cluster, and a
/// feature log JetStream can reserve on a laptop's disk (the default 10 GiB is taken
/// from the free disk at creation).
pub fn base_env() -> Vec<(&'static str, String)> {
    [
        ("FSTORE_SERVER__RECHECK_INTERVAL", "100ms"),
        ("FSTORE_NATS__HEARTBEAT", "500ms"),
        ("FSTORE_CACHE__FAILURE_TTL", "2s"),
        ("FSTORE_WORKER__RETRY_BASE", "20ms"),
        ("FSTORE_LOG__MAX_BYTES", "268435456"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}

/// `chosen`, or a new directory `<tmp>/<prefix>-<pid>-<ms>`; created.
pub fn log_dir(prefix: &str, chosen: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match chosen {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        )),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the log directory {}", dir.display()))?;
    Ok(dir)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Serve,
    Worker,
}

/// One fstore process, and what it takes to start it again.
#[derive(Debug)]
pub struct Fstore {
    /// `serve0`, `worker1`, ...: also the first log's name.
    pub name: String,
    pub role: Role,
    pub proc: Proc,
    /// A serve replica's gRPC URL, as it reported it (new at every start).
    pub url: Option<String>,
    /// Starts so far (1 after the first).
    pub starts: u32,
    nats: String,
    env: Vec<(String, String)>,
    dir: PathBuf,
}

impl Fstore {
    /// Starts `fstore serve|worker --nats NATS` and, for a replica, waits for its URL.
    pub async fn start(
        role: Role,
        name: &str,
        nats: &str,
        env: &[(&str, String)],
        dir: &Path,
    ) -> anyhow::Result<Fstore> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let (proc, url) = launch(role, name, name, nats, &env, dir).await?;
        Ok(Fstore {
            name: name.to_string(),
            role,
            proc,
            url,
            starts: 1,
            nats: nats.to_string(),
            env,
            dir: dir.to_path_buf(),
        })
    }

    /// SIGKILL (if alive), then a new start with the same arguments, logging to
    /// `<name>.<n>.log` after the first.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.kill();
        self.url = None;
        self.starts += 1;
        let log_name = format!("{}.{}", self.name, self.starts);
        let (proc, url) = launch(
            self.role, &self.name, &log_name, &self.nats, &self.env, &self.dir,
        )
        .await?;
        self.proc = proc;
        self.url = url;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// A client of this replica that calls with `key` (or without one), once it answers.
    pub async fn client(&self, key: Option<&str>) -> anyhow::Result<TestClient> {
        let url = self
            .url
            .clone()
            .with_context(|| format!("{} is not a serve replica, or not started", self.name))?;
        wait_until(
            START_TIMEOUT,
            &format!(
                "{} to accept calls (log: {})",
                self.name,
                self.proc.log.display()
            ),
            || async {
                let c = TestClient::connect(&url, None).await.ok()?;
                Some(match key {
                    Some(k) => c.with_key(k),
                    None => c,
                })
            },
        )
        .await
    }

    /// SIGTERM, waiting up to 10 s; the error names a process that did not exit.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        self.proc.terminate(Duration::from_secs(10))
    }
}

/// Starts one process logging to `<log_name>.log`; a replica's URL once it listens.
async fn launch(
    role: Role,
    name: &str,
    log_name: &str,
    nats: &str,
    env: &[(String, String)],
    dir: &Path,
) -> anyhow::Result<(Proc, Option<String>)> {
    let mut args = vec![
        match role {
            Role::Serve => "serve",
            Role::Worker => "worker",
        },
        "--nats",
        nats,
    ];
    if role == Role::Serve {
        args.extend(["--listen", "127.0.0.1:0"]);
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut proc = Proc::fstore(log_name, &args, &env, dir)?;
    // Reports name the process, not its start; the log file's name has the start.
    proc.name = name.to_string();
    let url = match role {
        Role::Serve => Some(proc.listening(START_TIMEOUT).await?),
        Role::Worker => None,
    };
    Ok((proc, url))
}

/// Replicas and workers on one NATS URL each (the URL may differ per process).
#[derive(Debug)]
pub struct Processes {
    pub dir: PathBuf,
    pub replicas: Vec<Fstore>,
    pub workers: Vec<Fstore>,
}

impl Processes {
    /// Starts `workers` workers, then `replicas` replicas; `nats(name)` is the `--nats`
    /// of the process named `name`.
    pub async fn start(
        dir: PathBuf,
        env: &[(&str, String)],
        replicas: usize,
        workers: usize,
        mut nats: impl FnMut(&str) -> String,
    ) -> anyhow::Result<Processes> {
        let mut p = Processes {
            dir,
            replicas: Vec::new(),
            workers: Vec::new(),
        };
        for i in 0..workers {
            let name = format!("worker{i}");
            let url = nats(&name);
            p.workers
                .push(Fstore::start(Role::Worker, &name, &url, env, &p.dir).await?);
        }
        for i in 0..replicas {
            let name = format!("serve{i}");
            let url = nats(&name);
            p.replicas
                .push(Fstore::start(Role::Serve, &name, &url, env, &p.dir).await?);
        }
        Ok(p)
    }

    /// Replicas first, then workers.
    pub fn all(&self) -> impl Iterator<Item = &Fstore> {
        self.replicas.iter().chain(self.workers.iter())
    }

    /// The processes, replicas first: (name, pid).
    pub fn pids(&self) -> Vec<(String, Option<u32>)> {
        self.all().map(|p| (p.name.clone(), p.pid())).collect()
    }

    /// SIGTERM to the replicas, then the workers; the processes that did not exit.
    pub fn shutdown(&mut self) -> Vec<String> {
        let mut stuck = Vec::new();
        for p in self.replicas.iter_mut().chain(self.workers.iter_mut()) {
            if let Err(e) = p.terminate() {
                stuck.push(e.to_string());
            }
        }
        stuck
    }
}
