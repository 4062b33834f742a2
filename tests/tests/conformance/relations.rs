//! Conformance, features across entities: a user's taste is the normalised mean of the
//! embeddings of the titles in its history (titles shared by two users computed once);
//! a model's A/B cells are reached in two hops (model → pipeline run → cells) and
//! materialized as a relation; fan-out past `limits.max_related` fails naming the limit
//! or is truncated as the binding says; registrations that cannot type-check are
//! refused naming the path.

use super::*;

fn def(
    name: &str,
    entity: &str,
    flow: &str,
    inputs: &[(&str, api::InputBinding)],
) -> api::FeatureDefinition {
    api::FeatureDefinition {
        name: name.to_string(),
        entity_type: entity.to_string(),
        flow: flow.to_string(),
        ttl_ms: 600_000,
        inputs: inputs
            .iter()
            .map(|(k, b)| (k.to_string(), b.clone()))
            .collect(),
        ..Default::default()
    }
}

fn request(name: &str) -> api::InputBinding {
    api::InputBinding {
        source: Some(api::input_binding::Source::Request(name.to_string())),
    }
}

fn via(path: &[&str], feature: &str, aggregate: &str, truncate: bool) -> api::InputBinding {
    api::InputBinding {
        source: Some(api::input_binding::Source::Related(api::Related {
            via: path.iter().map(|p| p.to_string()).collect(),
            feature: feature.to_string(),
            aggregate: aggregate.to_string(),
            truncate,
        })),
    }
}

/// A relation feature of `entity` read from the request input `input`.
fn relation(name: &str, entity: &str, input: &str, relates_to: &str) -> api::FeatureDefinition {
    api::FeatureDefinition {
        relates_to: relates_to.to_string(),
        ..def(name, entity, "rel.ids@1", &[("ids", request(input))])
    }
}

fn rel(entity_type: &str, ids: &[&str]) -> api::Value {
    api::Value {
        kind: Some(api::value::Kind::Relation(api::Relation {
            entity_type: entity_type.to_string(),
            ids: ids.iter().map(|i| i.to_string()).collect(),
        })),
    }
}

/// `title.words`: the number of words of a title's text.
fn title_words() -> api::FeatureDefinition {
    api::FeatureDefinition {
        params: [("stat".to_string(), "words".to_string())].into(),
        ..def(
            "title.words",
            "title",
            "text.stats@1",
            &[("text", request("text"))],
        )
    }
}

/// `title.words` of a title's stored text, `user.history` and `user.words`: the sum
/// of the words of the user's titles.
async fn register_user_words(h: &Harness) -> anyhow::Result<()> {
    for d in [
        title_words(),
        relation("user.history", "user", "history", "title"),
        def(
            "user.words",
            "user",
            "num.affine@1",
            &[("x", via(&["user.history"], "title.words", "sum", false))],
        ),
    ] {
        h.register(d).await?;
    }
    Ok(())
}

async fn sync_one(
    h: &Harness,
    id: &str,
    inputs: &[(&str, api::Value)],
    feature: &str,
) -> anyhow::Result<api::FeatureResult> {
    let mut req = build::sync(&[], &[feature], 15_000);
    req.entities = vec![entity(id, inputs)];
    let r = h.client.get(req).await?;
    Ok(r.results.into_iter().next().unwrap_or_default())
}

pub(crate) async fn features_read_related_entities_one_and_two_hops_away(
    b: Backend,
) -> anyhow::Result<()> {
    let mut config = test_config();
    config.limits.max_related = 3;
    let h = Harness::with_config(b, config).await?;
    for d in [
        def(
            "title.embedding",
            "title",
            "text.hash_embed@1",
            &[("text", request("text"))],
        ),
        title_words(),
        relation("user.history", "user", "history", "title"),
        def(
            "user.taste",
            "user",
            "vec.normalize@1",
            &[(
                "v",
                via(&["user.history"], "title.embedding", "mean", false),
            )],
        ),
        def(
            "user.words",
            "user",
            "num.affine@1",
            &[("x", via(&["user.history"], "title.words", "sum", false))],
        ),
        def(
            "user.first_words",
            "user",
            "num.affine@1",
            &[("x", via(&["user.history"], "title.words", "sum", true))],
        ),
        def(
            "user.words_profile",
            "user",
            "vec.normalize@1",
            &[("v", via(&["user.history"], "title.words", "list", false))],
        ),
    ] {
        h.register(d).await?;
    }
    // The titles' inputs are stored; the users send their history.
    let titles = [
        ("t1", "red fox"),
        ("t2", "lazy brown dog"),
        ("t3", "a b c d"),
        ("t4", "e"),
    ];
    h.client
        .put_inputs(
            titles
                .iter()
                .map(|(id, text_)| entity(id, &[("text", text(text_))]))
                .collect(),
        )
        .await?;
    let u1 = sync_one(
        &h,
        "u1",
        &[("history", rel("title", &["t1", "t2"]))],
        "user.taste",
    )
    .await?;
    let u2 = sync_one(
        &h,
        "u2",
        &[("history", rel("title", &["t2", "t3"]))],
        "user.taste",
    )
    .await?;
    for r in [&u1, &u2] {
        assert_eq!(r.status(), Status::Ready, "{r:?}");
        let Some(api::value::Kind::Tensor(t)) = r.value.as_ref().and_then(|v| v.kind.as_ref())
        else {
            anyhow::bail!("taste is no tensor: {r:?}");
        };
        let norm: f32 = t.data.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised: {norm}");
    }
    assert_ne!(u1.value, u2.value, "different histories, different tastes");
    assert_eq!(
        h.computes("title.embedding@1"),
        3,
        "t2, shared, computed once"
    );
    let words = sync_one(
        &h,
        "u1",
        &[("history", rel("title", &["t1", "t2"]))],
        "user.words",
    )
    .await?;
    assert_eq!(f64_of(&words), Some(5.0), "{words:?}");
    // `list`: the flow receives the batch [2, 3] and scales it to unit length.
    let profile = sync_one(
        &h,
        "u1",
        &[("history", rel("title", &["t1", "t2"]))],
        "user.words_profile",
    )
    .await?;
    let Some(api::value::Kind::Tensor(t)) = profile.value.and_then(|v| v.kind) else {
        anyhow::bail!("the profile is no tensor");
    };
    assert_eq!(t.shape, vec![2]);
    assert!(
        (t.data[0] - 2.0 / 13f32.sqrt()).abs() < 1e-6,
        "{:?}",
        t.data
    );
    // A history naming a title nobody stored inputs for: the sum covers what exists.
    let partial = sync_one(
        &h,
        "u5",
        &[("history", rel("title", &["t1", "t9"]))],
        "user.words",
    )
    .await?;
    assert_eq!(f64_of(&partial), Some(2.0), "{partial:?}");

    // Fan-out past limits.max_related (3): refused, or truncated where bound so.
    let long = rel("title", &["t1", "t2", "t3", "t4"]);
    let refused = sync_one(&h, "u3", &[("history", long.clone())], "user.words").await?;
    assert_eq!(refused.status(), Status::Failed, "{refused:?}");
    assert!(
        refused.error.contains("reaches 4 entities")
            && refused.error.contains("limits.max_related (3)"),
        "{}",
        refused.error
    );
    let first = sync_one(&h, "u3", &[("history", long)], "user.first_words").await?;
    assert_eq!(f64_of(&first), Some(9.0), "t1 + t2 + t3: {first:?}");
    // Ids of the wrong entity type.
    let wrong = sync_one(
        &h,
        "u4",
        &[("history", rel("movie", &["t1"]))],
        "user.words",
    )
    .await?;
    assert_eq!(wrong.status(), Status::Failed, "{wrong:?}");
    assert!(wrong.error.contains("`movie` entities"), "{}", wrong.error);

    // Two hops: model → pipeline run → A/B cells, materialized, and a cell feature.
    for d in [
        relation("model.pipeline_run", "model", "run", "pipeline_run"),
        relation("pipeline_run.cells", "pipeline_run", "cells", "cell"),
        def("cell.lift", "cell", "num.affine@1", &[("x", request("x"))]),
        api::FeatureDefinition {
            relates_to: "cell".to_string(),
            ..def(
                "model.ab_tests",
                "model",
                "rel.ids@1",
                &[(
                    "ids",
                    via(
                        &["model.pipeline_run", "pipeline_run.cells"],
                        "",
                        "ids",
                        false,
                    ),
                )],
            )
        },
        def(
            "model.mean_lift",
            "model",
            "num.affine@1",
            &[(
                "x",
                via(
                    &["model.pipeline_run", "pipeline_run.cells"],
                    "cell.lift",
                    "mean",
                    false,
                ),
            )],
        ),
    ] {
        h.register(d).await?;
    }
    h.client
        .put_inputs(vec![
            entity("r1", &[("cells", rel("cell", &["c1", "c2"]))]),
            entity("c1", &[("x", build::f64(1.0))]),
            entity("c2", &[("x", build::f64(3.0))]),
        ])
        .await?;
    let run = [("run", rel("pipeline_run", &["r1"]))];
    let edges = sync_one(&h, "m1", &run, "model.ab_tests").await?;
    assert_eq!(edges.value, Some(rel("cell", &["c1", "c2"])), "{edges:?}");
    let lift = sync_one(&h, "m1", &run, "model.mean_lift").await?;
    assert_eq!(f64_of(&lift), Some(2.0), "{lift:?}");
    let described = h.client.describe("model.mean_lift").await?;
    for dep in [
        "model.pipeline_run@1",
        "pipeline_run.cells@1",
        "cell.lift@1",
    ] {
        assert!(
            described.dependencies.iter().any(|d| d == dep),
            "{described:?}"
        );
    }
    h.stop().await;
    Ok(())
}

pub(crate) async fn relations_that_cannot_type_check_are_refused(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(def(
        "title.embedding",
        "title",
        "text.hash_embed@1",
        &[("text", request("text"))],
    ))
    .await?;
    h.register(relation("user.history", "user", "history", "title"))
        .await?;
    h.register(def(
        "user.name",
        "user",
        "text.stats@1",
        &[("text", request("name"))],
    ))
    .await?;
    let refused = [
        (
            def(
                "user.a",
                "user",
                "vec.normalize@1",
                &[("v", via(&["user.name"], "title.embedding", "mean", false))],
            ),
            "`user.name@1` is f64, not a relation",
        ),
        (
            def(
                "doc.a",
                "doc",
                "vec.normalize@1",
                &[(
                    "v",
                    via(&["user.history"], "title.embedding", "mean", false),
                )],
            ),
            "`user.history@1` is about `user` entities, not `doc`",
        ),
        (
            def(
                "user.b",
                "user",
                "vec.normalize@1",
                &[("v", via(&["user.history"], "user.name", "mean", false))],
            ),
            "ends at `title` entities, but `user.name@1` is about `user` entities",
        ),
        (
            def(
                "user.c",
                "user",
                "num.affine@1",
                &[("x", via(&["user.history"], "title.embedding", "min", false))],
            ),
            "aggregate `min` cannot take tensor values",
        ),
        (
            def(
                "user.d",
                "user",
                "num.affine@1",
                &[(
                    "x",
                    via(&["user.history"], "title.embedding", "median", false),
                )],
            ),
            "aggregate `median` is unknown",
        ),
        (
            def("user.e", "user", "rel.ids@1", &[("ids", request("x"))]),
            "say which entity type its ids are of with `relates_to`",
        ),
    ];
    for (d, says) in refused {
        let name = d.name.clone();
        let e = h.register(d).await.expect_err(&name);
        let status = e
            .downcast_ref::<tonic::Status>()
            .cloned()
            .unwrap_or_else(|| tonic::Status::unknown(e.to_string()));
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(
            status.message().contains(says),
            "{name}: {}",
            status.message()
        );
    }
    h.stop().await;
    Ok(())
}

pub(crate) async fn references_before_their_entities_are_enriched_when_they_arrive(
    b: Backend,
) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    register_user_words(&h).await?;
    // The history names three titles nobody has sent yet.
    let history = [("history", rel("title", &["f1", "f2", "f3"]))];
    let early = sync_one(&h, "u9", &history, "user.words").await?;
    assert_eq!(f64_of(&early), Some(0.0), "{early:?}");
    let coverage = early.coverage.clone().unwrap_or_default();
    assert_eq!((coverage.resolved, coverage.total), (0, 3), "{early:?}");
    assert_eq!(coverage.missing, vec!["f1", "f2", "f3"]);

    // The titles arrive; nobody asks again: the value is enriched by itself.
    h.client
        .put_inputs(vec![
            entity("f1", &[("text", text("one"))]),
            entity("f2", &[("text", text("two words"))]),
            entity("f3", &[("text", text("three more words"))]),
        ])
        .await?;
    let enriched = wait_until(LONG, "u9 enriched in the background", || async {
        let log = h.client.log(&["user.words"], false).await.ok()?;
        log.into_iter()
            .filter_map(|e| e.record)
            .find(|r| r.entity_id == "u9" && r.coverage.as_ref().is_some_and(|c| c.resolved == 3))
    })
    .await?;
    assert_eq!(
        enriched.value.as_ref().and_then(|v| match v.kind {
            Some(api::value::Kind::F64(x)) => Some(x),
            _ => None,
        }),
        Some(6.0),
        "{enriched:?}"
    );
    let mut req = build::get(&[], &["user.words"]);
    req.entities = vec![entity("u9", &history)];
    let r = h.client.get(req).await?;
    let now = &r.results[0];
    assert!(now.from_cache, "computed before this call: {now:?}");
    assert_eq!(
        now.coverage.as_ref().map(|c| (c.resolved, c.total)),
        Some((3, 3))
    );
    h.stop().await;
    Ok(())
}

pub(crate) async fn the_sweep_enriches_what_no_arrival_announced(b: Backend) -> anyhow::Result<()> {
    let mut config = test_config();
    config.server.enrich_sweep = Duration::from_millis(200);
    let h = Harness::with_config(b, config).await?;
    register_user_words(&h).await?;
    let history = [("history", rel("title", &["g1", "g2"]))];
    let early = sync_one(&h, "u7", &history, "user.words").await?;
    assert_eq!(early.coverage.map(|c| (c.resolved, c.total)), Some((0, 2)));
    // The titles' inputs land without a PutInputs call announcing them.
    for (id, words) in [("g1", "one two"), ("g2", "three")] {
        h.running
            .substrate
            .inputs
            .put(
                "default",
                id,
                fstore_proto::wire::StoredInputs {
                    inputs: [("text".to_string(), text(words))].into(),
                    updated_at_ms: 1,
                },
            )
            .await?;
    }
    let records = || async {
        let log = h.client.log(&["user.words"], false).await.ok()?;
        Some(
            log.into_iter()
                .filter_map(|e| e.record)
                .filter(|r| r.entity_id == "u7")
                .collect::<Vec<_>>(),
        )
    };
    let swept = wait_until(LONG, "the sweep to enrich u7", || async {
        let r = records().await?;
        r.iter()
            .any(|r| r.coverage.as_ref().is_some_and(|c| c.resolved == 2))
            .then_some(r.len())
    })
    .await?;
    // Idempotent: later sweeps compute nothing more.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(records().await.map(|r| r.len()), Some(swept));
    let described = h.client.describe("user.words").await?;
    let stats = described.stats.unwrap_or_default();
    assert_eq!((stats.partial, stats.complete), (1, 0), "{stats:?}");
    assert!(stats.oldest_partial_at_ms > 0);
    h.stop().await;
    Ok(())
}

pub(crate) async fn an_awaiting_aggregate_completes_without_its_caller(
    b: Backend,
) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    register_user_words(&h).await?;
    h.client
        .put_inputs(vec![
            entity("k1", &[("text", text("a b"))]),
            entity("k2", &[("text", text("c"))]),
        ])
        .await?;
    // ASYNC, and the ticket is never read: the aggregate still gets computed.
    let mut req = build::get(&[], &["user.words"]);
    req.entities = vec![entity("u8", &[("history", rel("title", &["k1", "k2"]))])];
    let first = h.client.get(req).await?;
    assert_eq!(first.results[0].status(), Status::Pending, "{first:?}");
    let record = wait_until(
        LONG,
        "user.words of u8 computed without its caller",
        || async {
            let log = h.client.log(&["user.words"], false).await.ok()?;
            log.into_iter()
                .filter_map(|e| e.record)
                .find(|r| r.entity_id == "u8")
        },
    )
    .await?;
    assert_eq!(
        record.value.and_then(|v| v.kind),
        Some(api::value::Kind::F64(3.0))
    );
    h.stop().await;
    Ok(())
}
