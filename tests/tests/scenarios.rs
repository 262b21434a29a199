//! The same scenario table through every adapter, streaming and not: plain chat,
//! system prompt, multi-turn, tool call round trip, JSON mode, usage reported.
//!
//! Each mock speaks its provider's dialect and answers with what it understood
//! (system prompt, user turns, tool result, JSON asked for), so a translation that
//! drops or misplaces something shows up in the OpenAI answer the client gets.
//!
//! The table also runs through the gateway's other client APIs, Anthropic
//! Messages and OpenAI Responses (all but JSON mode for Messages), against every
//! adapter: translated for most, passed through for the targets that speak the
//! client's API (Anthropic for Messages, OpenAI and Azure for Responses).

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

// === The same table through the other client APIs ===

/// Which client API a table runs through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientApi {
    /// Anthropic Messages, `POST /v1/messages`.
    Messages,
    /// OpenAI Responses, `POST /v1/responses`.
    Responses,
}

/// `(event name, data)` of each event of an SSE body.
fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .unwrap_or("")
                .trim()
                .to_string();
            let data = e.lines().find_map(|l| l.strip_prefix("data:")).unwrap_or("").trim();
            let v = serde_json::from_str(data).unwrap_or_else(|err| panic!("bad event data ({err}): {data}\n{text}"));
            (name, v)
        })
        .collect()
}

/// A Messages answer (a `message`, or its event stream) as an [`Answer`]:
/// `finish` is `stop` for `end_turn`, `tool_calls` for `tool_use`; usage as
/// OpenAI names it.
fn from_messages(text: &str, stream: bool) -> Answer {
    let mut a = Answer::default();
    let (mut input, mut output) = (0, 0);
    let stop = if !stream {
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["type"], "message", "{v}");
        assert_eq!(v["role"], "assistant", "{v}");
        for b in v["content"].as_array().unwrap() {
            match b["type"].as_str().unwrap() {
                "text" => a.content.push_str(b["text"].as_str().unwrap()),
                "tool_use" => a.tool_calls.push((
                    b["id"].as_str().unwrap().to_string(),
                    b["name"].as_str().unwrap().to_string(),
                    b["input"].to_string(),
                )),
                other => panic!("unexpected block {other}: {v}"),
            }
        }
        input = v["usage"]["input_tokens"].as_u64().unwrap();
        output = v["usage"]["output_tokens"].as_u64().unwrap();
        v["stop_reason"].as_str().unwrap().to_string()
    } else {
        let events = sse_events(text);
        assert_eq!(events.first().map(|e| e.0.as_str()), Some("message_start"), "{text}");
        assert_eq!(events.last().map(|e| e.0.as_str()), Some("message_stop"), "{text}");
        let mut stop = String::new();
        for (name, d) in &events {
            assert_eq!(d["type"], name.as_str(), "{text}");
            match name.as_str() {
                "message_start" => input = d["message"]["usage"]["input_tokens"].as_u64().unwrap_or(0),
                "content_block_start" if d["content_block"]["type"] == "tool_use" => a.tool_calls.push((
                    d["content_block"]["id"].as_str().unwrap().to_string(),
                    d["content_block"]["name"].as_str().unwrap().to_string(),
                    String::new(),
                )),
                "content_block_delta" => match d["delta"]["type"].as_str().unwrap() {
                    "text_delta" => a.content.push_str(d["delta"]["text"].as_str().unwrap()),
                    "input_json_delta" => a
                        .tool_calls
                        .last_mut()
                        .unwrap()
                        .2
                        .push_str(d["delta"]["partial_json"].as_str().unwrap()),
                    other => panic!("unexpected delta {other}: {text}"),
                },
                "message_delta" => {
                    stop = d["delta"]["stop_reason"].as_str().unwrap().to_string();
                    output = d["usage"]["output_tokens"].as_u64().unwrap();
                    // A translated stream's counts come at its end.
                    input = input.max(d["usage"]["input_tokens"].as_u64().unwrap_or(0));
                }
                _ => {}
            }
        }
        stop
    };
    a.finish = match stop.as_str() {
        "end_turn" => "stop".into(),
        "tool_use" => "tool_calls".into(),
        other => other.into(),
    };
    a.usage = Some(json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}));
    a
}

/// A Responses answer (a `response`, or its event stream ending in
/// `response.completed`) as an [`Answer`].
fn from_responses(text: &str, stream: bool) -> Answer {
    let response = if !stream {
        serde_json::from_str::<Value>(text).unwrap()
    } else {
        let events = sse_events(text);
        let names: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names.first(), Some(&"response.created"), "{text}");
        assert_eq!(names.last(), Some(&"response.completed"), "{text}");
        for (i, (name, d)) in events.iter().enumerate() {
            assert_eq!(d["type"], name.as_str(), "{text}");
            assert_eq!(d["sequence_number"], i, "{text}");
        }
        let deltas: String = events
            .iter()
            .filter(|e| e.0 == "response.output_text.delta")
            .map(|e| e.1["delta"].as_str().unwrap())
            .collect();
        let last = events.last().unwrap().1["response"].clone();
        let full: String = last["output"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["type"] == "message")
            .flat_map(|i| i["content"].as_array().unwrap().iter())
            .filter_map(|c| c["text"].as_str())
            .collect();
        assert_eq!(deltas, full, "the deltas add up to the final text: {text}");
        last
    };
    assert_eq!(response["object"], "response", "{response}");
    assert_eq!(response["status"], "completed", "{response}");
    let mut a = Answer::default();
    for item in response["output"].as_array().unwrap() {
        match item["type"].as_str().unwrap() {
            "message" => {
                for c in item["content"].as_array().unwrap() {
                    assert_eq!(c["type"], "output_text", "{response}");
                    a.content.push_str(c["text"].as_str().unwrap());
                }
            }
            "function_call" => a.tool_calls.push((
                item["call_id"].as_str().unwrap().to_string(),
                item["name"].as_str().unwrap().to_string(),
                item["arguments"].as_str().unwrap().to_string(),
            )),
            other => panic!("unexpected item {other}: {response}"),
        }
    }
    a.finish = if a.tool_calls.is_empty() { "stop" } else { "tool_calls" }.into();
    let u = &response["usage"];
    a.usage = Some(
        json!({"prompt_tokens": u["input_tokens"], "completion_tokens": u["output_tokens"],
        "total_tokens": u["total_tokens"]}),
    );
    a
}

async fn ask_as(gw: &Gateway, api: ClientApi, body: &Value) -> Answer {
    let path = match api {
        ClientApi::Messages => "/v1/messages",
        ClientApi::Responses => "/v1/responses",
    };
    let r = reqwest::Client::new()
        .post(gw.at(path))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let stream = body["stream"] == json!(true);
    if stream {
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
    }
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{api:?} {body}\n-> {text}");
    match api {
        ClientApi::Messages => from_messages(&text, stream),
        ClientApi::Responses => from_responses(&text, stream),
    }
}

async fn run_inbound_table(gw: &Gateway, mock: &Mock, model: &str, api: ClientApi, stream: bool) {
    let who = format!("{api:?} via {} ({}, stream={stream})", mock.name, mock.dialect.as_str());
    let target = format!("{}/{model}", mock.name);
    let hello = format!("Hello from {} ({model}).", mock.name);
    let user = |text: &str| json!({"role": "user", "content": text});
    // A request of the client API: `system` (Messages) or `instructions`
    // (Responses), then the turns.
    let body = |system: Option<&str>, turns: Vec<Value>| {
        let mut b = match api {
            ClientApi::Messages => json!({"model": target, "max_tokens": 512, "messages": turns}),
            ClientApi::Responses => json!({"model": target, "input": turns}),
        };
        if let Some(s) = system {
            b[if api == ClientApi::Messages {
                "system"
            } else {
                "instructions"
            }] = json!(s);
        }
        if stream {
            b["stream"] = json!(true);
        }
        b
    };
    let tools = match api {
        ClientApi::Messages => json!([{"name": "get_weather", "description": "Weather in a city",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}]),
        ClientApi::Responses => json!([{"type": "function", "name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}]),
    };

    // Plain, and usage reported.
    let a = ask_as(gw, api, &body(None, vec![user("Say hello")])).await;
    assert_eq!(a.content, hello, "{who}");
    assert_eq!(a.finish, "stop", "{who}");
    let u = a.usage.clone().unwrap();
    let n = |k: &str| u[k].as_u64().unwrap_or_else(|| panic!("{who}: usage {u}"));
    assert!(n("prompt_tokens") > 0 && n("completion_tokens") > 0, "{who}: {u}");
    assert_eq!(n("total_tokens"), n("prompt_tokens") + n("completion_tokens"), "{who}");

    // System prompt.
    let a = ask_as(gw, api, &body(Some("Answer in French"), vec![user("hi")])).await;
    assert_eq!(a.content, format!("{hello} [system: Answer in French]"), "{who}");

    // Multi-turn.
    let turns = vec![
        user("hi"),
        json!({"role": "assistant", "content": "Hello!"}),
        user("and again"),
    ];
    let a = ask_as(gw, api, &body(None, turns)).await;
    assert_eq!(a.content, format!("{hello} [turns: 2]"), "{who}");

    // Tool call round trip.
    let question = user("What is the weather in Paris?");
    let mut b = body(None, vec![question.clone()]);
    b["tools"] = tools.clone();
    let a = ask_as(gw, api, &b).await;
    assert_eq!(a.finish, "tool_calls", "{who}: {a:?}");
    assert_eq!(a.tool_calls.len(), 1, "{who}: {a:?}");
    let (id, name, args) = a.tool_calls[0].clone();
    assert!(!id.is_empty(), "{who}: tool call without id");
    assert_eq!(name, "get_weather", "{who}");
    let args: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(args, serde_json::from_str::<Value>(TOOL_ARGS).unwrap(), "{who}");
    let turns = match api {
        ClientApi::Messages => vec![
            question,
            json!({"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": name, "input": args}]}),
            json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "18 C and sunny"}]}),
        ],
        ClientApi::Responses => vec![
            question,
            json!({"type": "function_call", "call_id": id, "name": name, "arguments": args.to_string()}),
            json!({"type": "function_call_output", "call_id": id, "output": "18 C and sunny"}),
        ],
    };
    let mut b = body(None, turns);
    b["tools"] = tools;
    let a = ask_as(gw, api, &b).await;
    assert_eq!(a.finish, "stop", "{who}");
    assert_eq!(a.content, format!("{hello} [tool result: 18 C and sunny]"), "{who}");

    // JSON output (Responses `text.format`; Messages has no JSON mode of its own
    // that every target could honour).
    if api == ClientApi::Responses {
        let mut b = body(None, vec![user("Say hello in JSON")]);
        b["text"] = json!({"format": {"type": "json_object"}});
        let a = ask_as(gw, api, &b).await;
        let v: Value =
            serde_json::from_str(&a.content).unwrap_or_else(|e| panic!("{who}: not JSON ({e}): {}", a.content));
        assert!(v["reply"].as_str().unwrap().starts_with(&hello), "{who}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_adapter_runs_the_table_for_messages_and_responses_clients() {
    let paths = Paths::discover();
    let dir = Scratch::new("scenarios-inbound");
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
        for api in [ClientApi::Messages, ClientApi::Responses] {
            for stream in [false, true] {
                run_inbound_table(&gw, mock, model, api, stream).await;
            }
        }
    }
}
