//! AWS Bedrock Converse API (`POST /model/{modelId}/converse`, and
//! `/converse-stream` answering in `application/vnd.amazon.eventstream`): request
//! translation from OpenAI chat completions, and the answer back (JSON, event
//! stream, errors). Requests are signed with SigV4 by the adapter (`crate::sigv4`).

use serde_json::{Map, Value, json};

use super::{
    Answer, Api, Context, Progress, StreamEnd, StreamTranslator as Translate, TranslateError,
};
use crate::eventstream;
use crate::failure::{FailureClass, scrub};
use crate::request::{Endpoint, Members};

/// SigV4 service name of the Bedrock runtime.
pub const SERVICE: &str = "bedrock";

fn invalid(msg: impl Into<String>) -> TranslateError {
    TranslateError::Invalid(msg.into())
}

/// The path of a Converse call for `model` (its id is one path segment, so `:` in
/// `…-v1:0` is percent-encoded, as the AWS SDKs send it).
pub fn path(base_path: &str, model: &str, stream: bool) -> String {
    let op = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    format!(
        "{base_path}/model/{}/{op}",
        crate::sigv4::encode_segment(model)
    )
}

/// The path of an InvokeModel call (embedding models).
pub fn invoke_path(base_path: &str, model: &str) -> String {
    format!(
        "{base_path}/model/{}/invoke",
        crate::sigv4::encode_segment(model)
    )
}

// === embeddings ===

/// Translates an OpenAI embeddings request into the InvokeModel body of a Bedrock
/// embedding model: Cohere Embed takes a batch (`texts`), Amazon Titan one text
/// per call (`inputText`).
pub fn embeddings_request(req: &Value, model: &str) -> Result<Value, TranslateError> {
    let texts = super::embedding_texts(req, "Bedrock")?;
    if model.contains("cohere.embed") {
        return Ok(json!({"texts": texts, "input_type": "search_document"}));
    }
    let [text] = texts.as_slice() else {
        return Err(invalid(format!(
            "{model} embeds one input per request, not {}",
            texts.len()
        )));
    };
    let mut out = json!({ "inputText": text });
    if let Some(d) = req.get("dimensions").filter(|d| d.is_u64()) {
        out["dimensions"] = d.clone();
    }
    Ok(out)
}

/// Translates a Bedrock embedding model's answer (Titan's `embedding` with
/// `inputTextTokenCount`, or Cohere's `embeddings`) into an OpenAI embeddings list.
pub fn embeddings_response(
    body: &[u8],
    model: &str,
    base64: bool,
) -> Result<Vec<u8>, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("provider sent invalid JSON: {e}")))?;
    let vectors: Vec<Vec<Value>> = match (v.get("embedding"), v.get("embeddings")) {
        (Some(Value::Array(one)), _) => vec![one.clone()],
        (_, Some(Value::Array(many))) => many
            .iter()
            .map(|e| e.as_array().cloned().unwrap_or_default())
            .collect(),
        _ => {
            return Err(invalid(
                "provider answer has no `embedding` or `embeddings`",
            ));
        }
    };
    let tokens = v
        .get("inputTextTokenCount")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Ok(super::embeddings_list(vectors, model, tokens, base64))
}

// === request ===

fn image_block(url: &str) -> Result<Value, TranslateError> {
    let (media_type, data) = url
        .strip_prefix("data:")
        .and_then(|r| r.split_once(";base64,"))
        .ok_or_else(|| invalid("Bedrock takes images only as base64 data URLs"))?;
    let format = media_type
        .strip_prefix("image/")
        .filter(|f| ["png", "jpeg", "gif", "webp"].contains(f))
        .ok_or_else(|| {
            invalid(format!(
                "image type {media_type} is not supported by Bedrock"
            ))
        })?;
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

fn content_blocks(content: Option<&Value>) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"text": s})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => Ok(json!({"text": p.get("text").cloned().unwrap_or(json!(""))})),
                Some("image_url") => image_block(
                    p.pointer("/image_url/url")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                ),
                other => Err(invalid(format!(
                    "content part type {other:?} is not supported by Bedrock"
                ))),
            })
            .collect(),
        Some(_) => Err(invalid(
            "message content must be a string or an array of parts",
        )),
    }
}

/// Translates an OpenAI chat-completions request into a Converse request (the model
/// travels in the path).
pub fn request(req: &Value) -> Result<Value, TranslateError> {
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages must be an array"))?;
    let mut system: Vec<Value> = Vec::new();
    let mut out_msgs: Vec<Value> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("messages[{i}].role is missing")))?;
        match role {
            "system" | "developer" => {
                system.push(json!({"text": super::content_text(m.get("content"))}))
            }
            "user" => super::push_merged(&mut out_msgs, "user", content_blocks(m.get("content"))?),
            "assistant" => {
                let mut blocks = content_blocks(m.get("content"))?;
                for (id, name, input) in super::tool_calls(m) {
                    blocks
                        .push(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}));
                }
                super::push_merged(&mut out_msgs, "assistant", blocks)
            }
            "tool" => super::push_merged(
                &mut out_msgs,
                "user",
                vec![json!({"toolResult": {
                    "toolUseId": m.get("tool_call_id").cloned().unwrap_or(Value::Null),
                    "content": [{"text": super::content_text(m.get("content"))}],
                }})],
            ),
            other => {
                return Err(invalid(format!(
                    "messages[{i}].role `{other}` is not supported"
                )));
            }
        }
    }
    if let Some(instruction) = super::json_mode_instruction(req) {
        system.push(json!({ "text": instruction }));
    }
    let mut out = Map::new();
    out.insert("messages".into(), Value::Array(out_msgs));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    let inference = super::sampling(
        req,
        &[("temperature", "temperature"), ("top_p", "topP")],
        "maxTokens",
        "stopSequences",
    );
    if !inference.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(tools) = super::function_tools(req) {
        let specs: Vec<Value> = tools
            .into_iter()
            .map(|f| {
                let mut spec = json!({"name": f.name, "inputSchema": {"json": f.parameters}});
                if let Some(d) = f.description.filter(Value::is_string) {
                    spec["description"] = d;
                }
                json!({ "toolSpec": spec })
            })
            .collect();
        let mut config = json!({ "tools": specs });
        let choice = match req.get("tool_choice") {
            Some(Value::String(s)) if s == "required" => Some(json!({"any": {}})),
            Some(Value::String(s)) if s == "auto" => Some(json!({"auto": {}})),
            Some(c @ Value::Object(_)) => c
                .pointer("/function/name")
                .map(|n| json!({"tool": {"name": n}})),
            _ => None,
        };
        if let Some(c) = choice {
            config["toolChoice"] = c;
        }
        out.insert("toolConfig".into(), config);
    }
    Ok(Value::Object(out))
}

// === response (JSON) ===

/// Maps Converse's `stopReason` to OpenAI's `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

fn usage(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    super::usage(n("inputTokens"), n("outputTokens"))
}

/// Translates a Converse answer into a chat completion; `id` names it (Converse
/// answers carry none).
pub fn response(
    body: &[u8],
    created: u64,
    model: &str,
    id: &str,
) -> Result<Vec<u8>, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("provider sent invalid JSON: {e}")))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(t) = block.get("toolUse") {
            calls.push(json!({
                "id": t.get("toolUseId").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": t.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": t.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            }));
        }
    }
    let mut message = json!({"role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let out = json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message,
            "finish_reason": finish_reason(v.get("stopReason").and_then(Value::as_str).unwrap_or("end_turn"))}],
        "usage": usage(v.get("usage").unwrap_or(&Value::Null)),
    });
    Ok(out.to_string().into_bytes())
}

/// The AWS error type of an answer: the `x-amzn-ErrorType` header's name part
/// (`ThrottlingException:http://…` → `ThrottlingException`), else the body's
/// `__type`.
pub fn error_type<'a>(header: Option<&'a str>, body: &'a Value) -> &'a str {
    header
        .or_else(|| body.get("__type").and_then(Value::as_str))
        .map(|t| t.split(':').next().unwrap_or(t))
        .map(|t| t.rsplit('#').next().unwrap_or(t))
        .unwrap_or("")
}

/// `(error type, message)` of a Bedrock error answer.
pub fn error_details(header: Option<&str>, body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v
        .get("message")
        .or_else(|| v.get("Message"))
        .and_then(Value::as_str)
        .unwrap_or("");
    (error_type(header, &v).to_string(), message.to_string())
}

/// Classifies a Bedrock error answer by its AWS error type.
pub fn classify(status: u16, error_type: &str, message: &str) -> Option<FailureClass> {
    let by_status = FailureClass::from_status(status)?;
    let m = message.to_ascii_lowercase();
    Some(match error_type {
        "ThrottlingException" | "ServiceQuotaExceededException" => FailureClass::RateLimited,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException"
        | "IncompleteSignatureException"
        | "MissingAuthenticationTokenException" => FailureClass::Auth,
        "ResourceNotFoundException" => FailureClass::ModelUnavailable,
        "ValidationException"
            if m.contains("model identifier is invalid")
                || m.contains("end of its life")
                || m.contains("legacy") =>
        {
            FailureClass::ModelUnavailable
        }
        "ValidationException" if crate::failure::mentions_context_length(&m) => {
            FailureClass::ContextLength
        }
        "InternalServerException"
        | "ServiceUnavailableException"
        | "ModelNotReadyException"
        | "ModelErrorException"
        | "ModelTimeoutException" => FailureClass::ServerError,
        _ => by_status,
    })
}

// === response (event stream) ===

/// Turns a ConverseStream event stream into OpenAI chat-completion chunks.
#[derive(Debug)]
pub struct StreamTranslator {
    decoder: eventstream::Decoder,
    include_usage: bool,
    created: u64,
    id: String,
    model: String,
    /// Converse content-block index → OpenAI tool-call index.
    tool_index: Vec<(u64, usize)>,
    finish: Option<&'static str>,
    /// The stop reason was a content filter or guardrail.
    filtered: Option<String>,
    request_id: String,
    progress: Progress,
}

impl StreamTranslator {
    /// `include_usage`: the client asked for the final usage chunk; `id` names the
    /// completion and `request_id` goes into error events.
    pub fn new(include_usage: bool, created: u64, model: &str, id: &str, request_id: &str) -> Self {
        StreamTranslator {
            decoder: eventstream::Decoder::default(),
            include_usage,
            created,
            id: id.to_string(),
            model: model.to_string(),
            tool_index: Vec::new(),
            finish: None,
            filtered: None,
            request_id: request_id.to_string(),
            progress: Progress::default(),
        }
    }

    /// The stream is over (its `metadata` event, an exception or a failure).
    pub fn is_done(&self) -> bool {
        self.progress.end.is_some()
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        super::chunk_event(&self.id, self.created, &self.model, delta, finish)
    }

    fn end(&mut self, usage: Option<Value>) -> String {
        self.progress.content |= self.filtered.is_none();
        self.progress.end = Some(match self.filtered.clone() {
            Some(why) => StreamEnd::Filtered(why),
            None => StreamEnd::Complete,
        });
        let mut out = self.chunk(json!({}), Some(self.finish.unwrap_or("stop")));
        let usage = self
            .include_usage
            .then(|| usage.unwrap_or_else(|| super::usage(0, 0)));
        out.push_str(&super::stream_end(
            &self.id,
            self.created,
            &self.model,
            usage,
        ));
        out
    }

    fn fail(&mut self, class: FailureClass, message: &str, code: &str) -> String {
        let out = crate::error::stream_error_events(&scrub(message), code, &self.request_id);
        self.progress.end = Some(StreamEnd::Failed(class, message.to_string()));
        self.progress.error_tail = out.len();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Translates the next bytes of the provider's stream.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.progress.end.is_some() {
            return Vec::new();
        }
        let messages = match self.decoder.feed(bytes) {
            Ok(m) => m,
            Err(e) => {
                let msg = format!("The provider's event stream could not be decoded: {e}");
                return self
                    .fail(FailureClass::BadResponse, &msg, "bad_provider_response")
                    .into_bytes();
            }
        };
        let mut out = String::new();
        for m in messages {
            if self.progress.end.is_some() {
                break;
            }
            let v: Value = match serde_json::from_slice(&m.payload) {
                Ok(v) => v,
                Err(e) => {
                    let msg = format!("the provider sent an event that is not valid JSON: {e}");
                    out.push_str(&self.fail(
                        FailureClass::BadResponse,
                        &msg,
                        "bad_provider_response",
                    ));
                    break;
                }
            };
            if m.header(":message-type") == Some("exception") {
                let kind = m
                    .header(":exception-type")
                    .unwrap_or("exception")
                    .to_string();
                let text = v.get("message").and_then(Value::as_str).unwrap_or("");
                let class = classify_exception(&kind, text);
                out.push_str(&self.fail(
                    class,
                    &format!("{kind}: {text}"),
                    "provider_stream_error",
                ));
                break;
            }
            match m.header(":event-type").unwrap_or("") {
                "messageStart" => {
                    out.push_str(&self.chunk(json!({"role": "assistant", "content": ""}), None))
                }
                "contentBlockStart" => {
                    if let Some(t) = v.pointer("/start/toolUse") {
                        self.progress.content = true;
                        let index = self.tool_index.len();
                        let block = v
                            .get("contentBlockIndex")
                            .and_then(Value::as_u64)
                            .unwrap_or(0);
                        self.tool_index.push((block, index));
                        out.push_str(&self.chunk(
                            json!({"tool_calls": [{"index": index, "id": t.get("toolUseId"), "type": "function",
                                "function": {"name": t.get("name"), "arguments": ""}}]}),
                            None,
                        ));
                    }
                }
                "contentBlockDelta" => {
                    self.progress.content = true;
                    if let Some(t) = v.pointer("/delta/text").and_then(Value::as_str) {
                        out.push_str(&self.chunk(json!({ "content": t }), None));
                    } else if let Some(args) =
                        v.pointer("/delta/toolUse/input").and_then(Value::as_str)
                    {
                        let block = v
                            .get("contentBlockIndex")
                            .and_then(Value::as_u64)
                            .unwrap_or(0);
                        let index = self
                            .tool_index
                            .iter()
                            .find(|(b, _)| *b == block)
                            .map_or(0, |(_, i)| *i);
                        out.push_str(&self.chunk(
                            json!({"tool_calls": [{"index": index, "function": {"arguments": args}}]}),
                            None,
                        ));
                    }
                }
                "messageStop" => {
                    let stop = v
                        .get("stopReason")
                        .and_then(Value::as_str)
                        .unwrap_or("end_turn");
                    self.finish = Some(finish_reason(stop));
                    if finish_reason(stop) == "content_filter" {
                        // Not an answer: the stream stays uncommitted.
                        self.filtered = Some(format!("stopReason {stop}"));
                    } else {
                        self.progress.content = true;
                    }
                }
                "metadata" => {
                    let usage = v.get("usage").map(usage);
                    out.push_str(&self.end(usage));
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
            "The provider ended the stream before the answer was complete.",
            "stream_truncated",
        )
        .into_bytes()
    }

    fn progress(&self) -> Progress {
        self.progress.clone()
    }
}

/// The class of an exception frame of a stream (`modelStreamErrorException`,
/// `throttlingException`, …: the event-stream names start lower-case).
fn classify_exception(kind: &str, message: &str) -> FailureClass {
    let mut upper = kind.to_string();
    if let Some(first) = upper.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    classify(500, &upper, message).unwrap_or(FailureClass::ServerError)
}

// === the API ===

/// AWS Bedrock's Converse API (and InvokeModel for embedding models).
#[derive(Debug)]
pub struct Bedrock;

/// `dialect: bedrock`.
pub static BEDROCK: Bedrock = Bedrock;

impl Api for Bedrock {
    fn path(
        &self,
        endpoint: Endpoint,
        base_path: &str,
        model: &str,
        _api_version: Option<&str>,
        stream: bool,
    ) -> String {
        let op = match endpoint {
            Endpoint::Embeddings => "invoke",
            Endpoint::Chat if stream => "converse-stream",
            Endpoint::Chat => "converse",
        };
        format!("{base_path}/model/{model}/{op}")
    }

    fn health_path(&self, _base_path: &str, _api_version: Option<&str>) -> Option<String> {
        // The model list is on another host (bedrock, not bedrock-runtime).
        None
    }

    fn auth_headers(&self, key: Option<&str>) -> Vec<(&'static str, String)> {
        // A Bedrock API key is a bearer token; without one the adapter signs (SigV4).
        key.map(|k| ("authorization", format!("Bearer {k}")))
            .into_iter()
            .collect()
    }

    fn signing_headers(&self) -> &'static [&'static str] {
        &["x-amz-date", "x-amz-security-token"]
    }

    fn signing_service(&self) -> Option<&'static str> {
        Some(SERVICE)
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
            Endpoint::Chat => super::translated(body, request),
            Endpoint::Embeddings => super::translated(body, |r| embeddings_request(r, model)),
        }
    }

    fn answer(&self, body: &[u8], ctx: &Context<'_>) -> Answer {
        if ctx.endpoint == Endpoint::Embeddings {
            return match embeddings_response(body, ctx.model, ctx.base64) {
                Ok(out) => Answer::Ok(out),
                Err(e) => Answer::Failed(FailureClass::BadResponse, e.to_string()),
            };
        }
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return Answer::Failed(
                    FailureClass::BadResponse,
                    format!("the provider's 200 is not valid JSON: {e}"),
                );
            }
        };
        if !v
            .pointer("/output/message/content")
            .is_some_and(Value::is_array)
        {
            return Answer::Failed(
                FailureClass::BadResponse,
                "the provider's 200 is not a Converse answer".to_string(),
            );
        }
        let id = format!("chatcmpl-{}", ctx.request_id);
        let stop = v.get("stopReason").and_then(Value::as_str).unwrap_or("");
        match response(body, ctx.created, ctx.model, &id) {
            Ok(out) if finish_reason(stop) == "content_filter" => {
                Answer::Filtered(out, format!("stopReason {stop}"))
            }
            Ok(out) => Answer::Ok(out),
            Err(e) => Answer::Failed(FailureClass::BadResponse, e.to_string()),
        }
    }

    fn stream(&self, ctx: &Context<'_>) -> Box<dyn Translate> {
        Box::new(StreamTranslator::new(
            ctx.include_usage,
            ctx.created,
            ctx.model,
            &format!("chatcmpl-{}", ctx.request_id),
            ctx.request_id,
        ))
    }

    fn error_type_header(&self) -> Option<&'static str> {
        Some("x-amzn-errortype")
    }

    fn classify_error(
        &self,
        status: u16,
        error_type: Option<&str>,
        body: &[u8],
    ) -> (Option<FailureClass>, Option<String>) {
        let (kind, message) = error_details(error_type, body);
        (
            classify(status, &kind, &message),
            Some(format!("{kind}: {message}")),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn request_shape() {
        let req = json!({"model": "x", "max_tokens": 50, "temperature": 0.2, "stop": ["END"], "seed": 3,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "what is in"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "t1", "type": "function",
                    "function": {"name": "look", "arguments": "{\"q\":\"cat\"}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "a cat"},
                {"role": "user", "content": "and?"}],
            "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
            "tool_choice": "required"});
        let out = request(&req).unwrap();
        assert_eq!(out["system"], json!([{"text": "be brief"}]));
        assert_eq!(
            out["inferenceConfig"],
            json!({"maxTokens": 50, "temperature": 0.2, "stopSequences": ["END"]})
        );
        let msgs = out["messages"].as_array().unwrap();
        assert_eq!(
            msgs.len(),
            3,
            "tool result and the next user turn merge: {msgs:?}"
        );
        assert_eq!(msgs[0]["content"][1]["image"]["format"], "png");
        assert_eq!(
            msgs[1]["content"][0]["toolUse"]["input"],
            json!({"q": "cat"})
        );
        assert_eq!(msgs[2]["content"][0]["toolResult"]["toolUseId"], "t1");
        assert_eq!(msgs[2]["content"][1]["text"], "and?");
        assert_eq!(out["toolConfig"]["toolChoice"], json!({"any": {}}));
        assert_eq!(
            out["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["type"],
            "object"
        );
        assert!(
            request(&json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}))
            .is_err()
        );
        assert_eq!(
            path("", "anthropic.claude-3-haiku-20240307-v1:0", true),
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
        );
    }

    #[test]
    fn json_answer_and_errors() {
        // The Converse response example of the API reference, with a tool call added.
        let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hi."},{"toolUse":{"toolUseId":"tooluse_1","name":"top_song","input":{"sign":"WZPZ"}}}]}},"stopReason":"tool_use","usage":{"inputTokens":30,"outputTokens":628,"totalTokens":658},"metrics":{"latencyMs":1275}}"#;
        let v: Value =
            serde_json::from_slice(&response(body, 7, "m", "chatcmpl-1").unwrap()).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hi.");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["id"], "tooluse_1");
        assert_eq!(call["function"]["arguments"], "{\"sign\":\"WZPZ\"}");
        assert_eq!(v["usage"]["total_tokens"], 658);
        let (kind, msg) = error_details(
            Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            br#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        assert_eq!(kind, "ThrottlingException");
        assert_eq!(classify(429, &kind, &msg), Some(FailureClass::RateLimited));
        assert_eq!(
            classify(
                400,
                "ValidationException",
                "The provided model identifier is invalid."
            ),
            Some(FailureClass::ModelUnavailable)
        );
        assert_eq!(
            classify(400, "ValidationException", "messages: bad"),
            Some(FailureClass::BadRequest)
        );
        assert_eq!(
            classify(403, "UnrecognizedClientException", ""),
            Some(FailureClass::Auth)
        );
    }

    #[test]
    fn embeddings_titan_and_cohere() {
        let one = json!({"model": "e", "input": "hello", "dimensions": 256});
        assert_eq!(
            embeddings_request(&one, "amazon.titan-embed-text-v2:0").unwrap(),
            json!({"inputText": "hello", "dimensions": 256})
        );
        let two = json!({"model": "e", "input": ["a", "b"]});
        assert!(embeddings_request(&two, "amazon.titan-embed-text-v2:0").is_err());
        assert_eq!(
            embeddings_request(&two, "cohere.embed-english-v3").unwrap(),
            json!({"texts": ["a", "b"], "input_type": "search_document"})
        );
        assert_eq!(
            invoke_path("", "amazon.titan-embed-text-v2:0"),
            "/model/amazon.titan-embed-text-v2%3A0/invoke"
        );
        let titan = br#"{"embedding":[0.5,-0.25],"inputTextTokenCount":3}"#;
        let v: Value =
            serde_json::from_slice(&embeddings_response(titan, "t", false).unwrap()).unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([0.5, -0.25]));
        assert_eq!(v["usage"]["prompt_tokens"], 3);
        let cohere = br#"{"id":"x","embeddings":[[0.5],[0.25]],"texts":["a","b"],"response_type":"embeddings_floats"}"#;
        let v: Value =
            serde_json::from_slice(&embeddings_response(cohere, "c", false).unwrap()).unwrap();
        assert_eq!(v["data"][1]["embedding"], json!([0.25]));
        assert_eq!(v["data"][1]["index"], 1);
    }

    fn event(kind: &str, payload: Value) -> Vec<u8> {
        eventstream::encode(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.to_string().as_bytes(),
        )
    }

    #[test]
    fn stream_with_text_and_tool_call() {
        let mut wire = Vec::new();
        wire.extend(event("messageStart", json!({"role": "assistant"})));
        wire.extend(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
        ));
        wire.extend(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "lo"}}),
        ));
        wire.extend(event("contentBlockStop", json!({"contentBlockIndex": 0})));
        wire.extend(event(
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu1", "name": "f"}}}),
        ));
        wire.extend(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":"}}}),
        ));
        wire.extend(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}}),
        ));
        wire.extend(event("messageStop", json!({"stopReason": "tool_use"})));
        wire.extend(event(
            "metadata",
            json!({"usage": {"inputTokens": 5, "outputTokens": 3, "totalTokens": 8}}),
        ));
        let mut t = StreamTranslator::new(true, 1, "m", "id1", "req");
        let mut text = Vec::new();
        for piece in wire.chunks(7) {
            text.extend(t.feed(piece));
        }
        assert!(t.is_done());
        let text = String::from_utf8(text).unwrap();
        let chunks = crate::dialect::stream_test::chunks(&text);
        assert_eq!(crate::dialect::stream_test::content(&chunks), "Hello");
        let args: String = chunks
            .iter()
            .filter_map(|c| {
                c.pointer("/choices/0/delta/tool_calls/0/function/arguments")
                    .and_then(Value::as_str)
            })
            .collect();
        assert_eq!(args, "{\"a\":1}");
        assert!(
            chunks
                .iter()
                .any(|c| c.pointer("/choices/0/finish_reason") == Some(&json!("tool_calls")))
        );
        assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 8);

        // An exception event mid-stream ends it with an OpenAI error event.
        let mut t = StreamTranslator::new(false, 1, "m", "id2", "req-2");
        let mut wire = event("messageStart", json!({"role": "assistant"}));
        wire.extend(eventstream::encode(
            &[
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            br#"{"message":"slow down"}"#,
        ));
        let text = String::from_utf8(t.feed(&wire)).unwrap();
        assert!(t.is_done());
        assert!(
            text.contains("throttlingException: slow down") && text.contains("req-2"),
            "{text}"
        );
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
}
