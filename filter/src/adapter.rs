//! The adapter: runs in the router's `upstream_http_filters`, a fresh instance per
//! attempt. Note that all attempts share one request header map (the router's):
//! every attempt sets everything it needs afresh. It finds the attempt's target in the plan, rewrites the request for the
//! provider (path, authority, credentials, body) and translates the answer back to
//! OpenAI's format.

use std::sync::Arc;

use serde_json::Value;
use switchyard_core::config::{AwsAuth, Dialect, FilterConfig, Provider};
use switchyard_core::cost::UsageTail;
use switchyard_core::dialect::{self, anthropic, bedrock, gemini};
use switchyard_core::failure::FailureClass;
use switchyard_core::plan::Target;
use switchyard_core::request::Endpoint;
use switchyard_core::{error, sigv4, wire};

use crate::host::{self, Action, Body, Host, Map};
use crate::{circuit, cooldown, ledger};

/// What the response side does with the body.
#[derive(Debug)]
enum ResponseMode {
    /// Pass through untouched.
    Pass,
    /// Pass an OpenAI event stream through, watching for its `[DONE]`.
    PassStream(DoneWatch),
    /// Buffer the provider's error to record its message (and translate it).
    Error,
    /// Buffer and translate a JSON answer (a completion, or Gemini embeddings).
    Json,
    /// Translate an event stream chunk by chunk.
    Stream(Translator),
}

/// Stream translators of the dialects that do not speak OpenAI.
#[derive(Debug)]
enum Translator {
    Anthropic(Box<anthropic::StreamTranslator>),
    Gemini(Box<gemini::StreamTranslator>),
    Bedrock(Box<bedrock::StreamTranslator>),
}

impl Translator {
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        match self {
            Translator::Anthropic(t) => t.feed(chunk),
            Translator::Gemini(t) => t.feed(chunk),
            Translator::Bedrock(t) => t.feed(chunk),
        }
    }

    fn is_done(&self) -> bool {
        match self {
            Translator::Anthropic(t) => t.is_done(),
            Translator::Gemini(t) => t.is_done(),
            Translator::Bedrock(t) => t.is_done(),
        }
    }

    /// What closes the stream once the provider's stream has ended (Gemini marks
    /// its end only by ending).
    fn finish(&mut self) -> Vec<u8> {
        match self {
            Translator::Gemini(t) => t.finish(),
            Translator::Anthropic(_) | Translator::Bedrock(_) => Vec::new(),
        }
    }
}

/// Per-attempt adapter state.
pub struct Adapter {
    cfg: Arc<FilterConfig>,
    request_id: String,
    attempt: usize,
    target: Option<(Target, Provider)>,
    include_usage: bool,
    stream: bool,
    mode: ResponseMode,
    /// The provider's status for this attempt.
    status: u16,
    /// Response headers are held until the body shows whether it was filtered.
    hold_for_content_check: bool,
    /// How long a rate-limited provider asked to be left alone.
    reset_after_ms: Option<u64>,
    /// Index of the provider key this attempt uses.
    key: Option<usize>,
    /// When the attempt started (for its time to response headers).
    started_ms: u64,
    /// The endpoint the request is for.
    endpoint: Endpoint,
    /// Embeddings asked as base64.
    base64: bool,
    /// Bedrock's `x-amzn-ErrorType` of an error answer.
    aws_error_type: Option<String>,
    /// The end of a successful answer, kept to find its usage (only when prices
    /// are configured).
    usage: Option<UsageTail>,
}

impl Adapter {
    /// An adapter for one attempt.
    pub fn new(cfg: Arc<FilterConfig>) -> Self {
        Adapter {
            cfg,
            request_id: String::new(),
            attempt: 1,
            target: None,
            include_usage: false,
            stream: false,
            mode: ResponseMode::Pass,
            status: 0,
            hold_for_content_check: false,
            reset_after_ms: None,
            key: None,
            started_ms: 0,
            endpoint: Endpoint::Chat,
            base64: false,
            usage: None,
            aws_error_type: None,
        }
    }

    fn fail(&self, envoy: &impl Host, status: u16, code: &str, message: &str) -> Action {
        let class = FailureClass::from_status(status).unwrap_or(FailureClass::ServerError);
        self.fail_as(envoy, class, status, code, message)
    }

    /// Ends the attempt with a gateway answer: the ledger records `status`, `class`
    /// and why, so the client's error reports it (not as an unreachable provider)
    /// and no circuit counts it. The answer carries the class's canonical status,
    /// as provider answers do for the router.
    fn fail_as(
        &self,
        envoy: &impl Host,
        class: FailureClass,
        status: u16,
        code: &str,
        message: &str,
    ) -> Action {
        log::warn!("switchyard adapter [{}]: {message}", self.request_id);
        ledger::record_status(&self.request_id, self.attempt, status);
        ledger::record_class(&self.request_id, self.attempt, class);
        ledger::record_message(&self.request_id, self.attempt, message.to_string());
        let body = error::body(
            message,
            error::type_for_status(status),
            code,
            &self.request_id,
        );
        host::send_json(
            envoy,
            class.canonical_status(status),
            &self.request_id,
            &body,
        );
        Action::Pause
    }

    /// Sets this attempt's headers. The planner already removed the client's
    /// credentials and normalised `content-type` and `accept-encoding`; what is left
    /// to remove is what earlier attempts of this request set for their providers
    /// (all attempts share one header map) and this one does not replace.
    fn rewrite_headers(
        &self,
        envoy: &impl Host,
        target: &Target,
        provider: &Provider,
        earlier: &[String],
    ) {
        let key = self
            .key
            .and_then(|i| provider.api_keys.get(i))
            .map(String::as_str);
        let auth = dialect::auth_headers(provider.dialect, key);
        let sets = |name: &str| {
            auth.iter().any(|(n, _)| *n == name) || provider.headers.iter().any(|(n, _)| n == name)
        };
        let mut stale: Vec<&str> = Vec::new();
        for name in earlier
            .iter()
            .filter_map(|p| self.cfg.providers.get(p))
            .flat_map(attempt_header_names)
        {
            if !stale.contains(&name) && !sets(name) {
                stale.push(name);
            }
        }
        for name in stale {
            envoy.set_header(Map::Request, name, None);
        }
        // `:path` is set with the body (Gemini's depends on `stream`).
        envoy.set_header(Map::Request, ":authority", Some(&provider.authority));
        for (name, value) in &auth {
            envoy.set_header(Map::Request, name, Some(value));
        }
        for (name, value) in &provider.headers {
            envoy.set_header(Map::Request, name, Some(value));
        }
        ledger::read(&self.request_id, |e| {
            for (name, value) in e
                .client_headers
                .iter()
                .filter(|(n, _)| provider.forward_headers.contains(n) && !sets(n))
            {
                envoy.set_header(Map::Request, name, Some(value));
            }
        });
        log::debug!(
            "switchyard adapter [{}]: attempt {} -> {} ({})",
            self.request_id,
            self.attempt,
            target,
            provider.dialect.as_str()
        );
    }
}

impl Adapter {
    /// Request headers of one attempt: finds its target and key, checks the
    /// cluster, sets the provider's headers and holds them until the body is
    /// rewritten.
    pub fn on_request_headers(&mut self, envoy: &impl Host) -> Action {
        // Two targeted reads rather than the whole map: host calls are what an
        // attempt costs.
        self.request_id = envoy
            .header(Map::Request, "x-request-id")
            .unwrap_or_default();
        self.attempt = envoy
            .header(Map::Request, "x-envoy-attempt-count")
            .and_then(|a| a.parse::<usize>().ok())
            .filter(|a| *a >= 1)
            .unwrap_or(1);
        let now = envoy.now_ms();
        // The router hands every attempt the same header map, so the plan cannot
        // travel in a header the adapter strips; it comes from the ledger.
        let Some(target) = ledger::target(&self.request_id, self.attempt) else {
            let msg = format!(
                "attempt {} of request {:?} has no target in its plan",
                self.attempt, self.request_id
            );
            return self.fail(envoy, 500, "gateway_error", &msg);
        };
        let Some(provider) = self.cfg.providers.get(&target.provider).cloned() else {
            return self.fail(
                envoy,
                500,
                "gateway_error",
                &format!("provider `{}` is not configured", target.provider),
            );
        };
        // Fail closed: the credentials of this target go only into an attempt that
        // Envoy is sending to this target's cluster.
        let cluster = envoy.upstream_cluster().unwrap_or_default();
        let hedge = ledger::read(&self.request_id, |e| e.hedge_cluster.clone()).flatten();
        if cluster != provider.cluster && hedge.as_deref() != Some(cluster.as_str()) {
            let msg = format!(
                "attempt {} of request {:?} runs in cluster `{cluster}`, not in `{}` of its target {target}: refused",
                self.attempt, self.request_id, provider.cluster
            );
            return self.fail(envoy, 500, "gateway_error", &msg);
        }
        // The previous attempt got no answer at all (refused, reset, timed out):
        // that counts against its circuit.
        if let Some(settings) = &self.cfg.circuit_breaker
            && let Some(prev) = ledger::read(&self.request_id, |e| {
                e.attempts
                    .get(self.attempt.wrapping_sub(2))
                    .filter(|a| a.status.is_none() && ledger::no_answer_counts(&self.cfg, e, a))
                    .map(|a| a.target.clone())
            })
            .flatten()
        {
            circuit::record(envoy, settings, &prev, false, now);
        }
        // Each attempt on a provider uses a key this request has not tried yet.
        let used = ledger::keys_used(&self.request_id, &target.provider);
        self.key = cooldown::pick_key(envoy, &target.provider, provider.api_keys.len(), &used, now);
        let reported_key = self.key.filter(|_| provider.api_keys.len() > 1);
        let (endpoint, earlier) = ledger::read(&self.request_id, |e| {
            let mut earlier: Vec<String> = Vec::new();
            for a in e.attempts.iter().take(self.attempt - 1) {
                if !earlier.contains(&a.target.provider) {
                    earlier.push(a.target.provider.clone());
                }
            }
            (e.endpoint, earlier)
        })
        .unwrap_or_default();
        self.endpoint = endpoint;
        ledger::start_attempt(&self.request_id, self.attempt, &target, reported_key);
        self.started_ms = now;
        self.rewrite_headers(envoy, &target, &provider, &earlier);
        self.target = Some((target, provider));
        // Hold the headers until the body is rewritten, so content-length can be set
        // (allow_on_headers_stop_iteration makes this a plain StopIteration).
        Action::Pause
    }

    /// Request body of one attempt: rewritten for the target's dialect (and
    /// signed, for Bedrock), with the exact `content-length`.
    pub fn on_request_body(&mut self, envoy: &impl Host, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let Some((target, provider)) = &self.target else {
            return Action::Continue;
        };
        let body = envoy.body(Body::Request);
        match dialect::prepare_request(provider.dialect, self.endpoint, &body, &target.model) {
            Ok(prepared) => {
                self.stream = prepared.stream;
                self.include_usage = prepared.include_usage;
                self.base64 = prepared.base64;
                envoy.replace_body(Body::Request, &prepared.body);
                let path = dialect::path(
                    provider.dialect,
                    self.endpoint,
                    &provider.base_path,
                    &target.model,
                    provider.api_version.as_deref(),
                    prepared.stream,
                );
                envoy.set_header(Map::Request, ":path", Some(&path));
                // The headers are still held (see on_http_request_headers): send an
                // exact length rather than a chunked body.
                envoy.set_header(
                    Map::Request,
                    "content-length",
                    Some(&prepared.body.len().to_string()),
                );
                if let Some(aws) = &provider.aws {
                    sign_aws(envoy, aws, &provider.authority, &path, &prepared.body);
                }
                Action::Continue
            }
            Err(e) => {
                let msg = format!("The request cannot be sent to {target}: {e}");
                // Like a model without the feature: this target cannot serve the
                // request, another might (Envoy does not retry an upstream filter's
                // local reply today: see docs/architecture.md).
                self.fail_as(
                    envoy,
                    FailureClass::ModelUnavailable,
                    400,
                    "unsupported_for_provider",
                    &msg,
                )
            }
        }
    }

    /// Response headers of one attempt: records the status; an error is held
    /// until its body classifies it; a success picks how its body is translated.
    pub fn on_response_headers(&mut self, envoy: &impl Host, end_of_stream: bool) -> Action {
        let Some((target, provider)) = &self.target else {
            return Action::Continue;
        };
        let status = envoy
            .header(Map::Response, ":status")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        self.status = status;
        if status == 429 {
            self.reset_after_ms = switchyard_core::cooldown::from_headers(
                |name| envoy.header(Map::Response, name),
                envoy.now_ms(),
            );
        }
        ledger::record_status(&self.request_id, self.attempt, status);
        envoy.set_header(Map::Response, wire::PROVIDER_HEADER, Some(&target.provider));
        envoy.set_header(Map::Response, wire::MODEL_HEADER, Some(&target.model));
        let n = self.attempt.to_string();
        envoy.set_header(Map::Response, wire::ATTEMPTS_HEADER, Some(&n));
        envoy.set_header(Map::Response, wire::CHAIN_POSITION_HEADER, Some(&n));
        let dialect = provider.dialect;
        if !(200..300).contains(&status) {
            if end_of_stream {
                // No body to read: the status alone classifies it.
                self.settle(envoy, FailureClass::from_status(status), None);
                return Action::Continue;
            }
            // Hold the headers until the body says which failure this is: the
            // router's retry decision is made on the (possibly canonical) status.
            self.mode = ResponseMode::Error;
            if dialect == Dialect::Bedrock {
                self.aws_error_type = envoy.header(Map::Response, "x-amzn-errortype");
            }
            envoy.set_header(Map::Response, "content-length", None);
            return Action::Pause;
        }
        if let Some(settings) = &self.cfg.circuit_breaker
            && self.cfg.is_configured(target)
        {
            let now = envoy.now_ms();
            circuit::record(envoy, settings, target, true, now);
            crate::fleet::record_latency(envoy, target, now.saturating_sub(self.started_ms));
        }
        let (filter_falls_over, targets) = ledger::read(&self.request_id, |e| {
            (
                e.policy.falls_over(FailureClass::ContentFilter),
                e.plan.len(),
            )
        })
        .unwrap_or_default();
        // A completed answer the provider's safety system filtered can fall over too,
        // when the policy allows it and another target is left.
        self.hold_for_content_check = self.endpoint == Endpoint::Chat
            && !self.stream
            && !end_of_stream
            && self.attempt < targets
            && filter_falls_over;
        self.mode = match dialect {
            Dialect::Gemini | Dialect::Vertex | Dialect::Bedrock
                if self.endpoint == Endpoint::Embeddings =>
            {
                ResponseMode::Json
            }
            _ if self.endpoint == Endpoint::Embeddings => ResponseMode::Pass,
            d if d.speaks_openai() && self.stream => ResponseMode::PassStream(DoneWatch::default()),
            Dialect::Openai | Dialect::AzureOpenai => ResponseMode::Pass,
            Dialect::Anthropic if self.stream => {
                ResponseMode::Stream(Translator::Anthropic(Box::new(
                    anthropic::StreamTranslator::new(self.include_usage, host::unix_now(envoy)),
                )))
            }
            Dialect::Gemini | Dialect::Vertex if self.stream => {
                ResponseMode::Stream(Translator::Gemini(Box::new(gemini::StreamTranslator::new(
                    self.include_usage,
                    host::unix_now(envoy),
                    &target.model,
                ))))
            }
            Dialect::Bedrock if self.stream => {
                // The binary event stream becomes OpenAI's SSE.
                envoy.set_header(Map::Response, "content-type", Some("text/event-stream"));
                ResponseMode::Stream(Translator::Bedrock(Box::new(
                    bedrock::StreamTranslator::new(
                        self.include_usage,
                        host::unix_now(envoy),
                        &target.model,
                        &completion_id(&self.request_id),
                        &self.request_id,
                    ),
                )))
            }
            Dialect::Anthropic | Dialect::Gemini | Dialect::Vertex | Dialect::Bedrock => {
                ResponseMode::Json
            }
        };
        if !matches!(self.mode, ResponseMode::Pass) {
            envoy.set_header(Map::Response, "content-length", None);
        }
        if !self.cfg.prices.is_empty() {
            self.usage = Some(UsageTail::default());
        }
        if self.hold_for_content_check {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    /// Response body of one attempt: checked, translated, watched for usage.
    pub fn on_response_body(&mut self, envoy: &impl Host, end_of_stream: bool) -> Action {
        if self.hold_for_content_check {
            if !end_of_stream {
                return Action::Pause;
            }
            let body = envoy.body(Body::Response);
            if content_filtered(&body) {
                let message = "the provider's answer was stopped by its content filter".to_string();
                self.settle(envoy, Some(FailureClass::ContentFilter), Some(message));
                return Action::Continue;
            }
        }
        match &mut self.mode {
            ResponseMode::Pass => {
                if self.usage.is_some() {
                    let chunk = envoy.body(Body::Response);
                    self.watch_usage(&chunk, end_of_stream);
                }
                Action::Continue
            }
            ResponseMode::PassStream(watch) => {
                let chunk = envoy.body(Body::Response);
                watch.feed(&chunk);
                if end_of_stream && !watch.done {
                    let mut out = chunk;
                    out.extend_from_slice(&truncated(&self.request_id));
                    envoy.replace_body(Body::Response, &out);
                    self.watch_usage(&out, end_of_stream);
                } else {
                    self.watch_usage(&chunk, end_of_stream);
                }
                Action::Continue
            }
            ResponseMode::Stream(t) => {
                let chunk = envoy.body(Body::Response);
                let mut out = t.feed(&chunk);
                if end_of_stream {
                    out.extend(t.finish());
                    if !t.is_done() {
                        out.extend_from_slice(&truncated(&self.request_id));
                    }
                }
                envoy.replace_body(Body::Response, &out);
                self.watch_usage(&out, end_of_stream);
                Action::Continue
            }
            ResponseMode::Json => {
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = envoy.body(Body::Response);
                let model = self
                    .target
                    .as_ref()
                    .map(|(t, _)| t.model.as_str())
                    .unwrap_or("");
                let dialect = self.target.as_ref().map(|(_, p)| p.dialect);
                let translated = match (self.endpoint, dialect) {
                    (Endpoint::Embeddings, Some(Dialect::Vertex)) => {
                        gemini::vertex_embeddings_response(&body, model, self.base64)
                    }
                    (Endpoint::Embeddings, Some(Dialect::Bedrock)) => {
                        bedrock::embeddings_response(&body, model, self.base64)
                    }
                    (Endpoint::Embeddings, _) => {
                        gemini::embeddings_response(&body, model, self.base64)
                    }
                    (Endpoint::Chat, Some(Dialect::Gemini | Dialect::Vertex)) => {
                        gemini::response(&body, host::unix_now(envoy), model)
                    }
                    (Endpoint::Chat, Some(Dialect::Bedrock)) => bedrock::response(
                        &body,
                        host::unix_now(envoy),
                        model,
                        &completion_id(&self.request_id),
                    ),
                    (Endpoint::Chat, _) => anthropic::response(&body, host::unix_now(envoy)),
                };
                match translated {
                    Ok(out) => {
                        envoy.replace_body(Body::Response, &out);
                        self.watch_usage(&out, end_of_stream);
                    }
                    Err(e) => {
                        let msg = format!("The provider's answer could not be translated: {e}");
                        let out = error::body(
                            &msg,
                            "api_error",
                            "bad_provider_response",
                            &self.request_id,
                        );
                        envoy.replace_body(Body::Response, &out);
                    }
                }
                Action::Continue
            }
            ResponseMode::Error => {
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = envoy.body(Body::Response);
                let dialect = self
                    .target
                    .as_ref()
                    .map(|(_, p)| p.dialect)
                    .unwrap_or(Dialect::Openai);
                if dialect == Dialect::Bedrock {
                    let (kind, m) = bedrock::error_details(self.aws_error_type.as_deref(), &body);
                    let class = bedrock::classify(self.status, &kind, &m);
                    self.settle(envoy, class, Some(format!("{kind}: {m}")));
                    return Action::Continue;
                }
                let message = match dialect {
                    Dialect::Anthropic => {
                        anthropic::error_details(&body).map(|(kind, m)| format!("{kind}: {m}"))
                    }
                    Dialect::Gemini | Dialect::Vertex => {
                        gemini::error_details(&body).map(|(status, m)| format!("{status}: {m}"))
                    }
                    Dialect::Openai | Dialect::AzureOpenai | Dialect::Bedrock => {
                        dialect::error_message(&body)
                    }
                };
                self.settle(
                    envoy,
                    FailureClass::classify(dialect, self.status, &body),
                    message,
                );
                Action::Continue
            }
        }
    }
}

impl Adapter {
    /// Feeds the answer the client receives to the usage watch; at its end, records
    /// the usage for cost accounting.
    fn watch_usage(&mut self, bytes: &[u8], end_of_stream: bool) {
        let Some(tail) = &mut self.usage else {
            return;
        };
        tail.feed(bytes);
        if end_of_stream && let Some(u) = tail.usage() {
            ledger::record_usage(&self.request_id, self.attempt, u);
        }
    }

    /// Records the attempt's failure and shows the router the class's canonical
    /// status (headers are still held), so the retry decision follows the class.
    fn settle(&self, envoy: &impl Host, class: Option<FailureClass>, message: Option<String>) {
        let Some(class) = class else {
            return;
        };
        ledger::record_class(&self.request_id, self.attempt, class);
        if let Some(m) = message {
            ledger::record_message(&self.request_id, self.attempt, m);
        }
        // Only configured targets keep shared state: what a client's own
        // `provider/model` does says nothing to every other client.
        if let Some((target, provider)) = self
            .target
            .as_ref()
            .filter(|(t, _)| self.cfg.is_configured(t))
        {
            let keys = provider.api_keys.len();
            let now = envoy.now_ms();
            match class {
                // With several keys, a rate limit or a rejection is the key's, not the
                // provider's: only that key is set aside.
                FailureClass::RateLimited => match (self.reset_after_ms, self.key, keys) {
                    (Some(ms), Some(k), 2..) => {
                        cooldown::cool_key(envoy, &target.provider, k, now + ms)
                    }
                    (Some(ms), _, _) => cooldown::cool_target(envoy, target, now + ms),
                    _ => {}
                },
                FailureClass::Auth => match (self.key, keys) {
                    (Some(k), 2..) => cooldown::cool_key(
                        envoy,
                        &target.provider,
                        k,
                        now + cooldown::AUTH_COOLDOWN_MS,
                    ),
                    _ => cooldown::cool_provider(
                        envoy,
                        &target.provider,
                        now + cooldown::AUTH_COOLDOWN_MS,
                    ),
                },
                FailureClass::ServerError | FailureClass::Unreachable => {
                    if let Some(settings) = &self.cfg.circuit_breaker {
                        circuit::record(envoy, settings, target, false, now);
                    }
                }
                _ => {}
            }
        }
        let canonical = class.canonical_status(self.status);
        if canonical != self.status {
            envoy.set_header(Map::Response, ":status", Some(&canonical.to_string()));
        }
    }
}

/// The events that end a stream the provider closed before its last event.
fn truncated(request_id: &str) -> Vec<u8> {
    error::stream_error_events(
        "The provider ended the stream before the answer was complete.",
        "stream_truncated",
        request_id,
    )
}

/// Watches an OpenAI event stream for `data: [DONE]`, across chunk boundaries.
#[derive(Debug, Default)]
struct DoneWatch {
    tail: Vec<u8>,
    done: bool,
}

impl DoneWatch {
    const MARK: &'static [u8] = b"[DONE]";

    fn feed(&mut self, chunk: &[u8]) {
        if self.done {
            return;
        }
        self.tail.extend_from_slice(chunk);
        self.done = self.tail.windows(Self::MARK.len()).any(|w| w == Self::MARK);
        let keep = self.tail.len().saturating_sub(Self::MARK.len() - 1);
        self.tail.drain(..keep);
    }
}

/// Whether a completed chat answer (OpenAI or Anthropic JSON) was cut by the
/// provider's content filter.
fn content_filtered(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let openai = v
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.get("finish_reason").and_then(Value::as_str) == Some("content_filter"))
        });
    let gemini = v
        .pointer("/candidates/0/finishReason")
        .and_then(Value::as_str)
        .is_some_and(|r| gemini::finish_reason(r, false) == "content_filter");
    let bedrock = v
        .get("stopReason")
        .and_then(Value::as_str)
        .is_some_and(|r| bedrock::finish_reason(r) == "content_filter");
    openai || gemini || bedrock || v.get("stop_reason").and_then(Value::as_str) == Some("refusal")
}

/// Every header an attempt to `provider` may set besides `:authority`, `:path`,
/// `content-length` (credentials, versions, SigV4's, configured headers).
fn attempt_header_names(provider: &Provider) -> Vec<&str> {
    let mut names: Vec<&str> = dialect::auth_headers(provider.dialect, Some(""))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    if provider.dialect == Dialect::Bedrock {
        names.extend(["x-amz-date", "x-amz-security-token"]);
    }
    names.extend(provider.headers.iter().map(|(n, _)| n.as_str()));
    names.extend(provider.forward_headers.iter().map(String::as_str));
    names
}

/// The id of a completion translated from a provider whose answers carry none.
fn completion_id(request_id: &str) -> String {
    format!("chatcmpl-{request_id}")
}

/// Signs the attempt with AWS SigV4 (the headers are still held, so they can be
/// set now that the body is final).
fn sign_aws(envoy: &impl Host, aws: &AwsAuth, authority: &str, path: &str, body: &[u8]) {
    let date = sigv4::amz_date(host::unix_now(envoy));
    let mut headers = vec![
        ("host", authority),
        ("content-type", "application/json"),
        ("x-amz-date", date.as_str()),
    ];
    if let Some(token) = &aws.session_token {
        headers.push(("x-amz-security-token", token.as_str()));
    }
    let request = sigv4::Request {
        method: "POST",
        path,
        headers: &headers,
        body,
    };
    let credentials = sigv4::Credentials {
        access_key_id: &aws.access_key_id,
        secret_access_key: &aws.secret_access_key,
        session_token: aws.session_token.as_deref(),
    };
    let authorization =
        sigv4::authorization(&request, &credentials, &aws.region, bedrock::SERVICE, &date);
    for (name, value) in headers.iter().skip(2) {
        envoy.set_header(Map::Request, name, Some(value));
    }
    envoy.set_header(Map::Request, "authorization", Some(&authorization));
}
