//! Active health checks: a provider whose model list cannot be fetched is marked
//! unhealthy and left out of plans before any request fails on it; when it comes
//! back, traffic returns to it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, served};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_provider_is_left_out_and_returns_when_healthy() {
    let paths = Paths::discover();
    let dir = Scratch::new("health");
    let mut a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-a", "b/m-b"])
        .yaml("health_check: { interval_ms: 200, timeout_ms: 300, unhealthy_after: 2, healthy_after: 2 }\n")
        .workers(2)
        .start(&paths, &dir)
        .await;
    assert_eq!(
        served(&gw.chat(&chat_body("chat"), &[]).await),
        ("a".into(), "1".into())
    );

    // a goes away. No request is sent to find out: the checks notice.
    let addr = a.addr;
    a.stop();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..5 {
        let r = gw.chat(&chat_body("chat"), &[]).await;
        assert_eq!(served(&r), ("b".into(), "1".into()), "a was still tried first");
    }
    assert_eq!(gw.filter_stat("switchyard_health_state.provider.a").await, Some(0));
    assert_eq!(gw.filter_stat("switchyard_health_state.provider.b").await, Some(1));
    let connect_failures = gw
        .stat("cluster.sy_provider_a.upstream_cx_connect_fail")
        .await
        .unwrap_or(0);
    assert!(
        connect_failures >= 2,
        "the health checks did not reach a ({connect_failures})"
    );

    // a comes back on the same address: two passed checks and it is first again.
    let a2 = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &["--addr", &addr.to_string()]);
    assert_eq!(a2.addr, addr);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        served(&gw.chat(&chat_body("chat"), &[]).await),
        ("a".into(), "1".into())
    );
    assert_eq!(gw.filter_stat("switchyard_health_state.provider.a").await, Some(1));
    assert!(gw.envoys[0].output().contains("provider a is now unhealthy"));
    assert!(gw.envoys[0].output().contains("provider a is now healthy"));
}
