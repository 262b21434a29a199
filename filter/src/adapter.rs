//! The adapter: runs in the router's `upstream_http_filters`, a fresh instance per
//! attempt. All attempts share one request header map (the router's): every
//! attempt sets everything it needs afresh. It finds the attempt's target in the
//! plan, rewrites the request for the provider (path, authority, credentials,
//! body), and judges and translates the answer through the provider's
//! [`dialect::Api`] — the adapter itself names no dialect.
//!
//! Nothing reaches the client before it is known to be an answer: an error is
//! held until its body classifies it; a complete answer is held until it is
//! checked whole; a stream is held until its first content (the **pre-commit
//! window**). Until then a failure — an error answer, a truncated or invalid
//! body, an in-stream error or corrupt event before any content, a content
//! filter where the route allows it — is shown to the router as the failure
//! class's canonical status, and the router falls over to the next target. Once
//! a stream is committed, a failure ends it with an OpenAI error event and
//! `[DONE]`.

use std::sync::Arc;

use switchyard_core::config::{AwsAuth, FilterConfig, Provider, Target};
use switchyard_core::cost::UsageTail;
use switchyard_core::dialect::{self, Answer, Context, StreamEnd, StreamTranslator};
use switchyard_core::failure::{FailureClass, scrub};
use switchyard_core::inbound::{ClientApi, ClientStream};
use switchyard_core::policy::OnStreamFailure;
use switchyard_core::request::Endpoint;
use switchyard_core::{error, sigv4, wire};

use crate::cooldown::KeyCooling;
use crate::host::{self, Action, Body, Host, Map};
use crate::ledger::Moment;
use crate::{circuit, continuation, cooldown, credentials, ledger};

/// What the response side does with the body.
enum ResponseMode {
    /// Nothing to do (an answer without a body).
    Pass,
    /// An error answer, held until its body says which failure it is.
    Error,
    /// A complete answer, held until it is checked (and translated) whole.
    Whole,
    /// A streamed answer: held until its first content, then passed on as it is
    /// translated.
    Stream {
        translator: ClientStream,
        /// Headers and what came so far were released to the client.
        committed: bool,
        /// Bytes of Envoy's buffer already fed to the translator (while held).
        fed: usize,
        /// Translated output not yet released.
        pending: Vec<u8>,
    },
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
    /// How long a rate-limited provider asked to be left alone.
    reset_after_ms: Option<u64>,
    /// Index of the provider key this attempt uses.
    key: Option<usize>,
    /// When the attempt started (for its time to first content).
    started_ms: u64,
    /// The endpoint the request is for.
    endpoint: Endpoint,
    /// Embeddings asked as base64.
    base64: bool,
    /// The provider's error-type header of an error answer.
    error_type: Option<String>,
    /// The end of a successful answer, kept to find its usage (always: tokens feed
    /// metrics, cost and budgets).
    usage: Option<UsageTail>,
    /// The client's request, kept when a failed stream may be continued elsewhere.
    original: Option<Vec<u8>>,
    /// What the client was sent of the answer (only when it may be continued).
    delivered: Option<continuation::Delivered>,
    /// A continuation in flight.
    continuing: Option<Continuing>,
    /// The API the client speaks.
    client: ClientApi,
    /// This target speaks it too: it gets the client's body and its answer goes
    /// back as it is (once judged).
    native: bool,
    /// The model as the client named it.
    client_model: String,
    /// This attempt's provider's secrets.
    keys: credentials::Keys,
}

/// A committed stream that failed and is being finished by the next target.
struct Continuing {
    /// The HTTP call's token.
    token: u32,
    /// Where it went.
    target: Target,
    /// Its provider's dialect.
    dialect: switchyard_core::dialect::Dialect,
    /// The translated output of the failing chunk, before its error events.
    held: Vec<u8>,
    /// Those error events (sent if the continuation fails too).
    tail: Vec<u8>,
    /// The answer came back and was spliced in.
    done: bool,
    /// What was spliced in (held output and the continuation).
    spliced: Vec<u8>,
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
            reset_after_ms: None,
            key: None,
            started_ms: 0,
            endpoint: Endpoint::Chat,
            base64: false,
            usage: None,
            error_type: None,
            original: None,
            delivered: None,
            continuing: None,
            client: ClientApi::Chat,
            native: false,
            client_model: String::new(),
            keys: credentials::Keys::default(),
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
        let key = self.key.and_then(|i| self.keys.key(i));
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
            for (name, value) in &e.client_headers {
                if sets(name) {
                    continue;
                }
                // Another attempt's provider may have had it (one header map).
                let to_this = provider.forward_headers.contains(name) || self.native_header(name);
                envoy.set_header(Map::Request, name, to_this.then_some(value.as_str()));
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
    /// A client header of its own API that a target speaking that API gets
    /// (Anthropic's beta switches).
    fn native_header(&self, name: &str) -> bool {
        self.native && self.client == ClientApi::Messages && name == "anthropic-beta"
    }

    /// The body and path of a target that speaks the client's API: the client's
    /// own body, addressed to the target's model.
    fn native_request(
        &self,
        provider: &Provider,
        model: &str,
    ) -> Result<(Vec<u8>, String, bool), String> {
        let (body, stream) = ledger::read(&self.request_id, |e| {
            (e.native_body.clone(), e.client_stream)
        })
        .unwrap_or_default();
        let body = body.ok_or("the client's body is gone")?;
        let body = switchyard_core::inbound::native::request(&body, model)?;
        Ok((
            body,
            self.client
                .native_path(provider.dialect, &provider.base_path),
            stream,
        ))
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
                    .filter(|a| a.unanswered() && ledger::no_answer_counts(&self.cfg, e, a))
                    .map(|a| a.target.clone())
            })
            .flatten()
        {
            circuit::record(envoy, settings, &prev, false, now);
        }
        // Each attempt on a provider uses a key this request has not tried yet.
        let used = ledger::keys_used(&self.request_id, &target.provider);
        self.keys = credentials::of(envoy, &self.cfg, &target.provider, &provider);
        let keys = self.keys.count();
        self.key = cooldown::pick_key(envoy, &target.provider, keys, &used, now);
        let reported_key = self.key.filter(|_| keys > 1);
        let (endpoint, earlier) = ledger::read(&self.request_id, |e| {
            let mut earlier: Vec<String> = Vec::new();
            for a in e.attempts.iter().take(self.attempt - 1) {
                if !earlier.contains(&a.target.provider) {
                    earlier.push(a.target.provider.clone());
                }
            }
            self.client = e.client_api;
            self.native = e.native_body.is_some() && e.client_api.native_to(provider.dialect);
            self.client_model.clone_from(&e.client_model);
            (e.endpoint, earlier)
        })
        .unwrap_or_default();
        self.endpoint = endpoint;
        if self.cfg.observers.spans {
            self.attempt_facts(envoy, &target);
        }
        ledger::start_attempt(&self.request_id, self.attempt, &target, reported_key, now);
        self.started_ms = now;
        self.rewrite_headers(envoy, &target, &provider, &earlier);
        self.target = Some((target, provider));
        // Hold the headers until the body is rewritten, so content-length can be set
        // (allow_on_headers_stop_iteration makes this a plain StopIteration).
        Action::Pause
    }

    /// The attempt's span facts (tracing on).
    fn attempt_facts(&self, envoy: &impl Host, target: &Target) {
        let role = ledger::read(&self.request_id, |e| {
            match e.attempts.get(self.attempt.wrapping_sub(2)) {
                None => "primary",
                Some(prev) if e.hedge_cluster.is_some() && prev.timing.ended.is_none() => "hedge",
                Some(prev) if prev.target == *target => "retry",
                Some(_) => "fallback",
            }
        })
        .unwrap_or("primary");
        let key = self.key.map(|k| k.to_string()).unwrap_or_default();
        let position = self.attempt.to_string();
        for (name, value) in [
            ("sy_t_attempt_provider", target.provider.as_str()),
            ("sy_t_attempt_model", target.model.as_str()),
            ("sy_t_attempt_position", position.as_str()),
            ("sy_t_attempt_key", key.as_str()),
            ("sy_t_attempt_role", role),
        ] {
            envoy.set_filter_state(name, value);
        }
    }

    /// The attempt's result as its span shows it (tracing on).
    fn result_fact(&self, envoy: &impl Host, result: &str) {
        if self.cfg.observers.spans {
            envoy.set_filter_state("sy_t_attempt_result", result);
        }
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
        let continues = self.client == ClientApi::Chat
            && ledger::read(&self.request_id, |e| {
                e.policy.on_stream_failure == OnStreamFailure::Continue
                    && self.attempt < e.plan.len()
            })
            .unwrap_or(false);
        if self.native {
            return match self.native_request(provider, &target.model) {
                Ok((out, path, stream)) => {
                    self.stream = stream;
                    self.send_body(envoy, provider, &path, &out);
                    Action::Continue
                }
                Err(e) => self.untranslatable(envoy, &e),
            };
        }
        match dialect::prepare_request(provider.dialect, self.endpoint, &body, &target.model) {
            Ok(prepared) => {
                if continues && prepared.stream {
                    self.original = Some(body.clone());
                    self.delivered = Some(continuation::Delivered::default());
                }
                self.stream = prepared.stream;
                self.include_usage = prepared.include_usage;
                self.base64 = prepared.base64;
                let path = dialect::path(
                    provider.dialect,
                    self.endpoint,
                    &provider.base_path,
                    &target.model,
                    provider.api_version.as_deref(),
                    prepared.stream,
                );
                self.send_body(envoy, provider, &path, &prepared.body);
                Action::Continue
            }
            Err(e) => self.untranslatable(envoy, &e.to_string()),
        }
    }

    /// The request cannot be put to this target: like a model without the
    /// feature, this target cannot serve it, another might (Envoy does not retry
    /// an upstream filter's local reply today: see docs/architecture.md).
    fn untranslatable(&self, envoy: &impl Host, why: &str) -> Action {
        let target = self
            .target
            .as_ref()
            .map(|(t, _)| t.to_string())
            .unwrap_or_default();
        let msg = format!("The request cannot be sent to {target}: {why}");
        self.fail_as(
            envoy,
            FailureClass::ModelUnavailable,
            400,
            "unsupported_for_provider",
            &msg,
        )
    }

    /// Sets the attempt's body and path, with the exact `content-length` (the
    /// headers are still held, see `on_request_headers`), signed for Bedrock.
    fn send_body(&self, envoy: &impl Host, provider: &Provider, path: &str, body: &[u8]) {
        envoy.replace_body(Body::Request, body);
        envoy.set_header(Map::Request, ":path", Some(path));
        envoy.set_header(
            Map::Request,
            "content-length",
            Some(&body.len().to_string()),
        );
        if let Some(aws) = self.keys.aws() {
            sign_aws(envoy, provider, aws, path, body);
        }
    }

    /// Response headers of one attempt: records the status and holds the answer
    /// until it is judged (an error until its body classifies it, a complete
    /// answer until it is checked, a stream until its first content).
    pub fn on_response_headers(&mut self, envoy: &impl Host, end_of_stream: bool) -> Action {
        let Some((target, provider)) = &self.target else {
            return Action::Continue;
        };
        let api = dialect::api(provider.dialect);
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
        self.mark(envoy, Moment::Headers);
        let n = self.attempt.to_string();
        for (name, value) in [
            (wire::PROVIDER_HEADER, target.provider.as_str()),
            (wire::MODEL_HEADER, target.model.as_str()),
            (wire::ATTEMPTS_HEADER, n.as_str()),
            (wire::CHAIN_POSITION_HEADER, n.as_str()),
        ] {
            envoy.set_header(Map::Response, name, Some(value));
        }
        if !(200..300).contains(&status) {
            if end_of_stream {
                // No body to read: the status alone classifies it.
                self.settle(envoy, FailureClass::from_status(status), None);
                return Action::Continue;
            }
            self.mode = ResponseMode::Error;
            self.error_type = api
                .error_type_header()
                .and_then(|h| envoy.header(Map::Response, h));
            envoy.set_header(Map::Response, "content-length", None);
            return Action::Pause;
        }
        if end_of_stream {
            // A 2xx without a body is no answer.
            self.reject(
                envoy,
                FailureClass::BadResponse,
                "the provider answered 200 without a body".to_string(),
            );
            return Action::Continue;
        }
        // Tokens are always counted (metrics, cost, budgets).
        self.usage = Some(UsageTail::default());
        envoy.set_header(Map::Response, "content-length", None);
        self.mode = if self.stream {
            // Whatever the provider streams, the client gets OpenAI's SSE.
            envoy.set_header(Map::Response, "content-type", Some("text/event-stream"));
            ResponseMode::Stream {
                translator: self.client.stream(
                    provider.dialect,
                    self.native,
                    &self.context(envoy),
                    &self.client_model,
                ),
                committed: false,
                fed: 0,
                pending: Vec::new(),
            }
        } else {
            ResponseMode::Whole
        };
        Action::Pause
    }

    /// Response body of one attempt: judged, translated, watched for usage.
    pub fn on_response_body(&mut self, envoy: &impl Host, end_of_stream: bool) -> Action {
        match &self.mode {
            ResponseMode::Pass => Action::Continue,
            ResponseMode::Error => {
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = envoy.body(Body::Response);
                let Some((_, provider)) = &self.target else {
                    return Action::Continue;
                };
                let (class, message) = dialect::api(provider.dialect).classify_error(
                    self.status,
                    self.error_type.as_deref(),
                    &body,
                );
                self.settle(envoy, class, message);
                Action::Continue
            }
            ResponseMode::Whole => {
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = envoy.body(Body::Response);
                let Some((_, provider)) = &self.target else {
                    return Action::Continue;
                };
                let judged = self.client.answer(
                    provider.dialect,
                    self.native,
                    &body,
                    &self.context(envoy),
                    &self.client_model,
                );
                match judged {
                    Answer::Ok(out) => {
                        self.commit(envoy, &out, true);
                        self.watch_usage(&out, true);
                    }
                    Answer::Filtered(out, why) => {
                        if self.may_fall_over(FailureClass::ContentFilter) {
                            self.reject(envoy, FailureClass::ContentFilter, why);
                        } else {
                            self.commit(envoy, &out, true);
                            self.watch_usage(&out, true);
                        }
                    }
                    Answer::Failed(class, why) => self.reject(envoy, class, why),
                }
                Action::Continue
            }
            ResponseMode::Stream { .. } => self.on_stream(envoy, end_of_stream),
        }
    }

    /// The next bytes of a streamed answer.
    fn on_stream(&mut self, envoy: &impl Host, end_of_stream: bool) -> Action {
        let filter_falls_over = self.may_fall_over(FailureClass::ContentFilter);
        let ResponseMode::Stream {
            translator,
            committed,
            fed,
            pending,
        } = &mut self.mode
        else {
            return Action::Continue;
        };
        let body = envoy.body(Body::Response);
        if *committed {
            if let Some(c) = &self.continuing {
                // The failed provider's remaining bytes are dropped: what the client
                // gets next is the continuation (held until it comes). A host may
                // still hold what was spliced in when the next bytes arrive: that
                // stays.
                let keep = if c.done { &c.spliced } else { &c.held };
                let kept = if body.starts_with(keep) {
                    keep.as_slice()
                } else {
                    &[]
                };
                envoy.replace_body(Body::Response, kept);
                return if c.done {
                    Action::Continue
                } else {
                    Action::Pause
                };
            }
            let mut out = translator.feed(&body);
            if end_of_stream {
                out.extend(translator.finish());
            }
            let chat = translator.take_chat();
            let progress = translator.progress();
            if let Some(StreamEnd::Failed(class, why)) = &progress.end
                && let Some(d) = &mut self.delivered
            {
                d.feed(&out[..out.len().saturating_sub(progress.error_tail)]);
                let (class, why) = (*class, why.clone());
                if self.start_continuation(envoy, &out, progress.error_tail, class, why) {
                    return Action::Pause;
                }
            } else if let Some(d) = &mut self.delivered {
                d.feed(&out);
            }
            envoy.replace_body(Body::Response, &out);
            self.watch_usage(chat.as_deref().unwrap_or(&out), end_of_stream);
            if end_of_stream {
                self.mark(envoy, Moment::Ended);
            }
            return Action::Continue;
        }
        // Held: Envoy keeps buffering; feed what is new.
        let new = body.get(*fed..).unwrap_or_default();
        *fed = body.len();
        pending.extend(translator.feed(new));
        if end_of_stream {
            pending.extend(translator.finish());
        }
        let progress = translator.progress();
        match progress.end {
            Some(StreamEnd::Failed(class, why)) => {
                self.reject(envoy, class, why);
                Action::Continue
            }
            Some(StreamEnd::Filtered(why)) if filter_falls_over => {
                self.reject(envoy, FailureClass::ContentFilter, why);
                Action::Continue
            }
            _ if progress.content || progress.end.is_some() => {
                let out = std::mem::take(pending);
                let chat = translator.take_chat();
                *committed = true;
                self.commit(envoy, &out, end_of_stream);
                self.watch_usage(chat.as_deref().unwrap_or(&out), end_of_stream);
                Action::Continue
            }
            // No content yet: keep holding.
            _ => Action::Pause,
        }
    }

    /// A committed stream failed with `class`: asks the plan's next target for the
    /// rest of the answer (`on_stream_failure: continue`). Returns whether the
    /// call is on its way (the stream is then held until it answers).
    fn start_continuation(
        &mut self,
        envoy: &impl Host,
        out: &[u8],
        tail: usize,
        class: FailureClass,
        why: String,
    ) -> bool {
        let (Some(original), Some(delivered)) = (&self.original, &self.delivered) else {
            return false;
        };
        if delivered.tool_calls || delivered.text.is_empty() {
            return false;
        }
        let Some(next) = ledger::target(&self.request_id, self.attempt + 1) else {
            return false;
        };
        let Some(provider) = self.cfg.providers.get(&next.provider) else {
            return false;
        };
        let api = dialect::api(provider.dialect);
        let Some(body) = continuation::request(original, &delivered.text, api.continues_prefill())
        else {
            return false;
        };
        let Ok(prepared) =
            dialect::prepare_request(provider.dialect, Endpoint::Chat, &body, &next.model)
        else {
            return false;
        };
        let path = dialect::path(
            provider.dialect,
            Endpoint::Chat,
            &provider.base_path,
            &next.model,
            provider.api_version.as_deref(),
            false,
        );
        let now = envoy.now_ms();
        let next_keys = credentials::of(envoy, &self.cfg, &next.provider, provider);
        let key = cooldown::pick_key(envoy, &next.provider, next_keys.count(), &[], now)
            .and_then(|i| next_keys.key(i));
        let mut headers: Vec<(&str, String)> = vec![
            (":method", "POST".to_string()),
            (":path", path.clone()),
            (":authority", provider.authority.clone()),
            ("content-type", "application/json".to_string()),
        ];
        headers.extend(api.auth_headers(key));
        headers.extend(
            provider
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone())),
        );
        // The client headers an attempt to this provider would carry.
        for name in &self.cfg.forward_headers {
            if let Some(v) = envoy.header(Map::Request, name) {
                headers.push((name.as_str(), v));
            }
        }
        let client: Vec<(String, String)> = ledger::read(&self.request_id, |e| {
            e.client_headers
                .iter()
                .filter(|(n, _)| provider.forward_headers.contains(n))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
        headers.extend(client.iter().map(|(n, v)| (n.as_str(), v.clone())));
        if let Some(aws) = next_keys.aws() {
            headers.extend(aws_headers(envoy, provider, aws, &path, &prepared.body));
        }
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let timeout = ledger::read(&self.request_id, |e| e.policy.deadline_ms)
            .flatten()
            .unwrap_or(120_000);
        let Some(token) = envoy.http_call(&provider.cluster, &pairs, Some(&prepared.body), timeout)
        else {
            return false;
        };
        log::info!(
            "switchyard adapter [{}]: stream of {} failed after the commit ({} {why}); {next} continues it",
            self.request_id,
            self.target
                .as_ref()
                .map(|(t, _)| t.to_string())
                .unwrap_or_default(),
            class.as_str()
        );
        // The failure counts against the target that failed.
        self.settle_shared(envoy, class);
        let cut = out.len().saturating_sub(tail);
        // Something stays held in Envoy's buffer while the call is out (a host
        // cannot always create a buffer from outside a body callback): a blank
        // line, which is nothing in an event stream, when there is nothing else.
        let held = if cut == 0 {
            b"\n".to_vec()
        } else {
            out[..cut].to_vec()
        };
        envoy.replace_body(Body::Response, &held);
        self.continuing = Some(Continuing {
            token,
            target: next,
            dialect: provider.dialect,
            held,
            tail: out[cut..].to_vec(),
            done: false,
            spliced: Vec::new(),
        });
        true
    }

    /// The answer of an HTTP call this attempt made (a continuation): spliced into
    /// the held stream, which resumes. `status` is `None` when the call failed.
    pub fn on_callout_response(
        &mut self,
        envoy: &impl Host,
        token: u32,
        status: Option<u16>,
        body: &[u8],
    ) {
        let Some(c) = self
            .continuing
            .as_ref()
            .filter(|c| c.token == token && !c.done)
        else {
            return;
        };
        let ctx = Context {
            model: &c.target.model,
            ..self.context(envoy)
        };
        let answer = match status {
            Some(s) if (200..300).contains(&s) => dialect::api(c.dialect).answer(body, &ctx),
            _ => Answer::Failed(FailureClass::ServerError, format!("status {status:?}")),
        };
        let mut served_by: Vec<String> = self
            .target
            .as_ref()
            .map(|(t, _)| vec![t.to_string()])
            .unwrap_or_default();
        served_by.push(c.target.to_string());
        let delivered = self
            .delivered
            .as_ref()
            .map(|d| d.text.as_str())
            .unwrap_or("");
        let rest = continuation::chunks(&answer, &ctx, delivered, &served_by);
        let mut out = c.held.clone();
        match &rest {
            Some(chunks) => out.extend_from_slice(chunks),
            None => out.extend_from_slice(&c.tail),
        }
        if let (Some(settings), Some(_)) = (&self.cfg.circuit_breaker, &rest)
            && self.cfg.is_configured(&c.target)
        {
            circuit::record(envoy, settings, &c.target, true, envoy.now_ms());
        }
        log::info!(
            "switchyard adapter [{}]: continuation by {} {}",
            self.request_id,
            c.target,
            if rest.is_some() {
                "spliced in"
            } else {
                "failed: the stream ends with the error"
            }
        );
        envoy.replace_body(Body::Response, &out);
        self.watch_usage(&out, true);
        ledger::record_continuation(&self.request_id, rest.is_some());
        self.mark(envoy, Moment::Ended);
        if let Some(c) = &mut self.continuing {
            c.done = true;
            c.spliced = out;
        }
        envoy.resume_response();
    }

    /// Releases the answer to the client: `out` replaces what Envoy holds. A
    /// configured target's success is counted (with its time to first content).
    /// The caller watches the usage (in the chat form, which `out` may not be).
    fn commit(&mut self, envoy: &impl Host, out: &[u8], end_of_stream: bool) {
        ledger::record_committed(&self.request_id, self.attempt);
        self.result_fact(envoy, "success");
        self.mark(envoy, Moment::FirstContent);
        if end_of_stream {
            self.mark(envoy, Moment::Ended);
        }
        if let Some(d) = &mut self.delivered {
            d.feed(out);
        }
        envoy.replace_body(Body::Response, out);
        if let Some((target, _)) = &self.target
            && let Some(settings) = &self.cfg.circuit_breaker
            && self.cfg.is_configured(target)
        {
            let now = envoy.now_ms();
            circuit::record(envoy, settings, target, true, now);
            // At least 1 ms: the host clock counts whole milliseconds, and a
            // 0 would read as "no latency known" fleet-wide.
            let ms = now.saturating_sub(self.started_ms).max(1);
            crate::fleet::record_latency(envoy, target, ms);
        }
    }

    /// A 2xx that is no answer (or a filtered one that may fall over): the attempt
    /// fails with `class`. The router sees the class's canonical status (headers
    /// are still held) and falls over when the policy allows; otherwise the
    /// planner turns it into the client's error.
    fn reject(&mut self, envoy: &impl Host, class: FailureClass, why: String) {
        log::info!(
            "switchyard adapter [{}]: attempt {} rejected: {} ({why})",
            self.request_id,
            self.attempt,
            class.as_str()
        );
        // The client's error reports the status the router saw for it, not the 200.
        ledger::record_status(&self.request_id, self.attempt, class.canonical_status(0));
        envoy.set_header(Map::Response, "content-type", Some("application/json"));
        let body = error::body(&scrub(&why), "api_error", class.as_str(), &self.request_id);
        envoy.replace_body(Body::Response, &body);
        self.settle(envoy, Some(class), Some(why));
    }

    /// Whether a failure of `class` of this attempt should move on: the policy
    /// lets it and the plan has a target left.
    fn may_fall_over(&self, class: FailureClass) -> bool {
        ledger::read(&self.request_id, |e| {
            e.policy.falls_over(class) && self.attempt < e.plan.len()
        })
        .unwrap_or(false)
    }

    /// Records a moment of this attempt (metrics' latencies).
    fn mark(&self, envoy: &impl Host, moment: Moment) {
        ledger::mark(&self.request_id, self.attempt, moment, envoy.now_ms());
    }

    /// What the dialect's answer translation needs.
    fn context<'a>(&'a self, envoy: &impl Host) -> Context<'a> {
        Context {
            endpoint: self.endpoint,
            model: self.target.as_ref().map_or("", |(t, _)| t.model.as_str()),
            created: host::unix_now(envoy),
            request_id: &self.request_id,
            include_usage: self.include_usage,
            base64: self.base64,
        }
    }

    /// Feeds the answer the client receives to the usage watch; at its end, records
    /// the usage (token metrics, cost, budgets).
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
    /// The provider's message is kept for the client's error only once scrubbed of
    /// anything credential-like, and never for a rejected credential.
    fn settle(&self, envoy: &impl Host, class: Option<FailureClass>, message: Option<String>) {
        let Some(class) = class else {
            return;
        };
        ledger::record_class(&self.request_id, self.attempt, class);
        self.result_fact(envoy, class.as_str());
        self.mark(envoy, Moment::Ended);
        let message = match class {
            // Only the provider's error type (e.g. `authentication_error`), never
            // its words: they echo key fragments.
            FailureClass::Auth => {
                let kind = message
                    .as_deref()
                    .and_then(|m| m.split_once(':'))
                    .map(|(k, _)| k.trim())
                    .filter(|k| {
                        !k.is_empty()
                            && k.len() <= 64
                            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    });
                Some(match kind {
                    Some(k) => format!("{k}: the provider rejected the gateway's credential"),
                    None => "the provider rejected the gateway's credential".to_string(),
                })
            }
            _ => message.map(|m| scrub(&m)),
        };
        if let Some(m) = message {
            ledger::record_message(&self.request_id, self.attempt, m);
        }
        self.settle_shared(envoy, class);
        let mut canonical = class.canonical_status(self.status);
        if class == FailureClass::ContextLength && !self.skip_windows_too_small(envoy) {
            // Nothing later in the plan has a larger window: no retry (the
            // client gets the provider's own error).
            canonical = FailureClass::BadRequest.canonical_status(self.status);
        }
        if canonical != self.status {
            envoy.set_header(Map::Response, ":status", Some(&canonical.to_string()));
        }
    }

    /// The prompt did not fit this target's window: the rest of the plan keeps
    /// only targets whose window is larger (or not configured), moved up into
    /// the next slots (the router's matcher reads each slot's cluster from
    /// filter state when it retries; a slot left over names no cluster, so the
    /// router stops there). Never tried again: a window the prompt does not
    /// fit. Returns whether a target is left to try. Hedged requests walk a
    /// fixed cluster chain and are left as they are.
    fn skip_windows_too_small(&self, envoy: &impl Host) -> bool {
        let Some((target, _)) = &self.target else {
            return false;
        };
        let Some(window) = self.cfg.context_window(target) else {
            return ledger::target(&self.request_id, self.attempt + 1).is_some();
        };
        let plan = ledger::read(&self.request_id, |e| {
            (e.hedge_cluster.is_none()).then(|| e.plan.clone())
        })
        .flatten();
        let Some(plan) = plan else {
            return ledger::target(&self.request_id, self.attempt + 1).is_some();
        };
        let done = self.attempt.min(plan.len());
        let rest: Vec<Target> = plan[done..]
            .iter()
            .filter(|t| self.cfg.context_window(t).is_none_or(|w| w > window))
            .cloned()
            .collect();
        if rest.len() == plan.len() - done {
            return !rest.is_empty();
        }
        for slot in done + 1..=plan.len() {
            let cluster = rest
                .get(slot - done - 1)
                .and_then(|t| self.cfg.providers.get(&t.provider))
                .map_or("none", |p| p.cluster.as_str());
            envoy.set_filter_state(&format!("{}{slot}", wire::SLOT_STATE_PREFIX), cluster);
        }
        let left = !rest.is_empty();
        let mut plan = plan;
        plan.truncate(done);
        plan.extend(rest);
        ledger::set_plan(&self.request_id, plan);
        left
    }

    /// What a failure of `class` does to the state every request shares:
    /// cool-downs and circuits.
    fn settle_shared(&self, envoy: &impl Host, class: FailureClass) {
        // Only configured targets keep shared state: what a client's own
        // `provider/model` does says nothing to every other client.
        if let Some((target, provider)) = self
            .target
            .as_ref()
            .filter(|(t, _)| self.cfg.is_configured(t))
        {
            let _ = provider;
            let keys = self.keys.count();
            let now = envoy.now_ms();
            match class {
                // With several keys, a rate limit or a rejection is the key's, not the
                // provider's: only that key is set aside.
                FailureClass::RateLimited => match (self.reset_after_ms, self.key, keys) {
                    (Some(ms), Some(k), 2..) => cooldown::cool_key(
                        envoy,
                        &target.provider,
                        (k, keys),
                        now + ms,
                        now,
                        KeyCooling::RateLimited,
                    ),
                    (Some(ms), _, _) => cooldown::cool_target(envoy, target, now + ms),
                    _ => {}
                },
                FailureClass::Auth => match (self.key, keys) {
                    (Some(k), 2..) => cooldown::cool_key(
                        envoy,
                        &target.provider,
                        (k, keys),
                        now + cooldown::AUTH_COOLDOWN_MS,
                        now,
                        KeyCooling::Rejected,
                    ),
                    _ => cooldown::cool_provider(
                        envoy,
                        &target.provider,
                        now + cooldown::AUTH_COOLDOWN_MS,
                    ),
                },
                FailureClass::ServerError
                | FailureClass::Unreachable
                | FailureClass::BadResponse => {
                    if let Some(settings) = &self.cfg.circuit_breaker {
                        circuit::record(envoy, settings, target, false, now);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Every header an attempt to `provider` may set besides `:authority`, `:path`,
/// `content-length` (credentials, versions, SigV4's, configured headers).
fn attempt_header_names(provider: &Provider) -> Vec<&str> {
    let mut names: Vec<&str> = dialect::auth_headers(provider.dialect, Some(""))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.extend(dialect::api(provider.dialect).signing_headers());
    names.extend(provider.headers.iter().map(|(n, _)| n.as_str()));
    names.extend(provider.forward_headers.iter().map(String::as_str));
    names
}

/// Signs the attempt with AWS SigV4 (the headers are still held, so they can be
/// set now that the body is final).
fn sign_aws(envoy: &impl Host, provider: &Provider, aws: &AwsAuth, path: &str, body: &[u8]) {
    for (name, value) in aws_headers(envoy, provider, aws, path, body) {
        envoy.set_header(Map::Request, name, Some(&value));
    }
}

/// The SigV4 headers of a request with `body` to `path` (`x-amz-date`, the
/// session token if any, `authorization`).
fn aws_headers(
    envoy: &impl Host,
    provider: &Provider,
    aws: &AwsAuth,
    path: &str,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    // Only a dialect that signs takes AWS credentials (the config refuses
    // others): without a service name the signature fails at the provider.
    let service = dialect::api(provider.dialect)
        .signing_service()
        .unwrap_or_default();
    let date = sigv4::amz_date(host::unix_now(envoy));
    let mut headers = vec![
        ("host", provider.authority.as_str()),
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
    let authorization = sigv4::authorization(&request, &credentials, &aws.region, service, &date);
    let mut out = vec![("x-amz-date", date.clone())];
    if let Some(token) = &aws.session_token {
        out.push(("x-amz-security-token", token.clone()));
    }
    out.push(("authorization", authorization));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::testing::{MemHost, config};
    use switchyard_core::policy::Policy;

    /// A request `id` planned as `chat` (a/gpt, then b/claude), and a host for its
    /// attempt `n` running in `cluster`.
    fn attempt(id: &str, n: usize, cluster: &str, body: &str) -> MemHost {
        ledger::open(
            id,
            ledger::Entry {
                plan: vec![
                    Target::parse("a/gpt").unwrap(),
                    Target::parse("b/claude").unwrap(),
                ],
                policy: Policy::default(),
                client_headers: vec![("anthropic-beta".into(), "tools-1".into())],
                ..ledger::Entry::default()
            },
        );
        let host = MemHost::with_request(&[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            ("x-request-id", id),
            ("x-envoy-attempt-count", &n.to_string()),
        ]);
        *host.request_body.borrow_mut() = body.as_bytes().to_vec();
        MemHost {
            cluster: Some(cluster.to_string()),
            ..host
        }
    }

    const CHAT: &str = r#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#;
    const STREAM: &str =
        r#"{"model":"chat","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

    fn respond(a: &mut Adapter, host: &MemHost, status: &str, body: &str) -> Action {
        host.response
            .borrow_mut()
            .push((":status".into(), status.as_bytes().to_vec()));
        assert_eq!(a.on_response_headers(host, false), Action::Pause, "held");
        *host.response_body.borrow_mut() = body.as_bytes().to_vec();
        a.on_response_body(host, true)
    }

    #[test]
    fn credentials_only_go_into_their_providers_cluster() {
        let host = attempt("t-cluster", 1, "sy_provider_b", CHAT);
        let mut a = Adapter::new(config("adapter"));
        assert_eq!(a.on_request_headers(&host), Action::Pause);
        assert_eq!(host.replies.borrow()[0].status, 500, "fails closed");
        assert!(host.values(Map::Request, "authorization").is_empty());
        assert!(host.values(Map::Request, "x-api-key").is_empty());
        ledger::close("t-cluster");

        let host = attempt("t-cluster2", 2, "sy_provider_b", CHAT);
        let mut a = Adapter::new(config("adapter"));
        assert_eq!(a.on_request_headers(&host), Action::Pause);
        assert!(host.replies.borrow().is_empty());
        assert_eq!(host.values(Map::Request, "x-api-key"), vec!["key-b"]);
        assert_eq!(host.values(Map::Request, "anthropic-beta"), vec!["tools-1"]);
        assert_eq!(a.on_request_body(&host, true), Action::Continue);
        assert_eq!(host.values(Map::Request, ":path"), vec!["/v1/messages"]);
        let sent: serde_json::Value = serde_json::from_slice(&host.request_body.borrow()).unwrap();
        assert_eq!(sent["model"], "claude");
        ledger::close("t-cluster2");
    }

    #[test]
    fn a_200_that_is_not_an_answer_falls_over() {
        let host = attempt("t-bad", 1, "sy_provider_a", CHAT);
        let mut a = Adapter::new(config("adapter"));
        a.on_request_headers(&host);
        a.on_request_body(&host, true);
        assert_eq!(
            respond(&mut a, &host, "200", r#"{"id":"x","choi"#),
            Action::Continue
        );
        assert_eq!(host.values(Map::Response, ":status"), vec!["502"]);
        let class = ledger::read("t-bad", |e| e.attempts[0].class).flatten();
        assert_eq!(class, Some(FailureClass::BadResponse));
        ledger::close("t-bad");
    }

    #[test]
    fn a_stream_failing_before_content_falls_over_and_one_with_content_is_committed() {
        let host = attempt("t-stream", 2, "sy_provider_b", STREAM);
        let mut a = Adapter::new(config("adapter"));
        a.on_request_headers(&host);
        a.on_request_body(&host, true);
        let overloaded = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":1}}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert_eq!(respond(&mut a, &host, "200", overloaded), Action::Continue);
        assert_eq!(host.values(Map::Response, ":status"), vec!["503"]);
        assert!(String::from_utf8_lossy(&host.response_body.borrow()).contains("Overloaded"));
        ledger::close("t-stream");

        let host = attempt("t-stream2", 2, "sy_provider_b", STREAM);
        let mut a = Adapter::new(config("adapter"));
        a.on_request_headers(&host);
        a.on_request_body(&host, true);
        host.response
            .borrow_mut()
            .push((":status".into(), b"200".to_vec()));
        assert_eq!(a.on_response_headers(&host, false), Action::Pause);
        // The role chunk alone is not content: still held.
        *host.response_body.borrow_mut() = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":1}}}\n\n".to_vec();
        assert_eq!(a.on_response_body(&host, false), Action::Pause);
        // Envoy buffers while held: the next callback sees both events.
        host.response_body.borrow_mut().extend_from_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n");
        assert_eq!(a.on_response_body(&host, false), Action::Continue);
        let out = String::from_utf8_lossy(&host.response_body.borrow()).into_owned();
        assert!(
            out.contains("\"role\":\"assistant\"") && out.contains("\"content\":\"Hi\""),
            "{out}"
        );
        assert_eq!(host.values(Map::Response, ":status"), vec!["200"]);
        ledger::close("t-stream2");
    }

    #[test]
    fn a_rejected_key_is_reported_without_the_providers_words() {
        let host = attempt("t-auth", 1, "sy_provider_a", CHAT);
        let mut a = Adapter::new(config("adapter"));
        a.on_request_headers(&host);
        a.on_request_body(&host, true);
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-proj-abc****wxyz.","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        respond(&mut a, &host, "401", body);
        let message = ledger::read("t-auth", |e| e.attempts[0].message.clone())
            .flatten()
            .unwrap();
        assert!(
            !message.contains("wxyz") && !message.contains("sk-"),
            "{message}"
        );
        ledger::close("t-auth");
    }
}
