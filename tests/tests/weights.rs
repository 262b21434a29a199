//! Weighted routes: each request's first target is drawn by weight; the others
//! stay in the plan, so a drawn target that fails still falls over.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

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
