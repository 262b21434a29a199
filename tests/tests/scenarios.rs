//! The same scenario table through every adapter, streaming and not: plain chat,
//! system prompt, multi-turn, tool call round trip, JSON mode, usage reported.
//!
//! Each mock speaks its provider's dialect and answers with what it understood
//! (system prompt, user turns, tool result, JSON asked for), so a translation that
//! drops or misplaces something shows up in the OpenAI answer the client gets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, sse_data};
use switchyard_tests::mock::TOOL_ARGS;

/// The answer as a client sees it, whether it came as JSON or as a stream.
#[derive(Debug, Default)]
struct Answer {
    content: String,
    /// `(id, name, arguments)` per tool call.
    tool_calls: Vec<(String, String, String)>,
    finish: String,
    usage: Option<Value>,
}

async fn ask(gw: &Gateway, body: &Value) -> Answer {
    let r = gw.chat(body, &[]).await;
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{body}\n-> {text}");
    let stream = body["stream"] == json!(true);
    let mut a = Answer::default();
    if !stream {
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["object"], "chat.completion", "{v}");
        let m = &v["choices"][0]["message"];
        assert_eq!(m["role"], "assistant");
        a.content = m["content"].as_str().unwrap_or("").to_string();
        for c in m["tool_calls"].as_array().into_iter().flatten() {
            assert_eq!(c["type"], "function");
            a.tool_calls.push((
                c["id"].as_str().unwrap().to_string(),
                c["function"]["name"].as_str().unwrap().to_string(),
                c["function"]["arguments"].as_str().unwrap().to_string(),
            ));
        }
        a.finish = v["choices"][0]["finish_reason"].as_str().unwrap().to_string();
        a.usage = Some(v["usage"].clone());
        return a;
    }
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "{headers:?}"
    );
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    for d in &data[..data.len() - 1] {
        let c: Value = serde_json::from_str(d).unwrap();
        assert_eq!(c["object"], "chat.completion.chunk", "{c}");
        if let Some(u) = c.get("usage").filter(|u| !u.is_null()) {
            a.usage = Some(u.clone());
        }
        let Some(choice) = c["choices"].get(0) else {
            continue;
        };
        a.content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        for t in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = t["index"].as_u64().unwrap() as usize;
            if a.tool_calls.len() <= i {
                a.tool_calls.resize(i + 1, Default::default());
            }
            let call = &mut a.tool_calls[i];
            if let Some(id) = t["id"].as_str() {
                call.0 = id.to_string();
            }
            if let Some(n) = t["function"]["name"].as_str() {
                call.1.push_str(n);
            }
            call.2.push_str(t["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            a.finish = f.to_string();
        }
    }
    a
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}])
}

async fn run_table(gw: &Gateway, mock: &Mock, model: &str, stream: bool) {
    let who = format!("{} ({}, stream={stream})", mock.name, mock.dialect.as_str());
    let target = format!("{}/{model}", mock.name);
    let hello = format!("Hello from {} ({model}).", mock.name);
    let body = |messages: Value| {
        let mut b = json!({"model": target, "messages": messages});
        if stream {
            b["stream"] = json!(true);
            b["stream_options"] = json!({"include_usage": true});
        }
        b
    };

    // Plain chat, and usage reported.
    let a = ask(gw, &body(json!([{"role": "user", "content": "Say hello"}]))).await;
    assert_eq!(a.content, hello, "{who}");
    assert_eq!(a.finish, "stop", "{who}");
    let u = a.usage.unwrap_or_else(|| panic!("{who}: no usage"));
    let n = |k: &str| u[k].as_u64().unwrap_or_else(|| panic!("{who}: usage {u}"));
    assert!(n("prompt_tokens") > 0 && n("completion_tokens") > 0, "{who}: {u}");
    assert_eq!(n("total_tokens"), n("prompt_tokens") + n("completion_tokens"), "{who}");

    // System prompt: it arrives where the provider reads it.
    let a = ask(
        gw,
        &body(json!([{"role": "system", "content": "Answer in French"}, {"role": "user", "content": "hi"}])),
    )
    .await;
    assert_eq!(a.content, format!("{hello} [system: Answer in French]"), "{who}");

    // Multi-turn.
    let a = ask(
        gw,
        &body(
            json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "and again"}]),
        ),
    )
    .await;
    assert_eq!(a.content, format!("{hello} [turns: 2]"), "{who}");

    // Tool call round trip.
    let question = json!([{"role": "user", "content": "What is the weather in Paris?"}]);
    let mut b = body(question.clone());
    b["tools"] = weather_tool();
    let a = ask(gw, &b).await;
    assert_eq!(a.finish, "tool_calls", "{who}: {a:?}");
    assert_eq!(a.tool_calls.len(), 1, "{who}: {a:?}");
    let (id, name, args) = a.tool_calls[0].clone();
    assert!(!id.is_empty(), "{who}: tool call without id");
    assert_eq!(name, "get_weather", "{who}");
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        serde_json::from_str::<Value>(TOOL_ARGS).unwrap(),
        "{who}"
    );
    let mut messages = question.as_array().unwrap().clone();
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": id, "type": "function", "function": {"name": name, "arguments": args}}]}));
    messages.push(json!({"role": "tool", "tool_call_id": id, "content": "18 C and sunny"}));
    let mut b = body(Value::Array(messages));
    b["tools"] = weather_tool();
    let a = ask(gw, &b).await;
    assert_eq!(a.finish, "stop", "{who}");
    assert_eq!(a.content, format!("{hello} [tool result: 18 C and sunny]"), "{who}");

    // JSON mode.
    let mut b = body(json!([{"role": "user", "content": "Say hello"}]));
    b["response_format"] = json!({"type": "json_object"});
    let a = ask(gw, &b).await;
    let v: Value = serde_json::from_str(&a.content).unwrap_or_else(|e| panic!("{who}: not JSON ({e}): {}", a.content));
    assert!(v["reply"].as_str().unwrap().starts_with(&hello), "{who}: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_adapter_runs_the_same_table() {
    let paths = Paths::discover();
    let dir = Scratch::new("scenarios");
    let mocks: Vec<(Mock, &str)> = [
        (Dialect::Openai, "oa", "gpt-4o-mini"),
        (Dialect::AzureOpenai, "az", "gpt-4o-deployment"),
        (Dialect::Anthropic, "an", "claude-3-5-haiku"),
        (Dialect::Gemini, "ge", "gemini-2.0-flash"),
        (Dialect::Vertex, "vx", "gemini-2.0-flash-001"),
        (Dialect::Bedrock, "br", "anthropic.claude-3-haiku-20240307-v1:0"),
    ]
    .into_iter()
    .map(|(d, name, model)| (Mock::start(&paths, &dir.0, name, d, &[]), model))
    .collect();
    let mut builder = Gateway::builder();
    for (m, _) in &mocks {
        builder = builder.provider(m);
    }
    let gw = builder.start(&paths, &dir).await;
    for (mock, model) in &mocks {
        for stream in [false, true] {
            run_table(&gw, mock, model, stream).await;
        }
    }
}
