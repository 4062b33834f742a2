//! What the chaos run starts: a 3-node JetStream cluster, per fstore process one proxy per
//! NATS node (its `--nats` is the proxies), two `fstore serve` replicas and the workers,
//! with R3 streams and authentication on; the API keys of two tenants; and `Endpoints`,
//! the replicas' current clients as the fault scheduler restarts them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use fstore_benches::cluster::{Processes, START_TIMEOUT, base_env};
use fstore_tests::TestClient;
use fstore_tests::nats::{NatsCluster, NatsServer};
use fstore_tests::process::fstore_binary;
use fstore_tests::proxy::Proxy;

/// The two tenants; each has its own features, keys, subscriber and dead letters.
pub(crate) const TENANTS: [&str; 2] = ["acme", "globex"];

pub(crate) fn proc_env() -> Vec<(&'static str, String)> {
    let mut env = base_env();
    env.extend(
        [
            ("FSTORE_NATS__REPLICAS", "3"),
            // A stopped or killed worker's jobs come back soon.
            ("FSTORE_NATS__ACK_WAIT", "3s"),
            ("FSTORE_WORKER__RETRY_MAX", "200ms"),
            ("FSTORE_BACKFILL__LEASE", "2s"),
            ("FSTORE_BACKFILL__SCAN_INTERVAL", "300ms"),
            ("FSTORE_BACKFILL__CHUNK_ENTITIES", "10"),
            ("FSTORE_BACKFILL__WINDOW", "2"),
        ]
        .map(|(k, v)| (k, v.to_string())),
    );
    env
}

/// The replicas' clients of the moment (None while a replica is down or restarting).
#[derive(Debug, Clone, Default)]
pub(crate) struct Endpoints(Arc<RwLock<Vec<Option<TestClient>>>>);

impl Endpoints {
    pub(crate) fn get(&self, i: usize) -> Option<TestClient> {
        self.0.read().ok()?.get(i).cloned().flatten()
    }

    pub(crate) fn set(&self, i: usize, c: Option<TestClient>) {
        if let Ok(mut v) = self.0.write() {
            if v.len() <= i {
                v.resize(i + 1, None);
            }
            v[i] = c;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.0.read().map_or(0, |v| v.len())
    }
}

pub(crate) struct Topology {
    pub(crate) nats: Vec<NatsServer>,
    /// Per fstore process name, its proxy to each NATS node.
    pub(crate) proxies: BTreeMap<String, Vec<Proxy>>,
    pub(crate) procs: Processes,
    /// Per tenant: a read+write key (the load) and an admin key (the checker).
    pub(crate) keys: Vec<(String, String)>,
    pub(crate) endpoints: Endpoints,
}

/// `fstore auth create-key --nats URLS --for TENANT --role ...`, as an operator makes
/// the first keys; retried while the cluster elects its leaders.
async fn create_key(urls: &str, tenant: &str, roles: &[&str]) -> anyhow::Result<String> {
    let bin = fstore_binary()?;
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(["auth", "create-key", "--nats", urls, "--for", tenant])
            .args(roles.iter().flat_map(|r| ["--role", r]))
            .args(["--label", "chaos"]);
        for (k, v) in proc_env() {
            cmd.env(k, v);
        }
        let out = cmd
            .output()
            .await
            .context("running fstore auth create-key")?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "no key of {tenant} within {START_TIMEOUT:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

impl Topology {
    pub(crate) async fn start(
        dir: std::path::PathBuf,
        replicas: usize,
        workers: usize,
    ) -> anyhow::Result<Topology> {
        // Nodes that do not advertise each other: a cut proxy cannot be bypassed.
        let nats = NatsCluster::start_with(3, &["--no_advertise"])?.nodes;
        let direct = nats
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",");
        let mut keys = Vec::new();
        for t in TENANTS {
            let load = create_key(&direct, t, &["read", "write"]).await?;
            let admin = create_key(&direct, t, &["read", "admin"]).await?;
            keys.push((load, admin));
        }
        let mut proxies = BTreeMap::new();
        let names = (0..replicas)
            .map(|i| format!("serve{i}"))
            .chain((0..workers).map(|i| format!("worker{i}")));
        for name in names {
            let mut mine = Vec::new();
            for node in &nats {
                let target = SocketAddr::from(([127, 0, 0, 1], node.port()));
                mine.push(Proxy::start(target).await?);
            }
            proxies.insert(name, mine);
        }
        let urls: BTreeMap<String, String> = proxies
            .iter()
            .map(|(n, ps)| {
                let url = ps.iter().map(Proxy::nats_url).collect::<Vec<_>>().join(",");
                (n.clone(), url)
            })
            .collect();
        let procs = Processes::start(dir, &proc_env(), replicas, workers, |name| {
            urls.get(name).cloned().unwrap_or_default()
        })
        .await?;
        let endpoints = Endpoints::default();
        for (i, r) in procs.replicas.iter().enumerate() {
            endpoints.set(i, Some(r.client(None).await?));
        }
        Ok(Topology {
            nats,
            proxies,
            procs,
            keys,
            endpoints,
        })
    }

    /// The load's client of replica `i` for tenant `t` (None while it is down).
    pub(crate) fn client(&self, i: usize, t: usize) -> Option<TestClient> {
        Some(self.endpoints.get(i)?.with_key(&self.keys[t].0))
    }

    /// Stops the fstore processes (SIGTERM), then the NATS nodes; what did not exit.
    pub(crate) fn shutdown(&mut self) -> Vec<String> {
        let stuck = self.procs.shutdown();
        for n in &mut self.nats {
            n.stop();
        }
        stuck
    }
}
