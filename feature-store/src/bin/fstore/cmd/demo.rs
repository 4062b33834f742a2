//! `fstore demo`: a scripted session against a server in this process (embedded
//! substrate, built-in flows) that prints each way of asking for features. The README
//! quotes its output; keep the two in step.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fstore::{Config, server};
use fstore_flows::Catalog;
use fstore_proto::api;
use tokio_stream::StreamExt;

use super::client::GetArgs;
use crate::output::{response_text, status_name, table, value_text};
use fstore::client::Client;

pub async fn run() -> anyhow::Result<()> {
    let mut config = Config::default();
    config.server.default_tenant = Some("demo".to_string());
    // The demo's server lives in this process, for this process only.
    config.auth.enabled = Some(false);
    config.server.recheck_interval = Duration::from_millis(100);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = server::start_embedded(config, Catalog::builtins(), listener).await?;
    let url = running.url();
    println!("== fstore demo: server on {url}, embedded substrate, built-in flows\n");
    let mut store = Client::connect(&url, None).await?;

    println!("$ fstore register feature-store/examples/demo.toml");
    let done = store.register_file(fstore::definitions::DEMO).await?;
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
    println!("{}", table(&["FEATURE", "VER", "FLOW", "LINEAGE"], &rows));

    let all = ask(
        &["doc:1", "doc:2"],
        &[
            "doc.words",
            "doc.log_words",
            "doc.query_match",
            "doc.slow_score",
        ],
    );

    println!(
        "$ fstore get -e doc:1 -e doc:2 -f doc.words -f doc.log_words -f doc.query_match -f doc.slow_score -i text=… -i query=…   (ASYNC)"
    );
    let first = store.get_features(all.request()?).await?;
    println!("{}", response_text(&first));

    tokio::time::sleep(Duration::from_millis(150)).await;
    println!("$ fstore fetch {}   (150 ms later)", first.ticket);
    let fetched = store.get_ticket(first.ticket.clone()).await?;
    println!("{}", response_text(&fetched));

    println!("$ fstore watch -e doc:1 -e doc:2 -f …   (streams each result once, when final)");
    let watch = api::WatchFeaturesRequest {
        target: Some(api::watch_features_request::Target::Ticket(
            first.ticket.clone(),
        )),
        wait_ms: 5000,
    };
    let started = Instant::now();
    let mut stream = store.watch_features(watch).await?;
    while let Some(event) = stream.next().await {
        let r = event?.result.unwrap_or_default();
        println!(
            "  +{:>4}ms  {:<6} {:<16} {:<8} {}",
            started.elapsed().as_millis(),
            r.entity_id,
            r.feature,
            status_name(r.status()),
            value_text(r.value.as_ref())
        );
    }
    println!();

    println!("$ fstore get … --sync   (all cached now)");
    let r = store.get_features(sync(all.clone()).request()?).await?;
    println!("{}", response_text(&r));

    println!(
        "$ fstore invalidate doc.words --entity doc:1   (drops doc.words and everything downstream)"
    );
    let inv = store.invalidate("doc.words".into(), "doc:1".into()).await?;
    println!("invalidated: {}\n", inv.invalidated.join(", "));

    println!("$ fstore get -e doc:1 -e doc:2 -f doc.words -f doc.log_words --sync");
    let again = sync(ask(&["doc:1", "doc:2"], &["doc.words", "doc.log_words"]));
    let r = store.get_features(again.request()?).await?;
    println!("{}", response_text(&r));

    println!(
        "$ fstore put -e title:1 -i text=… (3 titles); fstore get -e user:1 -e user:2 -f user.taste \\\n    -i history:rel.title=… --sync   (a feature across entities)"
    );
    let titles = [
        ("title:1", "a heist crew plans one last job"),
        ("title:2", "detectives chase a gang of bank robbers"),
        ("title:3", "a quiet romance in a seaside town"),
    ];
    store
        .put_inputs(
            titles
                .iter()
                .map(|(id, text)| api::EntityRequest {
                    entity_id: id.to_string(),
                    inputs: [(
                        "text".to_string(),
                        api::Value {
                            kind: Some(api::value::Kind::String(text.to_string())),
                        },
                    )]
                    .into(),
                })
                .collect(),
        )
        .await?;
    let history = |ids: &[&str]| api::Value {
        kind: Some(api::value::Kind::Relation(api::Relation {
            entity_type: "title".to_string(),
            ids: ids.iter().map(|i| i.to_string()).collect(),
        })),
    };
    let taste = api::GetFeaturesRequest {
        entities: [
            ("user:1", ["title:1", "title:2"]),
            ("user:2", ["title:2", "title:3"]),
        ]
        .iter()
        .map(|(id, ids)| api::EntityRequest {
            entity_id: id.to_string(),
            inputs: [("history".to_string(), history(ids))].into(),
        })
        .collect(),
        features: vec!["user.taste".to_string()],
        mode: api::Mode::Sync as i32,
        wait_ms: 30_000,
        ..Default::default()
    };
    let r = store.get_features(taste).await?;
    println!("{}", response_text(&r));
    if r.results.iter().any(|x| x.status() == api::Status::Failed) {
        println!("(the MiniLM weights are fetched by scripts/fetch-model)\n");
    }

    println!("$ fstore get -e doc:1 -f doc.nope");
    match store
        .get_features(ask(&["doc:1"], &["doc.nope"]).request()?)
        .await
    {
        Ok(_) => println!("unexpectedly accepted"),
        // As the binary reports a failed call.
        Err(s) => println!(
            "error: {}: {}\n",
            fstore::status::code_name(s.code()),
            s.message()
        ),
    }
    if let Some(stats) = &running.worker_stats {
        println!(
            "worker: {} values computed, {} failed, {} retried",
            stats.completed.load(Ordering::Relaxed),
            stats.failed.load(Ordering::Relaxed),
            stats.retried.load(Ordering::Relaxed)
        );
    }
    running.shutdown().await;
    Ok(())
}

/// An ASYNC ask for `features` of `entities`, with the demo's two text inputs.
fn ask(entities: &[&str], features: &[&str]) -> GetArgs {
    GetArgs {
        entities: entities.iter().map(|e| e.to_string()).collect(),
        features: features.iter().map(|f| f.to_string()).collect(),
        inputs: vec![
            "text=the quick brown fox jumps over the lazy dog".to_string(),
            "query=a quick brown dog".to_string(),
        ],
        ..GetArgs::default()
    }
}

/// The same ask, SYNC with a 2 s wait.
fn sync(ask: GetArgs) -> GetArgs {
    GetArgs {
        sync: true,
        wait: Some(Duration::from_secs(2)),
        ..ask
    }
}
