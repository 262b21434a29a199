//! Streaming through fail-over, across dialects: an OpenAI-dialect primary fails,
//! an Anthropic-dialect fallback answers, and the client sees one valid OpenAI
//! chunk stream with usage, ending in `[DONE]`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, sse_data};

fn chunks(text: &str) -> Vec<Value> {
    let data = sse_data(text);
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "stream must end with [DONE]:\n{text}"
    );
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("bad chunk {d}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_primary_fails_anthropic_streams_openai_chunks_with_usage() {
    let paths = Paths::discover();
    let dir = Scratch::new("streaming-cross");
    let a = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["oa/gpt-4o-mini", "an/claude-haiku"])
        .start(&paths, &dir)
        .await;

    let body = json!({
        "model": "chat",
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello to the world"}
        ]
    });
    let r = gw
        .chat(&body, &[("x-mock", "oa:status=503;an:chunk_delay_ms=20")])
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.headers()["x-switchyard-provider"], "an");
    let text = r.text().await.unwrap();
    let chunks = chunks(&text);
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk", "{c}");
        assert_eq!(c["model"], "claude-haiku");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello from an (claude-haiku). [system: You are terse.]");
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, vec![&json!("stop")]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 8, "{text}");
    assert_eq!(usage["prompt_tokens"], 8, "system (3 words) + user (5 words): {text}");
    assert_eq!(usage["total_tokens"], 16);

    // The Anthropic mock received a real Messages request.
    let reqs = b.requests().await;
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(req["path"], "/v1/messages");
    assert_eq!(req["body"]["system"], "You are terse.");
    assert_eq!(req["body"]["stream"], true);
    assert_eq!(req["body"]["max_tokens"], 4096);
    assert!(req["body"].get("stream_options").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_primary_fails_openai_streams_through_untouched() {
    let paths = Paths::discover();
    let dir = Scratch::new("streaming-reverse");
    let a = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let b = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let gw = Gateway::builder().provider(&a).provider(&b).start(&paths, &dir).await;

    let body = json!({
        "model": "an/claude-haiku",
        "fallbacks": ["oa/gpt-4o-mini"],
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]
    });
    let r = gw.chat(&body, &[("x-mock", "an:status=529")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-provider"], "oa");
    let chunks = chunks(&r.text().await.unwrap());
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello from oa (gpt-4o-mini).");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 4);
    // `fallbacks` is the gateway's: the OpenAI mock rejects unknown arguments, so it
    // must not have arrived.
    let reqs = b.requests().await;
    assert!(reqs[0]["body"].get("fallbacks").is_none());
    assert_eq!(reqs[0]["body"]["model"], "gpt-4o-mini");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_json_answer_is_translated() {
    let paths = Paths::discover();
    let dir = Scratch::new("streaming-json");
    let b = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let gw = Gateway::builder().provider(&b).start(&paths, &dir).await;
    let r = gw
        .chat(
            &json!({"model": "an/claude-x", "max_tokens": 50, "messages": [{"role": "user", "content": "one two"}]}),
            &[],
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from an (claude-x).");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6})
    );
    assert_eq!(b.requests().await[0]["body"]["max_tokens"], 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_short_ends_with_an_error_event_not_silently() {
    let paths = Paths::discover();
    let dir = Scratch::new("streaming-truncated");
    let a = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let gw = Gateway::builder().provider(&a).provider(&b).start(&paths, &dir).await;
    // Cut after the first content: committed, so it ends with an error event.
    for (model, mock) in [("oa/gpt", "oa"), ("an/claude", "an")] {
        let body = json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        let r = gw.chat(&body, &[("x-mock", &format!("{mock}:end_after=5"))]).await;
        assert_eq!(r.status(), 200);
        let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let text = r.text().await.unwrap();
        let data = sse_data(&text);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{model}: {text}");
        let err: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
        assert_eq!(err["error"]["code"], "stream_truncated", "{model}: {text}");
        assert_eq!(err["error"]["request_id"], rid.as_str());
        // What came before the error is intact.
        for d in &data[..data.len() - 2] {
            let c: Value = serde_json::from_str(d).unwrap();
            assert_eq!(c["object"], "chat.completion.chunk");
        }
    }
    // Cut before any content: not an answer yet, so the client gets an error
    // status (with a target left, it would fall over) and never a 200.
    for (model, mock) in [("oa/gpt", "oa"), ("an/claude", "an")] {
        let body = json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        let r = gw.chat(&body, &[("x-mock", &format!("{mock}:end_after=1"))]).await;
        assert_eq!(r.status(), 502, "{model}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["attempts"][0]["failure"], "bad_response", "{v}");
    }
    // A complete stream gets no such event.
    let body = json!({"model": "oa/gpt", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let text = gw.chat(&body, &[]).await.text().await.unwrap();
    assert!(!text.contains("stream_truncated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_reset_mid_stream_is_never_silent() {
    let paths = Paths::discover();
    let dir = Scratch::new("streaming-reset");
    let a = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let gw = Gateway::builder().provider(&a).provider(&b).start(&paths, &dir).await;
    // Reset after the first content: the stream was committed to the client.
    for (model, mock) in [("oa/gpt", "oa"), ("an/claude", "an")] {
        let body = json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        let t = std::time::Instant::now();
        let r = gw.chat(&body, &[("x-mock", &format!("{mock}:reset_after=5"))]).await;
        assert_eq!(r.status(), 200);
        // Envoy resets the client's stream (no filter can add bytes after an
        // upstream reset): the client's HTTP stack reports an error, it never
        // sees a stream that looks complete.
        assert!(
            r.text().await.is_err(),
            "{model}: a reset stream must not read as complete"
        );
        // And it learns at once (no delayed close of the connection).
        assert!(
            t.elapsed() < std::time::Duration::from_millis(600),
            "{model}: the reset reached the client after {:?}",
            t.elapsed()
        );
    }
}

/// `on_stream_failure: continue`: a committed stream that fails is finished by the
/// plan's next target, spliced into the same stream (one well-formed stream, the
/// targets that served named in its last chunk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_stream_is_continued_by_the_next_target_when_the_route_says_so() {
    let paths = Paths::discover();
    let dir = Scratch::new("streaming-continue");
    let an = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let oa = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&an)
        .provider(&oa)
        .yaml("routes:\n  - { model: story, chain: [an/claude, oa/gpt], policy: { on_stream_failure: continue } }\n  - { model: plain, chain: [an/claude, oa/gpt] }\n")
        .start(&paths, &dir)
        .await;
    let body = |model: &str| {
        json!({"model": model, "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Tell me"}]})
    };
    // The Anthropic stream gives two words, then its error.
    let fault = [("x-mock", "an:chunk_delay_ms=60,error_event_after=6")];
    let r = gw.chat(&body("story"), &fault).await;
    assert_eq!(r.status(), 200);
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks.iter().all(|c| c.get("error").is_none()),
        "no error reached the client: {data:?}"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(text.starts_with("Hello from"), "{text}");
    assert!(text.contains("from oa"), "the continuation is spliced in: {text}");
    let last = chunks.iter().rev().find(|c| c.get("x_switchyard").is_some()).unwrap();
    assert_eq!(last["x_switchyard"]["served_by"], json!(["an/claude", "oa/gpt"]));
    assert!(chunks.last().unwrap()["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    // The next target was asked for the rest: not streamed, the words so far as the
    // assistant's, and (OpenAI has no prefill) an instruction to go on.
    let asked = &oa.requests().await[0]["body"];
    assert!(asked.get("stream").is_none() || asked["stream"] == false, "{asked}");
    let msgs = asked["messages"].as_array().unwrap();
    assert_eq!(msgs[msgs.len() - 2]["role"], "assistant");
    assert!(
        msgs[msgs.len() - 2]["content"]
            .as_str()
            .unwrap()
            .starts_with("Hello from"),
        "{asked}"
    );
    assert_eq!(msgs[msgs.len() - 1]["role"], "user");

    // When the continuation fails too, the stream ends with the first error.
    let r = gw
        .chat(
            &body("story"),
            &[("x-mock", "an:chunk_delay_ms=60,error_event_after=6;oa:status=500")],
        )
        .await;
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let err: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "provider_stream_error", "{data:?}");

    // Without the policy: the error event, and nobody is asked to continue.
    let before = oa.requests().await.len();
    let r = gw.chat(&body("plain"), &fault).await;
    let data = sse_data(&r.text().await.unwrap());
    let err: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "provider_stream_error");
    assert_eq!(oa.requests().await.len(), before);
}
