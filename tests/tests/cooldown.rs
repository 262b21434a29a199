//! A provider that said "not now" (429 with a reset time, or a rejected key) is
//! moved to the back of later plans until then: later requests do not pay for
//! the failure again, and it gets traffic back when the time is up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

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
