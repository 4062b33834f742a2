//! A feature store on a chosen backend, for suites that run against every backend.

use fstore::Config;
use fstore::server::Running;
use fstore_proto::api;

use crate::TestClient;
use crate::nats::NatsServer;

/// A backend under test: how to start a feature store on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Nats,
    /// NATS over TLS with client certificates and a password, the feature store over
    /// TLS requiring client certificates (mTLS): the same suites, every hop encrypted.
    NatsTls,
}

/// The NATS user of TLS harnesses.
const NATS_USER: (&str, &str) = ("fstore", "s3cret-for-tests");

pub struct Harness {
    pub backend: Backend,
    pub running: Running,
    pub client: TestClient,
    /// The NATS server of a NATS-backed harness, killed when the harness goes.
    pub nats: Option<NatsServer>,
}

impl Harness {
    pub async fn start(backend: Backend) -> anyhow::Result<Harness> {
        Self::with_config(backend, crate::test_config()).await
    }

    pub async fn with_config(backend: Backend, mut config: Config) -> anyhow::Result<Harness> {
        let (running, nats) = match backend {
            Backend::Embedded => (crate::start_embedded(config).await?, None),
            Backend::Nats => {
                let nats = NatsServer::start()?;
                (crate::start_on_nats(config, &nats.url()).await?, Some(nats))
            }
            Backend::NatsTls => {
                let certs = crate::tls::certs()?;
                let nats = NatsServer::start_with(certs.nats_args(NATS_USER.0, NATS_USER.1))?;
                certs.secure(&mut config, NATS_USER.0, NATS_USER.1);
                (crate::start_on_nats(config, &nats.url()).await?, Some(nats))
            }
        };
        let client = TestClient::connect(&running.url(), None).await?;
        Ok(Harness {
            backend,
            running,
            client,
            nats,
        })
    }

    /// `config` made fit for this harness's backend: its TLS and NATS credentials.
    pub fn fit(&self, mut config: Config) -> anyhow::Result<Config> {
        if self.backend == Backend::NatsTls {
            crate::tls::certs()?.secure(&mut config, NATS_USER.0, NATS_USER.1);
        }
        Ok(config)
    }

    /// A typed client of the server at `url` (this harness's or a replica's), with the
    /// harness's TLS.
    pub async fn store_client(
        &self,
        url: &str,
        tenant: Option<String>,
    ) -> anyhow::Result<fstore::client::Client> {
        let tls = match self.backend {
            Backend::NatsTls => crate::tls::certs()?.client(),
            _ => fstore::client::ClientTls::default(),
        };
        Ok(fstore::client::Client::connect_with(url, tenant, &tls).await?)
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
        let config = self.fit(config)?;
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
/// suite as one test per backend: `embedded::NAME` and `nats::NAME`; with `tls;` first,
/// also `nats_tls::NAME` (every hop over TLS).
#[macro_export]
macro_rules! on_every_backend {
    (tls; $($name:ident),* $(,)?) => {
        $crate::on_every_backend!($($name),*);

        mod nats_tls {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name($crate::harness::Backend::NatsTls).await
                }
            )*
        }
    };
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
