//! A feature store on a chosen backend, for suites that run against every backend.

use fstore::Config;
use fstore::server::Running;
use fstore_proto::api;

use crate::TestClient;
use crate::nats::NatsServer;

/// A backend under test: how to start a feature store on it.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Embedded,
    Nats,
}

pub struct Harness {
    pub running: Running,
    pub client: TestClient,
    /// The NATS server of a NATS-backed harness, killed when the harness goes.
    pub nats: Option<NatsServer>,
}

impl Harness {
    pub async fn start(backend: Backend) -> anyhow::Result<Harness> {
        Self::with_config(backend, crate::test_config()).await
    }

    pub async fn with_config(backend: Backend, config: Config) -> anyhow::Result<Harness> {
        let (running, nats) = match backend {
            Backend::Embedded => (crate::start_embedded(config).await?, None),
            Backend::Nats => {
                let nats = NatsServer::start()?;
                (crate::start_on_nats(config, &nats.url()).await?, Some(nats))
            }
        };
        let client = TestClient::connect(&running.url(), None).await?;
        Ok(Harness {
            running,
            client,
            nats,
        })
    }

    /// Computes of a feature version (`name@v`) by the workers, failures included.
    pub fn computes(&self, feature: &str) -> u64 {
        self.running
            .worker_stats
            .as_ref()
            .map_or(0, |s| s.computes_of(feature))
    }

    /// Another serve replica, without a worker, on the same backend: the same
    /// in-process substrate (embedded; stopping the replica leaves it open), or its own
    /// connection to the same NATS server.
    pub async fn replica(&self, config: Config) -> anyhow::Result<(Running, TestClient)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let running = match &self.nats {
            None => {
                let substrate = self.running.substrate.clone();
                fstore::server::start_sharing(config, substrate, listener).await?
            }
            Some(nats) => {
                let mut config = config.clone();
                config.nats.url = Some(nats.url());
                let substrate = fstore::server::substrate(&config).await?;
                fstore::server::start(config, substrate, fstore_flows::Catalog::new(), listener)
                    .await?
            }
        };
        let client = TestClient::connect(&running.url(), None).await?;
        Ok((running, client))
    }

    pub async fn register(
        &self,
        def: api::FeatureDefinition,
    ) -> anyhow::Result<api::RegisterFeatureResponse> {
        Ok(self.client.register(def).await?)
    }

    pub async fn stop(self) {
        self.running.shutdown().await;
    }
}

/// Instantiates each named `async fn(Backend) -> anyhow::Result<()>` of the calling
/// suite as one test per backend: `embedded::NAME` and `nats::NAME`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name($crate::harness::Backend::Embedded).await
                }
            )*
        }

        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name($crate::harness::Backend::Nats).await
                }
            )*
        }
    };
}
