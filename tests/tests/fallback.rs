//! Fail-over across providers through real Envoy: 503s, refused connections,
//! every provider failing, and per-request plan order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, ProviderSpec, Scratch, chat_body, sse_data};

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_503_is_answered_by_the_fallback_json_and_stream() {
    let paths = Paths::discover();
    let dir = Scratch::new("fallback-503");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/gpt-a", "b/gpt-b"])
        .start(&paths, &dir)
        .await;

    let r = gw.chat(&chat_body("chat"), &[("x-mock", "a:status=503")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-switchyard-provider"), "b");
    assert_eq!(header(&r, "x-switchyard-model"), "gpt-b");
    assert_eq!(header(&r, "x-switchyard-attempts"), "2");
    assert_eq!(header(&r, "x-switchyard-chain-position"), "2");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from b (gpt-b).");

    let mut body = chat_body("chat");
    body["stream"] = json!(true);
    let r = gw.chat(&body, &[("x-mock", "a:status=503")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-switchyard-provider"), "b");
    assert_eq!(header(&r, "x-switchyard-attempts"), "2");
    let text = r.text().await.unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    let content: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(content, "Hello from b (gpt-b).");

    // Each mock saw exactly what it should: a twice (both failed), b twice.
    assert_eq!(a.requests().await.len(), 2);
    assert_eq!(b.requests().await.len(), 2);

    // What operators see: two requests served from the second slot after a
    // server error each, every attempt counted with its result, b's latencies.
    let stat = |name: &'static str| {
        let gw = &gw;
        async move { gw.filter_stat(name).await.unwrap_or(0) }
    };
    assert_eq!(
        stat("switchyard_requests_total.route.chat.endpoint.chat.outcome.served.status_class.2xx").await,
        2
    );
    assert_eq!(
        stat("switchyard_fallbacks_total.route.chat.class.server_error").await,
        2
    );
    assert_eq!(stat("switchyard_served_total.route.chat.position.2").await, 2);
    assert_eq!(
        stat("switchyard_attempts_total.provider.a.model.gpt-a.result.server_error").await,
        2
    );
    assert_eq!(
        stat("switchyard_attempts_total.provider.b.model.gpt-b.result.success").await,
        2
    );
    // The mocks report usage: tokens are counted without prices configured.
    assert!(stat("switchyard_tokens_total.provider.b.model.gpt-b.kind.output").await > 0);
    let hist = reqwest::get(format!("{}/stats?filter=time_to_first_token", gw.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        hist.contains("switchyard_time_to_first_token_ms.provider.b.model.gpt-b"),
        "{hist}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_refusing_connections_is_skipped() {
    let paths = Paths::discover();
    let dir = Scratch::new("fallback-refused");
    let mut a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let spec_a = ProviderSpec::from(&a);
    a.stop();
    let gw = Gateway::builder()
        .provider(spec_a)
        .provider(&b)
        .route("chat", &["a/gpt-a", "b/claude-b"])
        .start(&paths, &dir)
        .await;

    for _ in 0..3 {
        let r = gw.chat(&chat_body("chat"), &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-switchyard-provider"), "b");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], "Hello from b (claude-b).");
    }
    assert_eq!(gw.stat("cluster.sy_provider_a.upstream_cx_connect_fail").await, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_providers_failing_gives_one_error_listing_every_attempt() {
    let paths = Paths::discover();
    let dir = Scratch::new("fallback-all");
    let mut a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let c = Mock::start(&paths, &dir.0, "c", Dialect::Openai, &[]);
    let spec_a = ProviderSpec::from(&a);
    a.stop();
    let gw = Gateway::builder()
        .provider(spec_a)
        .provider(&b)
        .provider(&c)
        .route("chat", &["a/m1", "b/m2", "c/m3"])
        .start(&paths, &dir)
        .await;

    let r = gw
        .chat(&chat_body("chat"), &[("x-mock", "b:status=529;c:status=500")])
        .await;
    assert_eq!(r.status(), 500);
    let request_id = header(&r, "x-request-id").to_string();
    assert!(!request_id.is_empty());
    let v: Value = r.json().await.unwrap();
    let err = &v["error"];
    assert_eq!(err["code"], "all_attempts_failed", "{v}");
    assert_eq!(err["request_id"], request_id.as_str());
    let attempts = err["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{v}");
    assert_eq!(attempts[0]["provider"], "a");
    assert_eq!(attempts[0]["failure"], "unreachable");
    assert_eq!(attempts[0]["status"], Value::Null);
    assert_eq!(attempts[1]["provider"], "b");
    assert_eq!(attempts[1]["status"], 529);
    assert_eq!(attempts[2]["provider"], "c");
    assert_eq!(attempts[2]["status"], 500);
    assert!(
        attempts[2]["message"].as_str().unwrap().contains("failing on purpose"),
        "{v}"
    );
    let message = err["message"].as_str().unwrap();
    assert!(message.starts_with("3 attempts failed"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_k_goes_to_the_kth_target_of_its_own_plan() {
    let paths = Paths::discover();
    let dir = Scratch::new("fallback-order");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let c = Mock::start(&paths, &dir.0, "c", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .provider(&c)
        .start(&paths, &dir)
        .await;

    // Two plans over the same providers in different orders, sent concurrently many
    // times; every attempt but the last fails, so each plan is walked to its end.
    let fail_all_but_last = "a:status=503;b:status=503;c:status=503";
    let plan_1 =
        json!({"model": "a/m-a1", "fallbacks": ["b/m-b1", "c/m-c1"], "messages": [{"role": "user", "content": "one"}]});
    let plan_2 =
        json!({"model": "c/m-c2", "fallbacks": ["a/m-a2", "b/m-b2"], "messages": [{"role": "user", "content": "two"}]});
    let mut tasks = Vec::new();
    for i in 0..8 {
        let body = if i % 2 == 0 { plan_1.clone() } else { plan_2.clone() };
        let url = gw.at("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .header("x-mock", fail_all_but_last)
                .json(&body)
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            v["error"]["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| format!("{}/{}", a["provider"].as_str().unwrap(), a["model"].as_str().unwrap()))
                .collect::<Vec<_>>()
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let walked = t.await.unwrap();
        let expected = if i % 2 == 0 {
            ["a/m-a1", "b/m-b1", "c/m-c1"]
        } else {
            ["c/m-c2", "a/m-a2", "b/m-b2"]
        };
        assert_eq!(walked, expected);
    }

    // What the providers recorded proves it: every request a provider received
    // carries the model of its slot in the plan that sent it, and its attempt number.
    let slot_of = |model: &str| match model {
        "m-a1" | "m-c2" => "1",
        "m-b1" | "m-a2" => "2",
        _ => "3",
    };
    for (mock, models) in [(&a, ["m-a1", "m-a2"]), (&b, ["m-b1", "m-b2"]), (&c, ["m-c1", "m-c2"])] {
        let reqs = mock.requests().await;
        assert_eq!(reqs.len(), 8, "{} got {} requests", mock.name, reqs.len());
        for r in reqs {
            let model = r["body"]["model"].as_str().unwrap();
            assert!(models.contains(&model), "{} received model {model}", mock.name);
            let attempt = r["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h[0] == "x-envoy-attempt-count")
                .map(|h| h[1].as_str().unwrap().to_string());
            assert_eq!(attempt.as_deref(), Some(slot_of(model)), "{} {model}", mock.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded_by_the_plan() {
    let paths = Paths::discover();
    let dir = Scratch::new("fallback-bounded");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let gw = Gateway::builder().provider(&a).start(&paths, &dir).await;
    // One target, failing: the router must not retry it (the route allows 3 retries;
    // the planner's x-envoy-max-retries says 0).
    let r = gw.chat(&chat_body("a/gpt"), &[("x-mock", "a:status=503")]).await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["attempts"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["error"]["code"], "server_error");
    assert_eq!(a.requests().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reusing_a_request_id_do_not_mix_their_attempts() {
    let paths = Paths::discover();
    let dir = Scratch::new("fallback-same-id");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Openai, &[]);
    let gw = Gateway::builder().provider(&a).provider(&b).start(&paths, &dir).await;
    // Requests in flight together (the providers answer after 300 ms) with one id.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let url = gw.at("/v1/chat/completions");
        let body = if i % 2 == 0 {
            json!({"model": "a/m1", "fallbacks": ["b/m1"], "messages": [{"role": "user", "content": "x"}]})
        } else {
            json!({"model": "b/m2", "fallbacks": ["a/m2"], "messages": [{"role": "user", "content": "x"}]})
        };
        tasks.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .header("x-request-id", "same-id")
                .header("x-mock", "*:status=503,delay_ms=300")
                .json(&body)
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            (i, v)
        }));
    }
    for t in tasks {
        let (i, v) = t.await.unwrap();
        let walked: Vec<String> = v["error"]["attempts"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|a| format!("{}/{}", a["provider"].as_str().unwrap(), a["model"].as_str().unwrap()))
            .collect();
        let expected = if i % 2 == 0 { ["a/m1", "b/m1"] } else { ["b/m2", "a/m2"] };
        assert_eq!(walked, expected, "{v}");
        assert!(v["error"]["request_id"].as_str().unwrap().starts_with("same-id"), "{v}");
    }
}
