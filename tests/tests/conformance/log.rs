//! Conformance, the offline half: every settled compute in the feature log with the
//! inputs it read and the tickets it answered, stored inputs (PutInputs), the
//! result-ready stream resumed from a cursor, cancelled tickets, ticket retention, and
//! log reads that cannot be served.

use std::collections::HashSet;

use fstore_proto::api::log_record::Kind;

use super::*;

fn value_records<'a>(log: &'a [api::LogEvent], feature: &str) -> Vec<&'a api::LogRecord> {
    log.iter()
        .filter_map(|e| e.record.as_ref())
        .filter(|r| r.kind() == Kind::Value && r.feature == feature)
        .collect()
}

pub(crate) async fn settled_computes_are_logged_with_inputs_and_tickets(
    b: Backend,
) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(words()).await?;
    h.register(feature(
        "log_words",
        "num.affine@1",
        &[("fn", "log1p")],
        &[("x", "words")],
        600_000,
    ))
    .await?;
    h.register(probe("broken", &[("fail", "permanent")]))
        .await?;
    let mut req = build::get(&[], &["log_words", "broken"]);
    req.entities = vec![entity("d1", &[("text", text("a b c"))])];
    let r = h.client.get(req).await?;
    assert!(!r.ticket.is_empty(), "an ASYNC miss gets a ticket");
    h.client.until_done(&r.ticket, LONG).await?;
    let log = wait_until(LONG, "three records", || async {
        let log = h.client.log(&[], false).await.ok()?;
        (log.len() >= 3).then_some(log)
    })
    .await?;
    let w = value_records(&log, "words");
    assert_eq!(w.len(), 1, "one record per settled compute: {log:?}");
    let w = w[0];
    assert_eq!(w.status(), Status::Ready);
    assert_eq!(
        w.value.as_ref().and_then(|v| v.kind.clone()),
        Some(api::value::Kind::F64(3.0))
    );
    assert_eq!(
        w.inputs.get("text"),
        Some(&text("a b c")),
        "the request input it read"
    );
    assert_eq!(w.tickets, vec![r.ticket.clone()], "the ticket it answered");
    assert_eq!((w.entity_id.as_str(), w.version, w.attempts), ("d1", 1, 1));
    assert!(w.computed_at_ms >= w.planned_at_ms && w.planned_at_ms > 0);
    let lw = value_records(&log, "log_words");
    assert_eq!(lw.len(), 1);
    assert_eq!(
        lw[0].dependencies.get("x"),
        Some(&w.value_key),
        "a dependency is logged by its value key"
    );
    assert!(lw[0].inputs.is_empty(), "no request input of its own");
    let failed = value_records(&log, "broken");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].status(), Status::Failed);
    assert!(
        failed[0].error.contains("on purpose"),
        "{}",
        failed[0].error
    );
    let seqs: Vec<u64> = log.iter().map(|e| e.sequence).collect();
    assert!(
        seqs.windows(2).all(|p| p[0] < p[1]),
        "in log order: {seqs:?}"
    );
    h.stop().await;
    Ok(())
}

pub(crate) async fn stored_inputs_are_logged_and_used(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(words()).await?;
    let put = h
        .client
        .put_inputs(vec![entity("d2", &[("text", text("x y"))])])
        .await?;
    assert_eq!(put.stored, 1);
    // A request that does not send the input reads the stored one ...
    let r = h
        .client
        .get(build::sync(&["d2"], &["words"], 5_000))
        .await?;
    assert_eq!(f64_of(&r.results[0]), Some(2.0), "{r:?}");
    // ... and one that sends it wins over it.
    let mut own = build::sync(&[], &["words"], 5_000);
    own.entities = vec![entity("d2", &[("text", text("one two three four"))])];
    let r = h.client.get(own).await?;
    assert_eq!(f64_of(&r.results[0]), Some(4.0));
    // Without stored inputs, the request is refused as before.
    let e = h
        .client
        .get(build::sync(&["d3"], &["words"], 5_000))
        .await
        .err();
    assert_eq!(e.map(|s| s.code()), Some(Code::InvalidArgument));
    let log = h.client.log(&["words"], true).await?;
    let stored: Vec<_> = log
        .iter()
        .filter_map(|e| e.record.as_ref())
        .filter(|r| r.kind() == Kind::Inputs)
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].entity_id.as_str(), stored[0].inputs.get("text")),
        ("d2", Some(&text("x y")))
    );
    let values = value_records(&log, "words");
    assert_eq!(values.len(), 2);
    assert_eq!(
        values[0].inputs.get("text"),
        Some(&text("x y")),
        "the stored input, logged with its value"
    );
    let e = h.client.put_inputs(vec![entity("d4", &[])]).await.err();
    assert_eq!(
        e.map(|s| s.code()),
        Some(Code::InvalidArgument),
        "nothing to store"
    );
    h.stop().await;
    Ok(())
}

/// Reads events until `want` distinct entities were seen or `stop` events were read;
/// returns the last sequence and every entity seen (with repeats).
async fn read_events(
    stream: &mut tonic::Streaming<api::LogEvent>,
    seen: &mut Vec<String>,
    want: usize,
    stop: usize,
) -> anyhow::Result<u64> {
    let mut last = 0;
    let mut read = 0;
    while read < stop && seen.iter().collect::<HashSet<_>>().len() < want {
        let e = tokio::time::timeout(LONG, stream.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the event stream ended"))??;
        let r = e.record.unwrap_or_default();
        assert_eq!(r.status(), Status::Ready);
        last = e.sequence;
        seen.push(r.entity_id);
        read += 1;
    }
    Ok(last)
}

pub(crate) async fn a_resumed_subscriber_sees_every_event(b: Backend) -> anyhow::Result<()> {
    const N: usize = 1000;
    let h = Harness::start(b).await?;
    h.register(probe("tick", &[])).await?;
    h.register(probe("other", &[])).await?;
    let filter = api::SubscribeEventsRequest {
        features: vec!["tick".into()],
        ..Default::default()
    };
    let mut first = h.client.subscribe(filter.clone()).await?;
    let ids: Vec<String> = (0..N).map(|i| format!("e{i}")).collect();
    let idr: Vec<&str> = ids.iter().map(String::as_str).collect();
    let r = h.client.get(build::get(&idr, &["tick", "other"])).await?;
    let mut seen = Vec::new();
    let cursor = read_events(&mut first, &mut seen, N, 300).await?;
    drop(first);
    assert_eq!(seen.len(), 300);
    // Reconnect with the last cursor while the completions go on.
    let mut again = h
        .client
        .subscribe(api::SubscribeEventsRequest {
            after_sequence: Some(cursor),
            ..filter
        })
        .await?;
    read_events(&mut again, &mut seen, N, N).await?;
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), N, "every completion seen");
    assert_eq!(seen.len(), N, "and each once");
    h.client.until_done(&r.ticket, LONG).await?;
    // A live subscription does not hold a draining server open.
    tokio::time::timeout(LONG, h.stop()).await?;
    assert!(
        tokio::time::timeout(LONG, again.next())
            .await?
            .is_none_or(|e| e.is_err()),
        "the subscription ends with the server"
    );
    Ok(())
}

pub(crate) async fn cancelled_tickets_drop_their_unstarted_jobs(b: Backend) -> anyhow::Result<()> {
    let mut config = test_config();
    config.worker.slots = 1;
    config.worker.max_batch = 1;
    let h = Harness::with_config(b, config).await?;
    h.register(probe("slow", &[("delay_ms", "800")])).await?;
    h.register(probe("quick", &[])).await?;
    let blocker = h.client.get(build::get(&["b"], &["slow"])).await?;
    // The one slot pulls it at once and computes it for 800 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Queued behind the slow job: five computes for ticket B, one also wanted by C.
    let cancelled = h
        .client
        .get(build::get(&["q0", "q1", "q2", "q3", "q4"], &["quick"]))
        .await?;
    let other = h.client.get(build::get(&["q0"], &["quick"])).await?;
    assert!(!cancelled.ticket.is_empty() && !other.ticket.is_empty());
    let c = h.client.cancel(&cancelled.ticket).await?;
    assert_eq!(
        (c.dropped, c.kept, c.already_complete),
        (4, 1, false),
        "{c:?}"
    );
    let read = h.client.ticket(&cancelled.ticket).await?;
    assert!(read.canceled && read.ticket.is_empty(), "{read:?}");
    assert!(
        read.results.iter().all(|r| r.status() == Status::Canceled),
        "{read:?}"
    );
    h.client.until_done(&blocker.ticket, LONG).await?;
    let kept = h.client.until_done(&other.ticket, LONG).await?;
    assert_eq!(
        statuses(&kept),
        vec![Status::Ready],
        "the compute another ticket waits on ran"
    );
    // The slot is free and the queue drained: the dropped jobs never ran.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.computes("quick@1"), 1, "only q0 was computed");
    let log = h.client.log(&["quick"], false).await?;
    let logged: Vec<&str> = value_records(&log, "quick")
        .iter()
        .map(|r| r.entity_id.as_str())
        .collect();
    assert_eq!(logged, vec!["q0"]);
    // Their keys are free again: asking computes them.
    let r = h
        .client
        .get(build::sync(&["q1"], &["quick"], 5_000))
        .await?;
    assert_eq!(statuses(&r), vec![Status::Ready]);
    let again = h.client.cancel(&cancelled.ticket).await?;
    assert!(again.already_complete, "a cancelled ticket is final");
    // A ticket whose compute finished (nobody read it since) has nothing to give up:
    // it counts as finished, not dropped.
    let done = h.client.get(build::get(&["z"], &["quick"])).await?;
    wait_until(LONG, "z's value to be logged", || async {
        let log = h.client.log(&["quick"], false).await.ok()?;
        value_records(&log, "quick")
            .iter()
            .any(|r| r.entity_id == "z")
            .then_some(())
    })
    .await?;
    let c = h.client.cancel(&done.ticket).await?;
    assert_eq!(
        (c.dropped, c.kept, c.finished, c.already_complete),
        (0, 0, 1, false),
        "{c:?}"
    );
    h.stop().await;
    Ok(())
}

pub(crate) async fn tickets_keep_their_results_then_expire(b: Backend) -> anyhow::Result<()> {
    let mut config = test_config();
    config.tickets.retention = Duration::from_millis(1500);
    let h = Harness::with_config(b, config).await?;
    h.register(feature("brief", "test.probe@1", &[], &[], 300))
        .await?;
    let r = h.client.get(build::get(&["e"], &["brief"])).await?;
    let done = h.client.until_done(&r.ticket, LONG).await?;
    // The value's TTL passes; the ticket still answers what it ended with, computing
    // nothing again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = h.client.ticket(&r.ticket).await?;
    assert_eq!(later.results, done.results);
    assert_eq!(h.computes("brief@1"), 1);
    let gone = wait_until(LONG, "the ticket to expire", || async {
        h.client.ticket(&r.ticket).await.err()
    })
    .await?;
    assert_eq!(gone.code(), Code::NotFound);
    assert!(gone.message().contains("expired"), "{}", gone.message());
    let fresh = uuid::Uuid::now_v7().simple().to_string();
    let never = h.client.ticket(&fresh).await.expect_err("never issued");
    assert!(
        never.message().contains("never issued"),
        "{}",
        never.message()
    );
    let junk = h.client.ticket("not-a-ticket").await.expect_err("junk");
    assert!(
        junk.message().contains("not a ticket id"),
        "{}",
        junk.message()
    );
    h.stop().await;
    Ok(())
}

pub(crate) async fn log_reads_that_cannot_be_served_are_refused(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(probe("p", &[])).await?;
    h.client.get(build::sync(&["e"], &["p"], 5_000)).await?;
    let ahead = h
        .client
        .subscribe(api::SubscribeEventsRequest {
            after_sequence: Some(1_000_000),
            ..Default::default()
        })
        .await
        .expect_err("a cursor from the future");
    assert_eq!(ahead.code(), Code::InvalidArgument);
    assert!(
        ahead.message().contains("ahead of the log"),
        "{}",
        ahead.message()
    );
    let unknown = h
        .client
        .subscribe(api::SubscribeEventsRequest {
            features: vec!["nope".into()],
            ..Default::default()
        })
        .await
        .expect_err("an unknown feature");
    assert_eq!(unknown.code(), Code::NotFound);
    let backwards = h
        .client
        .raw
        .clone()
        .read_log(h.client.req(api::ReadLogRequest {
            from_ms: 2_000,
            to_ms: 1_000,
            ..Default::default()
        }))
        .await
        .expect_err("a backwards range");
    assert_eq!(backwards.code(), Code::InvalidArgument);
    assert!(
        backwards.message().contains("backwards"),
        "{}",
        backwards.message()
    );
    let none = h.client.cancel("0").await.expect_err("an unknown ticket");
    assert_eq!(none.code(), Code::NotFound);
    h.stop().await;
    Ok(())
}
