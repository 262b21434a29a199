//! Google Gemini API (`generateContent` / `streamGenerateContent?alt=sse`):
//! request translation from OpenAI chat completions, and the answer back (JSON,
//! SSE stream, errors).

use serde_json::{Map, Value, json};

use super::{
    Answer, Api, Context, Progress, StreamEnd, StreamTranslator as Translate, TranslateError,
};
use crate::failure::{FailureClass, mentions_content_policy, mentions_context_length, scrub};
use crate::request::{Endpoint, Members};
use crate::sse;

fn invalid(msg: impl Into<String>) -> TranslateError {
    TranslateError::Invalid(msg.into())
}

fn parts(content: Option<&Value>) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"text": s})]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => Ok(json!({"text": p.get("text").cloned().unwrap_or(json!(""))})),
                Some("image_url") => {
                    let url = p
                        .pointer("/image_url/url")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    match url
                        .strip_prefix("data:")
                        .and_then(|r| r.split_once(";base64,"))
                    {
                        Some((mime, data)) => {
                            Ok(json!({"inlineData": {"mimeType": mime, "data": data}}))
                        }
                        None => Ok(json!({"fileData": {"fileUri": url}})),
                    }
                }
                other => Err(invalid(format!(
                    "content part type {other:?} is not supported by Gemini"
                ))),
            })
            .collect(),
        Some(_) => Err(invalid(
            "message content must be a string or an array of parts",
        )),
    }
}

/// The function name of the earlier assistant tool call that tool message `m`
/// answers (OpenAI tool messages carry only the call's id; Gemini wants the name).
fn called_name<'a>(earlier: &'a [Value], m: &Value) -> Option<&'a str> {
    let id = m.get("tool_call_id")?;
    earlier
        .iter()
        .rev()
        .filter_map(|e| e.get("tool_calls").and_then(Value::as_array))
        .flatten()
        .find(|c| c.get("id") == Some(id))
        .and_then(|c| c.pointer("/function/name"))
        .and_then(Value::as_str)
}

/// Translates an OpenAI chat-completions request into a Gemini request (the model
/// travels in the path).
pub fn request(req: &Value) -> Result<Value, TranslateError> {
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages must be an array"))?;
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("messages[{i}].role is missing")))?;
        let (role, mut p) = match role {
            "system" | "developer" => {
                system.push(super::content_text(m.get("content")));
                continue;
            }
            "user" => ("user", parts(m.get("content"))?),
            "assistant" => ("model", parts(m.get("content"))?),
            "tool" => (
                "user",
                vec![json!({"functionResponse": {
                    "name": m.get("name").and_then(Value::as_str).or_else(|| called_name(&messages[..i], m)).unwrap_or("tool"),
                    "response": {"content": super::content_text(m.get("content"))},
                }})],
            ),
            other => {
                return Err(invalid(format!(
                    "messages[{i}].role `{other}` is not supported"
                )));
            }
        };
        for (_, name, args) in super::tool_calls(m) {
            p.push(json!({"functionCall": {"name": name, "args": args}}));
        }
        match contents.last_mut() {
            Some(last) if last.get("role").and_then(Value::as_str) == Some(role) => {
                if let Some(Value::Array(existing)) = last.get_mut("parts") {
                    existing.extend(p);
                }
            }
            _ => contents.push(json!({"role": role, "parts": p})),
        }
    }
    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system.join("\n\n")}]}),
        );
    }
    let mut generation = super::sampling(
        req,
        &[
            ("temperature", "temperature"),
            ("top_p", "topP"),
            ("seed", "seed"),
        ],
        "maxOutputTokens",
        "stopSequences",
    );
    if req
        .pointer("/response_format/type")
        .and_then(Value::as_str)
        .is_some_and(|t| t == "json_object" || t == "json_schema")
    {
        generation.insert("responseMimeType".into(), json!("application/json"));
    }
    if !generation.is_empty() {
        out.insert("generationConfig".into(), Value::Object(generation));
    }
    if let Some(tools) = super::function_tools(req) {
        let decls: Vec<Value> = tools
            .into_iter()
            .map(|f| {
                json!({
                    "name": f.name,
                    "description": f.description.unwrap_or(json!("")),
                    "parameters": f.parameters,
                })
            })
            .collect();
        out.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        if let Some(config) = function_calling_config(req.get("tool_choice")) {
            out.insert(
                "toolConfig".into(),
                json!({ "functionCallingConfig": config }),
            );
        }
    }
    Ok(Value::Object(out))
}

/// OpenAI's `tool_choice` as Gemini's `functionCallingConfig`: `none` → `NONE`,
/// `auto` → `AUTO`, `required` → `ANY`, a named function → `ANY` limited to it.
fn function_calling_config(choice: Option<&Value>) -> Option<Value> {
    match choice? {
        Value::String(s) => match s.as_str() {
            "none" => Some(json!({"mode": "NONE"})),
            "auto" => Some(json!({"mode": "AUTO"})),
            "required" => Some(json!({"mode": "ANY"})),
            _ => None,
        },
        c @ Value::Object(_) => c
            .pointer("/function/name")
            .filter(|n| n.is_string())
            .map(|n| json!({"mode": "ANY", "allowedFunctionNames": [n]})),
        _ => None,
    }
}

// === embeddings ===

/// Translates an OpenAI embeddings request into `batchEmbedContents` (one request
/// per input text). Token-id inputs have no Gemini equivalent.
pub fn embeddings_request(req: &Value, model: &str) -> Result<Value, TranslateError> {
    let texts = super::embedding_texts(req, "Gemini")?;
    let dimensions = req.get("dimensions").filter(|d| d.is_u64());
    let requests: Vec<Value> = texts
        .into_iter()
        .map(|t| {
            let mut r =
                json!({"model": format!("models/{model}"), "content": {"parts": [{"text": t}]}});
            if let Some(d) = dimensions {
                r["outputDimensionality"] = d.clone();
            }
            r
        })
        .collect();
    Ok(json!({ "requests": requests }))
}

/// Translates a `batchEmbedContents` answer into an OpenAI embeddings list;
/// `base64` encodes each vector as little-endian f32s, as OpenAI does for
/// `encoding_format: base64`. Gemini reports no token usage: it is zero.
pub fn embeddings_response(
    body: &[u8],
    model: &str,
    base64: bool,
) -> Result<Vec<u8>, TranslateError> {
    let vectors = super::answer_list(body, "embeddings")?
        .iter()
        .map(|e| {
            e.get("values")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    Ok(super::embeddings_list(vectors, model, 0, base64))
}

/// Translates an OpenAI embeddings request into Vertex AI's `:predict` for text
/// embedding models (one instance per input text).
pub fn vertex_embeddings_request(req: &Value, _model: &str) -> Result<Value, TranslateError> {
    let instances: Vec<Value> = super::embedding_texts(req, "Vertex AI")?
        .into_iter()
        .map(|t| json!({ "content": t }))
        .collect();
    let mut out = json!({ "instances": instances });
    if let Some(d) = req.get("dimensions").filter(|d| d.is_u64()) {
        out["parameters"] = json!({ "outputDimensionality": d });
    }
    Ok(out)
}

/// Translates a Vertex AI `:predict` embeddings answer (`predictions[].embeddings
/// .values`, token counts in `statistics`) into an OpenAI embeddings list.
pub fn vertex_embeddings_response(
    body: &[u8],
    model: &str,
    base64: bool,
) -> Result<Vec<u8>, TranslateError> {
    let predictions = super::answer_list(body, "predictions")?;
    let tokens = predictions
        .iter()
        .filter_map(|p| {
            p.pointer("/embeddings/statistics/token_count")
                .and_then(Value::as_f64)
        })
        .sum::<f64>() as u64;
    let vectors = predictions
        .iter()
        .map(|p| {
            p.pointer("/embeddings/values")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    Ok(super::embeddings_list(vectors, model, tokens, base64))
}

/// Maps Gemini's `finishReason` to OpenAI's `finish_reason`.
///
/// Every reason that means the provider withheld the answer (Gemini's
/// `FinishReason`: safety, recitation, blocklist, prohibited content, SPII, an
/// unsupported language, and the image variants, `NO_IMAGE` included) is
/// `content_filter`: a failure class that can fall over, never an empty `stop`.
pub fn finish_reason(reason: &str, has_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "LANGUAGE"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "IMAGE_OTHER"
        | "NO_IMAGE" => "content_filter",
        _ if has_calls => "tool_calls",
        _ => "stop",
    }
}

/// Whether Gemini's `finishReason` says the answer is broken rather than
/// complete or withheld: a malformed or unexpected tool call, too many tool
/// calls, or an unknown reason (`OTHER`). Such an answer is a `bad_response`
/// (it falls over), never a plausible `stop`.
pub fn broken_finish(reason: &str) -> bool {
    matches!(
        reason,
        "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" | "TOO_MANY_TOOL_CALLS" | "OTHER"
    )
}

/// OpenAI usage from `usageMetadata`. Thinking tokens are billed as output, and
/// OpenAI counts reasoning tokens in `completion_tokens`: they are added in.
fn usage(v: &Value) -> Option<Value> {
    let u = v.get("usageMetadata")?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(super::usage(
        n("promptTokenCount"),
        n("candidatesTokenCount").saturating_add(n("thoughtsTokenCount")),
    ))
}

/// Text and tool calls of the first candidate.
fn candidate(v: &Value) -> (String, Vec<Value>, Option<&str>) {
    let c = v.pointer("/candidates/0");
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in c
        .and_then(|c| c.pointer("/content/parts"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        // Thought summaries (`includeThoughts`) are not part of the answer.
        .filter(|p| p.get("thought") != Some(&Value::Bool(true)))
    {
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(f) = part.get("functionCall") {
            calls.push(json!({
                "id": format!("call_{}", calls.len()),
                "type": "function",
                "function": {
                    "name": f.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": f.get("args").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            }));
        }
    }
    (
        text,
        calls,
        c.and_then(|c| c.get("finishReason"))
            .and_then(Value::as_str),
    )
}

/// Translates a `generateContent` answer into a chat completion.
pub fn response(body: &[u8], created: u64, model: &str) -> Result<Vec<u8>, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("provider sent invalid JSON: {e}")))?;
    let (text, calls, finish) = candidate(&v);
    // A blocked prompt has no candidate: the answer is an empty, filtered one.
    let finish = finish.or(block_reason(&v).map(|_| "SAFETY"));
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    let has_calls = !calls.is_empty();
    if has_calls {
        message["tool_calls"] = Value::Array(calls);
    }
    let out = json!({
        "id": v.get("responseId").cloned().unwrap_or(json!("gemini")),
        "object": "chat.completion",
        "created": created,
        "model": v.get("modelVersion").and_then(Value::as_str).unwrap_or(model),
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(finish.unwrap_or("STOP"), has_calls)}],
        "usage": usage(&v).unwrap_or_else(|| super::usage(0, 0)),
    });
    Ok(out.to_string().into_bytes())
}

/// `(status, message)` of a Gemini error body.
pub fn error_details(body: &[u8]) -> Option<(String, String)> {
    super::error_kind_and_message(body, "status", "UNKNOWN")
}

/// Why the prompt was blocked (`promptFeedback.blockReason`), if it was.
fn block_reason(v: &Value) -> Option<String> {
    v.pointer("/promptFeedback/blockReason")
        .and_then(Value::as_str)
        .filter(|r| *r != "BLOCK_REASON_UNSPECIFIED")
        .map(|r| format!("the prompt was blocked ({r})"))
}

/// The class of a Google error `status` (in an error answer or event).
fn classify_status(status: &str, message: &str) -> Option<FailureClass> {
    let lower = message.to_ascii_lowercase();
    Some(match status {
        "NOT_FOUND" => FailureClass::ModelUnavailable,
        "RESOURCE_EXHAUSTED" => FailureClass::RateLimited,
        "PERMISSION_DENIED" | "UNAUTHENTICATED" => FailureClass::Auth,
        // Gemini answers a bad key with 400 INVALID_ARGUMENT.
        "INVALID_ARGUMENT" if lower.contains("api key") => FailureClass::Auth,
        "INVALID_ARGUMENT" if mentions_content_policy(&lower) => FailureClass::ContentFilter,
        "INVALID_ARGUMENT" if mentions_context_length(&lower) => FailureClass::ContextLength,
        "UNAVAILABLE" | "INTERNAL" | "DEADLINE_EXCEEDED" => FailureClass::ServerError,
        _ => return None,
    })
}

/// Turns a `streamGenerateContent?alt=sse` stream into OpenAI chunks.
#[derive(Debug)]
pub struct StreamTranslator {
    parser: sse::Parser,
    include_usage: bool,
    created: u64,
    model: String,
    started: bool,
    usage: Option<Value>,
    calls: usize,
    /// The finish reason seen (some models send one on every chunk: the stream is
    /// only over when the provider ends it, see [`StreamTranslator::finish`]).
    finish: Option<&'static str>,
    /// Why the provider's safety system stopped the answer, if it did.
    filtered: Option<String>,
    request_id: String,
    progress: Progress,
}

impl StreamTranslator {
    /// `include_usage`: the client asked for the final usage chunk; error events
    /// carry `request_id`.
    pub fn new(include_usage: bool, created: u64, model: &str, request_id: &str) -> Self {
        StreamTranslator {
            parser: sse::Parser::default(),
            include_usage,
            created,
            model: model.to_string(),
            started: false,
            usage: None,
            calls: 0,
            finish: None,
            filtered: None,
            request_id: request_id.to_string(),
            progress: Progress::default(),
        }
    }

    /// Ends the translated stream with an error event and `[DONE]`.
    fn fail(&mut self, class: FailureClass, message: String, code: &str) -> String {
        let out = crate::error::stream_error_events(&scrub(&message), code, &self.request_id);
        self.progress.end = Some(StreamEnd::Failed(class, message));
        self.progress.error_tail = out.len();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A finish reason was seen: the answer is complete.
    pub fn is_done(&self) -> bool {
        self.finish.is_some()
    }

    /// What the stream has shown so far.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// The end of the translated stream, once the provider's stream has ended: the
    /// finish chunk, the usage chunk if asked for, `[DONE]`; an error event when no
    /// finish reason was seen. Nothing when the stream already ended.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.progress.end.is_some() {
            return Vec::new();
        }
        let Some(finish) = self.finish else {
            return self
                .fail(
                    FailureClass::BadResponse,
                    "The provider ended the stream before the answer was complete.".to_string(),
                    "stream_truncated",
                )
                .into_bytes();
        };
        self.progress.content = self.progress.content || self.filtered.is_none();
        self.progress.end = Some(match self.filtered.clone() {
            Some(why) => StreamEnd::Filtered(why),
            None => StreamEnd::Complete,
        });
        let mut out = self.chunk(json!({}), Some(finish));
        let usage = self
            .include_usage
            .then(|| self.usage.clone().unwrap_or_else(|| super::usage(0, 0)));
        out.push_str(&super::stream_end(
            "gemini",
            self.created,
            &self.model,
            usage,
        ));
        out.into_bytes()
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        super::chunk_event("gemini", self.created, &self.model, delta, finish)
    }

    /// Translates one chunk of the provider's stream.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = String::new();
        if self.progress.end.is_some() {
            return Vec::new();
        }
        for ev in self.parser.feed(bytes) {
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
            if let Some(e) = v.get("error") {
                let status = e.get("status").and_then(Value::as_str).unwrap_or("UNKNOWN");
                let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                let code = e.get("code").and_then(Value::as_u64).unwrap_or(500);
                let class = classify_status(status, message)
                    .or_else(|| FailureClass::from_status(u16::try_from(code).unwrap_or(500)))
                    .unwrap_or(FailureClass::ServerError);
                out.push_str(&self.fail(
                    class,
                    format!("{status}: {message}"),
                    "provider_stream_error",
                ));
                break;
            }
            if let Some(reason) = block_reason(&v) {
                // The prompt itself was blocked: no candidates will come.
                self.filtered = Some(reason);
                self.finish = Some("content_filter");
                continue;
            }
            if let Some(m) = v.get("modelVersion").and_then(Value::as_str) {
                self.model = m.to_string();
            }
            if !self.started {
                self.started = true;
                out.push_str(&self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            if let Some(u) = usage(&v) {
                self.usage = Some(u);
            }
            let (text, calls, finish) = candidate(&v);
            if let Some(f) = finish.filter(|f| broken_finish(f)) {
                out.push_str(&self.fail(
                    FailureClass::BadResponse,
                    format!("the provider ended its answer with finishReason {f}"),
                    "provider_stream_error",
                ));
                break;
            }
            // A safety stop is not an answer: the stream stays uncommitted, so a
            // route that allows it can still fall over.
            let filtered = finish.is_some_and(|f| finish_reason(f, false) == "content_filter");
            if !text.is_empty() || !calls.is_empty() || (finish.is_some() && !filtered) {
                self.progress.content = true;
            }
            if !text.is_empty() {
                out.push_str(&self.chunk(json!({"content": text}), None));
            }
            for mut c in calls {
                c["index"] = json!(self.calls);
                c["id"] = json!(format!("call_{}", self.calls));
                self.calls += 1;
                out.push_str(&self.chunk(json!({"tool_calls": [c]}), None));
            }
            if let Some(f) = finish {
                let reason = finish_reason(f, self.calls > 0);
                if reason == "content_filter" {
                    self.filtered = Some(format!("finishReason {f}"));
                }
                self.finish = Some(reason);
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
        StreamTranslator::finish(self)
    }

    fn progress(&self) -> Progress {
        self.progress.clone()
    }
}

// === the API ===

/// Google's Gemini API, or the same models on Vertex AI (its project path, an
/// OAuth token, `:predict` for embeddings).
#[derive(Debug)]
pub struct Gemini {
    vertex: bool,
}

/// `dialect: gemini`.
pub static GEMINI: Gemini = Gemini { vertex: false };
/// `dialect: vertex`.
pub static VERTEX: Gemini = Gemini { vertex: true };

impl Api for Gemini {
    fn path(
        &self,
        endpoint: Endpoint,
        base_path: &str,
        model: &str,
        _api_version: Option<&str>,
        stream: bool,
    ) -> String {
        match endpoint {
            Endpoint::Embeddings if self.vertex => format!("{base_path}/models/{model}:predict"),
            Endpoint::Embeddings => format!("{base_path}/models/{model}:batchEmbedContents"),
            Endpoint::Chat if stream => {
                format!("{base_path}/models/{model}:streamGenerateContent?alt=sse")
            }
            Endpoint::Chat => format!("{base_path}/models/{model}:generateContent"),
        }
    }

    fn health_path(&self, base_path: &str, _api_version: Option<&str>) -> Option<String> {
        // Vertex's publisher-model list is outside the project path.
        (!self.vertex).then(|| format!("{base_path}/models"))
    }

    fn auth_headers(&self, key: Option<&str>) -> Vec<(&'static str, String)> {
        match key {
            // Vertex takes an OAuth access token.
            Some(k) if self.vertex => vec![("authorization", format!("Bearer {k}"))],
            Some(k) => vec![("x-goog-api-key", k.to_string())],
            None => Vec::new(),
        }
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
            Endpoint::Embeddings if self.vertex => {
                super::translated(body, |r| vertex_embeddings_request(r, model))
            }
            Endpoint::Embeddings => super::translated(body, |r| embeddings_request(r, model)),
        }
    }

    fn answer(&self, body: &[u8], ctx: &Context<'_>) -> Answer {
        let translated = match (ctx.endpoint, self.vertex) {
            (Endpoint::Embeddings, true) => vertex_embeddings_response(body, ctx.model, ctx.base64),
            (Endpoint::Embeddings, false) => embeddings_response(body, ctx.model, ctx.base64),
            (Endpoint::Chat, _) => {
                let v: Value = match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => {
                        return Answer::Failed(
                            FailureClass::BadResponse,
                            format!("the provider's 200 is not valid JSON: {e}"),
                        );
                    }
                };
                let blocked = block_reason(&v);
                if blocked.is_none() && !v.get("candidates").is_some_and(Value::is_array) {
                    return Answer::Failed(
                        FailureClass::BadResponse,
                        "the provider's 200 has no `candidates`".to_string(),
                    );
                }
                if let Some(f) = candidate(&v).2.filter(|f| broken_finish(f)) {
                    return Answer::Failed(
                        FailureClass::BadResponse,
                        format!("the provider ended its answer with finishReason {f}"),
                    );
                }
                let filtered = blocked.or_else(|| {
                    candidate(&v)
                        .2
                        .filter(|f| finish_reason(f, false) == "content_filter")
                        .map(|f| format!("finishReason {f}"))
                });
                return match (response(body, ctx.created, ctx.model), filtered) {
                    (Ok(out), Some(why)) => Answer::Filtered(out, why),
                    (Ok(out), None) => Answer::Ok(out),
                    (Err(e), _) => Answer::Failed(FailureClass::BadResponse, e.to_string()),
                };
            }
        };
        match translated {
            Ok(out) => Answer::Ok(out),
            Err(e) => Answer::Failed(FailureClass::BadResponse, e.to_string()),
        }
    }

    fn stream(&self, ctx: &Context<'_>) -> Box<dyn Translate> {
        Box::new(StreamTranslator::new(
            ctx.include_usage,
            ctx.created,
            ctx.model,
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
                Some(classify_status(&kind, &message).unwrap_or(by_status)),
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
    fn request_shape() {
        let req = json!({"model": "x", "max_tokens": 20, "temperature": 0.1, "stop": "END",
            "response_format": {"type": "json_object"},
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"}]});
        let out = request(&req).unwrap();
        assert_eq!(out["systemInstruction"]["parts"][0]["text"], "be brief");
        assert_eq!(out["contents"][1]["role"], "model");
        assert_eq!(out["contents"].as_array().unwrap().len(), 3);
        assert_eq!(out["generationConfig"]["maxOutputTokens"], 20);
        assert_eq!(out["generationConfig"]["stopSequences"], json!(["END"]));
        assert_eq!(
            out["generationConfig"]["responseMimeType"],
            "application/json"
        );
    }

    #[test]
    fn embeddings_both_ways() {
        let req = json!({"model": "e", "input": ["a", "b"], "dimensions": 3});
        let out = embeddings_request(&req, "text-embedding-004").unwrap();
        assert_eq!(out["requests"][1]["model"], "models/text-embedding-004");
        assert_eq!(out["requests"][1]["content"]["parts"][0]["text"], "b");
        assert_eq!(out["requests"][0]["outputDimensionality"], 3);
        assert!(embeddings_request(&json!({"input": [1, 2]}), "m").is_err());
        let body = br#"{"embeddings":[{"values":[1.0,-2.5]},{"values":[0.5]}]}"#;
        let v: Value =
            serde_json::from_slice(&embeddings_response(body, "m", false).unwrap()).unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([1.0, -2.5]));
        assert_eq!(v["data"][1]["index"], 1);
        let v: Value =
            serde_json::from_slice(&embeddings_response(body, "m", true).unwrap()).unwrap();
        // 1.0f32 = 00 00 80 3f, -2.5f32 = 00 00 20 c0 (little-endian).
        assert_eq!(v["data"][0]["embedding"], "AACAPwAAIMA=");
    }

    #[test]
    fn vertex_embeddings() {
        let req = json!({"model": "e", "input": ["a", "b"], "dimensions": 3});
        assert_eq!(
            vertex_embeddings_request(&req, "text-embedding-005").unwrap(),
            json!({"instances": [{"content": "a"}, {"content": "b"}], "parameters": {"outputDimensionality": 3}})
        );
        let body = br#"{"predictions":[{"embeddings":{"statistics":{"truncated":false,"token_count":6},"values":[0.5,0.25]}},{"embeddings":{"statistics":{"truncated":false,"token_count":2},"values":[1.0,0.0]}}]}"#;
        let v: Value =
            serde_json::from_slice(&vertex_embeddings_response(body, "m", false).unwrap()).unwrap();
        assert_eq!(v["data"][1]["embedding"], json!([1.0, 0.0]));
        assert_eq!(v["usage"]["prompt_tokens"], 8);
    }

    #[test]
    fn json_and_stream_answers() {
        let body = br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hi"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1,"totalTokenCount":4},"modelVersion":"gemini-2.0-flash"}"#;
        let v: Value = serde_json::from_slice(&response(body, 1, "m").unwrap()).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hi");
        assert_eq!(v["usage"]["total_tokens"], 4);
        let stream = concat!(
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hel\"}]}}]}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"lo\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":2,\"candidatesTokenCount\":2}}\r\n\r\n",
        );
        let mut t = StreamTranslator::new(true, 1, "gemini-x", "r");
        let mut text = String::from_utf8(t.feed(stream.as_bytes())).unwrap();
        assert!(t.is_done());
        text.push_str(&String::from_utf8(t.finish()).unwrap());
        assert!(t.finish().is_empty(), "the end is sent once");
        let chunks = crate::dialect::stream_test::chunks(&text);
        assert_eq!(crate::dialect::stream_test::content(&chunks), "Hello");
        assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 4);
    }

    fn ctx() -> Context<'static> {
        Context {
            endpoint: Endpoint::Chat,
            model: "gemini-x",
            created: 1,
            request_id: "r",
            include_usage: false,
            base64: false,
        }
    }

    #[test]
    fn safety_blocks_are_content_filters_and_broken_answers_fail() {
        let blocked = br#"{"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[]},"usageMetadata":{"promptTokenCount":8}}"#;
        let Answer::Filtered(out, why) = GEMINI.answer(blocked, &ctx()) else {
            panic!("a blocked prompt is filtered")
        };
        assert!(why.contains("SAFETY"));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        let stopped = br#"{"candidates":[{"finishReason":"PROHIBITED_CONTENT","index":0}]}"#;
        assert!(matches!(
            GEMINI.answer(stopped, &ctx()),
            Answer::Filtered(..)
        ));
        assert!(matches!(
            GEMINI.answer(
                br#"{"candidates":[{"content":{"parts":[{"text":"Hi"}]}"#,
                &ctx()
            ),
            Answer::Failed(FailureClass::BadResponse, _)
        ));
        assert!(matches!(
            GEMINI.answer(br#"{"nothing":1}"#, &ctx()),
            Answer::Failed(FailureClass::BadResponse, _)
        ));
    }

    #[test]
    fn broken_finish_reasons_are_bad_responses() {
        for reason in [
            "MALFORMED_FUNCTION_CALL",
            "UNEXPECTED_TOOL_CALL",
            "TOO_MANY_TOOL_CALLS",
            "OTHER",
        ] {
            let body = format!(
                r#"{{"candidates":[{{"content":{{"role":"model","parts":[{{"text":"half"}}]}},"finishReason":"{reason}"}}]}}"#
            );
            assert!(
                matches!(GEMINI.answer(body.as_bytes(), &ctx()), Answer::Failed(FailureClass::BadResponse, ref m) if m.contains(reason)),
                "{reason}"
            );
            let mut t = StreamTranslator::new(true, 1, "gemini-x", "r");
            let text =
                String::from_utf8(t.feed(format!("data: {body}\r\n\r\n").as_bytes())).unwrap();
            assert!(text.contains("provider_stream_error"), "{reason}: {text}");
            assert!(
                matches!(
                    t.progress().end,
                    Some(StreamEnd::Failed(FailureClass::BadResponse, _))
                ),
                "{reason}"
            );
        }
        assert!(!broken_finish("STOP") && !broken_finish("MAX_TOKENS") && !broken_finish("SAFETY"));
    }

    #[test]
    fn every_blocking_finish_reason_is_a_content_filter() {
        for reason in [
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
            "LANGUAGE",
            "IMAGE_SAFETY",
            "IMAGE_PROHIBITED_CONTENT",
            "IMAGE_RECITATION",
            "IMAGE_OTHER",
            "NO_IMAGE",
        ] {
            assert_eq!(finish_reason(reason, false), "content_filter", "{reason}");
            assert_eq!(finish_reason(reason, true), "content_filter", "{reason}");
            // A complete answer that ends so is filtered (it can fall over)...
            let body = format!(
                r#"{{"candidates":[{{"content":{{"role":"model","parts":[{{"text":"Hi"}}]}},"finishReason":"{reason}","index":0}}]}}"#
            );
            let Answer::Filtered(out, why) = GEMINI.answer(body.as_bytes(), &ctx()) else {
                panic!("{reason}: a blocked answer is filtered")
            };
            assert!(why.contains(reason), "{reason}: {why}");
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(
                v["choices"][0]["finish_reason"], "content_filter",
                "{reason}"
            );
            // ...and so is a stream, which stays uncommitted.
            let mut t = StreamTranslator::new(false, 1, "g", "r");
            t.feed(
                format!(
                    "data: {{\"candidates\":[{{\"finishReason\":\"{reason}\",\"index\":0}}]}}\n\n"
                )
                .as_bytes(),
            );
            let text = String::from_utf8(t.finish()).unwrap();
            assert!(text.contains("content_filter"), "{reason}: {text}");
            assert!(!t.progress().content, "{reason}: nothing was committed");
            assert!(
                matches!(t.progress().end, Some(StreamEnd::Filtered(_))),
                "{reason}"
            );
        }
        // The others are not blocks.
        assert_eq!(finish_reason("STOP", false), "stop");
        assert_eq!(finish_reason("STOP", true), "tool_calls");
        assert_eq!(finish_reason("MAX_TOKENS", false), "length");
    }

    #[test]
    fn streams_never_drop_what_they_cannot_read() {
        // An in-stream error keeps the provider's message.
        let mut t = StreamTranslator::new(false, 1, "g", "r");
        let out = t.feed(b"data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}\n\n");
        assert!(String::from_utf8_lossy(&out).contains("The model is overloaded."));
        assert!(matches!(
            t.progress().end,
            Some(StreamEnd::Failed(FailureClass::ServerError, _))
        ));
        // A corrupt event ends the stream with an error, after the words before it.
        let mut t = StreamTranslator::new(false, 1, "g", "r");
        let mut out = t.feed(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}]}}]}\n\ndata: {\"candidates\":[{\"content\n\n");
        out.extend(t.finish());
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("Hel") && text.contains("bad_provider_response"),
            "{text}"
        );
        assert!(t.progress().content);
        assert!(matches!(
            t.progress().end,
            Some(StreamEnd::Failed(FailureClass::BadResponse, _))
        ));
        // A blocked prompt ends filtered.
        let mut t = StreamTranslator::new(false, 1, "g", "r");
        t.feed(b"data: {\"promptFeedback\":{\"blockReason\":\"PROHIBITED_CONTENT\"}}\n\n");
        let text = String::from_utf8(t.finish()).unwrap();
        assert!(text.contains("content_filter") && text.ends_with("data: [DONE]\n\n"));
        assert!(matches!(t.progress().end, Some(StreamEnd::Filtered(_))));
    }
}
