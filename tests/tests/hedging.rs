//! Hedged requests: when the first target has not answered within the hedge delay,
//! the next target is tried in parallel and the first answer wins; the slow one is
//! reset. Latency under a slow primary is bounded by delay + fallback latency.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, served, sse_data};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_primary_is_hedged() {
    let paths = Paths::discover();
    let dir = Scratch::new("hedging");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .yaml(concat!(
            "routes:\n  - { model: hedged, chain: [a/m-a, b/m-b], policy: { hedge_after_ms: 200 } }\n",
            "prices:\n  a/m-a: { input: 2.0, output: 8.0 }\n  b/m-b: { input: 3.0, output: 15.0 }\n",
        ))
        .start(&paths, &dir)
        .await;

    // a takes 3 s; b answers as soon as it is asked, 200 ms in.
    let mut worst = Duration::ZERO;
    let mut b_cost = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let r = gw.chat(&chat_body("hedged"), &[("x-mock", "a:delay_ms=3000")]).await;
        worst = worst.max(t.elapsed());
        assert_eq!(served(&r), ("b".into(), "2".into()));
        let usage = r.json::<serde_json::Value>().await.unwrap()["usage"].clone();
        let tokens = |k: &str| usage[k].as_u64().unwrap();
        b_cost += tokens("prompt_tokens") * 3 + tokens("completion_tokens") * 15;
    }
    assert!(
        worst < Duration::from_millis(800),
        "slowest hedged answer took {worst:?}"
    );
    // Both attempts were sent every time: a got each request too.
    assert_eq!(a.requests().await.len(), 5);
    assert_eq!(b.requests().await.len(), 5);
    // ...and the losing attempts were reset by Envoy (their connections closed
    // with the request still active), not left running.
    let reset = gw
        .stat("cluster.sy_provider_a.upstream_cx_destroy_local_with_active_rq")
        .await
        .unwrap_or(0);
    assert_eq!(reset, 5, "losing attempts left running");

    // Cost accounting counts both attempts: the winner from its usage, the cancelled
    // one for the prompt it was sent (estimated from the request's size).
    let prompt_estimate = serde_json::to_vec(&chat_body("hedged")).unwrap().len().div_ceil(4) as u64;
    let a_cost = 5 * prompt_estimate * 2;
    let gw = &gw;
    let stat = |name: &'static str| async move { gw.filter_stat(name).await.unwrap_or(0) };
    assert_eq!(stat("switchyard_cost_micros_total.provider.b.model.m-b").await, b_cost);
    assert_eq!(stat("switchyard_cost_micros_total.provider.a.model.m-a").await, a_cost);
    assert_eq!(
        stat("switchyard_cost_estimated_micros_total.provider.a.model.m-a").await,
        a_cost
    );
    assert_eq!(
        stat("switchyard_cost_estimated_micros_total.provider.b.model.m-b").await,
        0
    );
    // Each request: one hedge fired and won, the primary's attempt cancelled
    // (not failed), served from the plan's second slot.
    assert_eq!(stat("switchyard_hedges_total.route.hedged.outcome.fired").await, 5);
    assert_eq!(stat("switchyard_hedges_total.route.hedged.outcome.won").await, 5);
    assert_eq!(
        stat("switchyard_attempts_total.provider.a.model.m-a.result.cancelled").await,
        5
    );
    assert_eq!(stat("switchyard_served_total.route.hedged.position.2").await, 5);
    assert_eq!(
        stat("switchyard_fallbacks_total.route.hedged.class.unreachable").await,
        0
    );

    // Both keep running: a first attempt that answers after the hedge started but
    // before the hedge does still wins (a timeout-and-retry would have cut it).
    let t = Instant::now();
    let r = gw
        .chat(&chat_body("hedged"), &[("x-mock", "a:delay_ms=500;b:delay_ms=1500")])
        .await;
    assert_eq!(
        served(&r),
        ("a".into(), "1".into()),
        "the first attempt was cut instead of raced"
    );
    assert!(t.elapsed() < Duration::from_millis(1200), "{:?}", t.elapsed());
    assert_eq!(b.requests().await.len(), 6, "the hedge was sent");

    // A primary that answers in time is not hedged.
    let r = gw.chat(&chat_body("hedged"), &[]).await;
    assert_eq!(served(&r), ("a".into(), "1".into()));
    assert_eq!(b.requests().await.len(), 6);

    // Streams are hedged the same way (the race ends at response headers).
    let mut body = chat_body("hedged");
    body["stream"] = json!(true);
    let r = gw.chat(&body, &[("x-mock", "a:delay_ms=3000")]).await;
    assert_eq!(served(&r).0, "b");
    assert_eq!(
        sse_data(&r.text().await.unwrap()).last().map(String::as_str),
        Some("[DONE]")
    );
}
