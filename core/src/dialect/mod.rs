//! Provider dialects: how an OpenAI chat-completions request becomes each
//! provider's request, and how each provider's answer becomes OpenAI's.

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod openai;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::failure::FailureClass;
use crate::request::{Endpoint, Members};

/// The API dialect a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// OpenAI chat completions (`POST {base}/chat/completions`, bearer key).
    Openai,
    /// Anthropic Messages (`POST {base}/messages`, `x-api-key`).
    Anthropic,
    /// Azure OpenAI (`POST {base}/openai/deployments/{model}/chat/completions
    /// ?api-version=…`, `api-key`); the target's model is the deployment name.
    AzureOpenai,
    /// Google Gemini API (`POST {base}/models/{model}:generateContent`, or
    /// `:streamGenerateContent?alt=sse`; `x-goog-api-key`).
    Gemini,
    /// Google Vertex AI: Gemini's body and paths under
    /// `…/projects/{p}/locations/{l}/publishers/google`, an OAuth bearer token
    /// supplied (and refreshed) by the control plane.
    Vertex,
    /// AWS Bedrock Converse (`POST {base}/model/{id}/converse`, or
    /// `/converse-stream` in the binary event-stream format); SigV4-signed, or a
    /// Bedrock API key as bearer token.
    Bedrock,
}

impl Dialect {
    /// Name used in config files and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Openai => "openai",
            Dialect::Anthropic => "anthropic",
            Dialect::AzureOpenai => "azure_openai",
            Dialect::Gemini => "gemini",
            Dialect::Vertex => "vertex",
            Dialect::Bedrock => "bedrock",
        }
    }

    /// Whether the provider has an embeddings API the gateway translates to.
    pub fn embeds(self) -> bool {
        api(self).embeds()
    }

    /// Whether requests and answers are in OpenAI's chat-completions format.
    pub fn speaks_openai(self) -> bool {
        api(self).speaks_openai()
    }

    /// Checks a model id (or Azure deployment name) against the characters this
    /// provider's ids are made of. Ids reach the provider inside a URL path for
    /// Azure, Gemini, Vertex and Bedrock (encoded as one segment) and inside JSON
    /// for the others; an allow-list keeps a client-chosen name from being anything
    /// but a name (`..`, `?`, `#`, `%`, spaces and controls are never accepted).
    pub fn check_model(self, model: &str) -> Result<(), String> {
        let (extra, allowed): (&[u8], &str) = match self {
            // `org/model` (OpenAI-compatible hosts), `ft:…:…`, `llama3:8b`.
            Dialect::Openai => (b"-._:/@+", "letters, digits and `-._:/@+`"),
            Dialect::AzureOpenai => (b"-._", "letters, digits and `-._`"),
            Dialect::Anthropic => (b"-._:@", "letters, digits and `-._:@`"),
            Dialect::Gemini | Dialect::Vertex => (b"-._@", "letters, digits and `-._@`"),
            // Model ids, inference profiles and ARNs (`arn:aws:bedrock:…:…/…`).
            Dialect::Bedrock => (b"-._:/", "letters, digits and `-._:/`"),
        };
        if model.is_empty() || model.len() > MAX_MODEL_LEN {
            return Err(format!(
                "a {} model id has 1 to {MAX_MODEL_LEN} characters",
                self.as_str()
            ));
        }
        if !model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
        {
            return Err(format!("a {} model id is made of {allowed}", self.as_str()));
        }
        if model
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(format!(
                "a {} model id has no empty, `.` or `..` path segments",
                self.as_str()
            ));
        }
        Ok(())
    }
}

/// Longest model id accepted.
pub const MAX_MODEL_LEN: usize = 256;

/// Request fields that steer the gateway and must never reach a provider.
pub const GATEWAY_FIELDS: &[&str] = &["fallbacks"];

/// What an attempt sends, and what the response side needs to remember.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedRequest {
    /// The body in the provider's dialect.
    pub body: Vec<u8>,
    /// The client asked for a stream.
    pub stream: bool,
    /// The client asked for a final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Embeddings: the client asked for base64 vectors (`encoding_format`).
    pub base64: bool,
}

/// Why a request could not be put into a provider's dialect.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The request does not have the shape the translation needs.
    #[error("{0}")]
    Invalid(String),
}

/// The text of an OpenAI message `content`: the string, or its text parts joined.
pub(crate) fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Appends a message, merged into the previous one when it has the same role
/// (Anthropic and Bedrock want the roles alternating).
pub(crate) fn push_merged(out: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if let Some(last) = out.last_mut()
        && last.get("role").and_then(Value::as_str) == Some(role)
        && let Some(Value::Array(existing)) = last.get_mut("content")
    {
        existing.extend(blocks);
        return;
    }
    out.push(serde_json::json!({ "role": role, "content": blocks }));
}

/// The tool calls of an OpenAI assistant message as `(id, name, arguments)`, the
/// arguments parsed (`{}` when they are not JSON).
pub(crate) fn tool_calls(m: &Value) -> impl Iterator<Item = (Value, Value, Value)> + '_ {
    m.get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let args = c
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or("{}");
            (
                c.get("id").cloned().unwrap_or(Value::Null),
                c.pointer("/function/name").cloned().unwrap_or(Value::Null),
                serde_json::from_str(args).unwrap_or_else(|_| serde_json::json!({})),
            )
        })
}

/// The sampling settings of `req` under the provider's names: `top_p`, the other
/// plain settings `renames` lists, the token limit as `max_key` and `stop` (always
/// an array) as `stop_key`. Gemini's `generationConfig`, Bedrock's `inferenceConfig`.
pub(crate) fn sampling(
    req: &Value,
    renames: &[(&str, &str)],
    max_key: &str,
    stop_key: &str,
) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for (from, to) in renames {
        if let Some(v) = req.get(*from).filter(|v| !v.is_null()) {
            out.insert((*to).into(), v.clone());
        }
    }
    if let Some(v) = max_tokens(req) {
        out.insert(max_key.into(), v.clone());
    }
    if let Some(stop) = stop_sequences(req) {
        out.insert(stop_key.into(), stop);
    }
    out
}

/// The parsed answer of a provider and its array member `key`.
pub(crate) fn answer_list(body: &[u8], key: &str) -> Result<Vec<Value>, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::Invalid(format!("provider sent invalid JSON: {e}")))?;
    match v.get(key) {
        Some(Value::Array(items)) => Ok(items.clone()),
        _ => Err(TranslateError::Invalid(format!(
            "provider answer has no `{key}`"
        ))),
    }
}

/// An OpenAI function tool of a request, before it takes a provider's shape.
pub(crate) struct FunctionTool {
    /// `function.name`.
    pub name: Value,
    /// `function.description`, when given.
    pub description: Option<Value>,
    /// `function.parameters` (a JSON schema), `{"type":"object"}` when absent.
    pub parameters: Value,
}

/// The function tools of `req` (`tools[].function`); `None` without `tools`.
pub(crate) fn function_tools(req: &Value) -> Option<Vec<FunctionTool>> {
    let tools = req.get("tools").and_then(Value::as_array)?;
    Some(
        tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| FunctionTool {
                name: f.get("name").cloned().unwrap_or(Value::Null),
                description: f.get("description").cloned(),
                parameters: f
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "object"})),
            })
            .collect(),
    )
}

/// `max_completion_tokens`, else `max_tokens`.
pub(crate) fn max_tokens(req: &Value) -> Option<&Value> {
    req.get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .filter(|v| !v.is_null())
}

/// `stop` as an array of sequences.
pub(crate) fn stop_sequences(req: &Value) -> Option<Value> {
    match req.get("stop") {
        Some(Value::String(s)) => Some(serde_json::json!([s])),
        Some(a @ Value::Array(_)) => Some(a.clone()),
        _ => None,
    }
}

/// For providers without a JSON mode (Anthropic, Bedrock): the instruction that
/// asks for one, when the request's `response_format` wants JSON.
pub(crate) fn json_mode_instruction(req: &Value) -> Option<String> {
    let format = req.get("response_format")?;
    match format.get("type").and_then(Value::as_str)? {
        "json_object" => Some("Respond with a single JSON object and nothing else.".to_string()),
        "json_schema" => {
            let schema = format
                .pointer("/json_schema/schema")
                .cloned()
                .unwrap_or(Value::Null);
            Some(format!(
                "Respond with a single JSON object that matches this JSON schema, and nothing else: {schema}"
            ))
        }
        _ => None,
    }
}

/// `error.message` of a provider's error body: OpenAI, Azure, Anthropic and Gemini
/// all put it there.
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// `(error.<kind_key>, error.message)` of a provider's error body, `default` when
/// the kind is missing.
pub(crate) fn error_kind_and_message(
    body: &[u8],
    kind_key: &str,
    default: &str,
) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    let field = |k: &str, d: &str| e.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
    Some((field(kind_key, default), field("message", "")))
}

/// Standard base64 (with padding), for embeddings asked as `encoding_format: base64`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An OpenAI `usage` object. The counts come from the provider: their sum
/// saturates rather than overflow.
pub(crate) fn usage(prompt: u64, completion: u64) -> Value {
    serde_json::json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt.saturating_add(completion)})
}

/// The texts of an embeddings request's `input` (token-id inputs have no
/// equivalent outside OpenAI's API).
pub(crate) fn embedding_texts<'a>(
    req: &'a Value,
    provider: &str,
) -> Result<Vec<&'a str>, TranslateError> {
    match req.get("input") {
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().ok_or_else(|| {
                    TranslateError::Invalid(format!("{provider} embeds text only, not token ids"))
                })
            })
            .collect(),
        _ => Err(TranslateError::Invalid(
            "`input` must be a string or an array of strings".to_string(),
        )),
    }
}

/// An OpenAI embeddings list from vectors; `base64` encodes each as little-endian
/// f32s, as OpenAI does for `encoding_format: base64`.
pub(crate) fn embeddings_list(
    vectors: Vec<Vec<Value>>,
    model: &str,
    prompt_tokens: u64,
    base64: bool,
) -> Vec<u8> {
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, values)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = values
                    .iter()
                    .flat_map(|x| (x.as_f64().unwrap_or(0.0) as f32).to_le_bytes())
                    .collect();
                Value::String(self::base64(&bytes))
            } else {
                Value::Array(values)
            };
            serde_json::json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    serde_json::json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}})
    .to_string()
    .into_bytes()
}

/// One OpenAI chat-completion chunk as an SSE event (for translated streams).
pub fn chunk_event(
    id: &str,
    created: u64,
    model: &str,
    delta: Value,
    finish: Option<&str>,
) -> String {
    let c = serde_json::json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    format!("data: {c}\n\n")
}

/// The end of a translated stream: the usage chunk when the client asked for it
/// (`stream_options.include_usage`), then `[DONE]`.
pub fn stream_end(id: &str, created: u64, model: &str, usage: Option<Value>) -> String {
    let mut out = String::new();
    if let Some(usage) = usage {
        let c = serde_json::json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": usage,
        });
        out.push_str(&format!("data: {c}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

/// Azure OpenAI `api-version` used when the provider config names none.
pub const AZURE_API_VERSION: &str = "2024-10-21";

// === the interface of a provider API ===

/// What an attempt's answer is translated with.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The endpoint the request is for.
    pub endpoint: Endpoint,
    /// The model as the provider knows it.
    pub model: &'a str,
    /// Unix seconds, for OpenAI's `created`.
    pub created: u64,
    /// The gateway's request id (error events carry it; answers without an id of
    /// their own are named after it).
    pub request_id: &'a str,
    /// The client asked for a final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Embeddings asked as base64 (`encoding_format`).
    pub base64: bool,
}

/// A provider's complete (non-streamed) answer, judged.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// A valid answer, in OpenAI's format.
    Ok(Vec<u8>),
    /// A valid answer that the provider's safety system cut or refused (OpenAI
    /// format, `finish_reason: content_filter`); why.
    Filtered(Vec<u8>, String),
    /// Not an answer: the provider's 200 does not hold a valid one (`class`
    /// [`FailureClass::BadResponse`]), or holds a refusal with no content.
    Failed(FailureClass, String),
}

/// How far a translated stream got.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// The provider produced answer content (text, a tool call, reasoning) or
    /// finished: the stream can be committed to the client.
    pub content: bool,
    /// The stream is over, and how.
    pub end: Option<StreamEnd>,
    /// When it ended [`StreamEnd::Failed`]: the length of the error event and
    /// `[DONE]` that end the translated output (a caller continuing the answer
    /// elsewhere leaves them out).
    pub error_tail: usize,
}

/// How a provider's stream ended.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEnd {
    /// Properly, with its last event.
    Complete,
    /// Properly, but cut by the provider's content filter (the translated stream
    /// ends with `finish_reason: content_filter`); why.
    Filtered(String),
    /// With the provider's error, an event that could not be understood, or
    /// before its last event. The translated stream already ends with an OpenAI
    /// error event and `[DONE]`.
    Failed(FailureClass, String),
}

/// Turns a provider's event stream into OpenAI chat-completion chunks, fed the
/// provider's bytes as they come. It never drops what it cannot understand in
/// silence: such a stream ends [`StreamEnd::Failed`] with an error event.
pub trait StreamTranslator {
    /// Translates the next bytes; returns the bytes to send on.
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8>;
    /// The provider's stream ended: what closes the translated one (an error event
    /// and `[DONE]` when it ended before its last event).
    fn finish(&mut self) -> Vec<u8>;
    /// What the stream has shown so far.
    fn progress(&self) -> Progress;
}

/// One provider API: how an OpenAI request reaches it and how its answers come
/// back. Implemented once per dialect (in `dialect/<name>.rs`) and reached through
/// [`api`]; the planner and adapter name no dialect ([`Dialect::check_model`]
/// still knows each dialect's model-id characters, the config its settings, and
/// `inbound` which dialects speak the client APIs natively).
pub trait Api: Sync {
    /// The request path of `endpoint` for `model` under `base_path` (`model` is
    /// already one percent-encoded path segment).
    fn path(
        &self,
        endpoint: Endpoint,
        base_path: &str,
        model: &str,
        api_version: Option<&str>,
        stream: bool,
    ) -> String;

    /// The path of the provider's model list (a free request, for health checks);
    /// `None` where the inference endpoint has none.
    fn health_path(&self, base_path: &str, api_version: Option<&str>) -> Option<String>;

    /// The headers that carry credential `key` (and the API version header).
    fn auth_headers(&self, key: Option<&str>) -> Vec<(&'static str, String)>;

    /// Other request headers an attempt may set (request signing).
    fn signing_headers(&self) -> &'static [&'static str] {
        &[]
    }

    /// The AWS service name requests are signed for (SigV4), when the dialect
    /// signs with AWS credentials.
    fn signing_service(&self) -> Option<&'static str> {
        None
    }

    /// Whether requests and answers are OpenAI's own format (nothing to translate).
    fn speaks_openai(&self) -> bool {
        false
    }

    /// Whether the provider has an embeddings API the gateway translates to.
    fn embeds(&self) -> bool {
        true
    }

    /// Whether the model continues a final assistant message (prefill) rather
    /// than answering anew.
    fn continues_prefill(&self) -> bool {
        false
    }

    /// The request body for `model`, from the client's OpenAI request (its raw
    /// top-level `members` and the whole `body`).
    fn prepare(
        &self,
        endpoint: Endpoint,
        members: &Members<'_>,
        body: &[u8],
        model: &str,
    ) -> Result<Vec<u8>, TranslateError>;

    /// A complete (non-streamed) 2xx answer, checked and translated.
    fn answer(&self, body: &[u8], ctx: &Context<'_>) -> Answer;

    /// A translator for a streamed 2xx answer.
    fn stream(&self, ctx: &Context<'_>) -> Box<dyn StreamTranslator>;

    /// The response header holding the provider's error type, if it has one.
    fn error_type_header(&self) -> Option<&'static str> {
        None
    }

    /// The failure class and message of an error answer (`error_type`: the value
    /// of [`Api::error_type_header`]); the class is `None` for a 2xx status.
    fn classify_error(
        &self,
        status: u16,
        error_type: Option<&str>,
        body: &[u8],
    ) -> (Option<FailureClass>, Option<String>);
}

/// The API of `dialect`.
pub fn api(dialect: Dialect) -> &'static dyn Api {
    match dialect {
        Dialect::Openai => &openai::OPENAI,
        Dialect::AzureOpenai => &openai::AZURE,
        Dialect::Anthropic => &anthropic::ANTHROPIC,
        Dialect::Gemini => &gemini::GEMINI,
        Dialect::Vertex => &gemini::VERTEX,
        Dialect::Bedrock => &bedrock::BEDROCK,
    }
}

/// The request path for `model` at a provider of `dialect` under `base_path`.
pub fn path(
    dialect: Dialect,
    endpoint: Endpoint,
    base_path: &str,
    model: &str,
    api_version: Option<&str>,
    stream: bool,
) -> String {
    // The model is one path segment wherever it is in the path: whatever it holds,
    // it cannot reach another endpoint of the provider.
    let segment = crate::sigv4::encode_segment(model);
    api(dialect).path(endpoint, base_path, &segment, api_version, stream)
}

/// The headers that carry credential `key` to a provider of `dialect` (Bedrock's
/// SigV4 signature is added by the adapter once the body is known).
pub fn auth_headers(dialect: Dialect, key: Option<&str>) -> Vec<(&'static str, String)> {
    api(dialect).auth_headers(key)
}

/// The path of a provider's model list: a cheap, free request for health checks.
pub fn health_path(dialect: Dialect, base_path: &str, api_version: Option<&str>) -> Option<String> {
    api(dialect).health_path(base_path, api_version)
}

/// Rewrites an OpenAI chat-completions or embeddings request body for `dialect`,
/// addressed to `model`, and says what the response side needs to know.
pub fn prepare_request(
    dialect: Dialect,
    endpoint: Endpoint,
    body: &[u8],
    model: &str,
) -> Result<PreparedRequest, TranslateError> {
    let members: Members<'_> = serde_json::from_slice(body)
        .map_err(|e| TranslateError::Invalid(format!("request body: {e}")))?;
    let body = api(dialect).prepare(endpoint, &members, body, model)?;
    if endpoint == Endpoint::Embeddings {
        let base64 = members
            .get("encoding_format")
            .is_some_and(|f| f.get() == "\"base64\"");
        return Ok(PreparedRequest {
            body,
            stream: false,
            include_usage: false,
            base64,
        });
    }
    let stream = members.get("stream").is_some_and(|v| v.get() == "true");
    let include_usage = stream
        && members
            .get("stream_options")
            .and_then(|o| serde_json::from_str::<StreamOptions>(o.get()).ok())
            .is_some_and(|o| o.include_usage == Some(true));
    Ok(PreparedRequest {
        body,
        stream,
        include_usage,
        base64: false,
    })
}

/// Parses `body` and applies a translation from OpenAI's JSON to a provider's.
pub(crate) fn translated(
    body: &[u8],
    f: impl FnOnce(&Value) -> Result<Value, TranslateError>,
) -> Result<Vec<u8>, TranslateError> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::Invalid(format!("request body: {e}")))?;
    serde_json::to_vec(&f(&request)?).map_err(|e| TranslateError::Invalid(e.to_string()))
}

#[derive(serde::Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// Reading translated streams in the dialects' unit tests.
#[cfg(test)]
pub(crate) mod stream_test {
    use serde_json::Value;

    /// The chunks of a translated OpenAI stream, which must end with `[DONE]`.
    pub fn chunks(text: &str) -> Vec<Value> {
        let datas: Vec<&str> = text
            .split("\n\n")
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_start_matches("data: "))
            .collect();
        assert_eq!(datas.last(), Some(&"[DONE]"), "{text}");
        datas[..datas.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    /// The answer text the chunks carry.
    pub fn content(chunks: &[Value]) -> String {
        chunks
            .iter()
            .filter_map(|c| {
                c.pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The class of an error answer, as the adapter finds it for a dialect
    /// without an error-type header.
    fn classify(dialect: Dialect, status: u16, body: &str) -> Option<FailureClass> {
        api(dialect).classify_error(status, None, body.as_bytes()).0
    }

    #[test]
    fn each_providers_prompt_too_long_error_is_context_length() {
        // The providers' documented (or observed) wording for a prompt over the window.
        let cases: [(Dialect, u16, &str); 5] = [
            (
                Dialect::Openai,
                400,
                r#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            ),
            (
                Dialect::AzureOpenai,
                400,
                r#"{"error":{"message":"This model's maximum context length is 4096 tokens, however you requested 5000 tokens. Please reduce your prompt.","type":"invalid_request_error","param":null,"code":null}}"#,
            ),
            (
                Dialect::Anthropic,
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"}}"#,
            ),
            (
                Dialect::Gemini,
                400,
                r#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
            ),
            (
                Dialect::Bedrock,
                400,
                r#"{"message":"Input is too long for requested model."}"#,
            ),
        ];
        for (dialect, status, body) in cases {
            let class = match dialect {
                Dialect::Bedrock => {
                    api(dialect)
                        .classify_error(status, Some("ValidationException"), body.as_bytes())
                        .0
                }
                _ => classify(dialect, status, body),
            };
            assert_eq!(class, Some(FailureClass::ContextLength), "{dialect:?}");
        }
        // A plain bad request stays one.
        let bad = r#"{"error":{"message":"Invalid value for 'temperature'","type":"invalid_request_error","code":null}}"#;
        assert_eq!(
            classify(Dialect::Openai, 400, bad),
            Some(FailureClass::BadRequest)
        );
    }

    #[test]
    fn bodies_refine_the_status() {
        let oa = |status, body| classify(Dialect::Openai, status, body);
        let an = |status, body| classify(Dialect::Anthropic, status, body);
        assert_eq!(
            oa(
                400,
                r#"{"error":{"message":"Your request was rejected as a result of our safety system.","code":"content_policy_violation"}}"#
            ),
            Some(FailureClass::ContentFilter)
        );
        assert_eq!(
            oa(
                400,
                r#"{"error":{"message":"The model `gpt-3` has been deprecated","code":null}}"#
            ),
            Some(FailureClass::ModelUnavailable)
        );
        assert_eq!(
            oa(400, r#"{"error":{"message":"bad temperature"}}"#),
            Some(FailureClass::BadRequest)
        );
        assert_eq!(oa(400, "not json"), Some(FailureClass::BadRequest));
        assert_eq!(
            an(
                404,
                r#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-2"}}"#
            ),
            Some(FailureClass::ModelUnavailable)
        );
        assert_eq!(
            an(
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"Output blocked by content filtering policy"}}"#
            ),
            Some(FailureClass::ContentFilter)
        );
        assert_eq!(
            an(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            Some(FailureClass::ServerError)
        );
    }
}
