//! The verbs that run the feature store: `dev`, `serve` and `worker`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use fstore::client::Client;
use fstore::{Config, server};
use fstore_flows::Catalog;

use crate::error::usage;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Configuration file (TOML); FSTORE_SECTION__KEY variables override it.
    #[arg(long, env = "FSTORE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides server.listen).
    #[arg(long)]
    listen: Option<String>,
    /// NATS server(s) for the shared JetStream substrate (overrides nats.url); without
    /// it the substrate is embedded in this process.
    #[arg(long, env = "FSTORE_NATS")]
    nats: Option<String>,
    /// A file of `[[flow]]` entries (model flows without code, as in the config file),
    /// served beside the built-in flows; may repeat.
    #[arg(long = "flow-file")]
    flow_files: Vec<PathBuf>,
    /// A Python module (`MODULE[:ATTR]`, or a .py file) whose fstore-flow flows a
    /// sidecar process serves beside the others; may repeat. Needs --venv.
    #[arg(long)]
    python: Vec<String>,
    /// The venv the Python sidecars run in (fstore-flow installed); default $VIRTUAL_ENV.
    #[arg(long, env = "VIRTUAL_ENV")]
    venv: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Server, embedded substrate, workers and built-in flows in one process.
    Dev {
        #[command(flatten)]
        run: RunArgs,
        /// Register the features of this file at start.
        #[arg(long)]
        features: Option<PathBuf>,
    },
    /// The gRPC server (calls must name their tenant). With --nats it serves from the
    /// shared substrate and runs no workers; without, it embeds substrate and workers.
    Serve {
        #[command(flatten)]
        run: RunArgs,
    },
    /// A worker process serving flows from the shared substrate (--nats).
    Worker {
        #[command(flatten)]
        run: RunArgs,
        /// Flows to serve, by name or name@version (default: every built-in flow).
        #[arg(long, value_delimiter = ',')]
        flows: Vec<String>,
    },
}

pub async fn run(verb: Verb) -> anyhow::Result<()> {
    match verb {
        Verb::Dev { run, features } => dev(&run, features).await,
        Verb::Serve { run } => serve(&run).await,
        Verb::Worker { run, flows } => worker(&run, flows).await,
    }
}

async fn dev(run: &RunArgs, features: Option<PathBuf>) -> anyhow::Result<()> {
    let mut config = load_config(run)?;
    // dev trusts whoever reaches its port, unless the configuration turns keys on.
    let open = !*config.auth.enabled.get_or_insert(false);
    config
        .server
        .default_tenant
        .get_or_insert_with(|| "default".to_string());
    if config.nats.url.is_none() {
        // dev keeps its feature log across restarts.
        config
            .log
            .dir
            .get_or_insert_with(|| PathBuf::from(fstore::config::DEV_LOG_DIR));
    }
    let listener = bind(&config).await?;
    let backend = match (&config.nats.url, &config.log.dir) {
        (Some(url), _) => format!("NATS JetStream at {url}"),
        (None, Some(dir)) => format!("embedded substrate, feature log in {}", dir.display()),
        (None, None) => "embedded substrate".to_string(),
    };
    let catalog = catalog(run, &config, &[])?;
    let substrate = server::substrate(&config).await?;
    let running = server::start(config, substrate, catalog, listener).await?;
    let url = running.url();
    if let Some(path) = features {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut client = Client::connect(&url, None)
            .await?
            .with_api_key(std::env::var("FSTORE_API_KEY").ok());
        let n = client.register_file(&text).await?.len();
        eprintln!("registered {n} features from {}", path.display());
    }
    if open {
        eprintln!(
            "authentication is OFF: any client that reaches {url} acts as any tenant \
             (`fstore serve` requires API keys; set auth.enabled = true to try them here)"
        );
    }
    eprintln!(
        "fstore dev is listening on {url} ({backend}, built-in flows, tenant `default`)\n\
         try:\n  fstore --addr {url} register feature-store/examples/demo.toml\n  \
         fstore --addr {url} get -e doc:1 -f doc.log_words -i \"text=the quick brown fox\" --sync\n  \
         fstore --addr {url} ls --flows\n\
         stop with Ctrl-C"
    );
    shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}

async fn serve(run: &RunArgs) -> anyhow::Result<()> {
    let config = load_config(run)?;
    let listener = bind(&config).await?;
    // With a shared substrate, compute belongs to `fstore worker` processes.
    let catalog = if config.nats.url.is_some() {
        if !config.flows.is_empty() || !run.flow_files.is_empty() {
            eprintln!(
                "note: with --nats, `fstore worker` processes serve the [[flow]] entries, not serve"
            );
        }
        Catalog::new()
    } else {
        catalog(run, &config, &[])?
    };
    let substrate = server::substrate(&config).await?;
    if config.auth.required() {
        first_key(&config, &substrate).await?;
    } else {
        eprintln!("authentication is OFF (auth.enabled = false): any client acts as any tenant");
    }
    let running = server::start(config, substrate, catalog, listener).await?;
    eprintln!("fstore serve is listening on {}", running.url());
    shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}

async fn worker(run: &RunArgs, flows: Vec<String>) -> anyhow::Result<()> {
    let config = load_config(run)?;
    if config.nats.url.is_none() {
        return Err(usage(
            "a worker process needs the shared substrate: pass --nats URL (or set nats.url). \
             The embedded substrate lives inside one process; `fstore dev` runs its own workers",
        ));
    }
    let catalog = catalog(run, &config, &flows)?;
    let substrate = server::substrate(&config).await?;
    let token = tokio_util::sync::CancellationToken::new();
    let worker = server::run_worker(&config, substrate, catalog, token.clone());
    tokio::pin!(worker);
    tokio::select! {
        ended = &mut worker => ended?,
        () = shutdown_signal() => {
            token.cancel();
            worker.await?;
        }
    }
    Ok(())
}

/// The built-in flows, the configured ones (`[[flow]]` entries of the config and of the
/// flow files) and the Python sidecars' (`--python`), kept to `only` when it names any.
/// An entry that cannot be served is refused with its reason and the others are served;
/// `only` naming none that is served is an error.
fn catalog(run: &RunArgs, config: &Config, only: &[String]) -> anyhow::Result<Catalog> {
    let mut entries = config.flows.clone();
    for file in &run.flow_files {
        entries.extend(fstore::config::read_flow_file(file).map_err(|e| usage(e.to_string()))?);
    }
    let (catalog, mut refused) = fstore::config::with_configured(Catalog::builtins(), &entries);
    let mut catalog = catalog;
    if !run.python.is_empty() {
        let venv = run.venv.as_deref().ok_or_else(|| {
            usage("--python needs --venv DIR: a venv with fstore-flow installed (pip install ./flows-python)")
        })?;
        let (with, more) =
            fstore::config::with_sidecars(catalog, &run.python, venv, &config.sidecar);
        catalog = with;
        refused.extend(more);
    }
    for r in &refused {
        tracing::error!(flow = %r.flow, reason = %r.reason, "flow refused at start");
        eprintln!("error: {r}");
    }
    if !only.is_empty() {
        catalog = catalog.only(only);
        if catalog.is_empty() {
            return Err(usage(format!(
                "none of the flows {only:?} is built in or configured; `fstore ls --flows` on a dev server lists them"
            )));
        }
    }
    Ok(catalog)
}

/// With keys required and none stored: the embedded substrate (keys live in this
/// process) gets an admin key of the default tenant, printed once; on NATS, the
/// operator is told how to make the first one.
async fn first_key(config: &Config, substrate: &fstore_substrate::Substrate) -> anyhow::Result<()> {
    if !substrate.keys.list().await?.is_empty() {
        return Ok(());
    }
    let tenant = config.server.default_tenant.as_deref().unwrap_or("default");
    match &config.nats.url {
        None => {
            let roles = ["read", "write", "admin"].map(String::from);
            let made =
                fstore::auth::create_key(substrate.keys.as_ref(), tenant, &roles, "bootstrap")
                    .await?;
            eprintln!(
                "no API keys yet: created an admin key of tenant `{tenant}` (shown once):\n  \
                 FSTORE_API_KEY={}",
                made.secret
            );
        }
        Some(url) => eprintln!(
            "no API keys yet: every call is refused until you create one:\n  \
             fstore auth create-key --nats {url} --for TENANT --role admin"
        ),
    }
    Ok(())
}

/// Defaults, the file, the environment, then the flags.
fn load_config(run: &RunArgs) -> anyhow::Result<Config> {
    let flags = fstore::config::Flags {
        listen: run.listen.clone(),
        nats_url: run.nats.clone(),
        default_tenant: None,
    };
    Config::load(run.config.as_deref(), &flags).map_err(|e| usage(e.to_string()))
}

async fn bind(config: &Config) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))
}

/// Ctrl-C, or SIGTERM on unix.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
