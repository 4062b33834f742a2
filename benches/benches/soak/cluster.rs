//! The processes under load: one nats-server, two `fstore worker` and two `fstore serve`
//! replicas (started by `fstore_benches::cluster`), their environment, clients and
//! shutdown.

use std::path::{Path, PathBuf};

use fstore_benches::cluster::{Processes, base_env, log_dir};
use fstore_tests::TestClient;
use fstore_tests::nats::NatsServer;

pub(crate) const TENANT: &str = "soak";

pub(crate) struct Cluster {
    pub(crate) nats: NatsServer,
    /// Logs of the fstore processes.
    pub(crate) dir: PathBuf,
    pub(crate) procs: Processes,
}

pub(crate) fn proc_env(l1_max_bytes: Option<u64>) -> Vec<(&'static str, String)> {
    let mut env = base_env();
    env.extend([
        ("FSTORE_SERVER__DEFAULT_TENANT", TENANT.to_string()),
        // The soak measures loss under load; keys are tested by tests/auth.rs.
        ("FSTORE_AUTH__ENABLED", "false".to_string()),
    ]);
    if let Some(b) = l1_max_bytes {
        env.push(("FSTORE_NATS__L1_MAX_BYTES", b.to_string()));
    }
    env
}

impl Cluster {
    pub(crate) async fn start(
        log_dir_chosen: Option<&Path>,
        l1_max_bytes: Option<u64>,
    ) -> anyhow::Result<Cluster> {
        let nats = NatsServer::start()?;
        let dir = log_dir("fstore-soak", log_dir_chosen)?;
        let url = nats.url();
        let procs =
            Processes::start(dir.clone(), &proc_env(l1_max_bytes), 2, 2, |_| url.clone()).await?;
        Ok(Cluster { nats, dir, procs })
    }

    pub(crate) async fn client(&self, i: usize) -> anyhow::Result<TestClient> {
        self.procs.replicas[i].client(None).await
    }

    /// The fstore processes, replicas first: (name, pid).
    pub(crate) fn processes(&self) -> Vec<(String, Option<u32>)> {
        self.procs.pids()
    }

    /// SIGTERM to the replicas, then the workers; the processes that did not exit.
    pub(crate) fn shutdown(&mut self) -> Vec<String> {
        let stuck = self.procs.shutdown();
        self.nats.stop();
        stuck
    }
}
