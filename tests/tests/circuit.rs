//! Circuit breakers: a target that keeps failing is left out of plans (no request
//! waits for its timeout), probed once its cool-down is over, and back when the
//! probe succeeds. State is shared by all Envoy workers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, served};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_provider_is_cut_out_then_probed_back_in() {
    let paths = Paths::discover();
    let dir = Scratch::new("circuit");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .workers(2)
        .yaml("routes:\n  - { model: chat, chain: [a/m-a, b/m-b], policy: { first_byte_timeout_ms: 300 } }\n")
        .yaml("circuit_breaker: { consecutive_failures: 3, base_open_ms: 1500, max_open_ms: 10000 }\n")
        .start(&paths, &dir)
        .await;
    let hang = [("x-mock", "a:delay_ms=5000")];

    // Three requests wait for a's first-byte timeout, then b answers.
    for _ in 0..3 {
        let t = Instant::now();
        let r = gw.chat(&chat_body("chat"), &hang).await;
        assert_eq!(served(&r), ("b".into(), "2".into()));
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "did not wait for the first-byte timeout"
        );
    }
    // Open: every request, on new connections spread over both workers, goes
    // straight to b without waiting for a.
    for _ in 0..10 {
        let t = Instant::now();
        let r = reqwest::Client::new()
            .post(gw.at("/v1/chat/completions"))
            .header("x-mock", "a:delay_ms=5000")
            .json(&chat_body("chat"))
            .send()
            .await
            .unwrap();
        assert_eq!(served(&r), ("b".into(), "1".into()));
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "waited {:?} on an open circuit",
            t.elapsed()
        );
    }
    assert_eq!(a.requests().await.len(), 3);
    assert_eq!(
        gw.filter_stat("switchyard_circuit_transitions_total.provider.a.model.m-a.to.open")
            .await,
        Some(1)
    );
    assert_eq!(
        gw.filter_stat("switchyard_circuit_state.provider.a.model.m-a").await,
        Some(2)
    );

    // After the cool-down (and the fleet-wide state, up to one 250 ms report
    // later) one probe goes to a; a has recovered, the circuit
    // closes and a is first again.
    tokio::time::sleep(Duration::from_millis(1900)).await;
    let r = gw.chat(&chat_body("chat"), &[]).await;
    assert_eq!(served(&r), ("a".into(), "1".into()), "the probe");
    for _ in 0..3 {
        let r = gw.chat(&chat_body("chat"), &[]).await;
        assert_eq!(served(&r), ("a".into(), "1".into()));
    }
    assert_eq!(
        gw.filter_stat("switchyard_circuit_transitions_total.provider.a.model.m-a.to.half_open")
            .await,
        Some(1)
    );
    assert_eq!(
        gw.filter_stat("switchyard_circuit_transitions_total.provider.a.model.m-a.to.closed")
            .await,
        Some(1)
    );
    assert_eq!(
        gw.filter_stat("switchyard_circuit_state.provider.a.model.m-a").await,
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_probe_reopens_for_longer() {
    let paths = Paths::discover();
    let dir = Scratch::new("circuit-reopen");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-a", "b/m-b"])
        .yaml("circuit_breaker: { consecutive_failures: 2, base_open_ms: 800, max_open_ms: 10000 }\n")
        .start(&paths, &dir)
        .await;
    let fail = [("x-mock", "a:status=503")];
    for _ in 0..2 {
        assert_eq!(
            served(&gw.chat(&chat_body("chat"), &fail).await),
            ("b".into(), "2".into())
        );
    }
    assert_eq!(
        served(&gw.chat(&chat_body("chat"), &fail).await),
        ("b".into(), "1".into())
    );
    // The fleet-wide state (reported every 250 ms) can hold a target up to one
    // report interval longer than the local circuit: wait past both.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The probe fails: open again, now for 1600 ms.
    assert_eq!(
        served(&gw.chat(&chat_body("chat"), &fail).await),
        ("b".into(), "2".into())
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        served(&gw.chat(&chat_body("chat"), &[]).await),
        ("b".into(), "1".into()),
        "still open"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        served(&gw.chat(&chat_body("chat"), &[]).await),
        ("a".into(), "1".into()),
        "probe succeeds"
    );
    assert_eq!(
        gw.filter_stat("switchyard_circuit_transitions_total.provider.a.model.m-a.to.open")
            .await,
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_failure_rate_opens_the_circuit_without_consecutive_failures() {
    let paths = Paths::discover();
    let dir = Scratch::new("circuit-rate");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-a", "b/m-b"])
        .yaml(concat!(
            "circuit_breaker: { consecutive_failures: 1000, base_open_ms: 60000, max_open_ms: 60000,\n",
            "                   failure_rate_percent: 50, window_ms: 30000, min_requests: 6 }\n",
        ))
        .start(&paths, &dir)
        .await;
    // Every other request fails on a: never two failures in a row, 50 % failing.
    // (The rate is checked on a failure, once the window holds 6 attempts.)
    for i in 0..7 {
        let headers: &[(&str, &str)] = if i % 2 == 0 { &[("x-mock", "a:status=503")] } else { &[] };
        let r = gw.chat(&chat_body("chat"), headers).await;
        assert_eq!(r.status(), 200);
    }
    let r = gw.chat(&chat_body("chat"), &[]).await;
    assert_eq!(
        served(&r),
        ("b".into(), "1".into()),
        "a's circuit should be open at 50 % failures"
    );
    assert_eq!(a.requests().await.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_leave_early_do_not_open_a_circuit() {
    let paths = Paths::discover();
    let dir = Scratch::new("circuit-abort");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-a", "b/m-b"])
        .yaml("circuit_breaker: { consecutive_failures: 2, base_open_ms: 10000, max_open_ms: 60000 }\n")
        .start(&paths, &dir)
        .await;
    // Four clients give up on a slow (healthy) primary before it answers.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    for _ in 0..4 {
        let r = impatient
            .post(gw.at("/v1/chat/completions"))
            .header("x-mock", "a:delay_ms=1000")
            .json(&chat_body("chat"))
            .send()
            .await;
        assert!(r.is_err(), "the client was meant to give up");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Their leaving says nothing about a: it is still first for everyone.
    assert_eq!(
        served(&gw.chat(&chat_body("chat"), &[]).await),
        ("a".into(), "1".into())
    );
    assert_eq!(
        gw.filter_stat("switchyard_circuit_transitions_total.provider.a.model.m-a.to.open")
            .await
            .unwrap_or(0),
        0
    );
    assert_eq!(
        gw.filter_stat("switchyard_requests_total.route.chat.endpoint.chat.outcome.cancelled.status_class.none")
            .await,
        Some(4)
    );
}
