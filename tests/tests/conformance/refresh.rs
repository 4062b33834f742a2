//! Conformance, refresh-ahead: a value read when less than `cache.refresh_ahead` of its
//! TTL is left is recomputed on the batch lane before it expires, so a steady reader of
//! a hot key keeps getting cached answers; with refresh-ahead off, the same reader
//! meets a miss at every expiry.

use super::*;

/// A steady reader of one key with a 2 s TTL, for `for_`: the share of its calls
/// (after the first value) that were not answered READY from the cache.
async fn steady_reader(b: Backend, refresh_ahead: f64, for_: Duration) -> anyhow::Result<f64> {
    let mut config = test_config();
    config.cache.refresh_ahead = refresh_ahead;
    let h = Harness::with_config(b, config).await?;
    let mut hot = probe("hot", &[("delay_ms", "50")]);
    hot.ttl_ms = 2_000;
    h.register(hot).await?;
    let mut req = build::sync(&["k"], &["hot"], 5_000);
    let first = h.client.get(req.clone()).await?;
    assert_eq!(first.results[0].status(), Status::Ready, "{first:?}");
    req.mode = api::Mode::Async as i32;
    let (mut calls, mut missed) = (0u32, 0u32);
    let until = Instant::now() + for_;
    while Instant::now() < until {
        let r = h.client.get(req.clone()).await?;
        calls += 1;
        let x = &r.results[0];
        if !(x.status() == Status::Ready && x.from_cache) {
            missed += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.stop().await;
    Ok(f64::from(missed) / f64::from(calls.max(1)))
}

pub(crate) async fn refresh_ahead_keeps_a_hot_key_cached(b: Backend) -> anyhow::Result<()> {
    let window = Duration::from_millis(4_500);
    let off = steady_reader(b, 0.0, window).await?;
    let on = steady_reader(b, 0.1, window).await?;
    println!(
        "{b:?}: calls of a steady reader (2 s TTL) not answered from the cache: {:.1}% without refresh-ahead, {:.1}% with",
        off * 100.0,
        on * 100.0
    );
    assert!(
        off > 0.01,
        "without refresh-ahead every expiry is a miss: {off}"
    );
    assert!(on < 0.01, "with refresh-ahead: {on}");
    Ok(())
}
