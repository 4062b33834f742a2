//! A feature store whose in-process worker serves the example flow next to the built-in
//! ones: `cargo run -p fstore-example-flow [-- --nats URL]`. It registers the example
//! feature and prints how to ask for it.

use std::sync::Arc;

use fstore::Config;
use fstore::client::Client;
use fstore::server;
use fstore_example_flow::{FEATURES, KeywordScore};
use fstore_flows::Catalog;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::load(None, &Default::default())?;
    config.server.default_tenant = Some("default".into());
    // A local example: the server lives in this process, without keys.
    config.auth.enabled = Some(false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--nats" {
            config.nats.url = args.next();
        }
    }
    // The built-ins plus our flow: one catalog, one worker.
    let catalog = Catalog::builtins().with(Arc::new(KeywordScore::new()));
    let listener = tokio::net::TcpListener::bind(&config.server.listen).await?;
    let substrate = server::substrate(&config).await?;
    let running = server::start(config, substrate, catalog, listener).await?;
    let mut client = Client::connect(&running.url(), None).await?;
    client.register_file(FEATURES).await?;
    println!(
        "serving text.keyword_score@1 on {}; try:\n  fstore --addr {} get -e r1 -f review.about_battery -i \"text=battery dies fast\" --sync",
        running.url(),
        running.url()
    );
    tokio::signal::ctrl_c().await?;
    running.shutdown().await;
    Ok(())
}
