//! Anthropic Messages API: request translation from OpenAI chat completions, and
//! response translation back (JSON, SSE stream, errors).

use serde_json::{Map, Value, json};

use super::{
    Answer, Api, Context, Progress, StreamEnd, StreamTranslator as Translate, TranslateError,
};
use crate::failure::{FailureClass, mentions_content_policy, mentions_context_length, scrub};
use crate::request::{Endpoint, Members};
use crate::sse;

/// `anthropic-version` header value the adapter sends.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by Anthropic; used when the client gave none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

fn invalid(msg: impl Into<String>) -> TranslateError {
    TranslateError::Invalid(msg.into())
}

// === request ===

/// Translates an OpenAI chat-completions request into a Messages request for `model`.
pub fn request(req: &Value, model: &str) -> Result<Value, TranslateError> {
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages must be an array"))?;
    let mut system: Vec<String> = Vec::new();
    let mut out_msgs: Vec<Value> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("messages[{i}].role is missing")))?;
        match role {
            "system" | "developer" => system.push(super::content_text(m.get("content"))),
            "user" => super::push_merged(&mut out_msgs, "user", content_blocks(m.get("content"))?),
            "assistant" => {
                let mut blocks = content_blocks(m.get("content"))?;
                for (id, name, input) in super::tool_calls(m) {
                    blocks
                        .push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
                }
                super::push_merged(&mut out_msgs, "assistant", blocks)
            }
            "tool" => {
                let block = json!({
                    "type": "tool_result",
                    "tool_use_id": m.get("tool_call_id").cloned().unwrap_or(Value::Null),
                    "content": super::content_text(m.get("content")),
                });
                super::push_merged(&mut out_msgs, "user", vec![block])
            }
            other => {
                return Err(invalid(format!(
                    "messages[{i}].role `{other}` is not supported"
                )));
            }
        }
    }
    if let Some(instruction) = super::json_mode_instruction(req) {
        system.push(instruction);
    }
    let max_tokens = super::max_tokens(req)
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("max_tokens".into(), json!(max_tokens));
    out.insert("messages".into(), Value::Array(out_msgs));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    for key in ["temperature", "top_p", "stream"] {
        if let Some(v) = req.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(stop) = super::stop_sequences(req) {
        out.insert("stop_sequences".into(), stop);
    }
    if let Some(tools) = super::function_tools(req) {
        let tools: Vec<Value> = tools
            .into_iter()
            .map(|f| {
                json!({
                    "name": f.name,
                    "description": f.description.unwrap_or(json!("")),
                    "input_schema": f.parameters,
                })
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = req.get("tool_choice") {
        let c = match choice {
            Value::String(s) if s == "required" => Some(json!({"type":"any"})),
            Value::String(s) if s == "auto" => Some(json!({"type":"auto"})),
            Value::String(s) if s == "none" => Some(json!({"type":"none"})),
            Value::Object(_) => choice
                .pointer("/function/name")
                .map(|n| json!({"type":"tool","name":n})),
            _ => None,
        };
        if let Some(c) = c {
            out.insert("tool_choice".into(), c);
        }
    }
    if let Some(user) = req.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    Ok(Value::Object(out))
}

fn content_blocks(content: Option<&Value>) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"type":"text","text":s})]),
        Some(Value::Array(parts)) => parts.iter().map(part_block).collect(),
        Some(_) => Err(invalid(
            "message content must be a string or an array of parts",
        )),
    }
}

fn part_block(part: &Value) -> Result<Value, TranslateError> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            Ok(json!({"type":"text","text": part.get("text").cloned().unwrap_or(json!(""))}))
        }
        Some("image_url") => {
            let url = part
                .pointer("/image_url/url")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("image_url part without url"))?;
            let source = match url
                .strip_prefix("data:")
                .and_then(|r| r.split_once(";base64,"))
            {
                Some((media_type, data)) => {
                    json!({"type":"base64","media_type":media_type,"data":data})
                }
                None => json!({"type":"url","url":url}),
            };
            Ok(json!({"type":"image","source":source}))
        }
        other => Err(invalid(format!(
            "content part type {other:?} is not supported by Anthropic"
        ))),
    }
}

// === response (JSON) ===

/// Maps Anthropic's `stop_reason` to OpenAI's `finish_reason`.
pub fn finish_reason(stop_reason: Option<&str>) -> Option<&'static str> {
    stop_reason.map(|r| match r {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    })
}

/// Translates a Messages response body into a chat-completion body.
pub fn response(body: &[u8], created: u64) -> Result<Vec<u8>, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("provider sent invalid JSON: {e}")))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in v
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) }});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let u = v.get("usage");
    let input = u
        .and_then(|u| u.get("input_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let output = u
        .and_then(|u| u.get("output_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let out = json!({
        "id": v.get("id").cloned().unwrap_or(json!("")),
        "object": "chat.completion",
        "created": created,
        "model": v.get("model").cloned().unwrap_or(json!("")),
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(v.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": super::usage(input, output),
    });
    Ok(out.to_string().into_bytes())
}

/// Extracts `(type, message)` from an Anthropic error body.
pub fn error_details(body: &[u8]) -> Option<(String, String)> {
    super::error_kind_and_message(body, "type", "api_error")
}

// === response (stream) ===

/// Turns an Anthropic Messages event stream into OpenAI chat-completion chunks.
/// Feed it the provider's bytes as they come; it returns the bytes to send on.
#[derive(Debug)]
pub struct StreamTranslator {
    parser: sse::Parser,
    include_usage: bool,
    created: u64,
    id: String,
    model: String,
    input_tokens: u64,
    output_tokens: u64,
    /// Anthropic content-block index → OpenAI tool-call index.
    tool_index: Vec<(u64, usize)>,
    /// The answer stopped with `stop_reason: refusal`.
    refused: bool,
    request_id: String,
    progress: Progress,
}

impl StreamTranslator {
    /// `include_usage`: the client asked for the final usage chunk; error events
    /// carry `request_id`.
    pub fn new(include_usage: bool, created: u64, request_id: &str) -> Self {
        StreamTranslator {
            parser: sse::Parser::default(),
            include_usage,
            created,
            id: String::new(),
            model: String::new(),
            input_tokens: 0,
            output_tokens: 0,
            tool_index: Vec::new(),
            refused: false,
            request_id: request_id.to_string(),
            progress: Progress::default(),
        }
    }

    /// The stream is over (`message_stop`, an error event, or a failure).
    pub fn is_done(&self) -> bool {
        self.progress.end.is_some()
    }

    /// Ends the translated stream with an error event and `[DONE]`.
    fn fail(&mut self, class: FailureClass, message: String, code: &str) -> String {
        let out = crate::error::stream_error_events(&scrub(&message), code, &self.request_id);
        self.progress.end = Some(StreamEnd::Failed(class, message));
        self.progress.error_tail = out.len();
        String::from_utf8_lossy(&out).into_owned()
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        super::chunk_event(&self.id, self.created, &self.model, delta, finish)
    }

    /// Translates one chunk of the provider's stream.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = String::new();
        if self.progress.end.is_some() {
            return Vec::new();
        }
        for ev in self.parser.feed(bytes) {
            // `message_stop` ended the stream: nothing may follow its `[DONE]`.
            if self.progress.end.is_some() {
                break;
            }
            let v = match serde_json::from_str::<Value>(&ev.data) {
                Ok(v) => v,
                Err(e) => {
                    let msg = format!("the provider sent an event that is not valid JSON: {e}");
                    out.push_str(&self.fail(
                        FailureClass::BadResponse,
                        msg,
                        "bad_provider_response",
                    ));
                    break;
                }
            };
            let kind = ev
                .event
                .as_deref()
                .or_else(|| v.get("type").and_then(Value::as_str))
                .unwrap_or("");
            match kind {
                "message_start" => {
                    let m = v.get("message");
                    self.id = m
                        .and_then(|m| m.get("id"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    self.model = m
                        .and_then(|m| m.get("model"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    self.input_tokens = m
                        .and_then(|m| m.pointer("/usage/input_tokens"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    out.push_str(&self.chunk(json!({"role":"assistant","content":""}), None));
                }
                "content_block_start" => {
                    let block = v.get("content_block");
                    if block.and_then(|b| b.get("type")).and_then(Value::as_str) == Some("tool_use")
                    {
                        self.progress.content = true;
                        let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let n = self.tool_index.len();
                        self.tool_index.push((idx, n));
                        let call = json!([{
                            "index": n,
                            "id": block.and_then(|b| b.get("id")).cloned().unwrap_or(Value::Null),
                            "type": "function",
                            "function": {"name": block.and_then(|b| b.get("name")).cloned().unwrap_or(Value::Null), "arguments": ""},
                        }]);
                        out.push_str(&self.chunk(json!({"tool_calls": call}), None));
                    }
                }
                "content_block_delta" => {
                    // Text, tool input or reasoning: the model is answering.
                    self.progress.content = true;
                    let d = v.get("delta");
                    match d.and_then(|d| d.get("type")).and_then(Value::as_str) {
                        Some("text_delta") => {
                            let t = d.and_then(|d| d.get("text")).cloned().unwrap_or(json!(""));
                            out.push_str(&self.chunk(json!({"content": t}), None));
                        }
                        Some("input_json_delta") => {
                            let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                            let n = self
                                .tool_index
                                .iter()
                                .find(|(i, _)| *i == idx)
                                .map(|(_, n)| *n)
                                .unwrap_or(0);
                            let part = d
                                .and_then(|d| d.get("partial_json"))
                                .cloned()
                                .unwrap_or(json!(""));
                            let call = json!([{"index": n, "function": {"arguments": part}}]);
                            out.push_str(&self.chunk(json!({"tool_calls": call}), None));
                        }
                        _ => {}
                    }
                }
                "message_delta" => {
                    if let Some(o) = v.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                        self.output_tokens = o;
                    }
                    if let Some(i) = v.pointer("/usage/input_tokens").and_then(Value::as_u64) {
                        self.input_tokens = i;
                    }
                    let stop = v.pointer("/delta/stop_reason").and_then(Value::as_str);
                    let reason = finish_reason(stop);
                    if reason.is_some() {
                        // A refusal is not an answer: the stream stays uncommitted.
                        self.progress.content |= stop != Some("refusal");
                        out.push_str(&self.chunk(json!({}), reason));
                    }
                    if stop == Some("refusal") {
                        self.refused = true;
                    }
                }
                "message_stop" => {
                    let usage = self
                        .include_usage
                        .then(|| super::usage(self.input_tokens, self.output_tokens));
                    out.push_str(&super::stream_end(
                        &self.id,
                        self.created,
                        &self.model,
                        usage,
                    ));
                    self.progress.content |= !self.refused;
                    self.progress.end = Some(if self.refused {
                        StreamEnd::Filtered("the model refused to answer".to_string())
                    } else {
                        StreamEnd::Complete
                    });
                }
                "error" => {
                    let e = v.get("error");
                    let field = |k: &str| {
                        e.and_then(|e| e.get(k))
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string()
                    };
                    let (kind, message) = (field("type"), field("message"));
                    let class = classify_type(&kind, &message).unwrap_or(FailureClass::ServerError);
                    let text = format!("{kind}: {message}");
                    out.push_str(&self.fail(class, text, "provider_stream_error"));
                    break;
                }
                _ => {}
            }
        }
        out.into_bytes()
    }
}

impl Translate for StreamTranslator {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        StreamTranslator::feed(self, bytes)
    }

    fn finish(&mut self) -> Vec<u8> {
        if self.progress.end.is_some() {
            return Vec::new();
        }
        self.fail(
            FailureClass::BadResponse,
            "The provider ended the stream before the answer was complete.".to_string(),
            "stream_truncated",
        )
        .into_bytes()
    }

    fn progress(&self) -> Progress {
        self.progress.clone()
    }
}

// === the API ===

/// The class of an Anthropic error `type` (in an error answer or event).
fn classify_type(kind: &str, message: &str) -> Option<FailureClass> {
    let lower = message.to_ascii_lowercase();
    Some(match kind {
        "not_found_error" => FailureClass::ModelUnavailable,
        "authentication_error" | "permission_error" => FailureClass::Auth,
        "rate_limit_error" => FailureClass::RateLimited,
        "overloaded_error" | "api_error" => FailureClass::ServerError,
        "invalid_request_error" if mentions_content_policy(&lower) => FailureClass::ContentFilter,
        "invalid_request_error" | "request_too_large" if mentions_context_length(&lower) => {
            FailureClass::ContextLength
        }
        "invalid_request_error" if lower.starts_with("model:") => FailureClass::ModelUnavailable,
        _ => return None,
    })
}

/// Anthropic's Messages API.
#[derive(Debug)]
pub struct Anthropic;

/// `dialect: anthropic`.
pub static ANTHROPIC: Anthropic = Anthropic;

impl Api for Anthropic {
    fn path(
        &self,
        _endpoint: Endpoint,
        base_path: &str,
        _model: &str,
        _api_version: Option<&str>,
        _stream: bool,
    ) -> String {
        format!("{base_path}/messages")
    }

    fn health_path(&self, base_path: &str, _api_version: Option<&str>) -> Option<String> {
        Some(format!("{base_path}/models"))
    }

    fn auth_headers(&self, key: Option<&str>) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = key
            .map(|k| ("x-api-key", k.to_string()))
            .into_iter()
            .collect();
        out.push(("anthropic-version", API_VERSION.to_string()));
        out
    }

    fn embeds(&self) -> bool {
        false
    }

    fn continues_prefill(&self) -> bool {
        true
    }

    fn prepare(
        &self,
        endpoint: Endpoint,
        _members: &Members<'_>,
        body: &[u8],
        model: &str,
    ) -> Result<Vec<u8>, TranslateError> {
        match endpoint {
            Endpoint::Chat => super::translated(body, |r| request(r, model)),
            Endpoint::Embeddings => Err(invalid("Anthropic has no embeddings API")),
        }
    }

    fn answer(&self, body: &[u8], ctx: &Context<'_>) -> Answer {
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return Answer::Failed(
                    FailureClass::BadResponse,
                    format!("the provider's 200 is not valid JSON: {e}"),
                );
            }
        };
        if v.get("type").and_then(Value::as_str) != Some("message")
            || !v.get("content").is_some_and(Value::is_array)
        {
            return Answer::Failed(
                FailureClass::BadResponse,
                "the provider's 200 is not a Messages answer".to_string(),
            );
        }
        match response(body, ctx.created) {
            Ok(out) if v.get("stop_reason").and_then(Value::as_str) == Some("refusal") => {
                Answer::Filtered(out, "the model refused to answer".to_string())
            }
            Ok(out) => Answer::Ok(out),
            Err(e) => Answer::Failed(FailureClass::BadResponse, e.to_string()),
        }
    }

    fn stream(&self, ctx: &Context<'_>) -> Box<dyn Translate> {
        Box::new(StreamTranslator::new(
            ctx.include_usage,
            ctx.created,
            ctx.request_id,
        ))
    }

    fn classify_error(
        &self,
        status: u16,
        _error_type: Option<&str>,
        body: &[u8],
    ) -> (Option<FailureClass>, Option<String>) {
        let Some(by_status) = FailureClass::from_status(status) else {
            return (None, None);
        };
        match error_details(body) {
            Some((kind, message)) => (
                Some(classify_type(&kind, &message).unwrap_or(by_status)),
                Some(format!("{kind}: {message}")),
            ),
            None => (Some(by_status), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_moves_system_and_defaults_max_tokens() {
        let req = json!({
            "model": "x", "stream": true, "stop": "END", "user": "u1",
            "messages": [
                {"role":"system","content":"be brief"},
                {"role":"user","content":"hi"},
                {"role":"user","content":[{"type":"text","text":"again"}]},
                {"role":"assistant","content":"hello"}
            ]
        });
        let out = request(&req, "claude-x").unwrap();
        assert_eq!(out["model"], "claude-x");
        assert_eq!(out["system"], "be brief");
        assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["metadata"]["user_id"], "u1");
        let msgs = out["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 2, "consecutive user messages are merged");
        assert_eq!(msgs[0]["content"][1]["text"], "again");
        assert_eq!(msgs[1]["role"], "assistant");
    }

    #[test]
    fn tools_round_trip() {
        let req = json!({
            "model": "x", "max_tokens": 10, "tool_choice": "required",
            "tools": [{"type":"function","function":{"name":"get","parameters":{"type":"object"}}}],
            "messages": [
                {"role":"user","content":"weather?"},
                {"role":"assistant","content":null,"tool_calls":[{"id":"t1","type":"function","function":{"name":"get","arguments":"{\"city\":\"Oslo\"}"}}]},
                {"role":"tool","tool_call_id":"t1","content":"sunny"}
            ]
        });
        let out = request(&req, "c").unwrap();
        assert_eq!(out["tool_choice"], json!({"type":"any"}));
        assert_eq!(out["tools"][0]["input_schema"], json!({"type":"object"}));
        assert_eq!(out["messages"][1]["content"][0]["input"]["city"], "Oslo");
        assert_eq!(out["messages"][2]["content"][0]["tool_use_id"], "t1");
    }

    #[test]
    fn json_response() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2}}"#;
        let v: Value = serde_json::from_slice(&response(body, 7).unwrap()).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hi");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["total_tokens"], 5);
        assert_eq!(v["created"], 7);
    }

    #[test]
    fn stream_translation_split_anywhere() {
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-x\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        )
        .as_bytes();
        for cut in [0, 1, 50, 200, stream.len() - 3] {
            let mut t = StreamTranslator::new(true, 1, "r");
            let mut out = t.feed(&stream[..cut]);
            out.extend(t.feed(&stream[cut..]));
            assert!(t.is_done());
            let chunks = crate::dialect::stream_test::chunks(&String::from_utf8(out).unwrap());
            assert_eq!(crate::dialect::stream_test::content(&chunks), "Hello");
            assert_eq!(
                chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
                "stop"
            );
            let usage = &chunks[chunks.len() - 1]["usage"];
            assert_eq!(usage["prompt_tokens"], 5);
            assert_eq!(usage["completion_tokens"], 2);
        }
    }
}
