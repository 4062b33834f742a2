//! The example flow served end to end: registered over gRPC, computed by the worker,
//! answered to a SYNC call.

use std::sync::Arc;

use fstore::server;
use fstore_example_flow::{FEATURES, KeywordScore};
use fstore_flows::Catalog;
use fstore_proto::api::{self, Status};
use fstore_tests::build::{self, entity, text};
use fstore_tests::{TestClient, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_feature_is_served() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let catalog = Catalog::builtins().with(Arc::new(KeywordScore::new()));
    let config = test_config();
    let substrate = server::substrate(&config).await?;
    let running = server::start(config, substrate, catalog, listener).await?;

    let mut client = fstore::client::Client::connect(&running.url(), None).await?;
    let registered = client.register_file(FEATURES).await?;
    assert_eq!(registered.len(), 1);

    let c = TestClient::connect(&running.url(), None).await?;
    let mut req = build::sync(&[], &["review.about_battery"], 5_000);
    req.entities = vec![
        entity("r1", &[("text", text("battery dies, battery charge slow"))]),
        entity("r2", &[("text", text("great screen"))]),
    ];
    let r = c.get(req).await?;
    let values: Vec<(Status, Option<f64>)> = r
        .results
        .iter()
        .map(|x| (x.status(), build::f64_of(x)))
        .collect();
    assert_eq!(values[0].0, Status::Ready);
    let expected = 1.0 - (-8.0f64 * 3.0 / 5.0).exp();
    assert!(
        values[0].1.is_some_and(|v| (v - expected).abs() < 1e-12),
        "{values:?}"
    );
    assert_eq!(values[1], (Status::Ready, Some(0.0)));

    let flows = c
        .raw
        .clone()
        .list_flows(c.req(api::ListFlowsRequest {}))
        .await?
        .into_inner();
    assert!(
        flows
            .flows
            .iter()
            .any(|f| f.name == "text.keyword_score" && f.live_workers == 1)
    );
    running.shutdown().await;
    Ok(())
}
