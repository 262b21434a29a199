//! Weighted routes: each request's first target is drawn by weight; the others
//! stay in the plan, so a drawn target that fails still falls over.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_target_is_drawn_by_weight_and_still_fails_over() {
    let paths = Paths::discover();
    let dir = Scratch::new("weights");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .yaml("routes:\n  - { model: chat, chain: [a/m-a, b/m-b], weights: [80, 20] }\n")
        .start(&paths, &dir)
        .await;
    let client = reqwest::Client::new();
    let (mut to_a, n) = (0, 400);
    for _ in 0..n {
        let r = client
            .post(gw.at("/v1/chat/completions"))
            .json(&chat_body("chat"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-switchyard-attempts"], "1");
        if r.headers()["x-switchyard-provider"] == "a" {
            to_a += 1;
        }
    }
    // 80 % of 400 = 320, standard deviation 8: +-40 is five of them.
    assert!((280..=360).contains(&to_a), "{to_a}/{n} went to a with weight 80");

    // Whichever is drawn, a failing a is covered by b.
    for _ in 0..20 {
        let r = client
            .post(gw.at("/v1/chat/completions"))
            .header("x-mock", "a:status=503")
            .json(&chat_body("chat"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-switchyard-provider"], "b");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_target_loses_weight_and_wins_it_back() {
    let paths = Paths::discover();
    let dir = Scratch::new("weights-adaptive");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .yaml("routes:\n  - { model: chat, chain: [a/m-a, b/m-b], weights: [50, 50] }\n")
        // A breaker that never trips here: only the weights react.
        .yaml("circuit_breaker: { consecutive_failures: 100000, base_open_ms: 1000, max_open_ms: 1000 }\n")
        .yaml("adaptive_weights: { min_factor: 0.1 }\n")
        .start(&paths, &dir)
        .await;
    let client = reqwest::Client::new();
    let first_a = |n: usize, fail: bool| {
        let (client, url) = (client.clone(), gw.at("/v1/chat/completions"));
        async move {
            let mut a_first = 0;
            for _ in 0..n {
                let mut req = client.post(&url).json(&chat_body("chat"));
                if fail {
                    req = req.header("x-mock", "a:status=503");
                }
                let r = req.send().await.unwrap();
                assert_eq!(r.status(), 200);
                let p = r.headers()["x-switchyard-provider"].to_str().unwrap().to_string();
                let attempts = r.headers()["x-switchyard-attempts"].to_str().unwrap().to_string();
                if (p == "a" && attempts == "1") || (p == "b" && attempts == "2") {
                    a_first += 1;
                }
            }
            a_first
        }
    };
    // a fails every attempt for a while: its share of first attempts falls.
    for _ in 0..8 {
        first_a(30, true).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let share = first_a(200, true).await;
    assert!(share < 60, "a still drawn first {share}/200 times after failing");
    let status = std::process::Command::new(&paths.switchyard)
        .args(["status", "--json", "--status-addr", &gw.status.to_string()])
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(s["targets"]["a/m-a"]["weight"].as_f64().unwrap() < 0.5, "{s}");

    // a recovers: its weight comes back.
    for _ in 0..20 {
        first_a(30, false).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let share = first_a(200, false).await;
    assert!(share > 70, "a drawn first only {share}/200 times after recovering");
}
