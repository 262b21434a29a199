//! Each failure class is detected (from the status and the provider's own error
//! body) and the route's policy decides: fall over, or return the failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body};

fn served_by(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-switchyard-provider")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

const POLICIES: &str = r#"
  - { model: strict, chain: [a/m-a, b/m-b], policy: { fail_over_on: [server_error] } }
  - { model: safety, chain: [a/m-a, b/m-b], policy: { fail_over_on: [server_error, content_filter] } }
  - { model: safety-an, chain: [c/m-c, b/m-b], policy: { fail_over_on: [content_filter] } }
"#;

async fn gateway(paths: &Paths, dir: &Scratch) -> (Gateway, Mock, Mock, Mock) {
    let a = Mock::start(paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(paths, &dir.0, "b", Dialect::Openai, &[]);
    let c = Mock::start(paths, &dir.0, "c", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .provider(&c)
        .route("chat", &["a/m-a", "b/m-b"])
        .route("chat-an", &["c/m-c", "b/m-b"])
        .yaml(POLICIES)
        .start(paths, dir)
        .await;
    (gw, a, b, c)
}

async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_falls_over_on_auth_and_retired_models_but_not_on_bad_requests() {
    let paths = Paths::discover();
    let dir = Scratch::new("classes-default");
    let (gw, _a, b, _c) = gateway(&paths, &dir).await;

    // A bad request fails everywhere: returned as is, with the provider's status.
    let r = gw.chat(&chat_body("chat"), &[("x-mock", "a:error=bad_request")]).await;
    let (status, v) = error_of(r).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["attempts"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["error"]["attempts"][0]["failure"], "bad_request");
    assert!(v["error"]["message"].as_str().unwrap().contains("temperature"), "{v}");

    // A safety refusal is not routed around unless the route says so; the client
    // sees the provider's status and the class.
    for (model, mock) in [("chat", "a"), ("chat-an", "c")] {
        let r = gw
            .chat(
                &chat_body(model),
                &[("x-mock", &format!("{mock}:error=content_policy"))],
            )
            .await;
        let (status, v) = error_of(r).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["attempts"][0]["failure"], "content_filter", "{v}");
    }
    assert!(b.requests().await.is_empty(), "nothing reached the fallback");

    // Retired models and rejected keys fall over (model first: a rejected key also
    // moves its provider to the back of later plans).
    for (model, mock) in [("chat", "a"), ("chat-an", "c")] {
        for error in ["model_gone", "invalid_key"] {
            let r = gw
                .chat(&chat_body(model), &[("x-mock", &format!("{mock}:error={error}"))])
                .await;
            assert_eq!(r.status(), 200, "{model} {error}");
            assert_eq!(served_by(&r), "b", "{model} {error}");
        }
    }
    assert_eq!(b.requests().await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_policy_limits_what_falls_over() {
    let paths = Paths::discover();
    let dir = Scratch::new("classes-strict");
    let (gw, _a, b, _c) = gateway(&paths, &dir).await;

    // `strict` falls over on server errors only.
    let r = gw.chat(&chat_body("strict"), &[("x-mock", "a:status=503")]).await;
    assert_eq!(served_by(&r), "b");
    let r = gw.chat(&chat_body("strict"), &[("x-mock", "a:status=429")]).await;
    let (status, v) = error_of(r).await;
    assert_eq!(status, 429);
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["attempts"][0]["failure"], "rate_limited");

    // A client can tighten its route's policy, never loosen it.
    let tighten = [
        ("x-mock", "a:status=429"),
        ("x-switchyard-fail-over-on", "server_error,content_filter"),
    ];
    let r = gw.chat(&chat_body("chat"), &tighten).await;
    assert_eq!(r.status(), 429);
    let loosen = [
        ("x-mock", "a:error=content_policy"),
        ("x-switchyard-fail-over-on", "content_filter"),
    ];
    let r = gw.chat(&chat_body("chat"), &loosen).await;
    assert_eq!(r.status(), 400);
    let r = gw
        .chat(&chat_body("chat"), &[("x-switchyard-fail-over-on", "everything")])
        .await;
    let (status, v) = error_of(r).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_policy_header"))
    );
    assert_eq!(b.requests().await.len(), 1);

    // Last, as a rejected key also moves provider a back for later requests.
    let r = gw
        .chat(&chat_body("strict"), &[("x-mock", "a:error=invalid_key")])
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(b.requests().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_filter_falls_over_where_allowed() {
    let paths = Paths::discover();
    let dir = Scratch::new("classes-safety");
    let (gw, _a, b, _c) = gateway(&paths, &dir).await;

    // Refused request (OpenAI 400 content_policy_violation; Anthropic 400 invalid_request_error).
    let r = gw
        .chat(&chat_body("safety"), &[("x-mock", "a:error=content_policy")])
        .await;
    assert_eq!((r.status().as_u16(), served_by(&r)), (200, "b".to_string()));
    let r = gw
        .chat(&chat_body("safety-an"), &[("x-mock", "c:error=content_policy")])
        .await;
    assert_eq!((r.status().as_u16(), served_by(&r)), (200, "b".to_string()));

    // Completed answer cut by the filter (finish_reason / stop_reason).
    let r = gw
        .chat(&chat_body("safety"), &[("x-mock", "a:finish=content_filter")])
        .await;
    assert_eq!((r.status().as_u16(), served_by(&r)), (200, "b".to_string()));
    let r = gw
        .chat(&chat_body("safety-an"), &[("x-mock", "c:finish=content_filter")])
        .await;
    assert_eq!((r.status().as_u16(), served_by(&r)), (200, "b".to_string()));
    assert_eq!(b.requests().await.len(), 4);

    // On the last target, the filtered answer is the answer.
    let r = gw
        .chat(&chat_body("safety"), &[("x-mock", "*:finish=content_filter")])
        .await;
    assert_eq!((r.status().as_u16(), served_by(&r)), (200, "b".to_string()));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");

    // Streams are never held back for the check.
    let mut body = chat_body("safety");
    body["stream"] = json!(true);
    let r = gw.chat(&body, &[("x-mock", "a:finish=content_filter")]).await;
    assert_eq!(served_by(&r), "a");
}
