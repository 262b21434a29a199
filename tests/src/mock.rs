//! A simulated LLM provider that speaks one provider's API (OpenAI, Azure OpenAI,
//! Anthropic, Gemini, Vertex AI, Bedrock Converse) as its public reference
//! describes it (request validation, credentials, error shapes, stream formats),
//! and misbehaves on demand. It answers with what it understood: the system
//! prompt, user turns and a tool result are echoed in its text (`[system: …]`,
//! `[turns: n]`, `[tool result: …]`), JSON when JSON was asked for, a call of the
//! first tool when tools are offered and no result came back yet. Embeddings are
//! deterministic per text ([`mock_embedding`]).
//!
//! Misbehaviour comes from the instance (`fail_rate`/`fail_status`) or per request
//! from the `x-mock` header: `name:k=v,k=v;other:k=v` (`*` matches every
//! instance). Keys: `status=N`, `retry_after=S`, `delay_ms=N` (before headers),
//! `chunk_delay_ms=N`, `hang`, `reset_after=N` (chunks, then the connection is
//! cut), `malformed` (a 200 whose body is not valid JSON / SSE),
//! `end_after=N` (the stream ends cleanly after N events, before its last),
//! `error=content_policy|model_gone|invalid_key|bad_request` (the provider's own
//! error answer for that case), `finish=content_filter` (a completed answer cut by
//! the content filter: OpenAI `finish_reason`, Anthropic `stop_reason: refusal`).
//!
//! Every request is recorded; `GET /_mock/requests` returns them, `DELETE` clears.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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
    /// `POST /v1beta/models/{model}:generateContent` (or `:streamGenerateContent
    /// ?alt=sse`), `x-goog-api-key`.
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

struct State {
    cfg: MockConfig,
    log: Mutex<Vec<Recorded>>,
    rng: AtomicU64,
    seq: AtomicU64,
}

/// Misbehaviour for one request.
#[derive(Debug, Default, Clone)]
struct Behaviour {
    status: Option<u16>,
    retry_after: Option<String>,
    delay_ms: u64,
    chunk_delay_ms: u64,
    hang: bool,
    reset_after: Option<usize>,
    malformed: bool,
    error: Option<String>,
    finish: Option<String>,
    end_after: Option<usize>,
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
                "malformed" => b.malformed = true,
                "error" => b.error = Some(v.to_string()),
                "finish" => b.finish = Some(v.to_string()),
                "end_after" => b.end_after = v.parse().ok(),
                _ => {}
            }
        }
    }
    b
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|never| match never {}).boxed());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert("content-type", header_value(content_type));
    r
}

fn header_value(s: &str) -> hyper::header::HeaderValue {
    hyper::header::HeaderValue::from_str(s).unwrap_or(hyper::header::HeaderValue::from_static("text/plain"))
}

fn json_response(status: u16, v: &Value) -> Response<Body> {
    full(status, "application/json", v.to_string())
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
    });
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, req).await) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok((bound, task))
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

    /// Whether `key` is one the instance accepts (any, when it was given none).
    fn knows(&self, key: &str) -> bool {
        self.cfg
            .api_key
            .as_deref()
            .is_none_or(|k| k.split(',').any(|k| k == key))
    }

    /// Whether the instance serves `model` (every model, when it was given none).
    fn serves(&self, model: &str) -> bool {
        self.cfg.models.is_empty() || self.cfg.models.iter().any(|m| m == model)
    }

    /// Whether the request carries an accepted credential in the dialect's header
    /// (model lists and embeddings; chat requests check more, per dialect).
    fn credential_ok(&self, headers: &[(String, String)]) -> bool {
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let key = match self.cfg.dialect {
            Dialect::Openai | Dialect::Vertex => header("authorization").strip_prefix("Bearer ").unwrap_or(""),
            Dialect::Anthropic => header("x-api-key"),
            Dialect::AzureOpenai => header("api-key"),
            Dialect::Gemini => header("x-goog-api-key"),
            Dialect::Bedrock => "",
        };
        !key.is_empty() && self.knows(key)
    }

    fn reject(&self, status: u16, message: &str, openai_code: Option<&str>) -> Box<Response<Body>> {
        Box::new(self.error(status, message, openai_code))
    }

    fn error(&self, status: u16, message: &str, openai_code: Option<&str>) -> Response<Body> {
        match self.cfg.dialect {
            Dialect::Openai => {
                let kind = match status {
                    401 | 400 | 404 => "invalid_request_error",
                    429 => "rate_limit_exceeded",
                    _ => "server_error",
                };
                json_response(
                    status,
                    &json!({"error": {"message": message, "type": kind, "param": null, "code": openai_code}}),
                )
            }
            Dialect::Bedrock => {
                let kind = match status {
                    400 => "ValidationException",
                    401 | 403 => "AccessDeniedException",
                    404 => "ResourceNotFoundException",
                    408 => "ModelTimeoutException",
                    424 => "ModelErrorException",
                    429 => "ThrottlingException",
                    503 | 529 => "ServiceUnavailableException",
                    _ => "InternalServerException",
                };
                bedrock_error(status, kind, message)
            }
            Dialect::Gemini | Dialect::Vertex => {
                let status_name = match status {
                    400 => "INVALID_ARGUMENT",
                    401 => "UNAUTHENTICATED",
                    403 => "PERMISSION_DENIED",
                    404 => "NOT_FOUND",
                    429 => "RESOURCE_EXHAUSTED",
                    503 | 529 => "UNAVAILABLE",
                    _ => "INTERNAL",
                };
                json_response(
                    status,
                    &json!({"error": {"code": status, "message": message, "status": status_name}}),
                )
            }
            Dialect::AzureOpenai => {
                let code = openai_code.map(str::to_string).unwrap_or_else(|| status.to_string());
                json_response(
                    status,
                    &json!({"error": {"code": code, "message": message, "param": null, "type": null}}),
                )
            }
            Dialect::Anthropic => {
                let kind = match status {
                    400 => "invalid_request_error",
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    413 => "request_too_large",
                    429 => "rate_limit_error",
                    529 | 503 => "overloaded_error",
                    _ => "api_error",
                };
                json_response(
                    status,
                    &json!({"type": "error", "error": {"type": kind, "message": message}}),
                )
            }
        }
    }
}

/// A Bedrock error: the type travels in `x-amzn-ErrorType`, the body has `message`.
fn bedrock_error(status: u16, kind: &str, message: &str) -> Response<Body> {
    let mut r = json_response(status, &json!({ "message": message }));
    r.headers_mut().insert(
        "x-amzn-errortype",
        header_value(&format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/")),
    );
    r
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().to_string();
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
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
    if path.starts_with("/_mock/requests") {
        return admin(&state, &method);
    }
    // Model lists (what health checks fetch): answered, not recorded.
    if method == "GET" {
        let p = path.split('?').next().unwrap_or("");
        let is_models = matches!(
            (state.cfg.dialect, p),
            (Dialect::Openai | Dialect::Anthropic, "/v1/models")
                | (Dialect::Gemini, "/v1beta/models")
                | (Dialect::AzureOpenai, "/openai/models")
        );
        if is_models {
            if !state.credential_ok(&headers) {
                return state.error(401, "invalid credentials", None);
            }
            let ids: Vec<Value> = state
                .cfg
                .models
                .iter()
                .map(|m| json!({"id": m, "object": "model"}))
                .collect();
            return json_response(200, &json!({"object": "list", "data": ids}));
        }
    }
    let raw = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return full(400, "text/plain", "body read error"),
    };
    let body: Value =
        serde_json::from_slice(&raw).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()));
    if let Ok(mut log) = state.log.lock() {
        log.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            headers: headers.clone(),
            body: body.clone(),
        });
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    if let Some(model) = embeddings_model(state.cfg.dialect, &path) {
        let b = parse_behaviour(header("x-mock").unwrap_or(""), &state.cfg.name);
        return embeddings(&state, &method, &path, &raw, model, &headers, &body, b.status);
    }
    let mut b = parse_behaviour(header("x-mock").unwrap_or(""), &state.cfg.name);
    if b.status.is_none() && state.cfg.fail_rate > 0.0 && state.random() < state.cfg.fail_rate {
        b.status = Some(state.cfg.fail_status);
    }
    if b.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(b.delay_ms)).await;
    }
    if b.hang {
        std::future::pending::<()>().await;
    }
    let checked = match state.cfg.dialect {
        Dialect::Openai | Dialect::AzureOpenai => check_openai(&state, &method, &path, header, &raw, &body),
        Dialect::Anthropic => check_anthropic(&state, &method, &path, header, &raw, &body),
        Dialect::Gemini | Dialect::Vertex => check_gemini(&state, &method, &path, header, &body),
        Dialect::Bedrock => check_bedrock(&state, &method, &path, &headers, &raw, &body),
    };
    let req = match checked {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    if let Some(status) = b.status.filter(|s| *s >= 300) {
        let mut r = state.error(
            status,
            &format!("{} is failing on purpose (mock status {status})", state.cfg.name),
            None,
        );
        if let Some(ra) = &b.retry_after
            && let Ok(v) = ra.parse()
        {
            r.headers_mut().insert("retry-after", v);
        }
        return r;
    }
    if let Some(kind) = &b.error {
        // The providers' own error answers for these cases.
        let anthropic = state.cfg.dialect == Dialect::Anthropic;
        let gemini = matches!(state.cfg.dialect, Dialect::Gemini | Dialect::Vertex);
        let bedrock = state.cfg.dialect == Dialect::Bedrock;
        return match kind.as_str() {
            "model_gone" if bedrock => bedrock_error(400, "ValidationException", "The provided model identifier is invalid."),
            "invalid_key" if bedrock => bedrock_error(403, "UnrecognizedClientException", "The security token included in the request is invalid."),
            "content_policy" if bedrock => state.error(400, "The request was blocked by content filtering policy.", None),
            "model_gone" if gemini => state.error(404, &format!("models/{} is not found for API version v1beta, or is not supported for generateContent.", req.model), None),
            "invalid_key" if gemini => state.error(400, "API key not valid. Please pass a valid API key.", None),
            "content_policy" if anthropic => state.error(400, "Output blocked by content filtering policy", None),
            "content_policy" => state.error(
                400,
                "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.",
                Some("content_policy_violation"),
            ),
            "model_gone" if anthropic => state.error(404, &format!("model: {}", req.model), None),
            "model_gone" => state.error(
                404,
                &format!("The model `{}` has been deprecated, learn more here: https://platform.openai.com/docs/deprecations", req.model),
                Some("model_not_found"),
            ),
            "invalid_key" if anthropic => state.error(401, "invalid x-api-key", None),
            "invalid_key" => state.error(401, "Incorrect API key provided.", Some("invalid_api_key")),
            _ => state.error(400, "Invalid value for 'temperature': must be between 0 and 2.", None),
        };
    }
    let n = state.seq.fetch_add(1, Ordering::Relaxed);
    let reply = Reply::to(&req, &state.cfg.name, n);
    if b.malformed {
        return if req.stream {
            full(200, "text/event-stream", "data: {\"choices\": [ {\"delta\"\n\n")
        } else {
            full(200, "application/json", "{\"id\": \"x\", \"choices\": [")
        };
    }
    let mut events = match state.cfg.dialect {
        Dialect::Openai | Dialect::AzureOpenai => openai_reply(&req, &reply, n),
        Dialect::Anthropic => anthropic_reply(&req, &reply, n),
        Dialect::Gemini | Dialect::Vertex => gemini_reply(&req, &reply, n),
        Dialect::Bedrock => bedrock_reply(&req, &reply),
    };
    if b.finish.as_deref() == Some("content_filter") && !req.stream {
        events[0] = String::from_utf8_lossy(&events[0])
            .replace("\"finish_reason\":\"stop\"", "\"finish_reason\":\"content_filter\"")
            .replace("\"stop_reason\":\"end_turn\"", "\"stop_reason\":\"refusal\"")
            .replace("\"finishReason\":\"STOP\"", "\"finishReason\":\"SAFETY\"")
            .replace("\"stopReason\":\"end_turn\"", "\"stopReason\":\"content_filtered\"")
            .into_bytes();
    }
    if !req.stream {
        let body = events.into_iter().next().unwrap_or_default();
        if let Some(k) = b.reset_after {
            let cut = body.len().min(k.max(1));
            return stream_response("application/json", vec![body[..cut].to_vec()], 0, Some(1));
        }
        return full(200, "application/json", body);
    }
    if let Some(n) = b.end_after {
        events.truncate(n);
    }
    let content_type = match state.cfg.dialect {
        Dialect::Bedrock => "application/vnd.amazon.eventstream",
        _ => "text/event-stream",
    };
    stream_response(content_type, events, b.chunk_delay_ms, b.reset_after)
}

/// The model of an embeddings call in the mock's dialect, if `path` is one.
fn embeddings_model(dialect: Dialect, path: &str) -> Option<String> {
    let (p, query) = path.split_once('?').unwrap_or((path, ""));
    match dialect {
        Dialect::Openai => (p == "/v1/embeddings").then(String::new),
        Dialect::AzureOpenai => p
            .strip_prefix("/openai/deployments/")
            .and_then(|r| r.strip_suffix("/embeddings"))
            .filter(|_| query.contains("api-version="))
            .map(str::to_string),
        Dialect::Gemini => p
            .strip_prefix("/v1beta/models/")
            .and_then(|r| r.strip_suffix(":batchEmbedContents"))
            .map(str::to_string),
        Dialect::Vertex => p
            .strip_prefix(VERTEX_BASE)
            .and_then(|r| r.strip_prefix("/models/"))
            .and_then(|r| r.strip_suffix(":predict"))
            .map(str::to_string),
        Dialect::Bedrock => p
            .strip_prefix("/model/")
            .and_then(|r| r.strip_suffix("/invoke"))
            .map(percent_decode),
        Dialect::Anthropic => None,
    }
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

/// Embeddings: OpenAI and Azure (`input`, `dimensions`, `encoding_format`),
/// Gemini's `batchEmbedContents`, Vertex AI's `:predict`, Bedrock's InvokeModel of
/// Titan (`inputText`) or Cohere Embed (`texts`).
#[allow(clippy::too_many_arguments)] // the request's parts, as `handle` has them
fn embeddings(
    state: &State,
    method: &str,
    path: &str,
    raw: &[u8],
    path_model: String,
    headers: &[(String, String)],
    body: &Value,
    fail: Option<u16>,
) -> Response<Body> {
    if state.cfg.dialect == Dialect::Bedrock {
        if let Err(message) = check_sigv4(state, method, path, headers, raw) {
            return bedrock_error(403, "InvalidSignatureException", &message);
        }
    } else if method != "POST" || !state.credential_ok(headers) {
        return state.error(401, "invalid credentials", None);
    }
    if let Some(status) = fail.filter(|s| *s >= 300) {
        return state.error(
            status,
            &format!("{} is failing on purpose (mock status {status})", state.cfg.name),
            None,
        );
    }
    let bad = |m: &str| state.error(400, m, None);
    if state.cfg.dialect == Dialect::Vertex {
        let Some(instances) = body.get("instances").and_then(Value::as_array) else {
            return bad("Invalid JSON payload received. Missing `instances`.");
        };
        let dims = body
            .pointer("/parameters/outputDimensionality")
            .and_then(Value::as_u64)
            .unwrap_or(8) as usize;
        let predictions: Vec<Value> = instances
            .iter()
            .map(|i| {
                let text = i.get("content").and_then(Value::as_str).unwrap_or("");
                json!({"embeddings": {"statistics": {"truncated": false, "token_count": text.split_whitespace().count()},
                    "values": mock_embedding(text, dims)}})
            })
            .collect();
        return json_response(200, &json!({ "predictions": predictions }));
    }
    if state.cfg.dialect == Dialect::Bedrock {
        let reject = |m: &str| bedrock_error(400, "ValidationException", m);
        if path_model.contains("cohere.embed") {
            let Some(texts) = body.get("texts").and_then(Value::as_array) else {
                return reject(
                    "Malformed input request: #: required key [texts] not found, please reformat your input and try again.",
                );
            };
            let texts: Vec<&str> = texts.iter().filter_map(Value::as_str).collect();
            let vectors: Vec<Vec<f64>> = texts.iter().map(|t| mock_embedding(t, 8)).collect();
            return json_response(
                200,
                &json!({"id": "mock", "embeddings": vectors, "texts": texts, "response_type": "embeddings_floats"}),
            );
        }
        if let Some(k) = body
            .as_object()
            .and_then(|o| unknown_param(o, &["inputText", "dimensions", "normalize", "embeddingTypes"]))
        {
            return reject(&format!(
                "Malformed input request: extraneous key [{k}] is not permitted, please reformat your input and try again."
            ));
        }
        let Some(text) = body.get("inputText").and_then(Value::as_str) else {
            return reject(
                "Malformed input request: #: required key [inputText] not found, please reformat your input and try again.",
            );
        };
        let dims = body.get("dimensions").and_then(Value::as_u64).unwrap_or(8) as usize;
        return json_response(
            200,
            &json!({"embedding": mock_embedding(text, dims), "inputTextTokenCount": text.split_whitespace().count()}),
        );
    }
    if state.cfg.dialect == Dialect::Gemini {
        let Some(requests) = body.get("requests").and_then(Value::as_array) else {
            return bad("* BatchEmbedContentsRequest.requests: requests is required");
        };
        let mut out = Vec::new();
        for r in requests {
            if r.get("model").and_then(Value::as_str) != Some(&format!("models/{path_model}")) {
                return bad("* BatchEmbedContentsRequest.requests[0].model: model must match the parent model");
            }
            let text = r.pointer("/content/parts/0/text").and_then(Value::as_str).unwrap_or("");
            let dims = r.get("outputDimensionality").and_then(Value::as_u64).unwrap_or(8) as usize;
            out.push(json!({ "values": mock_embedding(text, dims) }));
        }
        return json_response(200, &json!({ "embeddings": out }));
    }
    let model = match state.cfg.dialect {
        Dialect::AzureOpenai => path_model,
        _ => match body.get("model").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            None => return bad("you must provide a model parameter"),
        },
    };
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return bad(&format!(
                "'{other}' is not one of ['float', 'base64'] - 'encoding_format'"
            ));
        }
    };
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect(),
        _ => return bad("'input' is a required property"),
    };
    let dims = body.get("dimensions").and_then(Value::as_u64).unwrap_or(8) as usize;
    let tokens: u64 = inputs.iter().map(|i| i.split_whitespace().count() as u64).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = mock_embedding(t, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
                json!(switchyard_core::dialect::base64(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json_response(
        200,
        &json!({"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

fn stream_response(
    content_type: &str,
    chunks: Vec<Vec<u8>>,
    delay_ms: u64,
    reset_after: Option<usize>,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::spawn(async move {
        for (i, c) in chunks.into_iter().enumerate() {
            if reset_after == Some(i) {
                let _ = tx.send(Err(std::io::Error::other("mock reset mid-stream"))).await;
                return;
            }
            if i > 0 && delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
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

/// What a valid request asked for, whatever its dialect.
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
}

/// Texts of `v` at `key` when it is a string or an array of blocks with `text`.
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

const OPENAI_PARAMS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "n",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "seed",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "service_tier",
    "store",
    "metadata",
    "reasoning_effort",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "functions",
    "function_call",
];

fn check_openai<'a>(
    state: &State,
    method: &str,
    path: &str,
    header: impl Fn(&str) -> Option<&'a str>,
    raw: &[u8],
    body: &Value,
) -> Result<ChatRequest, Box<Response<Body>>> {
    let azure = state.cfg.dialect == Dialect::AzureOpenai;
    let deployment = if azure {
        let (p, query) = path.split_once('?').unwrap_or((path, ""));
        let d = p
            .strip_prefix("/openai/deployments/")
            .and_then(|r| r.strip_suffix("/chat/completions"));
        if method != "POST" || d.is_none() || !query.split('&').any(|kv| kv.starts_with("api-version=")) {
            return Err(state.reject(404, "Resource not found", None));
        }
        let key = header("api-key").unwrap_or("");
        if key.is_empty() || !state.knows(key) {
            return Err(state.reject(401, "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.", None));
        }
        if header("authorization").is_some() {
            return Err(state.reject(
                401,
                "Stricter than the real API: another provider's credential arrived.",
                None,
            ));
        }
        d.map(str::to_string)
    } else {
        None
    };
    if !azure && (method != "POST" || path.split('?').next() != Some("/v1/chat/completions")) {
        return Err(state.reject(404, &format!("Invalid URL ({method} {path})"), None));
    }
    let key = if azure {
        "azure"
    } else {
        header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("")
    };
    if key.is_empty() {
        return Err(state.reject(401, "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", None));
    }
    if !azure && !state.knows(key) {
        return Err(state.reject(401, "Incorrect API key provided.", Some("invalid_api_key")));
    }
    if serde_json::from_slice::<Value>(raw).is_err() {
        return Err(state.reject(400, "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)", None));
    }
    let Some(obj) = body.as_object() else {
        return Err(state.reject(400, "The request body must be a JSON object.", None));
    };
    if let Some(k) = unknown_param(obj, OPENAI_PARAMS) {
        return Err(state.reject(400, &format!("Unrecognized request argument supplied: {k}"), None));
    }
    let model = match (&deployment, obj.get("model").and_then(Value::as_str)) {
        // Azure: the deployment names the model; a body `model` is ignored.
        (Some(d), _) => d.as_str(),
        (None, Some(m)) => m,
        (None, None) => return Err(state.reject(400, "you must provide a model parameter", None)),
    };
    if !state.serves(model) {
        return Err(if azure {
            state.reject(404, "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.", Some("DeploymentNotFound"))
        } else {
            state.reject(
                404,
                &format!("The model `{model}` does not exist or you do not have access to it."),
                Some("model_not_found"),
            )
        });
    }
    let Some(messages) = obj.get("messages").and_then(Value::as_array) else {
        return Err(state.reject(
            400,
            "Missing required parameter: 'messages'.",
            Some("missing_required_parameter"),
        ));
    };
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if !["system", "developer", "user", "assistant", "tool", "function"].contains(&role) {
            return Err(state.reject(400, &format!("Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'. (messages[{i}].role)"), Some("invalid_value")));
        }
    }
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let role = |m: &Value| m.get("role").and_then(Value::as_str).unwrap_or("").to_string();
    let system: Vec<String> = messages
        .iter()
        .filter(|m| ["system", "developer"].contains(&role(m).as_str()))
        .filter_map(|m| texts(m.get("content")))
        .collect();
    Ok(ChatRequest {
        model: model.to_string(),
        stream,
        include_usage: stream
            && body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        input_tokens: words(&Value::Array(messages.clone())),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        user_turns: messages.iter().filter(|m| role(m) == "user").count(),
        tools: names(obj.get("tools"), "/function/name"),
        tool_result: messages
            .last()
            .filter(|m| role(m) == "tool")
            .and_then(|m| texts(m.get("content"))),
        json: body
            .pointer("/response_format/type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.starts_with("json")),
    })
}

const ANTHROPIC_PARAMS: &[&str] = &[
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
];

fn check_anthropic<'a>(
    state: &State,
    method: &str,
    path: &str,
    header: impl Fn(&str) -> Option<&'a str>,
    raw: &[u8],
    body: &Value,
) -> Result<ChatRequest, Box<Response<Body>>> {
    if method != "POST" || path.split('?').next() != Some("/v1/messages") {
        return Err(state.reject(404, "Not Found", None));
    }
    let key = header("x-api-key").unwrap_or("");
    if key.is_empty() {
        return Err(state.reject(401, "x-api-key header is required", None));
    }
    if !state.knows(key) {
        return Err(state.reject(401, "invalid x-api-key", None));
    }
    if header("anthropic-version").is_none() {
        return Err(state.reject(400, "anthropic-version: header is required", None));
    }
    if header("authorization").is_some() {
        // Stricter than the real API: another provider's credential must never arrive here.
        return Err(state.reject(401, "Multiple authentication methods provided", None));
    }
    if serde_json::from_slice::<Value>(raw).is_err() {
        return Err(state.reject(400, "There was an issue with your request body: invalid JSON", None));
    }
    let Some(obj) = body.as_object() else {
        return Err(state.reject(400, "Input should be an object", None));
    };
    if let Some(k) = unknown_param(obj, ANTHROPIC_PARAMS) {
        return Err(state.reject(400, &format!("{k}: Extra inputs are not permitted"), None));
    }
    let Some(model) = obj.get("model").and_then(Value::as_str) else {
        return Err(state.reject(400, "model: Field required", None));
    };
    if obj.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Err(state.reject(400, "max_tokens: Field required", None));
    }
    let Some(messages) = obj.get("messages").and_then(Value::as_array) else {
        return Err(state.reject(400, "messages: Field required", None));
    };
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "assistant" {
            return Err(state.reject(
                400,
                &format!("messages.{i}.role: Input should be 'user' or 'assistant'"),
                None,
            ));
        }
    }
    if !state.serves(model) {
        return Err(state.reject(404, &format!("model: {model}"), None));
    }
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
        tools: names(obj.get("tools"), "/name"),
        tool_result: messages
            .last()
            .and_then(|m| blocks(m, "tool_result").into_iter().next())
            .and_then(|b| texts(b.get("content"))),
    })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What the mock answers, before it is put in a dialect.
enum Reply {
    /// A text answer.
    Text(String),
    /// A call of the first tool offered.
    Tool { id: String, name: String, args: String },
}

/// The arguments of every tool call the mock makes.
pub const TOOL_ARGS: &str = r#"{"location":"Paris"}"#;

impl Reply {
    /// The mock's answer to `req`: a tool call when tools are offered and no tool
    /// result came back yet; otherwise a text that shows what the mock understood
    /// (system prompt, user turns, tool result), as JSON when JSON was asked for.
    fn to(req: &ChatRequest, name: &str, n: u64) -> Reply {
        if let Some(tool) = req.tools.first().filter(|_| req.tool_result.is_none()) {
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
        [&args[..cut], &args[cut..]]
    }
}

/// Reply as a list of wire chunks (one element for JSON).
fn openai_reply(req: &ChatRequest, reply: &Reply, n: u64) -> Vec<Vec<u8>> {
    let id = format!("chatcmpl-mock{n}");
    let out_tokens = reply.out_tokens();
    let usage = json!({"prompt_tokens": req.input_tokens, "completion_tokens": out_tokens, "total_tokens": req.input_tokens + out_tokens});
    let finish = match reply {
        Reply::Text(_) => "stop",
        Reply::Tool { .. } => "tool_calls",
    };
    if !req.stream {
        let message = match reply {
            Reply::Text(t) => json!({"role": "assistant", "content": t, "refusal": null}),
            Reply::Tool { id, name, args } => json!({"role": "assistant", "content": null, "refusal": null,
                "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": args}}]}),
        };
        return vec![
            json!({
                "id": id, "object": "chat.completion", "created": now(), "model": req.model,
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
                "usage": usage,
            })
            .to_string()
            .into_bytes(),
        ];
    }
    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": now(), "model": req.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        format!("data: {c}\n\n").into_bytes()
    };
    let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    match reply {
        Reply::Text(t) => {
            for piece in Reply::pieces(t) {
                out.push(chunk(json!({ "content": piece }), Value::Null));
            }
        }
        Reply::Tool { id, name, args } => {
            out.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ));
            for piece in Reply::arg_pieces(args) {
                out.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
        }
    }
    out.push(chunk(json!({}), json!(finish)));
    if req.include_usage {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": now(), "model": req.model, "choices": [], "usage": usage});
        out.push(format!("data: {c}\n\n").into_bytes());
    }
    out.push(b"data: [DONE]\n\n".to_vec());
    out
}

const GEMINI_FIELDS: &[&str] = &[
    "contents",
    "systemInstruction",
    "generationConfig",
    "tools",
    "toolConfig",
    "safetySettings",
    "cachedContent",
];

fn check_gemini<'a>(
    state: &State,
    method: &str,
    path: &str,
    header: impl Fn(&str) -> Option<&'a str>,
    body: &Value,
) -> Result<ChatRequest, Box<Response<Body>>> {
    let vertex = state.cfg.dialect == Dialect::Vertex;
    let (p, query) = path.split_once('?').unwrap_or((path, ""));
    let prefix = format!("{}/models/", state.cfg.dialect.base_path());
    let rest = p.strip_prefix(prefix.as_str()).unwrap_or("");
    let (model, stream) = match rest.rsplit_once(':') {
        Some((m, "generateContent")) => (m, false),
        Some((m, "streamGenerateContent")) => (m, true),
        _ => return Err(state.reject(404, &format!("Method not found: {method} {path}"), None)),
    };
    if method != "POST" || model.is_empty() {
        return Err(state.reject(404, "Method not found.", None));
    }
    if stream && !query.split('&').any(|kv| kv == "alt=sse") {
        return Err(state.reject(
            400,
            "This mock streams only with alt=sse, as Switchyard requests.",
            None,
        ));
    }
    if vertex {
        let token = header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("");
        let known = state.knows(token);
        if token.is_empty() || !known || header("x-goog-api-key").is_some() {
            return Err(state.reject(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.", None));
        }
    }
    let key = if vertex {
        "vertex"
    } else {
        header("x-goog-api-key").unwrap_or("")
    };
    if key.is_empty() {
        return Err(state.reject(403, "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.", None));
    }
    if !vertex && !state.knows(key) {
        return Err(state.reject(400, "API key not valid. Please pass a valid API key.", None));
    }
    if !vertex && header("authorization").is_some() {
        return Err(state.reject(
            401,
            "Stricter than the real API: another provider's credential arrived.",
            None,
        ));
    }
    let Some(obj) = body.as_object() else {
        return Err(state.reject(400, "Invalid JSON payload received.", None));
    };
    if let Some(k) = unknown_param(obj, GEMINI_FIELDS) {
        return Err(state.reject(
            400,
            &format!("Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."),
            None,
        ));
    }
    let Some(contents) = obj.get("contents").and_then(Value::as_array).filter(|c| !c.is_empty()) else {
        return Err(state.reject(
            400,
            "* GenerateContentRequest.contents: contents is not specified",
            None,
        ));
    };
    for (i, c) in contents.iter().enumerate() {
        let role = c.get("role").and_then(Value::as_str).unwrap_or("user");
        if role != "user" && role != "model" {
            return Err(state.reject(
                400,
                &format!("Please use a valid role: user, model. (contents[{i}])"),
                None,
            ));
        }
    }
    if !state.serves(model) {
        return Err(state.reject(
            404,
            &format!("models/{model} is not found for API version v1beta, or is not supported for generateContent."),
            None,
        ));
    }
    let words_in = |v: &Value| -> u64 {
        v.get("parts")
            .and_then(Value::as_array)
            .map(|ps| ps.iter().map(|p| words(p.get("text").unwrap_or(&Value::Null))).sum())
            .unwrap_or(0)
    };
    let input = contents.iter().map(words_in).sum::<u64>() + obj.get("systemInstruction").map(words_in).unwrap_or(0);
    let parts = |c: &Value| c.get("parts").and_then(Value::as_array).cloned().unwrap_or_default();
    let is_user = |c: &&Value| c.get("role").and_then(Value::as_str).unwrap_or("user") == "user";
    Ok(ChatRequest {
        model: model.to_string(),
        stream,
        include_usage: true,
        input_tokens: input,
        system: texts(body.pointer("/systemInstruction/parts")),
        user_turns: contents
            .iter()
            .filter(is_user)
            .filter(|c| parts(c).iter().any(|p| p.get("text").is_some()))
            .count(),
        tools: names(body.pointer("/tools/0/functionDeclarations"), "/name"),
        tool_result: contents.last().and_then(|c| {
            parts(c).iter().find_map(|p| {
                p.pointer("/functionResponse/response/content").map(|r| match r {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            })
        }),
        json: body
            .pointer("/generationConfig/responseMimeType")
            .and_then(Value::as_str)
            == Some("application/json"),
    })
}

const BEDROCK_FIELDS: &[&str] = &[
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
    "promptVariables",
    "requestMetadata",
    "performanceConfig",
];

const BEDROCK_BLOCKS: &[&str] = &[
    "text",
    "image",
    "document",
    "video",
    "toolUse",
    "toolResult",
    "guardrailContent",
    "reasoningContent",
    "cachePoint",
];

/// `%XX` sequences decoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks a Bedrock request's credentials: a Bedrock API key as bearer token, or a
/// SigV4 signature, recomputed from what arrived (signed headers, path, body)
/// with the secret the mock was given (`--api-key ACCESS_KEY_ID/SECRET`).
fn check_sigv4(
    state: &State,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    raw: &[u8],
) -> Result<(), String> {
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let auth = header("authorization").ok_or("Missing Authentication Token")?;
    let keys: Vec<&str> = state
        .cfg
        .api_key
        .as_deref()
        .map(|k| k.split(',').collect())
        .unwrap_or_default();
    if let Some(token) = auth.strip_prefix("Bearer ") {
        return if keys.is_empty() || keys.contains(&token) {
            Ok(())
        } else {
            Err("Invalid API Key format: Must start with pre-defined prefix".into())
        };
    }
    let fields = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("Authorization header requires 'Credential' parameter.")?;
    let field = |name: &str| {
        fields
            .split(", ")
            .find_map(|f| f.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
            .ok_or(format!("Authorization header requires '{name}' parameter."))
    };
    let (credential, signed, signature) = (field("Credential")?, field("SignedHeaders")?, field("Signature")?);
    let scope: Vec<&str> = credential.split('/').collect();
    let date = header("x-amz-date")
        .ok_or("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")?;
    if scope.len() != 5 || scope[4] != "aws4_request" || scope[3] != "bedrock" || !date.starts_with(scope[1]) {
        return Err(format!("Credential should be scoped correctly: {credential}"));
    }
    if scope[2] != "us-east-1" {
        return Err(format!(
            "Credential should be scoped to a valid region, not '{}'.",
            scope[2]
        ));
    }
    let secret = keys
        .iter()
        .filter_map(|k| k.split_once('/'))
        .find(|(id, _)| *id == scope[0])
        .map(|(_, s)| s);
    let secret = match (secret, keys.is_empty()) {
        (Some(s), _) => s,
        (None, true) => return Ok(()),
        (None, false) => return Err("The security token included in the request is invalid.".into()),
    };
    let signed_headers: Vec<(&str, &str)> = signed.split(';').map(|n| (n, header(n).unwrap_or(""))).collect();
    let request = switchyard_core::sigv4::Request {
        method,
        path,
        headers: &signed_headers,
        body: raw,
    };
    let credentials = switchyard_core::sigv4::Credentials {
        access_key_id: scope[0],
        secret_access_key: secret,
        session_token: header("x-amz-security-token"),
    };
    let expected = switchyard_core::sigv4::authorization(&request, &credentials, scope[2], scope[3], date);
    if !expected.ends_with(&format!("Signature={signature}")) || !signed.split(';').any(|h| h == "host") {
        return Err(format!(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\nThe Canonical String for this request should have been\n'{}'",
            switchyard_core::sigv4::canonical_request(&request)
        ));
    }
    Ok(())
}

fn check_bedrock(
    state: &State,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    raw: &[u8],
    body: &Value,
) -> Result<ChatRequest, Box<Response<Body>>> {
    let reject = |status: u16, kind: &str, message: &str| Box::new(bedrock_error(status, kind, message));
    let rest = path.strip_prefix("/model/").unwrap_or("");
    let (model, stream) = match rest.split_once('/') {
        Some((m, "converse")) => (percent_decode(m), false),
        Some((m, "converse-stream")) => (percent_decode(m), true),
        _ => return Err(reject(404, "UnknownOperationException", "")),
    };
    if method != "POST" {
        return Err(reject(404, "UnknownOperationException", ""));
    }
    if let Err(message) = check_sigv4(state, method, path, headers, raw) {
        let kind = if message.contains("signature") {
            "InvalidSignatureException"
        } else {
            "UnrecognizedClientException"
        };
        return Err(reject(403, kind, &message));
    }
    let Some(obj) = body.as_object() else {
        return Err(reject(
            400,
            "ValidationException",
            "Malformed input request, please reformat your input and try again.",
        ));
    };
    if let Some(k) = unknown_param(obj, BEDROCK_FIELDS) {
        return Err(reject(
            400,
            "ValidationException",
            &format!(
                "Malformed input request: extraneous key [{k}] is not permitted, please reformat your input and try again."
            ),
        ));
    }
    let Some(messages) = obj.get("messages").and_then(Value::as_array).filter(|m| !m.is_empty()) else {
        return Err(reject(
            400,
            "ValidationException",
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
        ));
    };
    let mut uses_tools = false;
    let mut last_role = "";
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "assistant" {
            return Err(reject(
                400,
                "ValidationException",
                &format!(
                    "1 validation error detected: Value '{role}' at 'messages.{}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]",
                    i + 1
                ),
            ));
        }
        if (i == 0 && role != "user") || role == last_role {
            return Err(reject(
                400,
                "ValidationException",
                "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.",
            ));
        }
        last_role = role;
        let Some(blocks) = m.get("content").and_then(Value::as_array).filter(|c| !c.is_empty()) else {
            return Err(reject(
                400,
                "ValidationException",
                &format!(
                    "The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
                ),
            ));
        };
        for b in blocks {
            let keys: Vec<&String> = b.as_object().map(|o| o.keys().collect()).unwrap_or_default();
            if keys.len() != 1 || !BEDROCK_BLOCKS.contains(&keys[0].as_str()) {
                return Err(reject(
                    400,
                    "ValidationException",
                    &format!(
                        "Malformed input request: messages.{i}.content: a ContentBlock has exactly one of {BEDROCK_BLOCKS:?}, got {keys:?}"
                    ),
                ));
            }
            uses_tools |= keys[0] == "toolUse" || keys[0] == "toolResult";
        }
    }
    if uses_tools && obj.get("toolConfig").is_none() {
        return Err(reject(
            400,
            "ValidationException",
            "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
        ));
    }
    if !state.serves(&model) {
        return Err(reject(
            400,
            "ValidationException",
            "The provided model identifier is invalid.",
        ));
    }
    let system = texts(obj.get("system"));
    let blocks_of = |m: &Value, kind: &str| -> Vec<Value> {
        m.get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|b| b.get(kind))
            .cloned()
            .collect()
    };
    Ok(ChatRequest {
        model,
        stream,
        include_usage: true,
        input_tokens: words(&Value::Array(messages.clone())) + obj.get("system").map(words).unwrap_or(0),
        json: asks_for_json(&system),
        system,
        user_turns: messages
            .iter()
            .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .filter(|m| !blocks_of(m, "text").is_empty())
            .count(),
        tools: names(body.pointer("/toolConfig/tools"), "/toolSpec/name"),
        tool_result: messages
            .last()
            .and_then(|m| blocks_of(m, "toolResult").into_iter().next())
            .and_then(|r| texts(r.get("content"))),
    })
}

fn gemini_reply(req: &ChatRequest, reply: &Reply, n: u64) -> Vec<Vec<u8>> {
    let out_tokens = reply.out_tokens();
    let usage = json!({"promptTokenCount": req.input_tokens, "candidatesTokenCount": out_tokens, "totalTokenCount": req.input_tokens + out_tokens});
    let event = |parts: Value, last: bool| {
        let mut ev = json!({"candidates": [{"content": {"parts": parts, "role": "model"}, "index": 0}],
            "modelVersion": req.model, "responseId": format!("mock-{n}")});
        if last {
            ev["candidates"][0]["finishReason"] = json!("STOP");
            ev["usageMetadata"] = usage.clone();
        }
        ev
    };
    let pieces: Vec<Value> = match reply {
        Reply::Text(t) if req.stream => Reply::pieces(t).into_iter().map(|p| json!([{ "text": p }])).collect(),
        Reply::Text(t) => vec![json!([{ "text": t }])],
        Reply::Tool { name, args, .. } => {
            let args: Value = serde_json::from_str(args).unwrap_or(Value::Null);
            vec![json!([{"functionCall": {"name": name, "args": args}}])]
        }
    };
    if !req.stream {
        let parts = pieces.into_iter().next().unwrap_or(Value::Null);
        return vec![event(parts, true).to_string().into_bytes()];
    }
    let last = pieces.len() - 1;
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, parts)| format!("data: {}\r\n\r\n", event(parts, i == last)).into_bytes())
        .collect()
}

fn anthropic_reply(req: &ChatRequest, reply: &Reply, n: u64) -> Vec<Vec<u8>> {
    let id = format!("msg_mock{n}");
    let out_tokens = reply.out_tokens();
    let stop = match reply {
        Reply::Text(_) => "end_turn",
        Reply::Tool { .. } => "tool_use",
    };
    if !req.stream {
        let content = match reply {
            Reply::Text(t) => json!([{"type": "text", "text": t}]),
            Reply::Tool { id, name, args } => json!([{"type": "tool_use", "id": id, "name": name,
                "input": serde_json::from_str::<Value>(args).unwrap_or(Value::Null)}]),
        };
        return vec![
            json!({
                "id": id, "type": "message", "role": "assistant", "model": req.model,
                "content": content, "stop_reason": stop, "stop_sequence": null,
                "usage": {"input_tokens": req.input_tokens, "output_tokens": out_tokens},
            })
            .to_string()
            .into_bytes(),
        ];
    }
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n").into_bytes();
    let mut out = vec![ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": req.model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": req.input_tokens, "output_tokens": 1}}}),
    )];
    match reply {
        Reply::Text(t) => {
            out.push(ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ));
            out.push(ev("ping", json!({"type": "ping"})));
            for piece in Reply::pieces(t) {
                out.push(ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
                ));
            }
        }
        Reply::Tool { id, name, args } => {
            out.push(ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
            ));
            for piece in Reply::arg_pieces(args) {
                out.push(ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}}),
                ));
            }
        }
    }
    out.push(ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    out.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": out_tokens}})));
    out.push(ev("message_stop", json!({"type": "message_stop"})));
    out
}

fn bedrock_reply(req: &ChatRequest, reply: &Reply) -> Vec<Vec<u8>> {
    let out_tokens = reply.out_tokens();
    let usage = json!({"inputTokens": req.input_tokens, "outputTokens": out_tokens, "totalTokens": req.input_tokens + out_tokens});
    let stop = match reply {
        Reply::Text(_) => "end_turn",
        Reply::Tool { .. } => "tool_use",
    };
    if !req.stream {
        let content = match reply {
            Reply::Text(t) => json!([{ "text": t }]),
            Reply::Tool { id, name, args } => json!([{"toolUse": {"toolUseId": id, "name": name,
                "input": serde_json::from_str::<Value>(args).unwrap_or(Value::Null)}}]),
        };
        return vec![
            json!({"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
                "usage": usage, "metrics": {"latencyMs": 12}})
            .to_string()
            .into_bytes(),
        ];
    }
    let ev = |kind: &str, payload: Value| {
        switchyard_core::eventstream::encode(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.to_string().as_bytes(),
        )
    };
    let mut out = vec![ev("messageStart", json!({"role": "assistant"}))];
    match reply {
        Reply::Text(t) => {
            for piece in Reply::pieces(t) {
                out.push(ev(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"text": piece}}),
                ));
            }
        }
        Reply::Tool { id, name, args } => {
            out.push(ev(
                "contentBlockStart",
                json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": id, "name": name}}}),
            ));
            for piece in Reply::arg_pieces(args) {
                out.push(ev(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}}),
                ));
            }
        }
    }
    out.push(ev("contentBlockStop", json!({"contentBlockIndex": 0})));
    out.push(ev("messageStop", json!({ "stopReason": stop })));
    out.push(ev("metadata", json!({"usage": usage, "metrics": {"latencyMs": 12}})));
    out
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
}
