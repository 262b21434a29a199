//! Tiered chains with a cost ceiling: peers of the same quality, then cheaper,
//! then self-hosted; no attempt ever goes to a target priced above the route's
//! ceiling, request fallbacks included.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, served};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_walk_down_and_never_above_the_ceiling() {
    let paths = Paths::discover();
    let dir = Scratch::new("tiers");
    let oa = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let az = Mock::start(&paths, &dir.0, "az", Dialect::AzureOpenai, &[]);
    let local = Mock::start(&paths, &dir.0, "local", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&oa)
        .provider(&az)
        .provider(&local)
        .yaml(concat!(
            "prices:\n",
            "  oa/gpt-4o: { input: 2.5, output: 10 }\n",
            "  az/gpt4o: { input: 2.5, output: 10 }\n",
            "  oa/gpt-4o-mini: { input: 0.15, output: 0.6 }\n",
            "  local/llama: { input: 0, output: 0 }\n",
            "  oa/o1: { input: 15, output: 60 }\n",
            "routes:\n",
            "  - model: chat\n",
            "    tiers: [[oa/gpt-4o, az/gpt4o], [oa/gpt-4o-mini], [local/llama]]\n",
            "    max_price: { input: 3, output: 12 }\n",
            "  - { model: capped, chain: [oa/o1], max_price: { input: 3, output: 12 } }\n",
            "limits: { max_attempts: 6 }\n",
        ))
        .start(&paths, &dir)
        .await;

    // Everything above the self-hosted tier fails: the plan walks the tiers in
    // order, and the expensive fallback the client asked for is never tried.
    let body = json!({"model": "chat", "fallbacks": ["oa/o1"], "messages": [{"role": "user", "content": "hi"}]});
    let r = gw.chat(&body, &[("x-mock", "oa:status=503;az:status=503")]).await;
    assert_eq!(served(&r), ("local".into(), "4".into()));
    let models: Vec<String> = oa
        .requests()
        .await
        .iter()
        .map(|r| r["body"]["model"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(models, vec!["gpt-4o", "gpt-4o-mini"], "o1 is above the ceiling");

    // A route whose every target is above its ceiling is refused up front.
    let body = json!({"model": "capped", "messages": [{"role": "user", "content": "hi"}]});
    let r = gw.chat(&body, &[]).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "over_price_ceiling", "{v}");
    assert_eq!(oa.requests().await.len(), 2, "nothing was sent");
}
