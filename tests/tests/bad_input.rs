//! Bad input gets an OpenAI-shaped error with the request id; nothing reaches a
//! provider; nothing kills the Wasm VM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body};

async fn expect_error(r: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status(), status);
    let rid = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(!rid.is_empty(), "x-request-id header missing");
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert_eq!(v["error"]["request_id"], rid.as_str(), "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["error"]["type"].is_string(), "{v}");
    v
}

async fn post_raw(gw: &Gateway, body: impl Into<reqwest::Body>) -> reqwest::Response {
    reqwest::Client::new()
        .post(gw.at("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_rejected_before_any_provider() {
    let paths = Paths::discover();
    let dir = Scratch::new("bad-input");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/gpt"])
        .yaml("limits: { max_request_bytes: 4096 }\n")
        .start(&paths, &dir)
        .await;

    expect_error(post_raw(&gw, "{\"model\": \"chat\", ").await, 400, "invalid_json").await;
    expect_error(post_raw(&gw, "[1, 2]").await, 400, "invalid_request").await;
    // The gateway's own answers are counted apart from providers' failures.
    assert_eq!(
        gw.filter_stat("switchyard_rejections_total.reason.invalid_json").await,
        Some(1)
    );
    assert_eq!(
        gw.filter_stat("switchyard_requests_total.route._none.endpoint.chat.outcome.rejected.status_class.4xx")
            .await,
        Some(2)
    );
    expect_error(
        gw.chat(&json!({"messages": [{"role": "user", "content": "x"}]}), &[])
            .await,
        400,
        "missing_required_parameter",
    )
    .await;
    expect_error(
        gw.chat(&json!({"model": "chat"}), &[]).await,
        400,
        "missing_required_parameter",
    )
    .await;
    expect_error(
        gw.chat(&json!({"model": 5, "messages": []}), &[]).await,
        400,
        "invalid_type",
    )
    .await;
    expect_error(
        gw.chat(&json!({"model": "chat", "messages": "hi"}), &[]).await,
        400,
        "invalid_type",
    )
    .await;
    let mut b = chat_body("chat");
    b["fallbacks"] = json!(["nosuch/model"]);
    let v = expect_error(gw.chat(&b, &[]).await, 400, "invalid_fallback").await;
    assert!(v["error"]["message"].as_str().unwrap().contains("nosuch/model"));
    b["fallbacks"] = json!("a/gpt");
    expect_error(gw.chat(&b, &[]).await, 400, "invalid_type").await;
    let v = expect_error(gw.chat(&chat_body("gpt-9"), &[]).await, 404, "model_not_found").await;
    assert_eq!(v["error"]["type"], "invalid_request_error");

    // Over the limit: declared by content-length, and streamed without one.
    let big = json!({"model": "chat", "messages": [{"role": "user", "content": "x".repeat(5000)}]}).to_string();
    expect_error(post_raw(&gw, big.clone()).await, 413, "request_too_large").await;
    let chunks: Vec<Result<String, std::io::Error>> = big
        .as_bytes()
        .chunks(1000)
        .map(|c| Ok(String::from_utf8_lossy(c).into_owned()))
        .collect();
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    expect_error(post_raw(&gw, streamed).await, 413, "request_too_large").await;

    // Unsupported endpoints and methods.
    let r = reqwest::Client::new()
        .post(gw.at("/v1/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "unsupported_endpoint").await;
    let r = reqwest::get(gw.at("/v1/chat/completions")).await.unwrap();
    expect_error(r, 405, "method_not_allowed").await;

    assert!(a.requests().await.is_empty(), "nothing may reach a provider");

    // The gateway still serves.
    let r = gw.chat(&chat_body("chat"), &[]).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_does_not_kill_the_vm() {
    let paths = Paths::discover();
    let dir = Scratch::new("bad-input-vm");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/claude"])
        .start(&paths, &dir)
        .await;

    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bodies: Vec<Vec<u8>> = vec![
        deep.into_bytes(),
        b"{\"model\": \"chat\", \"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}".to_vec(),
        b"{\"model\": \"chat\", \"messages\": [{\"role\": \"user\", \"content\": 1e999999}]}".to_vec(),
        br#"{"model": "chat", "messages": [{"role": "wizard", "content": "x"}]}"#.to_vec(),
        br#"{"model": "chat", "messages": [{"role": "user", "content": [{"type": "video"}]}]}"#.to_vec(),
        br#"{"model": "chat", "messages": [{"content": {"a": 1}}]}"#.to_vec(),
        br#"{"model": "a/x,y", "messages": [{"role": "user", "content": "x"}]}"#.to_vec(),
        br#"{"model": "chat", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}"#.to_vec(),
        vec![0u8; 3000],
    ];
    for body in bodies {
        let r = post_raw(&gw, body.clone()).await;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            v["error"]["message"].is_string(),
            "body {:?} gave {status} {v}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
    }
    // Non-UTF-8 header values the filter reads.
    let mut h = HeaderMap::new();
    h.insert("x-request-id", HeaderValue::from_bytes(b"id-\xff\xfe").unwrap());
    let r = reqwest::Client::new()
        .post(gw.at("/v1/chat/completions"))
        .headers(h)
        .json(&chat_body("chat"))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success() || r.status().is_client_error(),
        "{}",
        r.status()
    );

    // Every later request is still served.
    for _ in 0..5 {
        let r = gw.chat(&chat_body("chat"), &[]).await;
        assert_eq!(r.status(), 200);
    }
    let log = gw.envoys[0].output();
    assert!(!log.contains("panicked"), "the filter panicked:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_the_routes() {
    let paths = Paths::discover();
    let dir = Scratch::new("bad-input-models");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/gpt-x"])
        .start(&paths, &dir)
        .await;
    let v: Value = reqwest::get(gw.at("/v1/models")).await.unwrap().json().await.unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["chat", "a/gpt-x"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_within_the_limit_fail_over_intact() {
    let paths = Paths::discover();
    let dir = Scratch::new("bad-input-large");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-a", "b/m-b"])
        .start(&paths, &dir)
        .await;
    // 3 MB of text: above Envoy's 1 MB default buffers, below the 10 MB limit.
    let text = "lorem ipsum ".repeat(256 * 1024);
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": text}]});
    let r = gw.chat(&body, &[("x-mock", "a:status=503")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-provider"], "b");
    let reqs = b.requests().await;
    assert_eq!(
        reqs[0]["body"]["messages"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .len(),
        text.len()
    );
    assert_eq!(
        a.requests().await[0]["body"]["messages"][0]["content"]
            .as_str()
            .unwrap()
            .len(),
        text.len()
    );
}

/// A gateway 4xx keeps the HTTP/1.1 connection: a valid request the client
/// pipelined behind a bad one is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_4xx_does_not_drop_a_pipelined_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let paths = Paths::discover();
    let dir = Scratch::new("bad-input-pipeline");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/m"])
        .start(&paths, &dir)
        .await;
    let port = gw.url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let good = chat_body("chat").to_string();
    let post = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    for (first, status) in [
        (post("/v1/chat/completions", "{\"model\":"), "400"),
        (
            post(
                "/v1/chat/completions",
                r#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#,
            ),
            "404",
        ),
        (post("/v1/unknown", "{}"), "404"),
        (
            post(
                "/v1/chat/completions",
                r#"{"model":"chat","messages":[],"temperature":"hot"}"#,
            ),
            "400",
        ),
    ] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(format!("{first}{}", post("/v1/chat/completions", &good)).as_bytes())
            .await
            .unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut buf = [0u8; 8192];
        while std::time::Instant::now() < deadline {
            let text = String::from_utf8_lossy(&got).into_owned();
            if text.matches("HTTP/1.1 ").count() >= 2 && text.contains("\"chat.completion\"") {
                break;
            }
            match tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
        assert!(!text.to_ascii_lowercase().contains("connection: close"), "{text}");
        assert!(
            text.matches("HTTP/1.1 200").count() == 1 && text.contains("\"chat.completion\""),
            "the pipelined request was dropped: {text}"
        );
    }
}
