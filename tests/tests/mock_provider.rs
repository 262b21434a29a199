//! The mock provider itself: each dialect's validation, and each misbehaviour the
//! fail-over tests rely on (driven directly, without Envoy).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_tests::harness::sse_data;
use switchyard_tests::mock::{self, Dialect, MockConfig};

async fn start(dialect: Dialect) -> String {
    let mut cfg = MockConfig::new("m", dialect);
    cfg.api_key = Some("k".into());
    let (addr, _task) = mock::serve(cfg, "127.0.0.1:0").await.unwrap();
    format!("http://{addr}")
}

fn openai(base: &str, body: &Value, mock: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("k")
        .header("x-mock", mock)
        .json(body)
}

fn anthropic(base: &str, body: &Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .json(body)
}

#[tokio::test]
async fn openai_dialect_validation() {
    let base = start(Dialect::Openai).await;
    let ok = json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(openai(&base, &ok, "").send().await.unwrap().status(), 200);
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let mut extra = ok.clone();
    extra["fallbacks"] = json!([]);
    let r = openai(&base, &extra, "").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["error"]["message"],
        "Unrecognized request argument supplied: fallbacks"
    );
    // An Anthropic-shaped request to the OpenAI endpoint fails like OpenAI would.
    let r = openai(
        &base,
        &json!({"model": "gpt", "max_tokens": 5, "system": "x", "messages": []}),
        "",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn anthropic_dialect_validation() {
    let base = start(Dialect::Anthropic).await;
    let ok = json!({"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let v: Value = anthropic(&base, &ok).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["type"], "text");
    for (body, msg) in [
        (
            json!({"model": "c", "messages": [{"role": "user", "content": "hi"}]}),
            "max_tokens: Field required",
        ),
        (
            json!({"model": "c", "max_tokens": 1, "messages": [{"role": "system", "content": "x"}]}),
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        (
            json!({"model": "c", "max_tokens": 1, "stream_options": {}, "messages": []}),
            "stream_options: Extra inputs are not permitted",
        ),
    ] {
        let r = anthropic(&base, &body).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], msg);
    }
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "k")
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "anthropic-version is required");
}

#[tokio::test]
async fn misbehaviour_on_demand() {
    let base = start(Dialect::Openai).await;
    let body = json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]});
    let stream = json!({"model": "gpt", "stream": true, "messages": [{"role": "user", "content": "hi"}]});

    let r = openai(&base, &body, "m:status=429,retry_after=3").send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    // Sections for other instances are ignored.
    assert_eq!(
        openai(&base, &body, "other:status=500").send().await.unwrap().status(),
        200
    );

    let t = Instant::now();
    assert_eq!(
        openai(&base, &body, "*:delay_ms=300").send().await.unwrap().status(),
        200
    );
    assert!(t.elapsed() >= Duration::from_millis(300));

    let t = Instant::now();
    let text = openai(&base, &stream, "m:chunk_delay_ms=50")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200), "chunks were not spaced");
    assert_eq!(sse_data(&text).last().map(String::as_str), Some("[DONE]"));

    let hang = openai(&base, &body, "m:hang")
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(hang.unwrap_err().is_timeout());

    let r = openai(&base, &stream, "m:reset_after=2").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.is_err(), "the stream must be cut, not ended");

    let r = openai(&base, &body, "m:malformed").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.is_err());

    let recorded: Value = reqwest::get(format!("{base}/_mock/requests"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(recorded.as_array().unwrap().len(), 7);
    assert_eq!(recorded[0]["body"]["model"], "gpt");
}

#[tokio::test]
async fn fail_rate_fails_a_share() {
    let mut cfg = MockConfig::new("m", Dialect::Anthropic);
    cfg.fail_rate = 0.5;
    cfg.fail_status = 529;
    let (addr, _task) = mock::serve(cfg, "127.0.0.1:0").await.unwrap();
    let body = json!({"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let mut failed = 0;
    for _ in 0..200 {
        let r = anthropic(&format!("http://{addr}"), &body).send().await.unwrap();
        if r.status() == 529 {
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["type"], "overloaded_error");
            failed += 1;
        }
    }
    assert!((60..=140).contains(&failed), "{failed}/200 failed at rate 0.5");
}
