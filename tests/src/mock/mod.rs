//! A simulated LLM provider that speaks one provider's API (OpenAI, Azure OpenAI,
//! Anthropic, Gemini, Vertex AI, Bedrock Converse) as its public reference
//! describes it (request validation, credentials, error shapes, stream formats),
//! and misbehaves on demand. Each provider is its own module, written from that
//! provider's public reference and nothing else: `openai` (and Azure), `anthropic`,
//! `gemini` (and Vertex), `bedrock` (with its own SigV4 verification and AWS
//! event-stream encoder). Nothing here shares code with the gateway's translators,
//! so the two can disagree, which is what finds their blind spots.
//!
//! It answers with what it understood: the system prompt, user turns and a tool
//! result are echoed in its text (`[system: …]`, `[turns: n]`, `[tool result: …]`),
//! JSON when JSON was asked for, a call of the first tool when tools are offered
//! and no result came back yet. The provider's tool choice is honoured (OpenAI
//! `tool_choice`, Anthropic `tool_choice`, Gemini `toolConfig.functionCallingConfig`,
//! Bedrock `toolConfig.toolChoice`): "none" answers in text, "any"/"required"
//! always calls, a named or allowed tool is the one called. Embeddings are
//! deterministic per text ([`mock_embedding`]).
//!
//! # Misbehaviour
//!
//! From the instance (`fail_rate`/`fail_status`) or per request from the `x-mock`
//! header: `name:k=v,k=v;other:k=v` (`*` matches every instance; unknown keys are
//! ignored). Keys:
//!
//! - `status=N` (with `retry_after=S`): the provider's error answer for status N.
//! - `delay_ms=N`: wait before the headers; `chunk_delay_ms=N`: between stream
//!   chunks; `hang`: never answer.
//! - `reset_after=N`: a stream's first N chunks (a JSON answer's first N bytes),
//!   then the connection is reset (TCP RST).
//! - `truncate=N`: a 200 answer whose `Content-Length` (or chunked framing) is the
//!   whole body's, but the body stops after N bytes and the connection closes
//!   cleanly (FIN); `truncate_reset=N`: the same, then the connection is reset.
//! - `malformed`: a 200 whose body is not valid JSON / not a valid stream.
//! - `hang_after=N`: the stream's first N chunks, then nothing (the connection
//!   stays open and silent).
//! - `end_after=N`: the stream's first N events, then a clean end (its terminal
//!   events are missing).
//! - `first_event_error` (streams): the first event is the provider's in-stream
//!   error: OpenAI `data: {"error":{"message":"The server had an error while
//!   processing your request. Sorry about that!","type":"server_error",…}}`;
//!   Anthropic `event: error` with `{"type":"error","error":{"type":
//!   "overloaded_error","message":"Overloaded"}}`; Gemini/Vertex a chunk
//!   `{"error":{"code":503,"message":…,"status":"UNAVAILABLE"}}`; Bedrock an
//!   exception frame `:exception-type: throttlingException` with `{"message":…}`.
//!   The stream then ends.
//! - `error_event_after=N` (streams): the first N events, then the provider's
//!   in-stream error carrying [`MID_STREAM_ERROR`] (OpenAI `server_error`,
//!   Anthropic `api_error`, Gemini `INTERNAL` 500, Bedrock
//!   `modelStreamErrorException` with `originalStatusCode`/`originalMessage`).
//! - `corrupt_event=N` (streams, 1-based): the N-th event keeps its framing but its
//!   JSON is cut short; for Bedrock the N-th frame's message CRC is wrong. The
//!   events after it follow as usual.
//! - `safety=prompt` / `safety=finish` (JSON and streams): the provider's safety
//!   block. Gemini/Vertex: `promptFeedback.blockReason: SAFETY` and no candidates /
//!   a candidate with `finishReason: SAFETY`, `safetyRatings` and no content.
//!   Anthropic: `stop_reason: refusal` with `stop_details` (no content / the first
//!   words). Bedrock: `stopReason: guardrail_intervened` with the guardrail's
//!   blocked-input message / `stopReason: content_filtered` and no content. OpenAI:
//!   a 400 `invalid_prompt` / `finish_reason: content_filter` and no content; Azure:
//!   a 400 `content_filter` with `innererror.content_filter_result` /
//!   `finish_reason: content_filter` with `content_filter_results`.
//!   `finish=content_filter` is the same as `safety=finish`.
//! - `echo_key_in_error`: the provider's authentication error as it answers an
//!   unknown key, whatever key came. OpenAI echoes it masked as its API does
//!   (`Incorrect API key provided: sk-proj-****…abcd.`: the first 8 and last 4
//!   characters; a key of 12 characters or fewer is echoed whole, as OpenAI does
//!   for short strings; an unknown key always gets this answer); Bedrock answers a
//!   SigV4-signed request with `InvalidSignatureException` and the canonical
//!   request and string to sign it computed, which carry every signed header as
//!   received (`x-amz-security-token` included). Azure, Anthropic, Gemini, Vertex
//!   and Bedrock API keys are never echoed: they get their usual auth error.
//! - `error=content_policy|model_gone|invalid_key|bad_request|context_length`: the
//!   provider's own answer for that case (`invalid_key` without echoing the key;
//!   Gemini/Vertex answer `content_policy` as they refuse a prompt, with a 200
//!   whose `promptFeedback.blockReason` is `SAFETY`). `context_length` is each
//!   provider's "prompt too long" error: OpenAI and Azure a 400
//!   `context_length_exceeded` ("This model's maximum context length is M
//!   tokens. However, your messages resulted in N tokens. …"; the Responses API
//!   words it "Your input exceeds the context window of this model. …"),
//!   Anthropic a 400 `invalid_request_error` "prompt is too long: N tokens > M
//!   maximum", Gemini/Vertex a 400 `INVALID_ARGUMENT` "The input token count (N)
//!   exceeds the maximum number of tokens allowed (M).", Bedrock a 400
//!   `ValidationException` "Input is too long for requested model.".
//! - `context_window=M`: the mock refuses, with that same error, every prompt
//!   whose estimated size (the bytes of its text, system prompt included, over 4)
//!   is over M tokens; smaller prompts are answered as usual.
//!
//! Every request except model lists is recorded; `GET /_mock/requests` returns
//! them, `DELETE` clears.
//!
//! # Besides chat
//!
//! The OpenAI and Azure mocks also serve the Responses API (`POST /v1/responses`;
//! Azure `POST /openai/v1/responses`, the deployment as `model`), validated and
//! answered as OpenAI documents it (a `response` object, or its event stream);
//! every misbehaviour above applies to it as to chat. The Anthropic mock answers
//! `thinking` (`enabled` or `adaptive`) with a signed `thinking` block before the
//! text and accepts Anthropic's server tools (which it never calls).

mod anthropic;
mod bedrock;
mod conn;
mod gemini;
mod openai;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use anthropic::{THINKING, THINKING_SIGNATURE};
pub use bedrock::eventstream::{Frame as EventStreamFrame, decode as decode_event_stream};
pub use openai::{ENCRYPTED_REASONING, base64};

use conn::{Conn, Cut, Stop};

/// Which API the mock speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `POST /v1/chat/completions`, `Authorization: Bearer`.
    Openai,
    /// `POST /v1/messages`, `x-api-key`, `anthropic-version`.
    Anthropic,
    /// `POST /openai/deployments/{deployment}/chat/completions?api-version=…`,
    /// `api-key`; OpenAI bodies, the deployment names the model.
    AzureOpenai,
    /// `POST /v1beta/models/{model}:generateContent` (or `:streamGenerateContent`,
    /// SSE with `alt=sse`, else a streamed JSON array), `x-goog-api-key` or `?key=`.
    Gemini,
    /// Vertex AI: Gemini bodies under `/v1/projects/{p}/locations/{l}/publishers/
    /// google/models/{model}:generateContent`, `Authorization: Bearer <token>`.
    Vertex,
    /// Bedrock Converse: `POST /model/{id}/converse` (JSON) or `/converse-stream`
    /// (binary event stream), SigV4-signed (the mock verifies the signature when
    /// its key is `ACCESS_KEY_ID/SECRET`) or a Bedrock API key as bearer token.
    Bedrock,
}

impl Dialect {
    /// Every dialect.
    pub const ALL: [Dialect; 6] = [
        Dialect::Openai,
        Dialect::Anthropic,
        Dialect::AzureOpenai,
        Dialect::Gemini,
        Dialect::Vertex,
        Dialect::Bedrock,
    ];

    /// The name used in configs and on the command line.
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

    /// The dialect named `s`.
    pub fn parse(s: &str) -> Option<Dialect> {
        Dialect::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// The path prefix of the provider's base URL (what follows the host).
    pub fn base_path(self) -> &'static str {
        match self {
            Dialect::Openai | Dialect::Anthropic => "/v1",
            Dialect::Gemini => "/v1beta",
            Dialect::Vertex => VERTEX_BASE,
            Dialect::AzureOpenai | Dialect::Bedrock => "",
        }
    }
}

/// The Vertex AI base path the mock serves.
pub const VERTEX_BASE: &str = "/v1/projects/mock-project/locations/us-central1/publishers/google";

/// The message of the in-stream error `error_event_after` sends, in every dialect,
/// so a test can check that it reaches the client.
pub const MID_STREAM_ERROR: &str = "mock-provider gave up mid-stream (error_event_after)";

/// The arguments of every tool call the mock makes.
pub const TOOL_ARGS: &str = r#"{"location":"Paris"}"#;

/// Instance configuration.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Instance name (appears in replies and selects `x-mock` sections).
    pub name: String,
    /// Dialect spoken.
    pub dialect: Dialect,
    /// Accepted credentials (comma-separated); `None` accepts any non-empty one.
    pub api_key: Option<String>,
    /// Models served; empty serves every model.
    pub models: Vec<String>,
    /// Share of requests that fail with `fail_status`.
    pub fail_rate: f64,
    /// Status used for `fail_rate` failures.
    pub fail_status: u16,
}

impl MockConfig {
    /// A well-behaved instance.
    pub fn new(name: &str, dialect: Dialect) -> Self {
        MockConfig {
            name: name.to_string(),
            dialect,
            api_key: None,
            models: Vec::new(),
            fail_rate: 0.0,
            fail_status: 503,
        }
    }
}

/// A request as the mock received it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// Body, parsed when it was JSON, else a string.
    pub body: Value,
}

/// Starts a mock on `addr`; returns the bound address and the server task.
pub async fn serve(cfg: MockConfig, addr: &str) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let state = Arc::new(State {
        cfg,
        log: Mutex::new(Vec::new()),
        rng: AtomicU64::new(seed),
        seq: AtomicU64::new(0),
        stored: Mutex::new(Vec::new()),
    });
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            conn::spawn(stream, move |conn, req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(state, conn, req).await) }
            });
        }
    });
    Ok((bound, task))
}

/// A deterministic embedding of `text`: values k/256, exact in f32 and JSON, the
/// same from every dialect so a test can compare what the gateway returned.
pub fn mock_embedding(text: &str, dimensions: usize) -> Vec<f64> {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    (0..dimensions)
        .map(|i| {
            h = h.rotate_left(7).wrapping_mul(0x9E3779B97F4A7C15) ^ i as u64;
            f64::from((h >> 56) as u8) / 256.0
        })
        .collect()
}

// === impl State ===

struct State {
    cfg: MockConfig,
    log: Mutex<Vec<Recorded>>,
    rng: AtomicU64,
    seq: AtomicU64,
    /// Ids of the Responses `response`s stored (what `previous_response_id` may name).
    stored: Mutex<Vec<String>>,
}

impl State {
    fn random(&self) -> f64 {
        // xorshift64*: good enough to fail "a share" of requests.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        (x.wrapping_mul(0x2545F4914F6CDD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The credentials the instance accepts (empty: any).
    fn keys(&self) -> Vec<&str> {
        self.cfg
            .api_key
            .as_deref()
            .map(|k| k.split(',').collect())
            .unwrap_or_default()
    }

    /// Whether `key` is one the instance accepts (any non-empty one, when it was
    /// given none).
    fn knows(&self, key: &str) -> bool {
        let keys = self.keys();
        !key.is_empty() && (keys.is_empty() || keys.contains(&key))
    }

    /// Whether the instance serves `model` (every model, when it was given none).
    fn serves(&self, model: &str) -> bool {
        self.cfg.models.is_empty() || self.cfg.models.iter().any(|m| m == model)
    }

    /// Whether a Responses `response` of this id was stored here.
    fn has_stored(&self, id: &str) -> bool {
        self.stored.lock().is_ok_and(|s| s.iter().any(|i| i == id))
    }

    fn record(&self, r: Recorded) {
        if let Ok(mut log) = self.log.lock() {
            log.push(r);
        }
    }
}

// === Behaviour ===

/// Misbehaviour for one request (the `x-mock` keys, see the module doc).
#[derive(Debug, Default, Clone)]
struct Behaviour {
    status: Option<u16>,
    retry_after: Option<String>,
    delay_ms: u64,
    chunk_delay_ms: u64,
    hang: bool,
    reset_after: Option<usize>,
    truncate: Option<(usize, Cut)>,
    malformed: bool,
    error: Option<Failure>,
    end_after: Option<usize>,
    hang_after: Option<usize>,
    first_event_error: bool,
    corrupt_event: Option<usize>,
    error_event_after: Option<usize>,
    safety: Option<Safety>,
    echo_key_in_error: bool,
    context_window: Option<u64>,
}

/// A provider's safety block (`safety=…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Safety {
    /// The prompt was refused before any output.
    Prompt,
    /// The output was stopped by the provider's filter.
    Finish,
}

/// A provider's own error answer (`error=…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    ContentPolicy,
    ModelGone,
    InvalidKey,
    BadRequest,
    ContextLength,
}

fn parse_behaviour(header: &str, name: &str) -> Behaviour {
    let mut b = Behaviour::default();
    for section in header.split(';') {
        let Some((who, kvs)) = section.split_once(':') else {
            continue;
        };
        let who = who.trim();
        if who != name && who != "*" {
            continue;
        }
        for kv in kvs.split(',') {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = v.trim();
            match k.trim() {
                "status" => b.status = v.parse().ok(),
                "retry_after" => b.retry_after = Some(v.to_string()),
                "delay_ms" => b.delay_ms = v.parse().unwrap_or(0),
                "chunk_delay_ms" => b.chunk_delay_ms = v.parse().unwrap_or(0),
                "hang" => b.hang = true,
                "reset_after" => b.reset_after = v.parse().ok(),
                "truncate" => b.truncate = v.parse().ok().map(|n| (n, Cut::Close)),
                "truncate_reset" => b.truncate = v.parse().ok().map(|n| (n, Cut::Reset)),
                "malformed" => b.malformed = true,
                "error" => {
                    b.error = Some(match v {
                        "content_policy" => Failure::ContentPolicy,
                        "model_gone" => Failure::ModelGone,
                        "invalid_key" => Failure::InvalidKey,
                        "context_length" => Failure::ContextLength,
                        _ => Failure::BadRequest,
                    })
                }
                "finish" if v == "content_filter" => b.safety = Some(Safety::Finish),
                "safety" => {
                    b.safety = match v {
                        "prompt" => Some(Safety::Prompt),
                        "finish" => Some(Safety::Finish),
                        _ => b.safety,
                    }
                }
                "end_after" => b.end_after = v.parse().ok(),
                "hang_after" => b.hang_after = v.parse().ok(),
                "first_event_error" => b.first_event_error = true,
                "corrupt_event" => b.corrupt_event = v.parse().ok().filter(|n| *n >= 1),
                "error_event_after" => b.error_event_after = v.parse().ok(),
                "echo_key_in_error" => b.echo_key_in_error = true,
                "context_window" => b.context_window = v.parse().ok(),
                _ => {}
            }
        }
    }
    b
}

// === Responses ===

type Body = BoxBody<Bytes, std::io::Error>;

/// A provider's answer refusing a request (boxed: a response is large).
type Refused = Box<Response<Body>>;

fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|never| match never {}).boxed());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert("content-type", header_value(content_type));
    r
}

fn header_value(s: &str) -> hyper::header::HeaderValue {
    hyper::header::HeaderValue::from_str(s).unwrap_or(hyper::header::HeaderValue::from_static("invalid"))
}

fn json_response(status: u16, v: &Value) -> Response<Body> {
    full(status, "application/json", v.to_string())
}

/// A 200 stream of `chunks`, `delay_ms` apart.
fn stream_response(
    content_type: &str,
    chunks: Vec<Vec<u8>>,
    delay_ms: u64,
    hang_after: Option<usize>,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::spawn(async move {
        for (i, c) in chunks.into_iter().enumerate() {
            if i > 0 && delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            if hang_after == Some(i) {
                // Silent from here on, the connection kept open.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            if tx.send(Ok(Frame::data(Bytes::from(c)))).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert("content-type", header_value(content_type));
    if content_type == "text/event-stream" {
        r.headers_mut()
            .insert("cache-control", hyper::header::HeaderValue::from_static("no-cache"));
    }
    r
}

// === The provider interface ===

/// One provider's API: implemented once per module, dispatched once ([`provider`]).
trait Provider: Sync {
    /// The model list, if `call` fetches it (what health checks do).
    fn models(&self, call: &Call) -> Option<Response<Body>>;
    /// The answer to an embeddings call, if `call` is one.
    fn embeddings(&self, call: &Call) -> Option<Response<Body>>;
    /// A chat call checked as the provider checks it (path, credentials, body):
    /// what it asks for, or the provider's answer refusing it.
    fn chat(&self, call: &Call) -> Result<ChatRequest, Refused>;
    /// The provider's error answer for `status`.
    fn error(&self, status: u16, message: &str) -> Response<Body>;
    /// The provider's own answer for `failure`.
    fn failure(&self, call: &Call, failure: Failure, req: &ChatRequest) -> Response<Body>;
    /// The error answer a provider gives instead of a completion when it blocks
    /// the prompt that way (most answer a completion that says so).
    fn blocked(&self, _req: &ChatRequest, _safety: Safety) -> Option<Response<Body>> {
        None
    }
    /// The completion as a JSON body.
    fn json(&self, req: &ChatRequest, reply: &Reply, n: u64) -> Value;
    /// The completion as stream events.
    fn events(&self, req: &ChatRequest, reply: &Reply, n: u64) -> Vec<Event>;
    /// The stream's content type.
    fn stream_type(&self, call: &Call) -> &'static str;
    /// Events as they go on the wire, one chunk each.
    fn frame(&self, call: &Call, events: Vec<Event>) -> Vec<Vec<u8>>;
}

fn provider(dialect: Dialect) -> &'static dyn Provider {
    match dialect {
        Dialect::Openai => &openai::OpenAi { azure: false },
        Dialect::AzureOpenai => &openai::OpenAi { azure: true },
        Dialect::Anthropic => &anthropic::Anthropic,
        Dialect::Gemini => &gemini::Gemini { vertex: false },
        Dialect::Vertex => &gemini::Gemini { vertex: true },
        Dialect::Bedrock => &bedrock::Bedrock,
    }
}

/// A request as it arrived, for the provider modules.
struct Call<'a> {
    state: &'a State,
    b: &'a Behaviour,
    method: &'a str,
    /// The path as received, without the query.
    path: &'a str,
    query: &'a str,
    headers: &'a [(String, String)],
    raw: &'a [u8],
    body: &'a Value,
}

impl<'a> Call<'a> {
    /// The first value of header `name` (lower case).
    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The value of query parameter `name`, as sent.
    fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
    }

    /// The token of an `Authorization: Bearer` header.
    fn bearer(&self) -> Option<&'a str> {
        self.header("authorization").and_then(|a| a.strip_prefix("Bearer "))
    }

    /// Whether the body parsed as JSON (a body that did not is kept as a string).
    fn is_json(&self) -> bool {
        serde_json::from_slice::<Value>(self.raw).is_ok()
    }

    fn failing_on_purpose(&self, status: u16) -> String {
        format!("{} is failing on purpose (mock status {status})", self.state.cfg.name)
    }
}

/// What a valid chat request asked for, whatever its dialect.
#[derive(Debug, Default)]
struct ChatRequest {
    model: String,
    stream: bool,
    include_usage: bool,
    input_tokens: u64,
    /// The system prompt, where the dialect carries it.
    system: Option<String>,
    /// User messages that carry text (tool results are not turns).
    user_turns: usize,
    /// Names of the tools offered.
    tools: Vec<String>,
    /// The tool result the last message carries.
    tool_result: Option<String>,
    /// JSON output was asked for the dialect's way (OpenAI `response_format`,
    /// Gemini `responseMimeType`, an instruction in Anthropic's/Bedrock's system).
    json: bool,
    /// How the request lets the model use its tools.
    tool_choice: ToolChoice,
    /// Which of the provider's APIs the request came in.
    api: Api,
    /// Bytes of the prompt's text (messages and system prompt), what the mock's
    /// context window is measured against.
    text_bytes: usize,
    /// Reasoning was asked for (Anthropic `thinking`, Responses `reasoning`).
    reasoning: bool,
    /// Members a Responses `response` echoes from its request.
    echo: Value,
    /// The answer's id where the API's ids are the mock's to choose (Responses).
    id: String,
}

/// Which of a provider's APIs a chat-like request used.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// The provider's chat API (the dialect's own).
    #[default]
    Chat,
    /// OpenAI's Responses API.
    Responses,
}

impl ChatRequest {
    /// The prompt's size as the mock estimates it: its text's bytes over 4.
    fn estimated_tokens(&self) -> u64 {
        (self.text_bytes / 4) as u64
    }

    /// `(prompt tokens, window)` for a context-length error: the estimate
    /// against the mock's `context_window`, or `default_window` when the error
    /// was asked for by name (then the prompt is made out to be over it).
    fn over_window(&self, b: &Behaviour, default_window: u64) -> (u64, u64) {
        let tokens = self.estimated_tokens();
        match b.context_window {
            Some(w) if tokens > w => (tokens, w),
            Some(w) => (w + 1 + tokens, w),
            None => (default_window + 1 + tokens, default_window),
        }
    }
}

/// Bytes of the prompt text in a request body of any dialect: every string held
/// by a `content`, `text`, `system`, `input` or `instructions` member (directly
/// or in arrays and objects below one).
fn text_bytes(v: &Value) -> usize {
    fn all(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(a) => a.iter().map(all).sum(),
            Value::Object(o) => o
                .iter()
                .filter(|(k, _)| PROMPT_KEYS.contains(&k.as_str()))
                .map(|(_, v)| all(v))
                .sum(),
            _ => 0,
        }
    }
    const PROMPT_KEYS: &[&str] = &["content", "text", "system", "input", "instructions"];
    match v {
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| {
                if PROMPT_KEYS.contains(&k.as_str()) {
                    all(v)
                } else {
                    text_bytes(v)
                }
            })
            .sum(),
        Value::Array(a) => a.iter().map(text_bytes).sum(),
        _ => 0,
    }
}

/// The tool choice of a request, in any dialect.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum ToolChoice {
    /// The model decides; when `allowed` is not empty, only those tools.
    #[default]
    Auto,
    /// No tool call.
    None,
    /// A tool call whatever came before: one of `allowed`, or any tool when empty.
    Any(Vec<String>),
    /// The model decides, but may call only these tools (Gemini `VALIDATED`).
    AutoAmong(Vec<String>),
}

/// What the mock answers, before it is put in a dialect.
enum Reply {
    /// A text answer.
    Text(String),
    /// A tool call.
    Tool { id: String, name: String, args: String },
    /// A safety block.
    Blocked(Safety),
}

impl Reply {
    /// The mock's answer to `req`: a tool call when the tool choice asks for one,
    /// or allows one and tools are offered with no tool result back yet; otherwise
    /// a text that shows what the mock understood (system prompt, user turns, tool
    /// result), as JSON when JSON was asked for.
    fn to(req: &ChatRequest, name: &str, n: u64, safety: Option<Safety>) -> Reply {
        if let Some(s) = safety {
            return Reply::Blocked(s);
        }
        let waiting = req.tool_result.is_none();
        let tool = match &req.tool_choice {
            ToolChoice::None => None,
            ToolChoice::Any(allowed) => allowed.first().or(req.tools.first()),
            ToolChoice::AutoAmong(allowed) => allowed.first().filter(|_| waiting),
            ToolChoice::Auto => req.tools.first().filter(|_| waiting),
        };
        if let Some(tool) = tool {
            return Reply::Tool {
                id: format!("call_mock{n}"),
                name: tool.clone(),
                args: TOOL_ARGS.to_string(),
            };
        }
        let mut text = format!("Hello from {name} ({}).", req.model);
        if let Some(s) = &req.system {
            text.push_str(&format!(" [system: {s}]"));
        }
        if req.user_turns > 1 {
            text.push_str(&format!(" [turns: {}]", req.user_turns));
        }
        if let Some(r) = &req.tool_result {
            text.push_str(&format!(" [tool result: {r}]"));
        }
        if req.json {
            text = json!({ "reply": text }).to_string();
        }
        Reply::Text(text)
    }

    fn out_tokens(&self) -> u64 {
        match self {
            Reply::Text(t) => t.split_whitespace().count() as u64,
            Reply::Tool { .. } => 5,
            Reply::Blocked(_) => 0,
        }
    }

    /// The text in streamed pieces (word by word).
    fn pieces(text: &str) -> Vec<String> {
        text.split(' ')
            .enumerate()
            .map(|(i, w)| if i == 0 { w.to_string() } else { format!(" {w}") })
            .collect()
    }

    /// Tool-call arguments in two streamed pieces.
    fn arg_pieces(args: &str) -> [&str; 2] {
        let cut = args.len() / 2;
        [args.get(..cut).unwrap_or(""), args.get(cut..).unwrap_or("")]
    }

    /// The tool-call arguments as JSON.
    fn args_json(args: &str) -> Value {
        serde_json::from_str(args).unwrap_or(Value::Null)
    }
}

/// One event of a streamed answer, before its provider frames it.
struct Event {
    /// Anthropic's SSE `event:` name, Bedrock's `:event-type`; empty elsewhere.
    name: &'static str,
    data: Data,
}

enum Data {
    /// A JSON event.
    Json(Value),
    /// OpenAI's `[DONE]`.
    Done,
    /// The provider's in-stream error.
    Fail(StreamFailure),
    /// An event whose JSON (or, for Bedrock, frame) is broken.
    Corrupt(Value),
}

/// Which in-stream error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamFailure {
    /// The provider's capacity error (`first_event_error`).
    Overloaded,
    /// A failure carrying [`MID_STREAM_ERROR`] (`error_event_after`).
    MidStream,
}

impl Event {
    fn json(name: &'static str, v: Value) -> Event {
        Event {
            name,
            data: Data::Json(v),
        }
    }

    fn fail(f: StreamFailure) -> Event {
        Event {
            name: "",
            data: Data::Fail(f),
        }
    }

    fn corrupt(&mut self) {
        self.data = match std::mem::replace(&mut self.data, Data::Done) {
            Data::Json(v) | Data::Corrupt(v) => Data::Corrupt(v),
            Data::Done | Data::Fail(_) => Data::Corrupt(json!({"choices": []})),
        };
    }
}

/// `v` serialised and cut in half: a proper prefix of a JSON object is never JSON.
fn cut_json(v: &Value) -> String {
    let s = v.to_string();
    let mut cut = s.len() / 2;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s[..cut.max(1)].to_string()
}

// === Routing ===

async fn handle(state: Arc<State>, conn: Conn, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().to_string();
    let target = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    if target.starts_with("/_mock/requests") {
        return admin(&state, &method);
    }
    let raw = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return full(400, "text/plain", "body read error"),
    };
    let body: Value =
        serde_json::from_slice(&raw).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()));
    let x_mock = headers
        .iter()
        .find(|(k, _)| k == "x-mock")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let b = parse_behaviour(x_mock, &state.cfg.name);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let p = provider(state.cfg.dialect);
    let call = Call {
        state: &state,
        b: &b,
        method: &method,
        path,
        query,
        headers: &headers,
        raw: &raw,
        body: &body,
    };
    // Model lists (what health checks fetch): answered, not recorded.
    if let Some(r) = p.models(&call) {
        return r;
    }
    state.record(Recorded {
        method: method.clone(),
        path: target.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    if let Some(r) = p.embeddings(&call) {
        return r;
    }
    let status = b.status.or_else(|| {
        (state.cfg.fail_rate > 0.0 && state.random() < state.cfg.fail_rate).then_some(state.cfg.fail_status)
    });
    if b.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(b.delay_ms)).await;
    }
    if b.hang {
        std::future::pending::<()>().await;
    }
    let mut req = match p.chat(&call) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    req.text_bytes = text_bytes(&body);
    if let Some(status) = status.filter(|s| *s >= 300) {
        let mut r = p.error(status, &call.failing_on_purpose(status));
        if let Some(ra) = &b.retry_after
            && let Ok(v) = ra.parse()
        {
            r.headers_mut().insert("retry-after", v);
        }
        return r;
    }
    if let Some(f) = b.error {
        return p.failure(&call, f, &req);
    }
    if b.context_window.is_some_and(|w| req.estimated_tokens() > w) {
        return p.failure(&call, Failure::ContextLength, &req);
    }
    if let Some(s) = b.safety
        && let Some(r) = p.blocked(&req, s)
    {
        return r;
    }
    let n = state.seq.fetch_add(1, Ordering::Relaxed);
    if req.api == Api::Responses {
        req.id = format!("resp_mock{}{n}", state.cfg.name);
        if req.echo.get("store").and_then(Value::as_bool) != Some(false)
            && let Ok(mut stored) = state.stored.lock()
        {
            stored.push(req.id.clone());
        }
    }
    let reply = Reply::to(&req, &state.cfg.name, n, b.safety);
    if b.malformed {
        return if req.stream {
            full(200, p.stream_type(&call), "data: {\"choices\": [ {\"delta\"\n\n")
        } else {
            full(200, "application/json", "{\"id\": \"x\", \"choices\": [")
        };
    }
    if !req.stream {
        let body = p.json(&req, &reply, n).to_string().into_bytes();
        if let Some((k, cut)) = b.truncate {
            return conn.cut_json(body, k, cut).await;
        }
        if let Some(k) = b.reset_after {
            return conn.cut_json(body, k.max(1), Cut::Reset).await;
        }
        return full(200, "application/json", body);
    }
    let mut events = p.events(&req, &reply, n);
    if let Some(k) = b.corrupt_event
        && let Some(e) = events.get_mut(k - 1)
    {
        e.corrupt();
    }
    if b.first_event_error {
        events = vec![Event::fail(StreamFailure::Overloaded)];
    } else if let Some(k) = b.error_event_after {
        events.truncate(k);
        events.push(Event::fail(StreamFailure::MidStream));
    }
    if let Some(k) = b.end_after {
        events.truncate(k);
    }
    let content_type = p.stream_type(&call);
    let chunks = p.frame(&call, events);
    if let Some((k, cut)) = b.truncate {
        return conn
            .cut_stream(content_type, chunks, b.chunk_delay_ms, Stop::Bytes(k), cut)
            .await;
    }
    if let Some(k) = b.reset_after {
        return conn
            .cut_stream(content_type, chunks, b.chunk_delay_ms, Stop::Chunks(k), Cut::Reset)
            .await;
    }
    stream_response(content_type, chunks, b.chunk_delay_ms, b.hang_after)
}

fn admin(state: &State, method: &str) -> Response<Body> {
    let Ok(mut log) = state.log.lock() else {
        return full(500, "text/plain", "poisoned");
    };
    match method {
        "DELETE" => {
            log.clear();
            full(204, "text/plain", "")
        }
        _ => json_response(200, &json!(*log)),
    }
}

// === Helpers the provider modules share ===

/// Texts of `v` when it is a string or an array of blocks with `text`.
fn texts(v: Option<&Value>) -> Option<String> {
    let s = match v? {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n\n"),
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

/// Names at `pointer` of each element of array `v`.
fn names(v: Option<&Value>, pointer: &str) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.pointer(pointer).and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// The instruction Switchyard adds for providers without a JSON mode.
fn asks_for_json(system: &Option<String>) -> bool {
    system.as_deref().is_some_and(|s| s.contains("single JSON object"))
}

fn words(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(a) => a.iter().map(words).sum(),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| *k == "content" || *k == "text")
            .map(|(_, v)| words(v))
            .sum(),
        _ => 0,
    }
}

fn unknown_param<'a>(obj: &'a serde_json::Map<String, Value>, known: &[&str]) -> Option<&'a String> {
    obj.keys().find(|k| !known.contains(&k.as_str()))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviour_sections() {
        let b = parse_behaviour("p1:status=503,retry_after=2;p2:delay_ms=10;*:chunk_delay_ms=5", "p1");
        assert_eq!(b.status, Some(503));
        assert_eq!(b.retry_after.as_deref(), Some("2"));
        assert_eq!(b.chunk_delay_ms, 5);
        assert_eq!(b.delay_ms, 0);
        let b = parse_behaviour("p1:hang", "p2");
        assert!(!b.hang);
    }

    #[test]
    fn behaviour_new_keys() {
        let b = parse_behaviour(
            "m:truncate=10,first_event_error,corrupt_event=2,error_event_after=3,safety=prompt,echo_key_in_error",
            "m",
        );
        assert_eq!(b.truncate, Some((10, Cut::Close)));
        assert!(b.first_event_error && b.echo_key_in_error);
        assert_eq!(b.corrupt_event, Some(2));
        assert_eq!(b.error_event_after, Some(3));
        assert_eq!(b.safety, Some(Safety::Prompt));
        assert_eq!(
            parse_behaviour("m:truncate_reset=4", "m").truncate,
            Some((4, Cut::Reset))
        );
        // `finish=content_filter` is `safety=finish`; a 0th event does not exist.
        let b = parse_behaviour("m:finish=content_filter,corrupt_event=0", "m");
        assert_eq!(b.safety, Some(Safety::Finish));
        assert_eq!(b.corrupt_event, None);
        assert_eq!(
            parse_behaviour("m:error=whatever", "m").error,
            Some(Failure::BadRequest)
        );
    }

    #[test]
    fn context_length_keys() {
        let b = parse_behaviour("m:error=context_length;n:context_window=50", "m");
        assert_eq!(b.error, Some(Failure::ContextLength));
        assert_eq!(b.context_window, None);
        let b = parse_behaviour("m:error=context_length;n:context_window=50", "n");
        assert_eq!((b.error, b.context_window), (None, Some(50)));
    }

    #[test]
    fn the_prompt_is_measured_by_its_text_in_every_dialect() {
        // OpenAI chat: messages' content (strings or parts).
        let chat = json!({"model": "a-long-model-name", "messages": [
            {"role": "system", "content": "1234"},
            {"role": "user", "content": [{"type": "text", "text": "12345678"}]}],
            "tools": [{"type": "function", "function": {"name": "f", "description": "not the prompt"}}]});
        assert_eq!(text_bytes(&chat), 12);
        // Anthropic: system and messages; Gemini: contents' parts and the system
        // instruction; Bedrock: messages' content blocks and system blocks.
        let anthropic = json!({"system": "1234", "messages": [{"role": "user", "content": "1234"}], "max_tokens": 5});
        assert_eq!(text_bytes(&anthropic), 8);
        let gemini = json!({"systemInstruction": {"parts": [{"text": "1234"}]},
            "contents": [{"role": "user", "parts": [{"text": "1234"}]}]});
        assert_eq!(text_bytes(&gemini), 8);
        let bedrock =
            json!({"system": [{"text": "1234"}], "messages": [{"role": "user", "content": [{"text": "1234"}]}]});
        assert_eq!(text_bytes(&bedrock), 8);
        // Responses: instructions and input, a string or items.
        let responses = json!({"instructions": "1234", "input": [{"role": "user", "content": "1234"},
            {"type": "function_call_output", "call_id": "c", "output": "x"}]});
        assert_eq!(text_bytes(&responses), 8);
        assert_eq!(text_bytes(&json!({"input": "12345678"})), 8);
    }

    #[test]
    fn a_context_length_error_names_the_window() {
        let req = ChatRequest {
            text_bytes: 400,
            ..ChatRequest::default()
        };
        assert_eq!(req.estimated_tokens(), 100);
        let window = parse_behaviour("m:context_window=50", "m");
        assert_eq!(req.over_window(&window, 8192), (100, 50));
        // Asked for by name: over the window whatever the prompt.
        assert_eq!(req.over_window(&Behaviour::default(), 8192), (8293, 8192));
    }

    #[test]
    fn cut_json_is_never_json() {
        for v in [json!({}), json!({"a": 1}), json!({"text": "héllo wörld"})] {
            let cut = cut_json(&v);
            assert!(!cut.is_empty());
            assert!(serde_json::from_str::<Value>(&cut).is_err(), "{cut}");
        }
    }

    #[test]
    fn tool_choice_is_honoured() {
        let req = |choice: ToolChoice, result: Option<&str>| ChatRequest {
            model: "m".into(),
            tools: vec!["a".into(), "b".into()],
            tool_result: result.map(str::to_string),
            tool_choice: choice,
            ..ChatRequest::default()
        };
        let called = |r: Reply| match r {
            Reply::Tool { name, .. } => Some(name),
            _ => None,
        };
        assert_eq!(
            called(Reply::to(&req(ToolChoice::Auto, None), "x", 0, None)),
            Some("a".into())
        );
        assert_eq!(called(Reply::to(&req(ToolChoice::Auto, Some("r")), "x", 0, None)), None);
        assert_eq!(called(Reply::to(&req(ToolChoice::None, None), "x", 0, None)), None);
        let any_b = ToolChoice::Any(vec!["b".into()]);
        assert_eq!(
            called(Reply::to(&req(any_b, Some("r")), "x", 0, None)),
            Some("b".into())
        );
        assert_eq!(
            called(Reply::to(&req(ToolChoice::Any(vec![]), None), "x", 0, None)),
            Some("a".into())
        );
    }
}
