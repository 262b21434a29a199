//! Several keys for one provider are tried in turn before leaving it; a rejected
//! key is set aside for later requests. Same-target retries follow the policy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::Value;
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, served};

fn keys_used(reqs: &[Value], header: &str) -> Vec<String> {
    reqs.iter()
        .map(|r| {
            r["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h[0] == header)
                .map(|h| h[1].as_str().unwrap().to_string())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_before_leaving_the_provider() {
    let paths = Paths::discover();
    let dir = Scratch::new("keys");
    // The mock accepts only key-a (and the revoked key is first in the config).
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Anthropic, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .keys("a", &["revoked-a", "key-a"])
        .route("chat", &["a/m-a", "b/m-b"])
        .start(&paths, &dir)
        .await;

    let r = gw.chat(&chat_body("chat"), &[]).await;
    assert_eq!(
        served(&r),
        ("a".into(), "2".into()),
        "second key of the same provider answered"
    );
    // The rejected key is set aside: the next request starts with the good one.
    let r = gw.chat(&chat_body("chat"), &[]).await;
    assert_eq!(served(&r), ("a".into(), "1".into()));
    assert_eq!(
        keys_used(&a.requests().await, "x-api-key"),
        vec!["revoked-a", "key-a", "key-a"]
    );

    // A provider-wide failure walks both keys, then falls over; the error names
    // each attempt's key by index, never by value.
    let r = gw
        .chat(&chat_body("chat"), &[("x-mock", "a:status=529;b:status=503")])
        .await;
    let text = r.text().await.unwrap();
    assert!(!text.contains("key-a") && !text.contains("revoked-a"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let attempts = v["error"]["attempts"].as_array().unwrap();
    let walked: Vec<(String, Value)> = attempts
        .iter()
        .map(|a| (a["provider"].as_str().unwrap().to_string(), a["key"].clone()))
        .collect();
    assert_eq!(
        walked,
        vec![
            ("a".into(), 1.into()),
            ("a".into(), 0.into()),
            ("b".into(), Value::Null)
        ],
        "{v}"
    );
    assert!(b.requests().await.len() == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_target_retries_follow_the_policy() {
    let paths = Paths::discover();
    let dir = Scratch::new("retries");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .yaml("routes:\n  - { model: chat, chain: [a/m-a, b/m-b], policy: { attempts_per_target: 2 } }\n")
        .yaml("retry: { backoff_base_ms: 20, backoff_max_ms: 200 }\n")
        .start(&paths, &dir)
        .await;
    let r = gw.chat(&chat_body("chat"), &[("x-mock", "a:status=503")]).await;
    assert_eq!(served(&r), ("b".into(), "3".into()), "a twice, then b");
    assert_eq!(a.requests().await.len(), 2);
    assert!(
        gw.stat("cluster.sy_provider_a.upstream_rq_retry_backoff_exponential")
            .await
            .unwrap_or(0)
            >= 1
    );
}
