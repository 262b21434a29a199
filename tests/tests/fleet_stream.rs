//! The fleet exchange over gRPC (`fleet_transport: grpc`): each Envoy holds one
//! stream to the control plane's xDS port (one worker of it with proxy-wasm;
//! the config's main-thread task with the native module), and a circuit one
//! Envoy opens is pushed to the others without them asking.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_at, chat_body, served};

/// Fleet streams per node, as `GET /status` shows them.
async fn streams(gw: &Gateway) -> Vec<u64> {
    let status: serde_json::Value = reqwest::get(format!("http://{}/status", gw.status))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["nodes"]
        .as_object()
        .map(|nodes| {
            nodes
                .values()
                .map(|n| n["fleet_streams"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_opened_behind_one_envoy_is_pushed_to_the_other_over_the_stream() {
    let paths = Paths::discover();
    let dir = Scratch::new("fleet-stream");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let mut gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-a", "b/m-b"])
        .yaml("circuit_breaker: { consecutive_failures: 3, base_open_ms: 10000, max_open_ms: 60000 }\nfleet_transport: grpc\n")
        .workers(2)
        .start(&paths, &dir)
        .await;
    gw.add_envoy(&paths).await;
    // One stream per Envoy (one of its two workers holds it).
    let t = Instant::now();
    while streams(&gw).await != vec![1, 1] {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "streams per node: {:?}",
            streams(&gw).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Streams the first Envoy opened so far through its xDS cluster (ADS, fleet).
    let opened = "cluster.switchyard_xds.upstream_rq_total";
    let before = gw.stat(opened).await;
    assert!(before.is_some_and(|n| n >= 2), "{before:?}");
    // Every request asks `a` to fail.
    let chat =
        |url: String| async move { served(&chat_at(&url, &chat_body("chat"), &[("x-mock", "a:status=503")]).await) };
    // Envoy 0 alone sees a fail three times.
    for _ in 0..3 {
        assert_eq!(chat(gw.urls[0].clone()).await, ("b".to_string(), "2".to_string()));
    }
    let failed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Envoy 1 never saw a fail, yet leaves it out.
    assert_eq!(
        chat(gw.urls[1].clone()).await,
        ("b".to_string(), "1".to_string()),
        "Envoy 1 still tried a"
    );
    assert_eq!(a.requests().await.len(), 3, "only Envoy 0's three attempts reached a");
    println!(
        "fleet state reached the other Envoy over the stream within {:?}",
        failed_at.elapsed()
    );
    // The streams outlive a heartbeat (5 s) without being opened again: no
    // timeout cuts them (the native host starts them with none).
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert_eq!(gw.stat(opened).await, before, "streams were opened again");
    // Nothing went over the HTTP exchange.
    assert_eq!(
        gw.stat("cluster.switchyard_fleet.upstream_rq_total").await.unwrap_or(0),
        0
    );
}
