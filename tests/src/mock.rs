//! A simulated LLM provider that speaks OpenAI chat completions or Anthropic
//! Messages as their public API references describe them (request validation and
//! error shapes included), and misbehaves on demand.
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
}

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
            Dialect::Gemini => {
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
            let header = |n: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("")
            };
            let key = match state.cfg.dialect {
                Dialect::Openai => header("authorization").strip_prefix("Bearer ").unwrap_or(""),
                Dialect::Anthropic => header("x-api-key"),
                Dialect::AzureOpenai => header("api-key"),
                Dialect::Gemini => header("x-goog-api-key"),
            };
            if key.is_empty()
                || state
                    .cfg
                    .api_key
                    .as_deref()
                    .is_some_and(|k| !k.split(',').any(|k| k == key))
            {
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
        Dialect::Gemini => check_gemini(&state, &method, &path, header, &body),
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
        let gemini = state.cfg.dialect == Dialect::Gemini;
        return match kind.as_str() {
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
    let reply = format!("Hello from {} ({}).", state.cfg.name, req.model);
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
        Dialect::Gemini => gemini_reply(&req, &reply, n),
    };
    if b.finish.as_deref() == Some("content_filter") && !req.stream {
        events[0] = events[0]
            .replace("\"finish_reason\":\"stop\"", "\"finish_reason\":\"content_filter\"")
            .replace("\"stop_reason\":\"end_turn\"", "\"stop_reason\":\"refusal\"")
            .replace("\"finishReason\":\"STOP\"", "\"finishReason\":\"SAFETY\"");
    }
    if !req.stream {
        let body = events.into_iter().next().unwrap_or_default();
        if let Some(k) = b.reset_after {
            let cut = body.len().min(k.max(1));
            return stream_response("application/json", vec![body[..cut].to_string()], 0, Some(1));
        }
        return full(200, "application/json", body);
    }
    if let Some(n) = b.end_after {
        events.truncate(n);
    }
    stream_response("text/event-stream", events, b.chunk_delay_ms, b.reset_after)
}

fn stream_response(
    content_type: &str,
    chunks: Vec<String>,
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

/// What a valid request asked for.
struct ChatRequest {
    model: String,
    stream: bool,
    include_usage: bool,
    input_tokens: u64,
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
        if key.is_empty()
            || state
                .cfg
                .api_key
                .as_deref()
                .is_some_and(|k| !k.split(',').any(|k| k == key))
        {
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
    if !azure
        && state
            .cfg
            .api_key
            .as_deref()
            .is_some_and(|k| !k.split(',').any(|k| k == key))
    {
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
    if !state.cfg.models.is_empty() && !state.cfg.models.iter().any(|m| m == model) {
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
    Ok(ChatRequest {
        model: model.to_string(),
        stream,
        include_usage: stream
            && body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        input_tokens: words(&Value::Array(messages.clone())),
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
    if state
        .cfg
        .api_key
        .as_deref()
        .is_some_and(|k| !k.split(',').any(|k| k == key))
    {
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
    if !state.cfg.models.is_empty() && !state.cfg.models.iter().any(|m| m == model) {
        return Err(state.reject(404, &format!("model: {model}"), None));
    }
    Ok(ChatRequest {
        model: model.to_string(),
        stream: obj.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: true,
        input_tokens: words(&Value::Array(messages.clone())) + obj.get("system").map(words).unwrap_or(0),
    })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reply as a list of wire chunks (one element for JSON).
fn openai_reply(req: &ChatRequest, reply: &str, n: u64) -> Vec<String> {
    let id = format!("chatcmpl-mock{n}");
    let out_tokens = reply.split_whitespace().count() as u64;
    let usage = json!({"prompt_tokens": req.input_tokens, "completion_tokens": out_tokens, "total_tokens": req.input_tokens + out_tokens});
    if !req.stream {
        return vec![json!({
            "id": id, "object": "chat.completion", "created": now(), "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply, "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage,
        }).to_string()];
    }
    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": now(), "model": req.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    for (i, w) in reply.split(' ').enumerate() {
        let piece = if i == 0 { w.to_string() } else { format!(" {w}") };
        out.push(chunk(json!({"content": piece}), Value::Null));
    }
    out.push(chunk(json!({}), json!("stop")));
    if req.include_usage {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": now(), "model": req.model, "choices": [], "usage": usage});
        out.push(format!("data: {c}\n\n"));
    }
    out.push("data: [DONE]\n\n".to_string());
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
    let (p, query) = path.split_once('?').unwrap_or((path, ""));
    let rest = p.strip_prefix("/v1beta/models/").unwrap_or("");
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
    let key = header("x-goog-api-key").unwrap_or("");
    if key.is_empty() {
        return Err(state.reject(403, "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.", None));
    }
    if state
        .cfg
        .api_key
        .as_deref()
        .is_some_and(|k| !k.split(',').any(|k| k == key))
    {
        return Err(state.reject(400, "API key not valid. Please pass a valid API key.", None));
    }
    if header("authorization").is_some() {
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
    if !state.cfg.models.is_empty() && !state.cfg.models.iter().any(|m| m == model) {
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
    Ok(ChatRequest {
        model: model.to_string(),
        stream,
        include_usage: true,
        input_tokens: input,
    })
}

fn gemini_reply(req: &ChatRequest, reply: &str, n: u64) -> Vec<String> {
    let out_tokens = reply.split_whitespace().count() as u64;
    let usage = json!({"promptTokenCount": req.input_tokens, "candidatesTokenCount": out_tokens, "totalTokenCount": req.input_tokens + out_tokens});
    if !req.stream {
        return vec![json!({
            "candidates": [{"content": {"parts": [{"text": reply}], "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage, "modelVersion": req.model, "responseId": format!("mock-{n}"),
        }).to_string()];
    }
    let words: Vec<&str> = reply.split(' ').collect();
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let piece = if i == 0 { w.to_string() } else { format!(" {w}") };
            let mut ev = json!({"candidates": [{"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}],
                "modelVersion": req.model, "responseId": format!("mock-{n}")});
            if i + 1 == words.len() {
                ev["candidates"][0]["finishReason"] = json!("STOP");
                ev["usageMetadata"] = usage.clone();
            }
            format!("data: {ev}\r\n\r\n")
        })
        .collect()
}

fn anthropic_reply(req: &ChatRequest, reply: &str, n: u64) -> Vec<String> {
    let id = format!("msg_mock{n}");
    let out_tokens = reply.split_whitespace().count() as u64;
    if !req.stream {
        return vec![
            json!({
                "id": id, "type": "message", "role": "assistant", "model": req.model,
                "content": [{"type": "text", "text": reply}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": req.input_tokens, "output_tokens": out_tokens},
            })
            .to_string(),
        ];
    }
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut out = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": req.model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": req.input_tokens, "output_tokens": 1}}}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ev("ping", json!({"type": "ping"})),
    ];
    for (i, w) in reply.split(' ').enumerate() {
        let piece = if i == 0 { w.to_string() } else { format!(" {w}") };
        out.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    out.push(ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    out.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": out_tokens}})));
    out.push(ev("message_stop", json!({"type": "message_stop"})));
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
