//! Time limits: a provider slow to answer is left for the next target after the
//! route's first-byte timeout; a stream that started in time is never cut by it;
//! the deadline bounds the whole request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, sse_data};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_first_byte_falls_over_but_slow_streams_are_not_cut() {
    let paths = Paths::discover();
    let dir = Scratch::new("timeouts");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .yaml("routes:\n  - { model: chat, chain: [a/m-a, b/m-b], policy: { first_byte_timeout_ms: 400, deadline_ms: 5000 } }\n")
        .start(&paths, &dir)
        .await;

    let t = Instant::now();
    let r = gw.chat(&chat_body("chat"), &[("x-mock", "a:delay_ms=3000")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-provider"], "b");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "fell over after {:?}",
        t.elapsed()
    );

    // Headers in time, then 8 chunks 200 ms apart: well past the first-byte limit.
    let mut body = chat_body("chat");
    body["stream"] = json!(true);
    let t = Instant::now();
    let r = gw.chat(&body, &[("x-mock", "a:chunk_delay_ms=200")]).await;
    assert_eq!(r.headers()["x-switchyard-provider"], "a");
    let text = r.text().await.unwrap();
    assert!(t.elapsed() > Duration::from_millis(1000));
    let data = sse_data(&text);
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "stream was cut: {text}"
    );

    // Tightened per request.
    let t = Instant::now();
    let r = gw
        .chat(
            &chat_body("chat"),
            &[
                ("x-mock", "a:delay_ms=1000"),
                ("x-switchyard-first-byte-timeout-ms", "100"),
            ],
        )
        .await;
    assert_eq!(r.headers()["x-switchyard-provider"], "b");
    assert!(t.elapsed() < Duration::from_millis(700), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_bounds_the_whole_request() {
    let paths = Paths::discover();
    let dir = Scratch::new("timeouts-deadline");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .yaml("routes:\n  - { model: chat, chain: [a/m-a, b/m-b], policy: { deadline_ms: 600 } }\n")
        .start(&paths, &dir)
        .await;
    let t = Instant::now();
    let r = gw.chat(&chat_body("chat"), &[("x-mock", "*:delay_ms=5000")]).await;
    let elapsed = t.elapsed();
    assert_eq!(r.status(), 504);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["request_id"].is_string(), "{v}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_gone_quiet_is_left_or_cut_after_the_idle_limit() {
    let paths = Paths::discover();
    let dir = Scratch::new("timeouts-idle");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-a", "b/m-b"])
        .yaml("limits: { stream_idle_timeout_ms: 500 }\n")
        .start(&paths, &dir)
        .await;

    // Quiet before answering: the attempt fails and the next target answers.
    let t = Instant::now();
    let r = gw.chat(&chat_body("chat"), &[("x-mock", "a:delay_ms=5000")]).await;
    assert_eq!(r.headers()["x-switchyard-provider"], "b");
    assert!(t.elapsed() < Duration::from_millis(2000), "{:?}", t.elapsed());

    // Quiet after its first event but before any content: the stream is still
    // held (the pre-commit window), so it falls over like a silent provider.
    let mut body = chat_body("chat");
    body["stream"] = json!(true);
    let t = Instant::now();
    let r = gw.chat(&body, &[("x-mock", "a:chunk_delay_ms=5000")]).await;
    assert_eq!(r.headers()["x-switchyard-provider"], "b");
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert!(t.elapsed() < Duration::from_millis(2500), "{:?}", t.elapsed());

    // Quiet mid-stream, after content went out: cut after the limit instead of
    // hanging, never complete-looking.
    let t = Instant::now();
    let r = gw.chat(&body, &[("x-mock", "a:hang_after=3")]).await;
    assert_eq!(r.headers()["x-switchyard-provider"], "a");
    let ended = r.text().await;
    assert!(t.elapsed() < Duration::from_millis(2500), "{:?}", t.elapsed());
    assert!(ended.is_err(), "a stalled stream must not look complete: {ended:?}");
}
