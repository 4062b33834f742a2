//! The processes under load: one nats-server, two `fstore worker` and two `fstore serve`
//! replicas, their environment, clients and shutdown.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use fstore_tests::nats::NatsServer;
use fstore_tests::process::{Proc, free_port};
use fstore_tests::{TestClient, wait_until};

use crate::LONG;

pub(crate) const TENANT: &str = "soak";

pub(crate) struct Cluster {
    pub(crate) nats: NatsServer,
    /// Logs of the fstore processes.
    pub(crate) dir: PathBuf,
    pub(crate) replicas: Vec<(Proc, String)>,
    pub(crate) workers: Vec<Proc>,
}

pub(crate) fn proc_env(l1_max_bytes: Option<u64>) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&str, String)> = [
        ("FSTORE_SERVER__DEFAULT_TENANT", TENANT),
        ("FSTORE_SERVER__RECHECK_INTERVAL", "100ms"),
        ("FSTORE_NATS__HEARTBEAT", "500ms"),
        ("FSTORE_CACHE__FAILURE_TTL", "2s"),
        ("FSTORE_WORKER__RETRY_BASE", "20ms"),
        // The soak measures loss under load; keys are tested by tests/auth.rs.
        ("FSTORE_AUTH__ENABLED", "false"),
        ("FSTORE_LOG__MAX_BYTES", "268435456"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    if let Some(b) = l1_max_bytes {
        env.push(("FSTORE_NATS__L1_MAX_BYTES", b.to_string()));
    }
    env
}

impl Cluster {
    pub(crate) fn start(
        log_dir: Option<&Path>,
        l1_max_bytes: Option<u64>,
    ) -> anyhow::Result<Cluster> {
        let nats = NatsServer::start()?;
        let dir = match log_dir {
            Some(d) => d.to_path_buf(),
            None => std::env::temp_dir().join(format!(
                "fstore-soak-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis())
            )),
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the log directory {}", dir.display()))?;
        let url = nats.url();
        let owned = proc_env(l1_max_bytes);
        let env: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut workers = Vec::new();
        for i in 0..2 {
            workers.push(Proc::fstore(
                &format!("worker{i}"),
                &["worker", "--nats", &url],
                &env,
                &dir,
            )?);
        }
        let mut replicas = Vec::new();
        for i in 0..2 {
            let listen = format!("127.0.0.1:{}", free_port()?);
            let p = Proc::fstore(
                &format!("serve{i}"),
                &["serve", "--nats", &url, "--listen", &listen],
                &env,
                &dir,
            )?;
            replicas.push((p, format!("http://{listen}")));
        }
        Ok(Cluster {
            nats,
            dir,
            replicas,
            workers,
        })
    }

    pub(crate) async fn client(&self, i: usize) -> anyhow::Result<TestClient> {
        let (p, url) = &self.replicas[i];
        wait_until(
            LONG,
            &format!("replica {i} to accept calls (log: {})", p.log.display()),
            || async { TestClient::connect(url, None).await.ok() },
        )
        .await
    }

    /// The fstore processes, replicas first: (name, pid).
    pub(crate) fn processes(&self) -> Vec<(String, Option<u32>)> {
        self.replicas
            .iter()
            .map(|(p, _)| p)
            .chain(self.workers.iter())
            .map(|p| (p.name.clone(), p.pid()))
            .collect()
    }

    /// SIGTERM to the replicas, then the workers; the processes that did not exit.
    pub(crate) fn shutdown(&mut self) -> Vec<String> {
        let mut stuck = Vec::new();
        for p in self
            .replicas
            .iter_mut()
            .map(|(p, _)| p)
            .chain(self.workers.iter_mut())
        {
            if let Err(e) = p.terminate(Duration::from_secs(10)) {
                stuck.push(e.to_string());
            }
        }
        self.nats.stop();
        stuck
    }
}
