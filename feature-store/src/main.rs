//! `fstore`: run the feature store (`dev`, `serve`, `worker`, `demo`) or talk to one
//! (`register`, `get`, `fetch`, `watch`, `describe`, `ls`, `invalidate`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use fstore::cli::{self, Client};
use fstore::{Config, server};
use fstore_flows::Catalog;
use fstore_proto::api;
use tokio_stream::StreamExt;

#[derive(Parser, Debug)]
#[command(name = "fstore", version, about = "an on-demand feature store")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Feature store address for client verbs.
    #[arg(
        long,
        global = true,
        env = "FSTORE_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    addr: String,
    /// Tenant for client verbs (the server's default tenant when absent).
    #[arg(long, global = true, env = "FSTORE_TENANT")]
    tenant: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Args, Debug)]
struct RunArgs {
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
}

#[derive(Args, Debug)]
struct GetArgs {
    /// Entity ids.
    #[arg(short, long = "entity", required = true)]
    entities: Vec<String>,
    /// Features, as name or name@version.
    #[arg(short, long = "feature", required = true)]
    features: Vec<String>,
    /// Request-time inputs for every entity: name=text or name:TYPE=value.
    #[arg(short, long = "input")]
    inputs: Vec<String>,
    /// Wait for the values (up to --wait) instead of answering at once.
    #[arg(long)]
    sync: bool,
    /// How long to wait with --sync or watch, e.g. 2s.
    #[arg(long, value_parser = humantime::parse_duration)]
    wait: Option<Duration>,
    /// Recompute values older than this; 0s bypasses the cache.
    #[arg(long, value_parser = humantime::parse_duration)]
    max_staleness: Option<Duration>,
    /// Serve an older value as STALE while it is recomputed.
    #[arg(long)]
    allow_stale: bool,
}

#[derive(Subcommand, Debug)]
enum DlqCmd {
    /// Lists dead letters, oldest first.
    Ls {
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// One dead letter in full.
    Show { id: String },
    /// Computes the value again (after fixing the cause) and drops the dead letter.
    Replay { id: String },
    /// Drops one dead letter, or all of them.
    Purge {
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
enum FlowCmd {
    /// Lists the flows this binary carries.
    Ls,
    /// Runs one flow on given inputs and prints the output (or the flow's error).
    Run {
        /// name@version, or name for the latest version.
        flow: String,
        /// Inputs: name=text or name:TYPE=value (f64, i64, bool, string, tensor, file).
        #[arg(short, long = "input")]
        inputs: Vec<String>,
        /// Params: name=value.
        #[arg(short, long = "param")]
        params: Vec<String>,
        #[arg(long, default_value = "local")]
        entity: String,
    },
}

#[derive(Subcommand, Debug)]
enum Cmd {
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
    /// Runs a scripted session against an in-process server and prints every step.
    Demo,
    /// Works with flows locally, without a server or queue.
    #[command(subcommand)]
    Flow(FlowCmd),
    /// Registers the features of a TOML file, in file order.
    Register { file: PathBuf },
    /// Asks for features of entities.
    Get(GetArgs),
    /// The current state of a ticket.
    Fetch { ticket: String },
    /// Streams results as they become final.
    Watch(GetArgs),
    /// A feature's definition, dependencies both ways and lineage.
    Describe { feature: String },
    /// Lists features (or flows with --flows).
    Ls {
        #[arg(long)]
        flows: bool,
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Dead letters: jobs that used up their attempts.
    #[command(subcommand)]
    Dlq(DlqCmd),
    /// Drops a feature's values, and everything downstream, for one entity or all.
    Invalidate {
        feature: String,
        #[arg(long)]
        entity: Option<String>,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // The demo prints its own story; servers log their lifecycle.
    let default_level = if matches!(cli.cmd, Cmd::Demo) {
        "warn"
    } else {
        "info"
    };
    let filter = std::env::var("FSTORE_LOG").unwrap_or_else(|_| default_level.to_string());
    let otlp = std::env::var("FSTORE_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let _telemetry = match fstore::telemetry::init(&filter, otlp.as_deref(), "fstore") {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("warning: tracing is off: {e}");
            None
        }
    };
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn load_config(run: &RunArgs) -> anyhow::Result<Config> {
    let flags = fstore::config::Flags {
        listen: run.listen.clone(),
        nats_url: run.nats.clone(),
        default_tenant: None,
    };
    Ok(Config::load(run.config.as_deref(), &flags)?)
}

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

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Dev { run, features } => {
            let mut config = load_config(&run)?;
            config
                .server
                .default_tenant
                .get_or_insert_with(|| "default".to_string());
            let listener = tokio::net::TcpListener::bind(&config.server.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.server.listen))?;
            let backend = match &config.nats.url {
                Some(url) => format!("NATS JetStream at {url}"),
                None => "embedded substrate".to_string(),
            };
            let substrate = server::substrate(&config).await?;
            let running = server::start(config, substrate, Catalog::builtins(), listener).await?;
            let url = running.url();
            if let Some(path) = features {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let mut client = Client::connect(&url, None).await.map_err(|e| anyhow!(e))?;
                let n = client
                    .register_file(&text)
                    .await
                    .map_err(|e| anyhow!(e))?
                    .len();
                eprintln!("registered {n} features from {}", path.display());
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
        Cmd::Serve { run } => {
            let config = load_config(&run)?;
            let listener = tokio::net::TcpListener::bind(&config.server.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.server.listen))?;
            // With a shared substrate, compute belongs to `fstore worker` processes.
            let catalog = if config.nats.url.is_some() {
                Catalog::new()
            } else {
                Catalog::builtins()
            };
            let substrate = server::substrate(&config).await?;
            let running = server::start(config, substrate, catalog, listener).await?;
            eprintln!("fstore serve is listening on {}", running.url());
            shutdown_signal().await;
            running.shutdown().await;
            Ok(())
        }
        Cmd::Worker { run, flows } => {
            let config = load_config(&run)?;
            if config.nats.url.is_none() {
                bail!(
                    "a worker process needs the shared substrate: pass --nats URL (or set nats.url). \
                     The embedded substrate lives inside one process; `fstore dev` runs its own workers"
                );
            }
            let mut catalog = Catalog::builtins();
            if !flows.is_empty() {
                catalog = catalog.only(&flows);
                if catalog.is_empty() {
                    bail!(
                        "none of the flows {flows:?} is built in; `fstore ls --flows` on a dev server lists them"
                    );
                }
            }
            let substrate = server::substrate(&config).await?;
            let token = tokio_util::sync::CancellationToken::new();
            let stop = token.clone();
            let worker =
                tokio::spawn(
                    async move { server::run_worker(&config, substrate, catalog, stop).await },
                );
            shutdown_signal().await;
            token.cancel();
            worker.await??;
            Ok(())
        }
        Cmd::Demo => demo().await,
        Cmd::Flow(cmd) => flow_verb(cmd, cli.json),
        other => client_verb(cli.addr, cli.tenant, cli.json, other).await,
    }
}

async fn client_verb(
    addr: String,
    tenant: Option<String>,
    json: bool,
    cmd: Cmd,
) -> anyhow::Result<()> {
    let mut client = Client::connect(&addr, tenant)
        .await
        .map_err(|e| anyhow!(e))?;
    let status = |s: tonic::Status| anyhow!(cli::status_text(&s));
    match cmd {
        Cmd::Register { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let done = client.register_file(&text).await.map_err(|e| anyhow!(e))?;
            if json {
                let rows: Vec<_> = done
                    .iter()
                    .map(|r| {
                        let f = r.feature.clone().unwrap_or_default();
                        serde_json::json!({"feature": f.name, "version": f.version, "created": r.created, "lineage": r.lineage_hash})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let rows: Vec<Vec<String>> = done
                    .iter()
                    .map(|r| {
                        let f = r.feature.clone().unwrap_or_default();
                        vec![
                            f.name,
                            f.version.to_string(),
                            if r.created {
                                "new version"
                            } else {
                                "unchanged"
                            }
                            .to_string(),
                            r.lineage_hash.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    cli::table(&["FEATURE", "VER", "RESULT", "LINEAGE"], &rows)
                );
            }
        }
        Cmd::Get(a) => {
            let req = cli::get_request(
                &a.entities,
                &a.features,
                &a.inputs,
                a.sync,
                a.wait,
                a.max_staleness,
                a.allow_stale,
            )
            .map_err(|e| anyhow!(e))?;
            let r = client
                .raw()
                .get_features(client.request(req))
                .await
                .map_err(status)?
                .into_inner();
            print_response(&r, json)?;
        }
        Cmd::Fetch { ticket } => {
            let r = client
                .raw()
                .get_ticket(client.request(api::GetTicketRequest { ticket }))
                .await
                .map_err(status)?
                .into_inner();
            print_response(&r, json)?;
        }
        Cmd::Watch(a) => {
            let req = cli::get_request(
                &a.entities,
                &a.features,
                &a.inputs,
                false,
                None,
                a.max_staleness,
                a.allow_stale,
            )
            .map_err(|e| anyhow!(e))?;
            let watch = api::WatchFeaturesRequest {
                target: Some(api::watch_features_request::Target::Request(req)),
                wait_ms: a.wait.map_or(0, |w| w.as_millis() as u64),
            };
            let mut stream = client
                .raw()
                .watch_features(client.request(watch))
                .await
                .map_err(status)?
                .into_inner();
            while let Some(event) = stream.next().await {
                let event = event.map_err(status)?;
                let Some(r) = event.result else { continue };
                if json {
                    println!("{}", serde_json::to_string(&cli::result_json(&r))?);
                } else {
                    println!(
                        "{:<16} {:<24} {:<8} {}",
                        r.entity_id,
                        r.feature,
                        cli::status_name(r.status()),
                        if r.error.is_empty() {
                            cli::value_text(r.value.as_ref())
                        } else {
                            r.error.clone()
                        }
                    );
                }
            }
        }
        Cmd::Describe { feature } => {
            let d = client
                .raw()
                .describe_feature(client.request(api::DescribeFeatureRequest { feature }))
                .await
                .map_err(status)?
                .into_inner();
            let def = d.definition.clone().unwrap_or_default();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "name": def.name, "version": def.version, "entity_type": def.entity_type, "flow": def.flow,
                        "params": def.params, "ttl_ms": def.ttl_ms, "owner": def.owner, "description": def.description,
                        "lineage": d.lineage_hash, "dependencies": d.dependencies, "dependents": d.dependents, "versions": d.versions,
                    }))?
                );
            } else {
                println!(
                    "{}@{}  ({} entities, flow {}, ttl {})",
                    def.name,
                    def.version,
                    def.entity_type,
                    def.flow,
                    humantime::format_duration(Duration::from_millis(def.ttl_ms))
                );
                println!("  {}", def.description);
                println!("  owner:        {}", def.owner);
                println!("  lineage:      {}", d.lineage_hash);
                println!("  params:       {:?}", def.params);
                println!("  reads:        {}", d.dependencies.join(", "));
                println!("  read by:      {}", d.dependents.join(", "));
                println!("  versions:     {:?}", d.versions);
                if let Some(s) = &d.stats {
                    let last = if s.last_computed_at_ms > 0 {
                        humantime::format_rfc3339_millis(
                            std::time::UNIX_EPOCH
                                + Duration::from_millis(s.last_computed_at_ms as u64),
                        )
                        .to_string()
                    } else {
                        "never".to_string()
                    };
                    println!(
                        "  served here:  {} hits, {} misses, {} failures (hit rate {:.1}%), last computed {last}",
                        s.hits,
                        s.misses,
                        s.failures,
                        100.0 * s.hit_rate
                    );
                    let ages: Vec<String> = s
                        .ages
                        .iter()
                        .map(|b| format!("<={}: {}", b.le, b.count))
                        .collect();
                    println!("  value ages:   {}", ages.join("  "));
                }
                if let Some(f) = &d.flow {
                    for m in &f.models {
                        println!(
                            "  model:        {} on {} ({}, sha256 {}, loaded in {} ms)",
                            m.name,
                            m.worker,
                            if m.loaded { "loaded" } else { "unloaded" },
                            &m.sha256.get(..12).unwrap_or(""),
                            m.load_ms
                        );
                    }
                }
            }
        }
        Cmd::Ls { flows: true, .. } => {
            let r = client
                .raw()
                .list_flows(client.request(api::ListFlowsRequest {}))
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<Vec<String>> = r
                .flows
                .iter()
                .map(|f| {
                    let inputs: Vec<String> = f
                        .inputs
                        .iter()
                        .map(|i| format!("{}:{}", i.name, type_name(i.value_type)))
                        .collect();
                    vec![
                        format!("{}@{}", f.name, f.version),
                        inputs.join(" "),
                        type_name(f.output),
                        f.live_workers.to_string(),
                        f.description.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                cli::table(
                    &["FLOW", "INPUTS", "OUTPUT", "WORKERS", "DESCRIPTION"],
                    &rows
                )
            );
        }
        Cmd::Ls {
            flows: false,
            prefix,
        } => {
            let r = client
                .raw()
                .list_features(client.request(api::ListFeaturesRequest { prefix }))
                .await
                .map_err(status)?
                .into_inner();
            if json {
                let rows: Vec<_> = r.features.iter().map(|f| serde_json::json!({"name": f.name, "version": f.latest_version, "entity_type": f.entity_type, "flow": f.flow, "ttl_ms": f.ttl_ms, "owner": f.owner})).collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let rows: Vec<Vec<String>> = r
                    .features
                    .iter()
                    .map(|f| {
                        vec![
                            f.name.clone(),
                            f.latest_version.to_string(),
                            f.entity_type.clone(),
                            f.flow.clone(),
                            type_name(f.value_type),
                            humantime::format_duration(Duration::from_millis(f.ttl_ms)).to_string(),
                            f.owner.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    cli::table(
                        &["FEATURE", "VER", "ENTITY", "FLOW", "TYPE", "TTL", "OWNER"],
                        &rows
                    )
                );
            }
        }
        Cmd::Dlq(cmd) => dlq_verb(&client, cmd, json).await?,
        Cmd::Invalidate { feature, entity } => {
            let r = client
                .raw()
                .invalidate(client.request(api::InvalidateRequest {
                    feature,
                    entity_id: entity.unwrap_or_default(),
                }))
                .await
                .map_err(status)?
                .into_inner();
            println!("invalidated: {}", r.invalidated.join(", "));
        }
        Cmd::Dev { .. } | Cmd::Serve { .. } | Cmd::Worker { .. } | Cmd::Demo | Cmd::Flow(_) => {
            unreachable_verb()?
        }
    }
    Ok(())
}

async fn dlq_verb(client: &Client, cmd: DlqCmd, json: bool) -> anyhow::Result<()> {
    let status = |s: tonic::Status| anyhow!(cli::status_text(&s));
    let row = |d: &api::DeadLetterInfo| {
        vec![
            d.id.clone(),
            d.entity_id.clone(),
            d.feature.clone(),
            d.attempts.to_string(),
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + Duration::from_millis(d.failed_at_ms.max(0) as u64),
            )
            .to_string(),
            d.error.clone(),
        ]
    };
    let to_json = |d: &api::DeadLetterInfo| {
        serde_json::json!({"id": d.id, "entity": d.entity_id, "feature": d.feature, "flow": d.flow, "attempts": d.attempts,
            "planned_at_ms": d.planned_at_ms, "failed_at_ms": d.failed_at_ms, "error": d.error, "value_key": d.value_key})
    };
    match cmd {
        DlqCmd::Ls { limit } => {
            let r = client
                .raw()
                .list_dead_letters(client.request(api::ListDeadLettersRequest { limit }))
                .await
                .map_err(status)?
                .into_inner();
            if json {
                let rows: Vec<_> = r.dead_letters.iter().map(to_json).collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let rows: Vec<Vec<String>> = r.dead_letters.iter().map(row).collect();
                print!(
                    "{}",
                    cli::table(
                        &["ID", "ENTITY", "FEATURE", "TRIES", "FAILED AT", "ERROR"],
                        &rows
                    )
                );
                println!("{} of {} dead letters", r.dead_letters.len(), r.total);
            }
        }
        DlqCmd::Show { id } => {
            let r = client
                .raw()
                .list_dead_letters(client.request(api::ListDeadLettersRequest { limit: 1000 }))
                .await
                .map_err(status)?
                .into_inner();
            let d = r.dead_letters.iter().find(|d| d.id == id).ok_or_else(|| {
                anyhow!("no dead letter `{id}` among the oldest 1000; `fstore dlq ls` lists them")
            })?;
            println!("{}", serde_json::to_string_pretty(&to_json(d))?);
        }
        DlqCmd::Replay { id } => {
            let r = client
                .raw()
                .replay_dead_letter(client.request(api::ReplayDeadLetterRequest { id: id.clone() }))
                .await
                .map_err(status)?
                .into_inner();
            if r.enqueued {
                println!("replayed {id}: its value is being computed again");
            } else {
                println!("dropped {id}: its value is already being computed");
            }
        }
        DlqCmd::Purge { id, all } => {
            if id.is_none() && !all {
                bail!("name a dead letter, or pass --all to drop every one of this tenant");
            }
            let r = client
                .raw()
                .purge_dead_letters(client.request(api::PurgeDeadLettersRequest {
                    id: id.unwrap_or_default(),
                }))
                .await
                .map_err(status)?
                .into_inner();
            println!("purged {} dead letters", r.purged);
        }
    }
    Ok(())
}

fn flow_verb(cmd: FlowCmd, json: bool) -> anyhow::Result<()> {
    let catalog = Catalog::builtins();
    match cmd {
        FlowCmd::Ls => {
            let rows: Vec<Vec<String>> = catalog
                .specs()
                .map(|s| {
                    let inputs: Vec<String> = s
                        .inputs
                        .iter()
                        .map(|i| {
                            format!(
                                "{}:{}{}",
                                i.name,
                                i.value_type,
                                if i.optional { "?" } else { "" }
                            )
                        })
                        .collect();
                    let params: Vec<String> = s
                        .params
                        .iter()
                        .map(|p| {
                            format!(
                                "{}={}",
                                p.name,
                                p.default.clone().unwrap_or_else(|| "<required>".into())
                            )
                        })
                        .collect();
                    vec![
                        s.id.to_string(),
                        inputs.join(" "),
                        s.output.to_string(),
                        params.join(" "),
                        s.description.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                cli::table(
                    &["FLOW", "INPUTS", "OUTPUT", "PARAMS", "DESCRIPTION"],
                    &rows
                )
            );
            Ok(())
        }
        FlowCmd::Run {
            flow,
            inputs,
            params,
            entity,
        } => {
            let id = match flow.parse::<fstore_flows::FlowId>() {
                Ok(id) => id,
                Err(_) => catalog
                    .ids()
                    .filter(|id| id.name == flow)
                    .max_by_key(|id| id.version)
                    .cloned()
                    .ok_or_else(|| {
                        anyhow!("no flow named `{flow}`; `fstore flow ls` lists them")
                    })?,
            };
            let f = catalog
                .get(&id)
                .ok_or_else(|| anyhow!("no flow {id}; `fstore flow ls` lists them"))?;
            let mut values = std::collections::BTreeMap::new();
            for i in &inputs {
                let (name, wire) = cli::parse_input(i).map_err(|e| anyhow!(e))?;
                let v = fstore_substrate::convert::to_flow(&wire)
                    .map_err(|e| anyhow!("input `{name}`: {e}"))?;
                values.insert(name, v);
            }
            let params: fstore_flows::Params = params
                .iter()
                .map(|p| {
                    p.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| anyhow!("param `{p}` must be written name=value"))
                })
                .collect::<anyhow::Result<_>>()?;
            f.check_params(&params).map_err(|e| anyhow!("{id}: {e}"))?;
            let input = fstore_flows::FlowInput {
                entity_id: entity,
                params,
                values,
                attempt: 1,
            };
            let started = std::time::Instant::now();
            let out = f.run(std::slice::from_ref(&input)).into_iter().next();
            let took = started.elapsed();
            match out {
                Some(Ok(v)) => {
                    let wire =
                        fstore_substrate::convert::to_wire(&v).map_err(|e| anyhow!("{e}"))?;
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&cli::value_json(Some(&wire)))?
                        );
                    } else {
                        println!("{id} -> {}  ({took:?})", cli::value_text(Some(&wire)));
                    }
                    Ok(())
                }
                Some(Err(e)) => bail!(
                    "{id} failed ({}): {e}",
                    if e.is_transient() {
                        "transient"
                    } else {
                        "permanent"
                    }
                ),
                None => bail!("{id} returned no result"),
            }
        }
    }
}

fn unreachable_verb() -> anyhow::Result<()> {
    bail!("not a client verb")
}

fn type_name(t: i32) -> String {
    api::ValueType::try_from(t)
        .map(|t| {
            t.as_str_name()
                .trim_start_matches("VALUE_TYPE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "?".to_string())
}

fn print_response(r: &api::GetFeaturesResponse, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&cli::response_json(r))?);
    } else {
        print!("{}", cli::response_text(r));
    }
    Ok(())
}

/// The embedded demo: a server in this process, the demo features, and each way of
/// asking for them.
async fn demo() -> anyhow::Result<()> {
    let mut config = Config::default();
    config.server.default_tenant = Some("demo".to_string());
    config.server.recheck_interval = Duration::from_millis(100);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = server::start_embedded(config, Catalog::builtins(), listener).await?;
    let url = running.url();
    println!("== fstore demo: server on {url}, embedded substrate, built-in flows\n");
    let mut client = Client::connect(&url, None).await.map_err(|e| anyhow!(e))?;

    println!("$ fstore register feature-store/examples/demo.toml");
    let done = client
        .register_file(fstore::definitions::DEMO)
        .await
        .map_err(|e| anyhow!(e))?;
    let rows: Vec<Vec<String>> = done
        .iter()
        .map(|r| {
            let f = r.feature.clone().unwrap_or_default();
            vec![
                f.name,
                f.version.to_string(),
                f.flow,
                r.lineage_hash.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        cli::table(&["FEATURE", "VER", "FLOW", "LINEAGE"], &rows)
    );

    let inputs = [
        "text=the quick brown fox jumps over the lazy dog".to_string(),
        "query=a quick brown dog".to_string(),
    ];
    let entities = ["doc:1".to_string(), "doc:2".to_string()];
    let features = [
        "doc.words".to_string(),
        "doc.log_words".to_string(),
        "doc.query_match".to_string(),
        "doc.slow_score".to_string(),
    ];
    let status = |s: tonic::Status| anyhow!(cli::status_text(&s));

    println!(
        "$ fstore get -e doc:1 -e doc:2 -f doc.words -f doc.log_words -f doc.query_match -f doc.slow_score -i text=… -i query=…   (ASYNC)"
    );
    let req = cli::get_request(&entities, &features, &inputs, false, None, None, false)
        .map_err(|e| anyhow!(e))?;
    let first = client
        .raw()
        .get_features(client.request(req.clone()))
        .await
        .map_err(status)?
        .into_inner();
    println!("{}", cli::response_text(&first));

    tokio::time::sleep(Duration::from_millis(150)).await;
    println!("$ fstore fetch {}   (150 ms later)", first.ticket);
    let fetched = client
        .raw()
        .get_ticket(client.request(api::GetTicketRequest {
            ticket: first.ticket.clone(),
        }))
        .await
        .map_err(status)?
        .into_inner();
    println!("{}", cli::response_text(&fetched));

    println!("$ fstore watch -e doc:1 -e doc:2 -f …   (streams each result once, when final)");
    let watch = api::WatchFeaturesRequest {
        target: Some(api::watch_features_request::Target::Ticket(
            first.ticket.clone(),
        )),
        wait_ms: 5000,
    };
    let started = std::time::Instant::now();
    let mut stream = client
        .raw()
        .watch_features(client.request(watch))
        .await
        .map_err(status)?
        .into_inner();
    while let Some(event) = stream.next().await {
        let r = event.map_err(status)?.result.unwrap_or_default();
        println!(
            "  +{:>4}ms  {:<6} {:<16} {:<8} {}",
            started.elapsed().as_millis(),
            r.entity_id,
            r.feature,
            cli::status_name(r.status()),
            cli::value_text(r.value.as_ref())
        );
    }
    println!();

    println!("$ fstore get … --sync   (all cached now)");
    let sync = cli::get_request(
        &entities,
        &features,
        &inputs,
        true,
        Some(Duration::from_secs(2)),
        None,
        false,
    )
    .map_err(|e| anyhow!(e))?;
    let r = client
        .raw()
        .get_features(client.request(sync.clone()))
        .await
        .map_err(status)?
        .into_inner();
    println!("{}", cli::response_text(&r));

    println!(
        "$ fstore invalidate doc.words --entity doc:1   (drops doc.words and everything downstream)"
    );
    let inv = client
        .raw()
        .invalidate(client.request(api::InvalidateRequest {
            feature: "doc.words".into(),
            entity_id: "doc:1".into(),
        }))
        .await
        .map_err(status)?
        .into_inner();
    println!("invalidated: {}\n", inv.invalidated.join(", "));

    println!("$ fstore get -e doc:1 -e doc:2 -f doc.words -f doc.log_words --sync");
    let again = cli::get_request(
        &entities,
        &features[..2],
        &inputs,
        true,
        Some(Duration::from_secs(2)),
        None,
        false,
    )
    .map_err(|e| anyhow!(e))?;
    let r = client
        .raw()
        .get_features(client.request(again))
        .await
        .map_err(status)?
        .into_inner();
    println!("{}", cli::response_text(&r));

    println!("$ fstore get -e doc:1 -f doc.nope");
    let bad = cli::get_request(
        &entities[..1],
        &["doc.nope".to_string()],
        &inputs,
        false,
        None,
        None,
        false,
    )
    .map_err(|e| anyhow!(e))?;
    match client.raw().get_features(client.request(bad)).await {
        Ok(_) => println!("unexpectedly accepted"),
        Err(s) => println!("error: {}\n", cli::status_text(&s)),
    }
    if let Some(stats) = &running.worker_stats {
        println!(
            "worker: {} values computed, {} failed, {} retried",
            stats.completed.load(std::sync::atomic::Ordering::Relaxed),
            stats.failed.load(std::sync::atomic::Ordering::Relaxed),
            stats.retried.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    running.shutdown().await;
    Ok(())
}
