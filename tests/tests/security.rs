//! A client must never steer credentials, upstream paths or other clients'
//! traffic: each test here is an attack that worked before the gateway stripped
//! client headers by allow-list, validated model ids and kept client-caused
//! failures out of shared state.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, recorded_header, served};

/// A client sending Envoy's own retry/attempt headers: before, `x-envoy-attempt-count: 1`
/// sent attempt 1 to slot 2's cluster while the adapter injected slot 1's key, so the
/// OpenAI key went to the Anthropic host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_envoy_headers_cannot_steer_credentials() {
    let paths = Paths::discover();
    let dir = Scratch::new("sec-steer");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/gpt", "b/claude"])
        .start(&paths, &dir)
        .await;
    let steer = [
        ("x-envoy-attempt-count", "1"),
        ("x-envoy-max-retries", "0"),
        ("x-envoy-retry-on", "5xx"),
        ("x-envoy-upstream-rq-per-try-timeout-ms", "1"),
        ("x-envoy-hedge-on-per-try-timeout", "true"),
        ("x-switchyard-provider", "b"),
        ("x-switchyard-attempts", "7"),
        ("x-switchyard-chain-position", "2"),
        ("x-switchyard-model", "claude"),
    ];
    for _ in 0..3 {
        let r = gw.chat(&chat_body("chat"), &steer).await;
        assert_eq!(r.status(), 200);
        assert_eq!(served(&r), ("a".into(), "1".into()), "the plan decides, not the client");
    }
    assert!(b.requests().await.is_empty(), "nothing may reach slot 2");
    for req in a.requests().await {
        assert_eq!(recorded_header(&req, "authorization"), vec!["Bearer key-a"]);
        assert_eq!(
            recorded_header(&req, "x-envoy-attempt-count"),
            vec!["1"],
            "Envoy's own count"
        );
        for (h, _) in steer.iter().filter(|(h, _)| h.starts_with("x-switchyard")) {
            assert!(recorded_header(&req, h).is_empty(), "{h} reached the provider");
        }
    }

    // With a real fail-over, each attempt carries its own provider's key only.
    let mut headers = steer.to_vec();
    headers.push(("x-mock", "a:status=503"));
    let r = gw.chat(&chat_body("chat"), &headers).await;
    assert_eq!(served(&r), ("b".into(), "2".into()));
    let rb = &b.requests().await[0];
    assert_eq!(recorded_header(rb, "x-api-key"), vec!["key-b"]);
    assert!(recorded_header(rb, "authorization").is_empty(), "{rb}");
    assert!(!rb.to_string().contains("key-a"), "{rb}");
}

/// Forwarding is an allow-list: whatever else a client sends reaches no provider,
/// in any dialect; a header configured for one provider reaches that one only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allow_listed_client_headers_reach_providers() {
    let paths = Paths::discover();
    let dir = Scratch::new("sec-headers");
    let mocks: Vec<Mock> = Dialect::ALL
        .iter()
        .enumerate()
        .map(|(i, d)| Mock::start(&paths, &dir.0, &format!("p{i}"), *d, &[]))
        .collect();
    let mut builder = Gateway::builder();
    for m in &mocks {
        builder = builder.provider(m);
    }
    // p1 (Anthropic) forwards the client's anthropic-beta; nobody else does.
    let gw = builder
        .credentials("p1", "api_key: { value: key-p1 }, forward_headers: [anthropic-beta]")
        .yaml("routes:\n  - { model: chat, chain: [p0/gpt, p1/claude] }\n")
        .start(&paths, &dir)
        .await;

    let hostile = [
        ("proxy-authorization", "Basic EVIL"),
        ("x-goog-user-project", "EVIL-project"),
        ("x-amz-security-token", "EVIL"),
        ("x-evil", "EVIL"),
        ("cookie", "session=EVIL"),
        ("authorization", "Bearer EVIL"),
        ("x-api-key", "EVIL"),
        ("forwarded", "for=EVIL"),
        ("x-forwarded-host", "EVIL.example"),
        ("x-envoy-original-path", "/EVIL"),
        ("anthropic-beta", "tools-EVIL"),
    ];
    for (i, m) in mocks.iter().enumerate() {
        let model = match m.dialect {
            Dialect::Bedrock => "anthropic.claude-v2",
            _ => "model-x",
        };
        let r = gw.chat(&chat_body(&format!("p{i}/{model}")), &hostile).await;
        assert_eq!(r.status(), 200, "{:?}: {}", m.dialect, r.text().await.unwrap());
    }
    // Through the route: p0 fails, p1 (which forwards anthropic-beta) answers.
    let mut with_failure = hostile.to_vec();
    with_failure.push(("x-mock", "p0:status=503"));
    let r = gw.chat(&chat_body("chat"), &with_failure).await;
    assert_eq!(served(&r), ("p1".into(), "2".into()));

    for m in &mocks {
        for req in m.requests().await {
            let headers = req["headers"].as_array().unwrap();
            for h in headers {
                let (name, value) = (h[0].as_str().unwrap(), h[1].as_str().unwrap());
                if name == "anthropic-beta" && m.name == "p1" {
                    assert_eq!(value, "tools-EVIL", "configured for p1");
                    continue;
                }
                assert!(
                    !value.contains("EVIL") && !name.contains("evil"),
                    "{:?} received client header {name}: {value}",
                    m.dialect
                );
            }
        }
    }
    let p1 = mocks[1].requests().await;
    assert!(
        p1.iter()
            .any(|r| recorded_header(r, "anthropic-beta") == vec!["tools-EVIL"]),
        "the forwarded header reached the provider that forwards it"
    );
}

/// Model ids in URL paths: a direct target's model can no longer rewrite the
/// provider path (another endpoint, query string, fragment) with the org's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_ids_cannot_reach_other_provider_endpoints() {
    let paths = Paths::discover();
    let dir = Scratch::new("sec-model");
    let g = Mock::start(&paths, &dir.0, "g", Dialect::Gemini, &[]);
    let z = Mock::start(&paths, &dir.0, "z", Dialect::AzureOpenai, &[]);
    let v = Mock::start(&paths, &dir.0, "v", Dialect::Vertex, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Bedrock, &[]);
    let gw = Gateway::builder()
        .provider(&g)
        .provider(&z)
        .provider(&v)
        .provider(&b)
        .start(&paths, &dir)
        .await;
    for model in [
        "g/../../v1beta/cachedContents?x=",
        "g/gemini-2.0-flash:streamGenerateContent?alt=sse#",
        "g/gemini%2F..",
        "z/dep/../../openai/files",
        "z/dep?api-version=1",
        "v/../../../../locations/x/models/y",
        "v/gemini 2",
        "b/../../guardrail/x",
        "b/model#x",
    ] {
        let r = gw.chat(&chat_body(model), &[]).await;
        assert_eq!(r.status(), 400, "{model}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_model", "{model}: {v}");
        assert!(v["error"]["request_id"].as_str().is_some_and(|s| !s.is_empty()));
        // The same name as a fallback.
        let mut body = chat_body("g/gemini-2.0-flash");
        body["fallbacks"] = json!([model]);
        let r = gw.chat(&body, &[]).await;
        assert_eq!(r.status(), 400, "fallback {model}");
    }
    for m in [&g, &z, &v, &b] {
        assert!(m.requests().await.is_empty(), "{} was called", m.name);
    }
    // Valid ids with `:` and `@` are encoded as one path segment.
    let r = gw
        .chat(&chat_body("b/us.anthropic.claude-3-5-haiku-20241022-v1:0"), &[])
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        b.requests().await[0]["path"],
        "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    );
}

/// Failures the client caused must not move traffic for everyone: its own tight
/// first-byte timeout, and direct targets (names of its choosing) that the
/// provider rejects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_caused_failures_do_not_count_against_providers() {
    let paths = Paths::discover();
    let dir = Scratch::new("sec-circuit");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .yaml("routes:\n  - { model: chat, chain: [a/m-a, b/m-b], policy: { first_byte_timeout_ms: 3000 } }\n")
        .yaml("circuit_breaker: { consecutive_failures: 3, base_open_ms: 10000, max_open_ms: 60000 }\n")
        .start(&paths, &dir)
        .await;
    // Six requests whose own limit (100 ms) the (slow but healthy) primary cannot meet.
    for _ in 0..6 {
        let r = gw
            .chat(
                &chat_body("chat"),
                &[
                    ("x-switchyard-first-byte-timeout-ms", "100"),
                    ("x-mock", "a:delay_ms=400"),
                ],
            )
            .await;
        assert_eq!(served(&r), ("b".into(), "2".into()));
    }
    // Six direct requests for models of the client's choosing that the provider
    // rejects (here: as an invalid key, which cools a provider for everyone; and
    // server errors, which trip circuits).
    for i in 0..6 {
        let mut body = chat_body(&format!("a/made-up-{i}"));
        body["fallbacks"] = json!(["b/m-b"]);
        let fault = if i % 2 == 0 {
            "a:error=invalid_key"
        } else {
            "a:status=500"
        };
        let r = gw.chat(&body, &[("x-mock", fault)]).await;
        assert_eq!(served(&r), ("b".into(), "2".into()));
    }
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    // Everyone else still goes to the healthy primary first.
    for _ in 0..20 {
        let r = gw.chat(&chat_body("chat"), &[]).await;
        assert_eq!(served(&r), ("a".into(), "1".into()), "the primary was moved back");
    }
    assert_eq!(
        gw.filter_stat("switchyard_circuit_transitions_total.provider.a.model.m-a.to.open")
            .await
            .unwrap_or(0),
        0
    );
    // The client's model names became no stat (labels are bounded).
    let stats = reqwest::get(format!("{}/stats", gw.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!stats.contains("made-up"), "a client's name became a stat");
    assert!(
        gw.filter_stat("switchyard_attempts_total.provider.a.model._direct.result.server_error")
            .await
            .unwrap_or(0)
            >= 3
    );
}
