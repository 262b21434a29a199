//! Google Gemini: request translation (contents, systemInstruction,
//! generationConfig), `x-goog-api-key`, JSON and `alt=sse` streaming answers
//! translated to OpenAI's format, Gemini's error statuses classified; fail-over
//! both ways.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, recorded_header, served, sse_data};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_both_ways_streaming_and_errors() {
    let paths = Paths::discover();
    let dir = Scratch::new("gemini");
    let oa = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let ge = Mock::start(&paths, &dir.0, "ge", Dialect::Gemini, &[]);
    let an = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&oa)
        .provider(&ge)
        .provider(&an)
        .route("chat", &["oa/gpt-4o", "ge/gemini-2.0-flash"])
        .route("gemini-first", &["ge/gemini-2.0-flash", "an/claude"])
        .start(&paths, &dir)
        .await;

    // OpenAI fails -> Gemini streams.
    let body = json!({
        "model": "chat", "stream": true, "stream_options": {"include_usage": true}, "max_tokens": 64,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    });
    let r = gw.chat(&body, &[("x-mock", "oa:status=502")]).await;
    assert_eq!(served(&r), ("ge".into(), "2".into()));
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    // The system prompt reached Gemini's systemInstruction (the mock echoes it).
    assert_eq!(content, "Hello from ge (gemini-2.0-flash). [system: Be brief.]");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 7);
    let req = &ge.requests().await[0];
    assert_eq!(
        req["path"],
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        recorded_header(req, "x-goog-api-key").first().cloned().as_deref(),
        Some("key-ge")
    );
    assert_eq!(recorded_header(req, "authorization").first().cloned(), None);
    assert_eq!(req["body"]["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(req["body"]["generationConfig"]["maxOutputTokens"], 64);

    // Gemini JSON answer.
    let v: Value = gw
        .chat(&chat_body("ge/gemini-2.0-flash"), &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from ge (gemini-2.0-flash)."
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // Gemini fails -> Anthropic; each Gemini error is classified.
    for (mock, class) in [
        ("ge:status=503", "server_error"),
        ("ge:error=model_gone", "model_unavailable"),
        ("ge:error=invalid_key", "auth"),
        ("ge:status=429", "rate_limited"),
    ] {
        let r = gw.chat(&chat_body("gemini-first"), &[("x-mock", mock)]).await;
        assert_eq!(served(&r).0, "an", "{mock}");
        let v: Value = gw
            .chat(&chat_body("ge/gemini-2.0-flash"), &[("x-mock", mock)])
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["error"]["attempts"][0]["failure"], class, "{mock}: {v}");
    }
    // A safety stop is reported as OpenAI's content_filter.
    let v: Value = gw
        .chat(
            &chat_body("ge/gemini-2.0-flash"),
            &[("x-mock", "ge:finish=content_filter")],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter", "{v}");
}
