//! A provider that said "not now" (429 with a reset time, or a rejected key) is
//! moved to the back of later plans until then: later requests do not pay for
//! the failure again, and it gets traffic back when the time is up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, served};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_target_is_left_alone_until_its_reset_time() {
    let paths = Paths::discover();
    let dir = Scratch::new("cooldown-429");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-a", "b/m-b"])
        .start(&paths, &dir)
        .await;

    let r = gw
        .chat(&chat_body("chat"), &[("x-mock", "a:status=429,retry_after=2")])
        .await;
    assert_eq!(
        served(&r),
        ("b".into(), "2".into()),
        "fell over at once, Retry-After not waited for"
    );
    for _ in 0..3 {
        let r = gw.chat(&chat_body("chat"), &[]).await;
        assert_eq!(served(&r), ("b".into(), "1".into()), "a is cooling: b goes first");
    }
    assert_eq!(a.requests().await.len(), 1);

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = gw.chat(&chat_body("chat"), &[]).await;
    assert_eq!(served(&r), ("a".into(), "1".into()), "a is back after its reset time");
    assert_eq!(a.requests().await.len(), 2);
}

/// With several keys, a rate limit is the key's: the provider keeps serving with
/// its other keys. Once every key is rate limited, the provider is left alone as
/// if it had said so itself, until its first key is back: later requests do not
/// pay an attempt per key for it, and its targets count for the gateway's own 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_rate_limited_leaves_the_provider_alone() {
    let paths = Paths::discover();
    let dir = Scratch::new("cooldown-keys");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &["--api-key", "key-a,key-a2"]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .keys("a", &["key-a", "key-a2"])
        .route("chat", &["a/m-a", "b/m-b"])
        .route("only-a", &["a/m-2"])
        .start(&paths, &dir)
        .await;

    let r = gw
        .chat(&chat_body("chat"), &[("x-mock", "a:status=429,retry_after=2")])
        .await;
    assert_eq!(served(&r), ("b".into(), "3".into()), "both keys of a, then b");
    assert_eq!(a.requests().await.len(), 2);
    for _ in 0..3 {
        let r = gw.chat(&chat_body("chat"), &[]).await;
        assert_eq!(
            served(&r),
            ("b".into(), "1".into()),
            "every key of a is cooling: b goes first"
        );
    }
    // A plan of a's targets only (another model of a): the gateway's own 429.
    let secs = expect_cooling_down_for(gw.chat(&chat_body("only-a"), &[]).await, "only-a").await;
    assert!((1..=2).contains(&secs), "Retry-After {secs}");
    assert_eq!(a.requests().await.len(), 2, "nothing more reached a");

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = gw.chat(&chat_body("chat"), &[]).await;
    assert_eq!(
        served(&r),
        ("a".into(), "1".into()),
        "a is back after its keys' reset time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_key_moves_its_provider_back() {
    let paths = Paths::discover();
    let dir = Scratch::new("cooldown-auth");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Anthropic, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-1", "b/m-b"])
        .route("other", &["a/m-2", "b/m-b"])
        .start(&paths, &dir)
        .await;

    let r = gw.chat(&chat_body("chat"), &[("x-mock", "a:error=invalid_key")]).await;
    assert_eq!(served(&r), ("b".into(), "2".into()));
    // Every model of provider a is moved back, not only the one that failed.
    let r = gw.chat(&chat_body("other"), &[]).await;
    assert_eq!(served(&r), ("b".into(), "1".into()));
    // Alone in its plan, a cooling target is still tried.
    let r = gw.chat(&chat_body("a/m-3"), &[]).await;
    assert_eq!(served(&r), ("a".into(), "1".into()));
    assert_eq!(a.requests().await.len(), 2);
}

/// The gateway's own 429 for a plan whose every target is cooling: the client's
/// API's error shape with the request id, code `providers_cooling_down`, and the
/// soonest reset time as `Retry-After` (whole seconds, rounded up). Returns the
/// `Retry-After` seconds.
async fn expect_cooling_down(r: reqwest::Response) -> u64 {
    expect_cooling_down_for(r, "chat").await
}

/// As [`expect_cooling_down`], for a request that named `model`.
async fn expect_cooling_down_for(r: reqwest::Response, model: &str) -> u64 {
    assert_eq!(r.status(), 429);
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let rid = header("x-request-id");
    assert!(!rid.is_empty(), "x-request-id header missing");
    assert_eq!(header("content-type"), "application/json");
    let retry_after: u64 = header("retry-after")
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is whole seconds: `{}`", header("retry-after")));
    assert_eq!(served(&r), (String::new(), String::new()), "no attempt was made");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "providers_cooling_down", "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    assert_eq!(v["error"]["request_id"], rid.as_str(), "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains(&format!("`{model}`")) && msg.contains(&format!("retry after {retry_after} s")),
        "{v}"
    );
    retry_after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_cooling_is_answered_429_at_once_without_upstream_traffic() {
    let paths = Paths::discover();
    let dir = Scratch::new("cooldown-all");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-a", "b/m-b"])
        .start(&paths, &dir)
        .await;

    // Both providers ask for quiet: a for 30 s, b for 3 s.
    let r = gw
        .chat(
            &chat_body("chat"),
            &[("x-mock", "a:status=429,retry_after=30;b:status=429,retry_after=3")],
        )
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(served(&r), ("b".into(), "2".into()), "both were tried");

    // Now every target is cooling: answered at once, the soonest reset (b's) said.
    let t = Instant::now();
    let secs = expect_cooling_down(gw.chat(&chat_body("chat"), &[]).await).await;
    assert!((1..=3).contains(&secs), "Retry-After {secs}: b's 3 s, not a's 30 s");
    let mut streamed = chat_body("chat");
    streamed["stream"] = json!(true);
    let secs = expect_cooling_down(gw.chat(&streamed, &[]).await).await;
    assert!((1..=3).contains(&secs), "Retry-After {secs}");
    assert!(t.elapsed() < Duration::from_millis(1000), "{:?}", t.elapsed());
    // An Anthropic Messages client gets its own API's error shape.
    let r = reqwest::Client::new()
        .post(gw.at("/v1/messages"))
        .json(&json!({"model": "chat", "max_tokens": 16, "messages": [{"role": "user", "content": "Say hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let secs: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&secs), "Retry-After {secs}");
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("providers_cooling_down: ")),
        "{v}"
    );
    assert_eq!(v["request_id"], rid.as_str(), "{v}");

    // Nothing went upstream; the answers are counted as the gateway's own.
    assert_eq!(a.requests().await.len(), 1);
    assert_eq!(b.requests().await.len(), 1);
    assert_eq!(
        gw.filter_stat("switchyard_rejections_total.reason.providers_cooling_down")
            .await,
        Some(3)
    );

    // Once b's reset time has passed, b serves again (a, still cooling, goes last).
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let r = gw.chat(&chat_body("chat"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(served(&r), ("b".into(), "1".into()));
    assert_eq!(a.requests().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_when_all_cooling_sends_the_request_anyway() {
    let paths = Paths::discover();
    let dir = Scratch::new("cooldown-try");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .yaml(
            "routes:\n  - { model: chat, chain: [a/m-a, b/m-b] }\n  - { model: tries, chain: [a/m-a, b/m-b], policy: { try_when_all_cooling: true } }\n",
        )
        .start(&paths, &dir)
        .await;

    let r = gw
        .chat(
            &chat_body("tries"),
            &[("x-mock", "a:status=429,retry_after=30;b:status=429,retry_after=30")],
        )
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(served(&r), ("b".into(), "2".into()));
    // Both targets are cooling: the default policy answers at once...
    let r = gw.chat(&chat_body("chat"), &[]).await;
    let secs = expect_cooling_down(r).await;
    assert!((25..=30).contains(&secs), "Retry-After {secs}");
    assert_eq!(a.requests().await.len(), 1);
    // ...the route that says so tries them anyway, in the plan's order.
    let r = gw.chat(&chat_body("tries"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(served(&r), ("a".into(), "1".into()));
    assert_eq!(a.requests().await.len(), 2);
    assert_eq!(b.requests().await.len(), 1);
    // And it falls over as usual when the first one still refuses.
    let r = gw
        .chat(&chat_body("tries"), &[("x-mock", "a:status=429,retry_after=30")])
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(served(&r), ("b".into(), "2".into()));
    assert_eq!(b.requests().await.len(), 2);
}
