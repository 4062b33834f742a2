//! Conformance, what a call sends: request inputs in the key, tenants apart, bad input
//! answered with a status that says what to fix.

use super::*;

pub(crate) async fn request_inputs_are_part_of_the_key(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(feature(
        "words",
        "text.stats@1",
        &[("stat", "words")],
        &[("text", "request:text")],
        600_000,
    ))
    .await?;
    h.register(feature(
        "emb",
        "text.hash_embed@1",
        &[("dim", "8")],
        &[("text", "request:text")],
        600_000,
    ))
    .await?;
    h.register(feature(
        "qemb",
        "text.hash_embed@1",
        &[("dim", "8")],
        &[("text", "request:query")],
        600_000,
    ))
    .await?;
    h.register(feature(
        "match",
        "vec.cosine@1",
        &[],
        &[("a", "emb"), ("b", "qemb")],
        600_000,
    ))
    .await?;
    let ask = |t: &str, q: &str| {
        let mut r = build::sync(&[], &["words", "match"], 5_000);
        r.entities = vec![entity("doc", &[("text", text(t)), ("query", text(q))])];
        r
    };
    let r1 = h
        .client
        .get(ask("red green blue", "red green blue"))
        .await?;
    let r2 = h.client.get(ask("one two", "three four")).await?;
    assert_eq!(f64_of(&r1.results[0]), Some(3.0));
    assert_eq!(f64_of(&r2.results[0]), Some(2.0));
    let m1 = f64_of(&r1.results[1]).unwrap_or_default();
    assert!((m1 - 1.0).abs() < 1e-6, "identical texts: cosine {m1}");
    assert_ne!(
        f64_of(&r2.results[1]),
        Some(m1),
        "a different input is a different value"
    );
    let tensor = h
        .client
        .get({
            let mut r = build::sync(&[], &["emb"], 5_000);
            r.entities = vec![entity("doc", &[("text", text("red green blue"))])];
            r
        })
        .await?;
    match tensor.results[0]
        .value
        .as_ref()
        .and_then(|v| v.kind.as_ref())
    {
        Some(api::value::Kind::Tensor(t)) => assert_eq!(t.shape, vec![8]),
        other => anyhow::bail!("expected a tensor, got {other:?}"),
    }
    h.stop().await;
    Ok(())
}

pub(crate) async fn tenants_do_not_share(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    let acme = h.client.with_tenant("acme");
    let other = h.client.with_tenant("globex");
    // Each tenant registers its own `t`: definitions are per tenant too.
    for c in [&acme, &other] {
        c.register(probe("t", &[("delay_ms", "300")])).await?;
    }
    let r = acme.get(build::get(&["d"], &["t"])).await?;
    let missing = other.ticket(&r.ticket).await;
    assert!(
        missing.is_err_and(|s| s.code() == Code::NotFound),
        "another tenant's ticket is invisible"
    );
    acme.until_done(&r.ticket, LONG).await?;
    let theirs = other.get(build::get(&["d"], &["t"])).await?;
    assert_eq!(
        statuses(&theirs),
        vec![Status::Pending],
        "values are kept per tenant"
    );
    other.until_done(&theirs.ticket, LONG).await?;
    assert_eq!(h.computes("t@1"), 2);
    h.stop().await;
    Ok(())
}

pub(crate) async fn bad_input_gets_a_status_that_says_what_to_fix(
    b: Backend,
) -> anyhow::Result<()> {
    let mut config = test_config();
    config.limits.max_entities = 3;
    config.limits.max_features = 2;
    config.limits.max_input_bytes = 1024;
    let h = Harness::with_config(b, config).await?;
    h.register(probe("ok", &[])).await?;
    h.register(feature(
        "needs_text",
        "text.stats@1",
        &[],
        &[("text", "request:text")],
        600_000,
    ))
    .await?;
    let check = |r: Result<api::GetFeaturesResponse, tonic::Status>, code: Code, needle: &str| {
        let s = r.err().unwrap_or_else(|| tonic::Status::ok("accepted"));
        assert_eq!(s.code(), code, "{needle}: {}", s.message());
        assert!(
            s.message().contains(needle),
            "`{}` should mention `{needle}`",
            s.message()
        );
    };
    check(
        h.client.get(build::get(&["e"], &["nope"])).await,
        Code::NotFound,
        "no feature named `nope`",
    );
    check(
        h.client.get(build::get(&["e"], &["ok@7"])).await,
        Code::NotFound,
        "no version 7",
    );
    check(
        h.client.get(build::get(&["e"], &["Bad Name"])).await,
        Code::InvalidArgument,
        "malformed",
    );
    check(
        h.client.get(build::get(&["e"], &["ok@x"])).await,
        Code::InvalidArgument,
        "version `x`",
    );
    check(
        h.client
            .get(build::get(&["a", "b", "c", "d"], &["ok"]))
            .await,
        Code::InvalidArgument,
        "limit of 3",
    );
    check(
        h.client.get(build::get(&["e"], &["ok", "ok", "ok"])).await,
        Code::InvalidArgument,
        "limit of 2",
    );
    check(
        h.client.get(build::get(&[], &["ok"])).await,
        Code::InvalidArgument,
        "no entities",
    );
    check(
        h.client.get(build::get(&["e"], &[])).await,
        Code::InvalidArgument,
        "no features",
    );
    check(
        h.client.get(build::get(&[""], &["ok"])).await,
        Code::InvalidArgument,
        "1 to 1024 bytes",
    );
    check(
        h.client.get(build::get(&["e"], &["needs_text"])).await,
        Code::InvalidArgument,
        "needs request input `text`",
    );
    let mut wrong = build::get(&[], &["needs_text"]);
    wrong.entities = vec![entity("e", &[("text", build::f64(1.0))])];
    check(
        h.client.get(wrong).await,
        Code::InvalidArgument,
        "must be a string value",
    );
    let mut big = build::get(&[], &["needs_text"]);
    big.entities = vec![entity("e", &[("text", text(&"x".repeat(2000)))])];
    check(
        h.client.get(big).await,
        Code::InvalidArgument,
        "limit of 1024",
    );
    let t = h.client.ticket("no-such-ticket").await;
    assert!(t.is_err_and(|s| s.code() == Code::NotFound));
    let bad_tenant = h.client.with_tenant("no.dots");
    check(
        bad_tenant.get(build::get(&["e"], &["ok"])).await,
        Code::InvalidArgument,
        "tenant `no.dots` is malformed",
    );
    // Odd bytes in ids and inputs never panic the server: it still answers afterwards.
    let mut odd = build::get(&["*", ">", "a.b c", "ünï\u{0}"], &["ok"]);
    odd.entities.truncate(3);
    assert!(h.client.get(odd).await.is_ok());
    assert!(h.client.get(build::get(&["e"], &["ok"])).await.is_ok());
    h.stop().await;

    // Without a default tenant, a call must name one.
    let mut strict = test_config();
    strict.server.default_tenant = None;
    let h = Harness::with_config(b, strict).await?;
    let r = h.client.get(build::get(&["e"], &["ok"])).await;
    assert!(r.is_err_and(
        |s| s.code() == Code::Unauthenticated && s.message().contains("x-fstore-tenant")
    ));
    h.stop().await;
    Ok(())
}
