//! Anthropic Messages, from its API reference: `x-api-key` and `anthropic-version`,
//! request validation (extra inputs, `max_tokens`, roles), `{"type":"error",
//! "error":{"type","message"},"request_id"}` errors, the SSE event sequence
//! (`message_start`, `content_block_*`, `ping`, `message_delta`, `message_stop`),
//! in-stream `event: error`, and `stop_reason: refusal` with `stop_details`;
//! extended thinking (`thinking: {type: enabled, budget_tokens}` or `adaptive`:
//! a `thinking` block with its `signature` before the answer, streamed as
//! `thinking_delta`s and a `signature_delta`); server tools (`web_search_*`,
//! `code_execution_*`, …) accepted and never called, as Anthropic runs them.

use hyper::Response;
use serde_json::{Value, json};

use super::{
    Body, Call, ChatRequest, Data, Event, Failure, Provider, Refused, Reply, StreamFailure, ToolChoice, asks_for_json,
    cut_json, json_response, texts, unknown_param, words,
};

pub(super) struct Anthropic;

const PARAMS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "output_config",
    "inference_geo",
    "context_management",
];

/// Type prefixes of the tools Anthropic defines (server tools and the
/// schema-less client tools), each `{type: "<prefix>_YYYYMMDD", name}`.
const DEFINED_TOOLS: &[&str] = &[
    "web_search_",
    "web_fetch_",
    "code_execution_",
    "bash_",
    "text_editor_",
    "computer_",
    "memory_",
    "tool_search_tool_",
];

/// The thinking the mock shows, and the signature Anthropic puts on it (opaque
/// to clients, checked by Anthropic when the block comes back).
pub const THINKING: &str = "The user wants a greeting. I will say hello.";
/// The `signature` of the mock's `thinking` blocks.
pub const THINKING_SIGNATURE: &str = "EqQBCkYIBhgCIkBmb2NrLXNpZ25hdHVyZS1vZi10aGUtbW9jay1wcm92aWRlcg==";

fn stop_details() -> Value {
    json!({"type": "refusal", "category": "cyber", "explanation": "This request was declined because it could enable cyber harm."})
}

impl Anthropic {
    fn reject(&self, status: u16, message: &str) -> Response<Body> {
        self.error(status, message)
    }

    fn credential(&self, call: &Call) -> Result<(), Refused> {
        let key = call.header("x-api-key").unwrap_or("");
        if key.is_empty() {
            return Err(Box::new(self.reject(401, "x-api-key header is required")));
        }
        // Anthropic never echoes the key, not even with `echo_key_in_error`.
        if !call.state.knows(key) || call.b.echo_key_in_error {
            return Err(Box::new(self.reject(401, "invalid x-api-key")));
        }
        if call.header("anthropic-version").is_none() {
            return Err(Box::new(self.reject(400, "anthropic-version: header is required")));
        }
        if call.header("authorization").is_some() {
            // Stricter than the real API: another provider's credential must never arrive here.
            return Err(Box::new(self.reject(401, "Multiple authentication methods provided")));
        }
        Ok(())
    }

    fn usage(req: &ChatRequest, output: u64) -> Value {
        json!({"input_tokens": req.input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": output})
    }

    /// Content blocks, stop reason and stop details of `reply` (after a
    /// `thinking` block when the request asked for thinking).
    fn content(req: &ChatRequest, reply: &Reply) -> (Value, &'static str, Value) {
        let (content, stop, details) = Self::answer(reply);
        if !req.reasoning || matches!(reply, Reply::Blocked(_)) {
            return (content, stop, details);
        }
        let mut blocks = vec![json!({"type": "thinking", "thinking": THINKING, "signature": THINKING_SIGNATURE})];
        blocks.extend(content.as_array().cloned().unwrap_or_default());
        (Value::Array(blocks), stop, details)
    }

    fn answer(reply: &Reply) -> (Value, &'static str, Value) {
        match reply {
            Reply::Text(t) => (json!([{"type": "text", "text": t}]), "end_turn", Value::Null),
            Reply::Tool { id, name, args } => (
                json!([{"type": "tool_use", "id": id, "name": name, "input": Reply::args_json(args)}]),
                "tool_use",
                Value::Null,
            ),
            // Refused before any output.
            Reply::Blocked(super::Safety::Prompt) => (json!([]), "refusal", stop_details()),
            // Stopped by the streaming classifiers after its first words.
            Reply::Blocked(super::Safety::Finish) => {
                (json!([{"type": "text", "text": "Hello"}]), "refusal", stop_details())
            }
        }
    }
}

impl Provider for Anthropic {
    fn models(&self, call: &Call) -> Option<Response<Body>> {
        if call.method != "GET" || call.path != "/v1/models" {
            return None;
        }
        if let Err(r) = self.credential(call) {
            return Some(*r);
        }
        let data: Vec<Value> = call
            .state
            .cfg
            .models
            .iter()
            .map(|m| json!({"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}))
            .collect();
        let first = data.first().map(|m| m["id"].clone()).unwrap_or(Value::Null);
        let last = data.last().map(|m| m["id"].clone()).unwrap_or(Value::Null);
        Some(json_response(
            200,
            &json!({"data": data, "has_more": false, "first_id": first, "last_id": last}),
        ))
    }

    fn embeddings(&self, _call: &Call) -> Option<Response<Body>> {
        // Anthropic has no embeddings API.
        None
    }

    fn chat(&self, call: &Call) -> Result<ChatRequest, Refused> {
        if call.method != "POST" || call.path != "/v1/messages" {
            return Err(Box::new(self.reject(404, "Not Found")));
        }
        self.credential(call)?;
        if !call.is_json() {
            return Err(Box::new(
                self.reject(400, "There was an issue with your request body: invalid JSON"),
            ));
        }
        let Some(obj) = call.body.as_object() else {
            return Err(Box::new(self.reject(400, "Input should be an object")));
        };
        if let Some(k) = unknown_param(obj, PARAMS) {
            return Err(Box::new(
                self.reject(400, &format!("{k}: Extra inputs are not permitted")),
            ));
        }
        let Some(model) = obj.get("model").and_then(Value::as_str) else {
            return Err(Box::new(self.reject(400, "model: Field required")));
        };
        if obj.get("max_tokens").and_then(Value::as_u64).is_none() {
            return Err(Box::new(self.reject(400, "max_tokens: Field required")));
        }
        let Some(messages) = obj.get("messages").and_then(Value::as_array) else {
            return Err(Box::new(self.reject(400, "messages: Field required")));
        };
        for (i, m) in messages.iter().enumerate() {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            if role != "user" && role != "assistant" {
                return Err(Box::new(self.reject(
                    400,
                    &format!("messages.{i}.role: Input should be 'user' or 'assistant'"),
                )));
            }
        }
        if !call.state.serves(model) {
            return Err(Box::new(self.reject(404, &format!("model: {model}"))));
        }
        let max_tokens = obj.get("max_tokens").and_then(Value::as_u64).unwrap_or(0);
        let reasoning = match obj.get("thinking") {
            None => false,
            Some(t) => match t.get("type").and_then(Value::as_str) {
                Some("enabled") => {
                    let Some(budget) = t.get("budget_tokens").and_then(Value::as_u64) else {
                        return Err(Box::new(
                            self.reject(400, "thinking.enabled.budget_tokens: Field required"),
                        ));
                    };
                    if budget < 1024 {
                        return Err(Box::new(self.reject(
                            400,
                            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
                        )));
                    }
                    if max_tokens <= budget {
                        return Err(Box::new(self.reject(
                            400,
                            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size",
                        )));
                    }
                    true
                }
                Some("adaptive") => true,
                Some("disabled") => false,
                _ => {
                    return Err(Box::new(self.reject(
                        400,
                        "thinking: Input tag does not match any of the expected tags: 'enabled', 'disabled', 'adaptive'",
                    )));
                }
            },
        };
        // Custom tools are the model's to call; the tools Anthropic defines
        // (`{type: "web_search_20250305", name: "web_search"}`, …) it runs itself.
        let mut tools = Vec::new();
        for (i, t) in obj
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(name) = t.get("name").and_then(Value::as_str) else {
                return Err(Box::new(
                    self.reject(400, &format!("tools.{i}.custom.name: Field required")),
                ));
            };
            match t.get("type").and_then(Value::as_str) {
                None | Some("custom") => {
                    if t.get("input_schema").is_none() {
                        return Err(Box::new(
                            self.reject(400, &format!("tools.{i}.custom.input_schema: Field required")),
                        ));
                    }
                    tools.push(name.to_string());
                }
                Some(kind) if DEFINED_TOOLS.iter().any(|p| kind.starts_with(p)) => {}
                Some(kind) => {
                    return Err(Box::new(self.reject(
                        400,
                        &format!("tools.{i}: Input tag '{kind}' found using 'type' does not match any of the expected tags: 'custom', 'web_search_20250305', 'web_fetch_20250910', 'code_execution_20250825', 'bash_20250124', 'text_editor_20250728', 'computer_20250124', 'memory_20250818'"),
                    )));
                }
            }
        }
        let tool_choice = match obj.get("tool_choice") {
            None => ToolChoice::Auto,
            Some(c) => match (
                c.get("type").and_then(Value::as_str),
                c.get("name").and_then(Value::as_str),
            ) {
                (Some("auto"), _) => ToolChoice::Auto,
                (Some("none"), _) => ToolChoice::None,
                (Some("any"), _) => ToolChoice::Any(Vec::new()),
                (Some("tool"), Some(name)) => ToolChoice::Any(vec![name.to_string()]),
                (Some("tool"), None) => {
                    return Err(Box::new(self.reject(400, "tool_choice.tool.name: Field required")));
                }
                _ => {
                    return Err(Box::new(self.reject(
                        400,
                        "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'",
                    )));
                }
            },
        };
        let blocks = |m: &Value, kind: &str| -> Vec<Value> {
            m.get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some(kind))
                .cloned()
                .collect()
        };
        let is_user = |m: &&Value| m.get("role").and_then(Value::as_str) == Some("user");
        let system = texts(obj.get("system"));
        Ok(ChatRequest {
            model: model.to_string(),
            stream: obj.get("stream").and_then(Value::as_bool).unwrap_or(false),
            include_usage: true,
            input_tokens: words(&Value::Array(messages.clone())) + obj.get("system").map(words).unwrap_or(0),
            json: asks_for_json(&system),
            system,
            user_turns: messages
                .iter()
                .filter(is_user)
                .filter(|m| m.get("content").is_some_and(Value::is_string) || !blocks(m, "text").is_empty())
                .count(),
            tools,
            tool_result: messages
                .last()
                .and_then(|m| blocks(m, "tool_result").into_iter().next())
                .and_then(|b| texts(b.get("content"))),
            tool_choice,
            reasoning,
            ..ChatRequest::default()
        })
    }

    fn error(&self, status: u16, message: &str) -> Response<Body> {
        let kind = match status {
            400 => "invalid_request_error",
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            504 => "timeout_error",
            529 | 503 => "overloaded_error",
            _ => "api_error",
        };
        let mut r = json_response(
            status,
            &json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"}),
        );
        r.headers_mut()
            .insert("request-id", hyper::header::HeaderValue::from_static("req_mock"));
        r
    }

    fn failure(&self, call: &Call, failure: Failure, req: &ChatRequest) -> Response<Body> {
        match failure {
            Failure::ContentPolicy => self.reject(400, "Output blocked by content filtering policy"),
            Failure::ModelGone => self.reject(404, &format!("model: {}", req.model)),
            Failure::InvalidKey => self.reject(401, "invalid x-api-key"),
            Failure::BadRequest => self.reject(400, "temperature: Input should be less than or equal to 1"),
            Failure::ContextLength => {
                let (tokens, window) = req.over_window(call.b, 200_000);
                self.reject(400, &format!("prompt is too long: {tokens} tokens > {window} maximum"))
            }
        }
    }

    fn json(&self, req: &ChatRequest, reply: &Reply, n: u64) -> Value {
        let (content, stop, details) = Self::content(req, reply);
        let mut v = json!({
            "id": format!("msg_mock{n}"), "type": "message", "role": "assistant", "model": req.model,
            "content": content, "stop_reason": stop, "stop_sequence": null,
            "usage": Self::usage(req, reply.out_tokens()),
        });
        if !details.is_null() {
            v["stop_details"] = details;
        }
        v
    }

    fn events(&self, req: &ChatRequest, reply: &Reply, n: u64) -> Vec<Event> {
        let (content, stop, details) = Self::content(req, reply);
        let mut out = vec![Event::json(
            "message_start",
            json!({"type": "message_start", "message": {"id": format!("msg_mock{n}"), "type": "message",
                "role": "assistant", "model": req.model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": Self::usage(req, 1)}}),
        )];
        // The thinking block first (index 0), its text in two pieces, then its
        // signature, as Anthropic streams it.
        let thinking = req.reasoning && !matches!(reply, Reply::Blocked(_));
        if thinking {
            out.push(Event::json(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            ));
            for piece in Reply::arg_pieces(THINKING) {
                out.push(Event::json(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": piece}}),
                ));
            }
            out.push(Event::json(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": THINKING_SIGNATURE}}),
            ));
            out.push(Event::json(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
        }
        let index = usize::from(thinking);
        match reply {
            Reply::Text(t) => {
                out.push(Event::json(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
                ));
                out.push(Event::json("ping", json!({"type": "ping"})));
                for piece in Reply::pieces(t) {
                    out.push(Event::json(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
                    ));
                }
            }
            Reply::Tool { id, name, args } => {
                out.push(Event::json(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                ));
                for piece in Reply::arg_pieces(args) {
                    out.push(Event::json(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    ));
                }
            }
            Reply::Blocked(_) => {
                for (i, block) in content.as_array().into_iter().flatten().enumerate() {
                    out.push(Event::json(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}),
                    ));
                    out.push(Event::json(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": block["text"]}}),
                    ));
                }
            }
        }
        if !matches!(reply, Reply::Blocked(super::Safety::Prompt)) {
            out.push(Event::json(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
        let mut delta = json!({"stop_reason": stop, "stop_sequence": null});
        if !details.is_null() {
            delta["stop_details"] = details;
        }
        out.push(Event::json(
            "message_delta",
            json!({"type": "message_delta", "delta": delta, "usage": {"output_tokens": reply.out_tokens()}}),
        ));
        out.push(Event::json("message_stop", json!({"type": "message_stop"})));
        out
    }

    fn stream_type(&self, _call: &Call) -> &'static str {
        "text/event-stream"
    }

    fn frame(&self, _call: &Call, events: Vec<Event>) -> Vec<Vec<u8>> {
        events
            .into_iter()
            .map(|e| {
                let (name, data) = match e.data {
                    Data::Json(v) => (e.name, v.to_string()),
                    Data::Corrupt(v) => (e.name, cut_json(&v)),
                    Data::Fail(f) => {
                        let (kind, message) = match f {
                            StreamFailure::Overloaded => ("overloaded_error", "Overloaded"),
                            StreamFailure::MidStream => ("api_error", super::MID_STREAM_ERROR),
                        };
                        (
                            "error",
                            json!({"type": "error", "error": {"type": kind, "message": message}}).to_string(),
                        )
                    }
                    Data::Done => (e.name, String::new()),
                };
                format!("event: {name}\ndata: {data}\n\n").into_bytes()
            })
            .collect()
    }
}
