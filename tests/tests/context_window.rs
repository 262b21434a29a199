//! A prompt too long for a model (`context_length`) falls over to the next
//! target: each provider's own "prompt too long" error is recognised, counted in
//! `switchyard_attempts_total{result="context_length"}`, and the client gets the
//! next target's answer; a mock with a small context window (`context_window=N`)
//! refuses long prompts only, so the fall-over follows the prompt's size.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, served, sse_data};

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The assistant's text of a chat answer, JSON or streamed.
fn content(text: &str, stream: bool) -> String {
    if !stream {
        let v: Value = serde_json::from_str(text).unwrap();
        return v["choices"][0]["message"]["content"].as_str().unwrap_or("").to_string();
    }
    let data = sse_data(text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect()
}

async fn stat(gw: &Gateway, name: &str) -> u64 {
    gw.filter_stat(name).await.unwrap_or(0)
}

/// Every dialect's context-length error, as the primary of a route whose
/// fallback answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_providers_prompt_too_long_error_falls_over() {
    let paths = Paths::discover();
    let dir = Scratch::new("context-length");
    let primaries = [
        (Dialect::Openai, "oa", "gpt-4o-mini"),
        (Dialect::AzureOpenai, "az", "gpt-4o-deployment"),
        (Dialect::Anthropic, "an", "claude-haiku"),
        (Dialect::Gemini, "ge", "gemini-flash"),
        (Dialect::Vertex, "vx", "gemini-flash-001"),
        (Dialect::Bedrock, "br", "claude-haiku-v1"),
    ];
    let mocks: Vec<Mock> = primaries
        .iter()
        .map(|(d, name, _)| Mock::start(&paths, &dir.0, name, *d, &[]))
        .collect();
    let fb = Mock::start(&paths, &dir.0, "fb", Dialect::Openai, &[]);
    let mut builder = Gateway::builder().provider(&fb);
    for m in &mocks {
        builder = builder.provider(m);
    }
    for (_, name, model) in primaries {
        builder = builder.route(&format!("ctx-{name}"), &[&format!("{name}/{model}"), "fb/gpt-4o-large"]);
    }
    let gw = builder.start(&paths, &dir).await;

    for ((_, name, model), mock) in primaries.iter().zip(&mocks) {
        for stream in [false, true] {
            let body = json!({"model": format!("ctx-{name}"), "stream": stream,
                "messages": [{"role": "user", "content": "Summarise this long document"}]});
            let fault = format!("{name}:error=context_length");
            let r = gw.chat(&body, &[("x-mock", &fault)]).await;
            assert_eq!(r.status(), 200, "{name} stream={stream}");
            assert_eq!(served(&r).0, "fb", "{name}: served by the second target");
            assert_eq!(header(&r, "x-switchyard-chain-position"), "2", "{name}");
            let text = r.text().await.unwrap();
            assert_eq!(
                content(&text, stream),
                "Hello from fb (gpt-4o-large).",
                "{name}: {text}"
            );
        }
        // The primary was asked, and refused the prompt (its own error, not a 5xx).
        assert_eq!(mock.requests().await.len(), 2, "{name}");
        assert_eq!(
            stat(
                &gw,
                &format!("switchyard_attempts_total.provider.{name}.model.{model}.result.context_length")
            )
            .await,
            2,
            "{name}: both refusals counted as context_length"
        );
        assert_eq!(
            stat(
                &gw,
                &format!("switchyard_attempts_total.provider.{name}.model.{model}.result.server_error")
            )
            .await,
            0,
            "{name}"
        );
    }
    assert_eq!(
        stat(
            &gw,
            "switchyard_attempts_total.provider.fb.model.gpt-4o-large.result.success"
        )
        .await,
        12
    );
    assert_eq!(fb.requests().await.len(), 12);
}

/// `context_window=N` on the first target only: a long prompt falls over, a
/// short one is served by the first; the same for Messages and Responses
/// clients (whose native targets answer in their own API's words).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_over_the_first_targets_window_falls_over_by_size() {
    let paths = Paths::discover();
    let dir = Scratch::new("context-window");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("win", &["a/gpt-small", "b/claude-large"])
        .route("win-rev", &["b/claude-small", "a/gpt-large"])
        .start(&paths, &dir)
        .await;
    // 50 tokens is 200 bytes of text (the mock estimates bytes / 4).
    let window = [("x-mock", "a:context_window=50")];
    let short = "Say hello";
    let long = "Summarise this long document, please. ".repeat(12);
    assert!(long.len() > 50 * 4);

    for stream in [false, true] {
        let ask =
            |text: &str| json!({"model": "win", "stream": stream, "messages": [{"role": "user", "content": text}]});
        let r = gw.chat(&ask(short), &window).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            served(&r).0,
            "a",
            "a short prompt fits the first target (stream={stream})"
        );
        assert_eq!(content(&r.text().await.unwrap(), stream), "Hello from a (gpt-small).");
        let r = gw.chat(&ask(&long), &window).await;
        assert_eq!(r.status(), 200);
        assert_eq!(served(&r).0, "b", "a long prompt falls over (stream={stream})");
        assert_eq!(header(&r, "x-switchyard-chain-position"), "2");
        assert_eq!(
            content(&r.text().await.unwrap(), stream),
            "Hello from b (claude-large)."
        );
    }
    assert_eq!(
        stat(
            &gw,
            "switchyard_attempts_total.provider.a.model.gpt-small.result.context_length"
        )
        .await,
        2
    );
    assert_eq!(
        stat(
            &gw,
            "switchyard_attempts_total.provider.a.model.gpt-small.result.success"
        )
        .await,
        2
    );
    // The first target was asked every time (and refused the long prompts).
    assert_eq!(a.requests().await.len(), 4);
    assert_eq!(b.requests().await.len(), 2);

    // Only the first has the small window (the x-mock section names it): a long
    // prompt on the reversed route falls over from b to a.
    let r = gw
        .chat(
            &json!({"model": "win-rev", "messages": [{"role": "user", "content": long}]}),
            &[("x-mock", "b:context_window=50")],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(served(&r).0, "a");
    assert_eq!(
        stat(
            &gw,
            "switchyard_attempts_total.provider.b.model.claude-small.result.context_length"
        )
        .await,
        1
    );

    // A Messages client: its native (Anthropic) target refuses in Anthropic's
    // words, the OpenAI fallback answers, in Messages' shape.
    let client = reqwest::Client::new();
    let body = json!({"model": "win-rev", "max_tokens": 256, "messages": [{"role": "user", "content": long}]});
    let r = client
        .post(gw.at("/v1/messages"))
        .header("x-mock", "b:context_window=50")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(served(&r).0, "a");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["content"][0]["text"], "Hello from a (gpt-large).", "{v}");
    assert_eq!(
        stat(
            &gw,
            "switchyard_attempts_total.provider.b.model.claude-small.result.context_length"
        )
        .await,
        2
    );
    // A Responses client: its native (OpenAI) target refuses in the Responses
    // API's words, the Anthropic fallback answers, as a `response`.
    for stream in [false, true] {
        let body = json!({"model": "win", "input": long, "stream": stream});
        let r = client
            .post(gw.at("/v1/responses"))
            .header("x-mock", "a:context_window=50")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(served(&r).0, "b", "stream={stream}");
        let text = r.text().await.unwrap();
        let said = if stream {
            // The Responses stream's last event holds the whole response.
            let last = sse_data(&text).pop().unwrap();
            serde_json::from_str::<Value>(&last).unwrap()["response"].clone()
        } else {
            serde_json::from_str::<Value>(&text).unwrap()
        };
        assert_eq!(said["status"], "completed", "{text}");
        assert_eq!(
            said["output"][0]["content"][0]["text"], "Hello from b (claude-large).",
            "{text}"
        );
    }
    assert_eq!(
        stat(
            &gw,
            "switchyard_attempts_total.provider.a.model.gpt-small.result.context_length"
        )
        .await,
        4
    );

    // Too long for every target: the client gets the refusal, as a 400 (the
    // provider's status), with the attempts.
    let r = gw
        .chat(
            &json!({"model": "win", "messages": [{"role": "user", "content": long}]}),
            &[("x-mock", "a:context_window=50;b:context_window=50")],
        )
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "all_attempts_failed", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("2 attempts failed"), "{message}");
    assert!(message.contains("context_length"), "{message}");
}

/// With `models:` windows configured: a prompt surely over a target's window
/// never goes there; a target that refuses a prompt as too long leaves out of
/// the rest of the plan every target whose window is no larger (never the same
/// window twice); and `/v1/models` tells clients each model's window, owner
/// and release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_windows_keep_prompts_off_targets_they_do_not_fit() {
    let paths = Paths::discover();
    let dir = Scratch::new("context-configured");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let c = Mock::start(&paths, &dir.0, "c", Dialect::Gemini, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .provider(&c)
        .route("chat", &["a/small", "b/same", "c/large"])
        .yaml(concat!(
            "models:\n",
            "  a/small: { context_window: 200, owned_by: openai, created: 1715367049 }\n",
            "  b/same: { context_window: 200 }\n",
            "  c/large: { context_window: 1000000, created: 1733184000 }\n",
        ))
        .start(&paths, &dir)
        .await;
    let body = |words: usize| {
        json!({"model": "chat", "max_tokens": 20,
               "messages": [{"role": "user", "content": "word ".repeat(words)}]})
    };

    // About 1 250 tokens: only c's window takes it; a and b are never asked.
    let r = gw.chat(&body(1000), &[]).await;
    assert_eq!(served(&r), ("c".into(), "1".into()));
    assert!(a.requests().await.is_empty() && b.requests().await.is_empty());

    // Short enough by the estimate, but a says it is too long: b (the same
    // window) is skipped, c answers as the second attempt.
    let r = gw.chat(&body(10), &[("x-mock", "a:error=context_length")]).await;
    assert_eq!(header(&r, "x-switchyard-provider"), "c");
    assert_eq!(header(&r, "x-switchyard-attempts"), "2");
    assert_eq!(a.requests().await.len(), 1);
    assert!(b.requests().await.is_empty(), "the same window was tried again");
    assert_eq!(
        stat(
            &gw,
            "switchyard_attempts_total.provider.a.model.small.result.context_length"
        )
        .await,
        1
    );

    // Too long for every window: the gateway says so, nothing is sent.
    let mut huge = body(10);
    huge["max_tokens"] = json!(2_000_000);
    let r = gw.chat(&huge, &[]).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
    assert_eq!(c.requests().await.len(), 2);

    let v: Value = reqwest::get(gw.at("/v1/models")).await.unwrap().json().await.unwrap();
    let entry = |id: &str| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {v}"))
    };
    let small = entry("a/small");
    assert_eq!(
        (small["owned_by"].as_str(), small["created"].as_u64()),
        (Some("openai"), Some(1715367049))
    );
    assert_eq!(small["context_window"], 200);
    assert_eq!(
        entry("b/same")["owned_by"],
        "b",
        "the provider, when the owner is not configured"
    );
    let alias = entry("chat");
    assert_eq!(alias["context_window"], 200, "what every target of the alias takes");
    assert_eq!(alias["created"], 1733184000, "its newest target's release");
    assert_eq!(alias["chain"], json!(["a/small", "b/same", "c/large"]));
}
