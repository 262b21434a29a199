//! The planner: a downstream HTTP filter.
//!
//! Headers: checks method, path and declared size, then holds them: the plugin is
//! configured with `allow_on_headers_stop_iteration`, so `Pause` is a plain
//! `StopIteration` and the body callbacks still arrive (without that flag a header
//! pause stops them, ARCHITECTURE.md §1). Body: validates the OpenAI request, plans
//! the chain, writes the slots as filter state for the route's matcher and sets the
//! router's per-request knobs (`x-envoy-max-retries`) on the still-held headers.
//! Response: a final failure becomes one OpenAI error listing every attempt.

use std::sync::Arc;

use serde_json::Value;
use switchyard_core::config::{FilterConfig, Target};
use switchyard_core::failure::FailureClass;
use switchyard_core::governance::{Decision, Reason};
use switchyard_core::headers::{self, Disposition};
use switchyard_core::policy::{self, Policy};
use switchyard_core::request::Endpoint;
use switchyard_core::{error, plan, request, wire};

use crate::host::{self, Action, Body, Counter, Host, Map};
use crate::{
    budget, circuit, cooldown, cost, credentials, decision, drill, fleet, governance, health,
    ledger, metrics, observed,
};
use switchyard_core::inbound::{ClientApi, InboundError};

/// A `/v1/messages` or `/v1/responses` request, as far as planning needs it.
#[derive(Debug, Default)]
struct Inbound {
    /// The client's own body (for targets of its API).
    original: Option<Vec<u8>>,
    /// It asked for a stream.
    stream: bool,
    /// The model it named.
    model: String,
    /// Why only targets of its own API can take it.
    only_native: Option<InboundError>,
    /// The member naming state stored at one provider, and its refusal code
    /// ([`ClientApi::stored_state`]): only one target can take the request.
    stored_state: Option<(&'static str, &'static str)>,
}

const MODELS_PATH: &str = "/v1/models";
const COUNT_TOKENS_PATH: &str = "/v1/messages/count_tokens";

/// Per-request planner state.
pub struct Planner {
    cfg: Arc<FilterConfig>,
    request_id: String,
    /// The request was planned and entered in the ledger.
    planned: bool,
    /// The response is a final failure whose body is being replaced.
    rewriting: Option<u16>,
    /// A local reply was sent; ignore further callbacks.
    replied: bool,
    /// The client's policy-tightening headers (removed from the request).
    tighten: Vec<(&'static str, String)>,
    /// Client headers forwarded only to the providers that list them.
    client_headers: Vec<(String, String)>,
    /// The client tightened the route's time limits.
    client_limits: bool,
    /// The client asked for a stream.
    stream: bool,
    /// Same-target retry slots taken from the retry budget.
    budget_slots: Option<u64>,
    /// A rejection decided on the headers, answered once the body is read.
    deferred: Option<(u16, &'static str, String)>,
    /// The composite cluster of a hedged request.
    hedge: Option<String>,
    /// Size of the request body.
    request_bytes: usize,
    /// Which endpoint the request is for.
    endpoint: Endpoint,
    /// The route as metrics name it: a configured alias, `_direct` for a
    /// client's own `provider/model`, `_none` before the body names one.
    route: String,
    /// The status the client got (planned requests).
    final_status: Option<u16>,
    /// The API the client speaks.
    client_api: ClientApi,
    /// What the client asked in its API's terms (`/v1/messages`, `/v1/responses`).
    inbound: Inbound,
    /// `POST /v1/messages/count_tokens`: answered here.
    count_tokens: bool,
    /// When the request arrived (host clock, ms).
    arrived_ms: u64,
    /// The model as the client named it.
    model_named: String,
    /// The error code of the gateway's own answer, when it gave one.
    rejection: Option<String>,
    /// Targets moved to the back of the plan, and why.
    moved_back: Vec<(String, &'static str)>,
    /// Attempts a fail-over drill failed before they were sent.
    drilled: Option<drill::Injected>,
    /// When the response headers went to the client (host clock, ms).
    responded_ms: Option<u64>,
    /// The client's key (governance on).
    auth: Option<governance::Auth>,
    /// What the request was admitted with, settled when it ends.
    admission: Option<governance::Admission>,
    /// Governance's decision (admitted, or why not), recorded for the audit
    /// log when the request ends, with its cost and final request id.
    verdict: Option<Decision>,
}

impl Planner {
    /// A planner for one request.
    pub fn new(cfg: Arc<FilterConfig>) -> Self {
        Planner {
            cfg,
            request_id: String::new(),
            planned: false,
            rewriting: None,
            replied: false,
            tighten: Vec::new(),
            client_headers: Vec::new(),
            client_limits: false,
            stream: false,
            budget_slots: None,
            deferred: None,
            hedge: None,
            request_bytes: 0,
            endpoint: Endpoint::Chat,
            route: "_none".to_string(),
            final_status: None,
            client_api: ClientApi::Chat,
            inbound: Inbound::default(),
            count_tokens: false,
            arrived_ms: 0,
            model_named: String::new(),
            rejection: None,
            moved_back: Vec::new(),
            drilled: None,
            responded_ms: None,
            auth: None,
            admission: None,
            verdict: None,
        }
    }

    fn reject(&mut self, envoy: &impl Host, status: u16, code: &str, message: &str) -> Action {
        self.reply(envoy, status, code, message, &[])
    }

    /// Rejects a request whose headers already say it cannot be served, once its
    /// body is read (within the size limit): an HTTP/1.1 answer sent before the
    /// request is complete makes Envoy close the connection, and a request the
    /// client pipelined behind it would be lost.
    fn reject_after_body(
        &mut self,
        envoy: &impl Host,
        end_of_stream: bool,
        status: u16,
        code: &'static str,
        message: String,
    ) -> Action {
        if end_of_stream {
            return self.reject(envoy, status, code, &message);
        }
        self.deferred = Some((status, code, message));
        Action::Pause
    }

    /// Answers the request locally with an OpenAI error (and `extra` headers).
    fn reply(
        &mut self,
        envoy: &impl Host,
        status: u16,
        code: &str,
        message: &str,
        extra: &[(&str, &str)],
    ) -> Action {
        self.reply_as(
            envoy,
            status,
            error::type_for_status(status),
            code,
            message,
            extra,
        )
    }

    /// [`Planner::reply`] with an explicit error `type`.
    fn reply_as(
        &mut self,
        envoy: &impl Host,
        status: u16,
        kind: &str,
        code: &str,
        message: &str,
        extra: &[(&str, &str)],
    ) -> Action {
        let body = match self.client_api {
            ClientApi::Chat => error::body(message, kind, code, &self.request_id),
            api => api.error_body(status, code, message, &self.request_id),
        };
        let mut headers = vec![("content-type", "application/json")];
        if !self.request_id.is_empty() {
            headers.push(("x-request-id", self.request_id.as_str()));
        }
        headers.extend_from_slice(extra);
        envoy.send_response(status, &headers, &body);
        self.replied = true;
        self.rejection = Some(code.to_string());
        self.final_status = Some(status);
        metrics::rejected(
            envoy,
            &self.route,
            (self.endpoint, self.client_api),
            code,
            status,
        );
        Action::Pause
    }

    fn models(&mut self, envoy: &impl Host) -> Action {
        let key = self.auth.as_ref().map(|a| &a.entry().key);
        let routes = self
            .cfg
            .routes
            .iter()
            .filter(|(alias, _)| key.is_none_or(|k| k.allows_route(alias)));
        let mut ids: Vec<String> = routes.clone().map(|(alias, _)| alias.clone()).collect();
        for (_, route) in routes {
            for t in &route.chain {
                let id = t.to_string();
                if !ids.contains(&id) && key.is_none_or(|k| k.direct && k.allows_target(t)) {
                    ids.push(id);
                }
            }
        }
        let data: Vec<Value> = ids.into_iter().map(|id| self.model_entry(&id)).collect();
        let body = serde_json::json!({"object": "list", "data": data}).to_string();
        host::send_json(envoy, 200, &self.request_id, body.as_bytes());
        self.replied = true;
        Action::Pause
    }

    /// One `/v1/models` entry: a target with what `models:` says of it (owner,
    /// release, context window), or an alias with its chain, the window every
    /// target of it has (the smallest), and its newest target's release.
    fn model_entry(&self, id: &str) -> Value {
        let info = |t: &Target| {
            self.cfg
                .models
                .get(&t.to_string())
                .cloned()
                .unwrap_or_default()
        };
        let (owned_by, created, window, chain) = match self.cfg.routes.get(id) {
            Some(route) => {
                let windows: Vec<Option<u64>> =
                    route.chain.iter().map(|t| info(t).context_window).collect();
                let window = windows
                    .iter()
                    .copied()
                    .collect::<Option<Vec<u64>>>()
                    .and_then(|w| w.into_iter().min());
                let created = route.chain.iter().filter_map(|t| info(t).created).max();
                let chain: Vec<String> = route.chain.iter().map(ToString::to_string).collect();
                ("switchyard".to_string(), created, window, Some(chain))
            }
            None => {
                let t = Target::parse(id);
                let i = t.as_ref().map(info).unwrap_or_default();
                let provider = t.map(|t| t.provider).unwrap_or_default();
                (
                    i.owned_by.unwrap_or(provider),
                    i.created,
                    i.context_window,
                    None,
                )
            }
        };
        let mut v = serde_json::json!({
            "id": id,
            "object": "model",
            "created": created.unwrap_or(0),
            "owned_by": owned_by,
        });
        if let Some(w) = window {
            v["context_window"] = w.into();
        }
        if let Some(chain) = chain {
            v["chain"] = chain.into();
        }
        v
    }

    /// Validates the body and returns the plan, or the rejection already sent.
    fn plan_body(
        &mut self,
        envoy: &impl Host,
        body: &[u8],
    ) -> Result<(Vec<Target>, Policy), Action> {
        let req = match request::inspect(body, self.endpoint) {
            Ok(r) => r,
            Err(e) => return Err(self.reject(envoy, 400, e.code, &e.message)),
        };
        let tighten = &self.tighten;
        self.model_named = req.model.to_string();
        self.route = if self.cfg.routes.contains_key(req.model.as_ref()) {
            req.model.to_string()
        } else {
            "_direct".to_string()
        };
        let base = plan::policy(&self.cfg, &req.model);
        let policy = base.tightened(|h| {
            tighten
                .iter()
                .find(|(k, _)| *k == h)
                .map(|(_, v)| v.clone())
        });
        let policy = match policy {
            Ok(p) => p,
            Err(e) => return Err(self.reject(envoy, 400, "invalid_policy_header", &e.to_string())),
        };
        self.client_limits = policy.tighter_limits_than(base);
        self.stream = req.stream;
        let fallbacks: Vec<&str> = req.fallbacks.iter().map(|f| f.as_ref()).collect();
        let planned = if self.inbound.stored_state.is_some() {
            // State stored at one provider: the same target every time, so the
            // configured order (no weighted draw).
            plan::plan_in_order(&self.cfg, &req.model, &fallbacks)
        } else {
            plan::plan_with(
                &self.cfg,
                &req.model,
                &fallbacks,
                host::random_unit(envoy),
                |t| fleet::weight_factor(envoy, t),
            )
        };
        match planned {
            Ok(mut p) => {
                if let Some(auth) = &self.auth {
                    let e = auth.entry();
                    p = switchyard_core::governance::permitted(
                        &self.cfg, &e.key, &req.model, &fallbacks, p,
                    );
                    if p.is_empty() {
                        self.verdict = Some(auth.decision(Reason::ModelNotAllowed, envoy.now_ms()));
                        let msg = format!(
                            "The key `{}` may not use `{}`{}.",
                            e.key.name,
                            req.model,
                            if fallbacks.is_empty() {
                                ""
                            } else {
                                " nor any of its fallbacks"
                            }
                        );
                        return Err(self.reply_as(
                            envoy,
                            403,
                            "permission_error",
                            "model_not_allowed",
                            &msg,
                            &[],
                        ));
                    }
                }
                if self.endpoint == Endpoint::Embeddings {
                    // Only providers with an embeddings API can serve these.
                    p.retain(|t| {
                        self.cfg
                            .providers
                            .get(&t.provider)
                            .is_some_and(|p| p.dialect.embeds())
                    });
                    if p.is_empty() {
                        let msg = format!(
                            "No target of `{}` offers embeddings (every dialect but Anthropic does).",
                            req.model
                        );
                        return Err(self.reject(envoy, 400, "embeddings_not_supported", &msg));
                    }
                }
                if p.len() > 1 && self.needs_translation_check(body) {
                    let mut refusal = None;
                    p.retain(|t| match self.untranslatable(body, t) {
                        Some(why) => {
                            refusal.get_or_insert(why);
                            false
                        }
                        None => true,
                    });
                    if let (true, Some(why)) = (p.is_empty(), refusal) {
                        return Err(self.reject(envoy, 400, "unsupported_for_provider", &why));
                    }
                }
                // Targets whose configured window the prompt surely does not fit
                // are left out (a cheap low estimate, parsed only for a body
                // large enough to matter).
                let smallest = p.iter().filter_map(|t| self.cfg.context_window(t)).min();
                let answer = req.max_tokens.unwrap_or(0);
                if let Some(smallest) = smallest
                    && (body.len() / 4) as u64 + answer > smallest
                {
                    let need = request::prompt_tokens_low(body) + answer;
                    let before = p.len();
                    let largest = p.iter().filter_map(|t| self.cfg.context_window(t)).max();
                    p.retain(|t| self.cfg.context_window(t).is_none_or(|w| w >= need));
                    if p.is_empty() {
                        let msg = format!(
                            "The request needs about {need} tokens (prompt and `max_tokens`); the largest context window among the {before} targets of `{}` is {} tokens.",
                            req.model,
                            largest.unwrap_or(0)
                        );
                        return Err(self.reject(envoy, 400, "context_length_exceeded", &msg));
                    }
                }
                if let Some(e) = &self.inbound.only_native {
                    let api = self.client_api;
                    p.retain(|t| {
                        self.cfg
                            .providers
                            .get(&t.provider)
                            .is_some_and(|pr| api.native_to(pr.dialect))
                    });
                    if let Some((member, code)) = self.inbound.stored_state {
                        if p.is_empty() {
                            let msg = format!(
                                "`{member}` names state stored at the provider that made it, which only a target speaking {} itself can hold, and no target of `{}` does. Send the full conversation in `input` instead.",
                                api.path(),
                                req.model
                            );
                            return Err(self.reject(envoy, 400, code, &msg));
                        }
                        // It lives at one provider: the first target that can
                        // hold it, and no other (no fail-over).
                        p.truncate(1);
                    }
                    if p.is_empty() {
                        let msg = format!(
                            "{} No target of `{}` speaks {} itself.",
                            e.message,
                            req.model,
                            api.path()
                        );
                        return Err(self.reject(envoy, 400, e.code, &msg));
                    }
                }
                let now = envoy.now_ms();
                // Every target asked for quiet: answer at once, nothing goes upstream.
                let soonest = p
                    .iter()
                    .map(|t| cooldown::rate_limited_until(envoy, t))
                    .min()
                    .unwrap_or(0);
                if soonest > now && !policy.try_when_all_cooling {
                    let secs = (soonest - now).div_ceil(1000).to_string();
                    let msg = format!(
                        "Every provider of `{}` asked to be left alone (rate limited); retry after {secs} s.",
                        req.model
                    );
                    return Err(self.reply(
                        envoy,
                        429,
                        "providers_cooling_down",
                        &msg,
                        &[("retry-after", &secs)],
                    ));
                }
                let p = self.steer(envoy, p, now);
                let (p, drilled) = drill::inject(envoy, &self.cfg, p, now);
                if let Some(d) = drilled {
                    let class = d.class;
                    for t in &d.targets {
                        let (provider, model) = metrics::target_labels(&self.cfg, t);
                        envoy.count(Counter::Attempts, &[&provider, &model, class.as_str()], 1);
                        if !p.is_empty() {
                            envoy.count(
                                Counter::Fallbacks,
                                &[&metrics::label(&self.route), class.as_str()],
                                1,
                            );
                        }
                    }
                    let failed = d
                        .targets
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>();
                    self.drilled = Some(d);
                    if p.is_empty() {
                        let status = class.canonical_status(0);
                        let msg = format!(
                            "{} failed: a fail-over drill failed {} ({}) and the plan has no other target.",
                            if failed.len() == 1 {
                                "1 attempt"
                            } else {
                                "Every attempt"
                            },
                            failed.join(", "),
                            class.as_str()
                        );
                        return Err(self.reply(envoy, status, "all_attempts_failed", &msg, &[]));
                    }
                }
                // Same-target retries and key rotation come out of the retry budget;
                // each target keeps its own slot whatever the budget says.
                let wanted =
                    plan::expand(&self.cfg, p.clone(), policy.attempts_per_target, usize::MAX)
                        .len()
                        - p.len();
                let extra = match &self.cfg.retry_budget {
                    Some(b) => {
                        let got = budget::take(envoy, b, wanted as u64);
                        self.budget_slots = Some(got);
                        got as usize
                    }
                    _ => wanted,
                };
                let p = plan::expand(&self.cfg, p, policy.attempts_per_target, extra);
                // Hedging walks the route's composite cluster, attempt k -> target k:
                // only possible when this request's plan is the route's chain as is.
                self.hedge = match (
                    self.cfg.routes.get(req.model.as_ref()),
                    policy.hedge_after_ms,
                ) {
                    (Some(route), Some(_)) if req.fallbacks.is_empty() && p == route.chain => {
                        route.hedge_cluster.clone()
                    }
                    _ => None,
                };
                // Last: a request refused for anything else is not charged.
                if let Some(auth) = &self.auth {
                    let est = governance::estimate(&self.cfg, body.len(), req.max_tokens, &p);
                    let now = envoy.now_ms();
                    match governance::admit(envoy, auth, est) {
                        Ok(a) => {
                            self.admission = Some(a);
                            self.verdict = Some(auth.decision(Reason::Admitted, now));
                        }
                        Err(r) => {
                            self.verdict = Some(auth.over_limit(&r, now));
                            return Err(self.over_limit(envoy, &r));
                        }
                    }
                }
                Ok((p, policy))
            }
            Err(e @ plan::PlanError::UnknownModel(_)) => {
                Err(self.reject(envoy, 404, "model_not_found", &e.to_string()))
            }
            Err(e @ plan::PlanError::BadFallback { .. }) => {
                Err(self.reject(envoy, 400, "invalid_fallback", &e.to_string()))
            }
            Err(e @ plan::PlanError::TooLong { .. }) => {
                Err(self.reject(envoy, 400, "plan_too_long", &e.to_string()))
            }
            Err(e @ plan::PlanError::InvalidModel { .. }) => {
                Err(self.reject(envoy, 400, "invalid_model", &e.to_string()))
            }
            Err(e @ plan::PlanError::OverCeiling(_)) => {
                Err(self.reject(envoy, 400, "over_price_ceiling", &e.to_string()))
            }
        }
    }

    /// Whether some target might not be able to take this request: embeddings
    /// (Titan takes one text, token ids are OpenAI's), or chat content beyond text
    /// (images by URL, audio, files). A byte scan, so plain chat costs nothing.
    fn needs_translation_check(&self, body: &[u8]) -> bool {
        const KEYS: [&[u8]; 3] = [b"image_url\"", b"input_audio\"", b"file\""];
        self.endpoint == Endpoint::Embeddings
            || body
                .iter()
                .enumerate()
                .any(|(i, b)| *b == b'"' && KEYS.iter().any(|k| body[i + 1..].starts_with(k)))
    }

    /// Why target `t` cannot take this request, if it cannot: its adapter's
    /// translation is tried here, so the plan leaves it out rather than ending on
    /// it (Envoy does not retry the adapter's local reply).
    fn untranslatable(&self, body: &[u8], t: &Target) -> Option<String> {
        let provider = self.cfg.providers.get(&t.provider)?;
        if provider.dialect.speaks_openai() {
            return None;
        }
        switchyard_core::dialect::prepare_request(provider.dialect, self.endpoint, body, &t.model)
            .err()
            .map(|e| format!("The request cannot be sent to {t}: {e}"))
    }

    /// Moves targets that should not be tried first behind the others, keeping
    /// each group's order: targets cooling down (rate limit, rejected key) and
    /// targets whose circuit is open, here or fleet-wide, and targets of providers
    /// failing their health checks. When every target is held back the plan is
    /// unchanged: trying beats failing without trying.
    fn steer(&mut self, envoy: &impl Host, plan: Vec<Target>, now: u64) -> Vec<Target> {
        if plan.len() < 2 {
            return plan;
        }
        let breaker = self.cfg.circuit_breaker.as_ref();
        let mut ready = Vec::with_capacity(plan.len());
        let mut back = Vec::new();
        for t in plan {
            let why = if cooldown::is_cooling(envoy, &t, now) {
                Some("cooling_down")
            } else if fleet::is_open(envoy, &t, now) {
                Some("fleet_open")
            } else if health::is_down(envoy, &t.provider) {
                Some("unhealthy")
            } else if breaker.is_some_and(|s| !circuit::admit(envoy, s, &t, now)) {
                Some("circuit_open")
            } else {
                None
            };
            match why {
                Some(why) => back.push((t, why)),
                None => ready.push(t),
            }
        }
        let back: Vec<Target> = back
            .into_iter()
            .map(|(t, why)| {
                if !ready.is_empty() {
                    self.moved_back.push((t.to_string(), why));
                }
                t
            })
            .collect();
        if ready.is_empty() {
            return back;
        }
        for t in &back {
            let (provider, model) = metrics::target_labels(&self.cfg, t);
            envoy.count(Counter::CooldownSkips, &[&provider, &model], 1);
        }
        let mut out = ready;
        out.extend(back);
        out
    }

    fn publish(&mut self, envoy: &impl Host, plan: Vec<Target>, policy: Policy) -> Action {
        // The ledger is keyed by x-request-id, which a client may choose: a request
        // whose id is empty or already in flight on this worker gets a unique one
        // (set on the held headers, so the adapter and the response carry it).
        if self.request_id.is_empty() || ledger::contains(&self.request_id) {
            self.request_id = ledger::unique_id(&self.request_id);
            envoy.set_header(Map::Request, "x-request-id", Some(&self.request_id));
        }
        let mut ok = true;
        for (i, t) in plan.iter().enumerate() {
            let cluster = self
                .cfg
                .providers
                .get(&t.provider)
                .map(|p| p.cluster.as_str())
                .unwrap_or("");
            ok &= envoy.set_filter_state(&format!("{}{}", wire::SLOT_STATE_PREFIX, i + 1), cluster);
        }
        set_router_knobs(
            envoy,
            plan.len(),
            &policy,
            self.stream,
            self.hedge.is_some(),
        );
        if let Some(chain) = &self.hedge {
            ok &= envoy.set_filter_state(wire::CHAIN_STATE, chain);
        }
        if !ok {
            return self.reject(
                envoy,
                500,
                "gateway_error",
                "The gateway could not record the request's plan.",
            );
        }
        // The connection manager resolved the route when the headers arrived, before
        // the plan existed: make the router resolve it again so the matcher sees the slots.
        if !envoy.clear_route_cache() {
            return self.reject(
                envoy,
                500,
                "gateway_error",
                "The gateway could not refresh the route for the plan.",
            );
        }
        let native_body = self.native_body(&plan);
        if self.cfg.observers.spans {
            decision::name_span(
                envoy,
                metrics::endpoint(self.endpoint, self.client_api),
                &self.model_named,
            );
        }
        ledger::open(
            &self.request_id,
            ledger::Entry {
                plan,
                policy,
                request_bytes: self.request_bytes,
                endpoint: self.endpoint,
                hedge_cluster: self.hedge.clone(),
                client_headers: std::mem::take(&mut self.client_headers),
                client_limits: self.client_limits,
                route: self.route.clone(),
                client_api: self.client_api,
                native_body,
                client_stream: self.inbound.stream,
                client_model: std::mem::take(&mut self.inbound.model),
                ..ledger::Entry::default()
            },
        );
        self.planned = true;
        Action::Continue
    }

    fn failure_body(&self, envoy: &impl Host, status: u16, provider_body: &[u8]) -> Vec<u8> {
        let entry = ledger::get(&self.request_id).unwrap_or_default();
        let detail = envoy.response_code_details();
        let mut reports = entry.reports(detail.as_deref());
        // The final attempt's body reached us: use its message if the adapter did not.
        if let Some(last) = reports.last_mut()
            && last.message.is_none()
            && last.failure != FailureClass::Auth.as_str()
        {
            last.message = switchyard_core::dialect::error_message(provider_body)
                .map(|m| switchyard_core::failure::scrub(&m));
        }
        let summary: Vec<String> = reports
            .iter()
            .map(|r| {
                let status = r
                    .status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "no response".into());
                match &r.message {
                    Some(m) => format!(
                        "{}/{}: {} {} ({})",
                        r.provider, r.model, status, r.failure, m
                    ),
                    None => format!("{}/{}: {} {}", r.provider, r.model, status, r.failure),
                }
            })
            .collect();
        let n = reports.len();
        let mut message = format!(
            "{} {} failed: {}",
            n,
            if n == 1 { "attempt" } else { "attempts" },
            summary.join("; ")
        );
        if let (Some((member, _)), Some(t)) = (self.inbound.stored_state, entry.plan.first()) {
            message.push_str(&format!(
                ". The request's `{member}` names state stored at {t}: it goes there only, never to another provider."
            ));
        }
        let code = if n > 1 {
            "all_attempts_failed".to_string()
        } else {
            reports
                .first()
                .map(|r| r.failure.clone())
                .unwrap_or_else(|| "provider_error".into())
        };
        match self.client_api {
            ClientApi::Chat => error::body_with_attempts(
                &message,
                error::type_for_status(status),
                &code,
                &self.request_id,
                &reports,
            ),
            api => api.error_body(status, &code, &message, &self.request_id),
        }
    }
}

/// Sets the router's per-request knobs on the held request headers: retries bounded
/// by the plan, retried conditions from the policy, and its time limits. (Every
/// client `x-envoy-*` header was removed with the request headers.)
fn set_router_knobs(envoy: &impl Host, targets: usize, policy: &Policy, stream: bool, hedge: bool) {
    envoy.set_header(
        Map::Request,
        "x-envoy-max-retries",
        Some(&(targets - 1).to_string()),
    );
    envoy.set_header(Map::Request, "x-envoy-retry-on", Some(policy.retry_on()));
    envoy.set_header(
        Map::Request,
        "x-envoy-retriable-status-codes",
        Some(&policy.retriable_status_codes()),
    );
    // A hedged request's per-try timeout is the hedge delay: when it fires, Envoy
    // starts the next attempt in parallel and keeps the first.
    let per_try = if hedge {
        policy.hedge_after_ms
    } else {
        policy.per_try_timeout_ms(stream)
    };
    if let Some(ms) = per_try {
        envoy.set_header(
            Map::Request,
            "x-envoy-upstream-rq-per-try-timeout-ms",
            Some(&ms.to_string()),
        );
    }
    if hedge {
        envoy.set_header(
            Map::Request,
            "x-envoy-hedge-on-per-try-timeout",
            Some("true"),
        );
    }
    if let Some(ms) = policy.deadline_ms {
        envoy.set_header(
            Map::Request,
            "x-envoy-upstream-rq-timeout-ms",
            Some(&ms.to_string()),
        );
    }
}

impl Planner {
    /// Request headers: checks method, path and declared size, keeps the allowed
    /// headers, and holds them until the body is planned.
    pub fn on_request_headers(&mut self, envoy: &impl Host, end_of_stream: bool) -> Action {
        metrics::start_series(envoy, &self.cfg);
        let headers = Headers(envoy.headers(Map::Request));
        self.arrived_ms = envoy.now_ms();
        self.request_id = headers.get("x-request-id").unwrap_or_default().into_owned();
        for h in [
            policy::header::FAIL_OVER_ON,
            policy::header::FIRST_BYTE_TIMEOUT_MS,
            policy::header::FIRST_TOKEN_TIMEOUT_MS,
            policy::header::DEADLINE_MS,
        ] {
            if let Some(v) = headers.get(h) {
                self.tighten.push((h, v.into_owned()));
            }
        }
        let method = headers.get(":method").unwrap_or_default();
        let path = headers.get(":path").unwrap_or_default();
        let path = path.split('?').next().unwrap_or("");
        // Known before anything can be refused: every answer of the gateway, a
        // missing key's included, comes in the shape of the client's API.
        self.client_api = match ClientApi::from_path(path) {
            Some(api) => api,
            None if path == COUNT_TOKENS_PATH => ClientApi::Messages,
            None => ClientApi::Chat,
        };
        if !credentials::ready(envoy, &self.cfg) {
            let msg =
                "The gateway has not received its provider credentials yet; retry in a second."
                    .to_string();
            return self.reject_after_body(envoy, end_of_stream, 503, "gateway_not_ready", msg);
        }
        // Credentials are read here, before the allow-list removes them.
        {
            let found = governance::authenticate(
                envoy,
                self.cfg.governance.is_some(),
                headers.get("authorization").as_deref(),
                headers.get("x-api-key").as_deref(),
            );
            match found {
                Ok(auth) => self.auth = auth,
                Err(governance::AuthError::Refused(d)) => {
                    self.verdict = Some(*d);
                    let msg = "Invalid API key: this gateway needs a Switchyard key (`Authorization: Bearer sk-sy-…` or `x-api-key`); it was missing, unknown, revoked or expired.".to_string();
                    return self.reject_after_body(
                        envoy,
                        end_of_stream,
                        401,
                        "invalid_api_key",
                        msg,
                    );
                }
                Err(governance::AuthError::NotReady) => {
                    let msg = "The gateway has not received its key table yet; retry in a second."
                        .to_string();
                    return self.reject_after_body(
                        envoy,
                        end_of_stream,
                        503,
                        "gateway_not_ready",
                        msg,
                    );
                }
            }
        }
        if path == MODELS_PATH && method == "GET" {
            return self.models(envoy);
        }
        let endpoint = match (Endpoint::from_path(path), ClientApi::from_path(path)) {
            (Some(e), _) => e,
            (None, Some(_)) => Endpoint::Chat,
            (None, None) if path == COUNT_TOKENS_PATH => {
                self.count_tokens = true;
                Endpoint::Chat
            }
            (None, None) => {
                let msg = format!(
                    "Unsupported endpoint: {method} {path}. Switchyard serves POST {}, POST {}, POST {}, POST {}, POST {COUNT_TOKENS_PATH} and GET {MODELS_PATH}.",
                    Endpoint::Chat.path(),
                    Endpoint::Embeddings.path(),
                    ClientApi::Messages.path(),
                    ClientApi::Responses.path(),
                );
                return self.reject_after_body(
                    envoy,
                    end_of_stream,
                    404,
                    "unsupported_endpoint",
                    msg,
                );
            }
        };
        self.endpoint = endpoint;
        if method != "POST" {
            let msg = format!("{path} accepts POST only.");
            return self.reject_after_body(envoy, end_of_stream, 405, "method_not_allowed", msg);
        }
        if end_of_stream {
            return self.reject(envoy, 400, "missing_body", "The request has no body.");
        }
        if let Some(len) = headers
            .get("content-length")
            .and_then(|l| l.parse::<usize>().ok())
            && len > self.cfg.max_request_bytes
        {
            return self.too_large(envoy);
        }
        self.filter_headers(envoy, headers);
        // Held (StopIteration, allowed by the plugin config) until the body is planned.
        Action::Pause
    }

    /// Request body: once complete, validates it and plans.
    pub fn on_request_body(
        &mut self,
        envoy: &impl Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        if self.replied {
            return Action::Pause;
        }
        if body_size > self.cfg.max_request_bytes {
            return self.too_large(envoy);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        if let Some((status, code, message)) = self.deferred.take() {
            return self.reject(envoy, status, code, &message);
        }
        let body = envoy.body(Body::Request);
        self.request_bytes = body.len();
        if self.count_tokens {
            return self.count_tokens(envoy, &body);
        }
        let body = match self.client_api {
            ClientApi::Chat => body,
            _ => match self.chat_form(envoy, body) {
                Ok(chat) => chat,
                Err(action) => return action,
            },
        };
        match self.plan_body(envoy, &body) {
            Ok((plan, policy)) => self.publish(envoy, plan, policy),
            Err(action) => action,
        }
    }

    /// Response headers: a final failure gets the provider's own status and a
    /// JSON body listing the attempts (written in the body callback).
    pub fn on_response_headers(&mut self, envoy: &impl Host) -> Action {
        if !self.planned {
            return Action::Continue;
        }
        let status = envoy
            .header(Map::Response, ":status")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        self.final_status = Some(status);
        self.responded_ms = Some(envoy.now_ms());
        if status >= 400 {
            // The adapter may have given the router a canonical status for the
            // failure class; the client gets the provider's own.
            let original = ledger::read(&self.request_id, |e| {
                e.attempts.last().and_then(|a| a.status)
            })
            .flatten()
            .unwrap_or(status);
            if original != status && original >= 400 {
                envoy.set_header(Map::Response, ":status", Some(&original.to_string()));
            }
            let status = original;
            self.final_status = Some(status);
            self.rewriting = Some(status);
            envoy.set_header(Map::Response, "content-length", None);
            envoy.set_header(Map::Response, "content-type", Some("application/json"));
        }
        Action::Continue
    }

    /// Response body: the final failure's body is replaced once complete.
    pub fn on_response_body(&mut self, envoy: &impl Host, end_of_stream: bool) -> Action {
        if end_of_stream && self.planned && self.cfg.observers.spans {
            self.span_facts(envoy);
        }
        let Some(status) = self.rewriting else {
            return Action::Continue;
        };
        if !end_of_stream {
            return Action::Pause;
        }
        let original = envoy.body(Body::Response);
        let body = self.failure_body(envoy, status, &original);
        envoy.replace_body(Body::Response, &body);
        Action::Continue
    }

    /// The stream is over: the last attempt's outcome and the request's cost are
    /// accounted, and the ledger entry is removed.
    pub fn on_done(&mut self, envoy: &impl Host) {
        if let Some(slots) = self.budget_slots.take() {
            budget::release(envoy, slots);
        }
        if let Some(d) = self.drilled.take() {
            let served_in = self
                .responded_ms
                .filter(|_| self.final_status.is_some_and(|s| (200..300).contains(&s)))
                .map(|at| at.saturating_sub(self.arrived_ms));
            drill::done(envoy, &d, served_in);
        }
        // Before the ledger entry goes: it holds what the attempts used.
        let charged = self
            .admission
            .take()
            .map(|a| governance::settle(envoy, &self.cfg, &a, &self.request_id));
        if let Some(mut d) = self.verdict.take() {
            if let Some((tokens, micros)) = charged {
                (d.tokens, d.micros) = (tokens, micros);
            }
            governance::record(envoy, d, &self.request_id);
        }
        // The last attempt's "no answer" has no later attempt to report it. A
        // client that left before any answer (no response status) cut it off:
        // that says nothing about the provider.
        if self.planned
            && self.final_status.is_some()
            && let Some(settings) = &self.cfg.circuit_breaker
            && let Some(target) = ledger::read(&self.request_id, |e| {
                e.attempts
                    .last()
                    .filter(|a| a.unanswered() && ledger::no_answer_counts(&self.cfg, e, a))
                    .map(|a| a.target.clone())
            })
            .flatten()
        {
            circuit::record(envoy, settings, &target, false, envoy.now_ms());
        }
        if self.planned {
            ledger::read(&self.request_id, |e| {
                let summary = metrics::summarize(e, self.final_status);
                metrics::observe(envoy, &self.cfg, e, &summary, self.final_status);
                if self.cfg.fleet.is_some() {
                    observed::record(envoy, e, &summary);
                }
                if self.cfg.observers.decisions {
                    let d = decision::record(
                        &self.cfg,
                        &self.facts(envoy),
                        Some((e, &summary)),
                        None,
                        self.final_status,
                        envoy.now_ms(),
                    );
                    decision::write(envoy, d);
                }
            });
            if !self.cfg.prices.is_empty() {
                ledger::read(&self.request_id, |e| {
                    cost::account(envoy, &self.cfg, &self.request_id, e)
                });
            }
            ledger::close(&self.request_id);
        } else if let Some(code) = self
            .rejection
            .as_ref()
            .filter(|_| self.cfg.observers.decisions)
        {
            let d = decision::record(
                &self.cfg,
                &self.facts(envoy),
                None,
                Some(code),
                self.final_status,
                envoy.now_ms(),
            );
            decision::write(envoy, d);
        }
    }
}

impl Planner {
    /// What the decision record and spans say of this request besides its ledger.
    fn facts(&self, envoy: &impl Host) -> decision::Request {
        decision::Request {
            arrived_ms: self.arrived_ms,
            request_id: self.request_id.clone(),
            node: self
                .cfg
                .fleet
                .as_ref()
                .map_or_else(|| envoy.node_id(), |l| l.node.clone()),
            route: self.route.clone(),
            endpoint: metrics::endpoint(self.endpoint, self.client_api),
            stream: self.stream,
            caller: self.auth.as_ref().map(|a| {
                let e = a.entry();
                (e.key.id.clone(), e.key.team.clone())
            }),
            moved_back: self.moved_back.clone(),
        }
    }

    /// The request's span facts, once its response is over.
    fn span_facts(&self, envoy: &impl Host) {
        let caller = self.auth.as_ref().map(|a| a.entry().key.id.clone());
        ledger::read(&self.request_id, |e| {
            let summary = metrics::summarize(e, self.final_status);
            decision::request_facts(
                envoy,
                &self.cfg,
                &self.model_named,
                caller.as_deref(),
                e,
                &summary,
            );
        });
    }

    /// Keeps only the client headers the allow-list forwards ([`headers`]): every
    /// other one — credentials, `x-envoy-*` (which would steer the router),
    /// `x-switchyard-*`, anything unknown — is gone before the request is planned,
    /// for every attempt (they share this header map). Headers forwarded to some
    /// providers only are kept aside for their attempts. Providers get plain JSON
    /// bodies: `content-type` and `accept-encoding` are normalised in the same call.
    fn filter_headers(&mut self, envoy: &impl Host, headers: Headers) {
        let mut per_provider: Vec<&str> = self
            .cfg
            .providers
            .values()
            .flat_map(|p| p.forward_headers.iter().map(String::as_str))
            .collect();
        // A Messages client's beta switches, for the targets that speak Messages
        // (the adapter forwards it to those only).
        if self.client_api == ClientApi::Messages {
            per_provider.push("anthropic-beta");
        }
        let mut kept = Vec::with_capacity(headers.0.len());
        let mut changed = false;
        for (name, value) in headers.0 {
            match headers::disposition(&name, &self.cfg.forward_headers, &per_provider) {
                Disposition::Keep => match name.as_str() {
                    "content-type" if value != b"application/json" => changed = true,
                    "accept-encoding" if value != b"identity" => changed = true,
                    _ => kept.push((name, value)),
                },
                Disposition::PerProvider => {
                    changed = true;
                    self.client_headers
                        .push((name, String::from_utf8_lossy(&value).into_owned()));
                }
                Disposition::Drop => changed = true,
            }
        }
        if !kept.iter().any(|(n, _)| n == "content-type") {
            kept.push(("content-type".into(), b"application/json".to_vec()));
            changed = true;
        }
        if !kept.iter().any(|(n, _)| n == "accept-encoding") {
            kept.push(("accept-encoding".into(), b"identity".to_vec()));
            changed = true;
        }
        if changed {
            envoy.replace_headers(Map::Request, &kept);
        }
    }

    /// A 429 for the gateway's own limits: OpenAI's `x-ratelimit-*` headers,
    /// `Retry-After`, and `x-switchyard-limit: gateway` (a provider's 429 never
    /// carries it); `budget_exceeded` when a budget is spent.
    fn over_limit(&mut self, envoy: &impl Host, r: &governance::LimitRefusal) -> Action {
        use switchyard_core::governance::Dim;
        let now = envoy.now_ms();
        let d = r.refusal.dim;
        let wait_ms = r.refusal.retry_at_ms.saturating_sub(now);
        let retry_after = wait_ms.div_ceil(1000).max(1).to_string();
        let (kind, name) = match r.subject.split_once(':') {
            Some(("t", team)) => ("Team", team.to_string()),
            _ => (
                "Key",
                self.auth
                    .as_ref()
                    .map(|a| a.entry().key.name.clone())
                    .unwrap_or_default(),
            ),
        };
        let limit = r.limits[d.index()].unwrap_or(0);
        let what = match d {
            Dim::Requests => format!("{limit} requests per minute"),
            Dim::Tokens => format!("{limit} tokens per minute"),
            Dim::CostDay => format!("its daily budget of ${:.2}", limit as f64 / 1e6),
            Dim::CostMonth => format!("its monthly budget of ${:.2}", limit as f64 / 1e6),
        };
        let reason = Reason::of_limit(&r.refusal);
        let message = if reason == Reason::BudgetExceeded {
            format!(
                "{kind} `{name}` has spent {what}; it resets in {}.",
                switchyard_core::governance::reset_header(wait_ms)
            )
        } else if r.refusal.exhausted {
            format!("{kind} `{name}` reached its limit of {what}; retry after {retry_after} s.")
        } else {
            format!(
                "{kind} `{name}` is at its limit of {what} on this gateway for now; retry after {retry_after} s."
            )
        };
        let mut extra: Vec<(String, String)> = vec![
            ("retry-after".into(), retry_after.clone()),
            ("x-switchyard-limit".into(), "gateway".into()),
            (
                "x-switchyard-limit-subject".into(),
                format!("{} {name}", kind.to_lowercase()),
            ),
        ];
        for (dim, label) in [(Dim::Requests, "requests"), (Dim::Tokens, "tokens")] {
            if let Some(l) = r.limits[dim.index()] {
                let w = dim.window(now);
                let reset = if dim == d {
                    wait_ms
                } else {
                    dim.window_end_ms(w).saturating_sub(now)
                };
                let remaining = if dim == d {
                    0
                } else {
                    r.remaining[dim.index()].unwrap_or(l)
                };
                extra.push((format!("x-ratelimit-limit-{label}"), l.to_string()));
                extra.push((
                    format!("x-ratelimit-remaining-{label}"),
                    remaining.to_string(),
                ));
                extra.push((
                    format!("x-ratelimit-reset-{label}"),
                    switchyard_core::governance::reset_header(reset),
                ));
            }
        }
        let extra: Vec<(&str, &str)> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.reply_as(
            envoy,
            429,
            "gateway_limit_error",
            reason.code(),
            &message,
            &extra,
        )
    }

    /// A `/v1/messages` or `/v1/responses` request in the gateway's chat form,
    /// which replaces the body Envoy holds (every attempt starts from it). A
    /// request only targets of its own API can take (it uses something only
    /// they do) is planned from its model alone and goes to those targets only.
    fn chat_form(&mut self, envoy: &impl Host, original: Vec<u8>) -> Result<Vec<u8>, Action> {
        let api = self.client_api;
        match api.to_chat(&original) {
            Ok(inbound) => {
                let chat = serde_json::to_vec(&inbound.chat).unwrap_or_default();
                self.inbound.stream = inbound.stream;
                self.inbound.model = inbound
                    .chat
                    .get("model")
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
                    .to_string();
                envoy.replace_body(Body::Request, &chat);
                self.inbound.original = Some(original);
                Ok(chat)
            }
            Err(e) if api.only_native(&e) => {
                let head: serde_json::Value = serde_json::from_slice(&original).unwrap_or_default();
                let model = head
                    .get("model")
                    .and_then(|m| m.as_str())
                    .unwrap_or_default();
                let stream = head
                    .get("stream")
                    .and_then(|s| s.as_bool())
                    .unwrap_or(false);
                // Just what planning reads: the model and whether it streams.
                let plan = serde_json::json!({
                    "model": model,
                    "stream": stream,
                    "messages": [{"role": "user", "content": ""}],
                });
                self.inbound.stream = stream;
                self.inbound.model = model.to_string();
                self.inbound.stored_state = api.stored_state(&head);
                self.inbound.original = Some(original);
                self.inbound.only_native = Some(e);
                Ok(serde_json::to_vec(&plan).unwrap_or_default())
            }
            Err(e) => Err(self.reject(envoy, 400, e.code, &e.message)),
        }
    }

    /// The client's own body, kept for the plan's targets that speak its API.
    fn native_body(&mut self, plan: &[Target]) -> Option<Vec<u8>> {
        let api = self.client_api;
        let any = plan.iter().any(|t| {
            self.cfg
                .providers
                .get(&t.provider)
                .is_some_and(|p| api.native_to(p.dialect))
        });
        let body = self.inbound.original.take();
        if any { body } else { None }
    }

    /// `POST /v1/messages/count_tokens`: an estimate, answered here (documented
    /// in docs/apis.md).
    fn count_tokens(&mut self, envoy: &impl Host, body: &[u8]) -> Action {
        match switchyard_core::inbound::anthropic::count_tokens_estimate(body) {
            Ok(n) => {
                let out = serde_json::json!({ "input_tokens": n }).to_string();
                let mut headers = vec![("content-type", "application/json")];
                if !self.request_id.is_empty() {
                    headers.push(("x-request-id", self.request_id.as_str()));
                }
                envoy.send_response(200, &headers, out.as_bytes());
                self.replied = true;
                Action::Pause
            }
            Err(e) => self.reject(envoy, 400, e.code, &e.message),
        }
    }

    fn too_large(&mut self, envoy: &impl Host) -> Action {
        let msg = format!(
            "The request body exceeds the gateway's limit of {} bytes.",
            self.cfg.max_request_bytes
        );
        self.reject(envoy, 413, "request_too_large", &msg)
    }
}

/// Request headers read in one host call (lower-case names, values as sent).
struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    /// The first value of `name`, lossily decoded.
    fn get(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::testing::{MemHost, config};

    fn request(extra: &[(&str, &str)]) -> MemHost {
        let mut headers = vec![
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gw"),
            ("content-type", "application/json"),
            ("x-request-id", "r1"),
        ];
        headers.extend_from_slice(extra);
        MemHost::with_request(&headers)
    }

    fn plan(host: &MemHost, body: &str) -> (Planner, Action) {
        let mut p = Planner::new(config("planner"));
        assert_eq!(p.on_request_headers(host, false), Action::Pause);
        *host.request_body.borrow_mut() = body.as_bytes().to_vec();
        let action = p.on_request_body(host, body.len(), true);
        (p, action)
    }

    #[test]
    fn only_allowed_headers_remain_and_the_plan_is_published() {
        let host = request(&[
            ("x-envoy-attempt-count", "1"),
            ("x-envoy-max-retries", "9"),
            ("x-switchyard-provider", "b"),
            ("authorization", "Bearer client"),
            ("proxy-authorization", "Basic x"),
            ("anthropic-beta", "tools-1"),
            ("user-agent", "sdk/1"),
            ("accept-encoding", "gzip"),
        ]);
        let (p, action) = plan(
            &host,
            r#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#,
        );
        assert_eq!(action, Action::Continue);
        let names: Vec<String> = host
            .request
            .borrow()
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        for gone in [
            "x-switchyard-provider",
            "authorization",
            "proxy-authorization",
            "anthropic-beta",
        ] {
            assert!(!names.contains(&gone.to_string()), "{gone} kept: {names:?}");
        }
        // The router's knobs are the planner's, not the client's.
        assert_eq!(host.values(Map::Request, "x-envoy-max-retries"), vec!["1"]);
        assert!(
            host.values(Map::Request, "x-envoy-attempt-count")
                .is_empty()
        );
        assert_eq!(
            host.values(Map::Request, "accept-encoding"),
            vec!["identity"]
        );
        assert_eq!(host.values(Map::Request, "user-agent"), vec!["sdk/1"]);
        let state = host.filter_state.borrow();
        assert_eq!(state["sy_slot1"], "sy_provider_a");
        assert_eq!(state["sy_slot2"], "sy_provider_b");
        assert_eq!(*host.route_cleared.borrow(), 1);
        // anthropic-beta waits in the ledger for attempts to the provider that forwards it.
        let kept = ledger::read("r1", |e| e.client_headers.clone()).unwrap();
        assert_eq!(
            kept,
            vec![("anthropic-beta".to_string(), "tools-1".to_string())]
        );
        drop(p);
        ledger::close("r1");
    }

    #[test]
    fn bad_input_is_answered_locally_with_the_request_id() {
        for (body, status, code) in [
            ("{\"model\":", 400, "invalid_json"),
            (
                r#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#,
                404,
                "model_not_found",
            ),
            (
                r#"{"model":"a/../../files?x=","messages":[{"role":"user","content":"x"}]}"#,
                400,
                "invalid_model",
            ),
        ] {
            let host = request(&[]);
            let (_, action) = plan(&host, body);
            assert_eq!(action, Action::Pause, "{body}");
            let replies = host.replies.borrow();
            assert_eq!(replies.len(), 1);
            assert_eq!(replies[0].status, status, "{body}");
            let v: Value = serde_json::from_slice(&replies[0].body).unwrap();
            assert_eq!(v["error"]["code"], code);
            assert_eq!(v["error"]["request_id"], "r1");
            assert!(host.filter_state.borrow().is_empty(), "nothing planned");
        }
    }

    #[test]
    fn refusals_before_the_body_come_in_the_client_apis_shape() {
        // No provider credentials yet: 503 before authentication and before
        // the endpoint is looked at, answered once the body is read.
        let mut cfg = (*config("planner")).clone();
        cfg.credentials_from_fleet = true;
        let cfg = Arc::new(cfg);
        for (path, anthropic) in [
            ("/v1/messages", true),
            ("/v1/messages/count_tokens", true),
            ("/v1/responses", false),
            ("/v1/chat/completions", false),
        ] {
            let host = MemHost::with_request(&[
                (":method", "POST"),
                (":path", path),
                ("x-request-id", "r9"),
            ]);
            let mut p = Planner::new(cfg.clone());
            assert_eq!(p.on_request_headers(&host, false), Action::Pause);
            assert!(host.replies.borrow().is_empty(), "answered after the body");
            *host.request_body.borrow_mut() = b"{}".to_vec();
            assert_eq!(p.on_request_body(&host, 2, true), Action::Pause);
            let replies = host.replies.borrow();
            assert_eq!(replies[0].status, 503, "{path}");
            let v: Value = serde_json::from_slice(&replies[0].body).unwrap();
            if anthropic {
                assert_eq!(v["type"], "error", "{path}: {v}");
                assert_eq!(v["error"]["type"], "overloaded_error", "{path}: {v}");
                let message = v["error"]["message"].as_str().unwrap();
                assert!(message.starts_with("gateway_not_ready: "), "{message}");
                assert_eq!(v["request_id"], "r9", "{v}");
            } else {
                assert_eq!(v["error"]["code"], "gateway_not_ready", "{path}: {v}");
                assert_eq!(v["error"]["request_id"], "r9", "{v}");
            }
        }
    }

    #[test]
    fn every_target_cooling_is_answered_429_without_trying() {
        let host = request(&[]);
        let until = host.now + 7_500;
        for t in ["sy:cool:t:a/gpt", "sy:cool:t:b/claude"] {
            host.shared
                .borrow_mut()
                .insert(t.to_string(), (until.to_string().into_bytes(), 1));
        }
        let (_, action) = plan(
            &host,
            r#"{"model":"chat","messages":[{"role":"user","content":"x"}]}"#,
        );
        assert_eq!(action, Action::Pause);
        let replies = host.replies.borrow();
        assert_eq!(replies[0].status, 429);
        assert!(
            replies[0]
                .headers
                .contains(&("retry-after".to_string(), "8".to_string())),
            "{:?}",
            replies[0].headers
        );
    }

    #[test]
    fn each_governance_decision_is_recorded_once_under_the_request_id() {
        use switchyard_core::governance::{GovState, KeyRecord, Limits, Table, hash_key};
        let key = |id: &str, routes: Option<Vec<String>>, rpm: Option<u64>| KeyRecord {
            id: id.into(),
            name: id.into(),
            sha256: hash_key(&format!("sk-sy-{id}"))
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            team: Some("research".into()),
            routes,
            targets: None,
            direct: false,
            max_price: None,
            limits: Limits {
                rpm,
                ..Limits::default()
            },
            expires_at_ms: None,
            revoked: false,
        };
        let table = Table {
            keys: vec![
                key("good", None, None),
                key("narrow", Some(vec!["other".into()]), None),
                key("zero", None, Some(0)),
            ],
            teams: vec![],
        };
        let body = r#"{"model":"chat","messages":[{"role":"user","content":"secret prompt"}]}"#;
        for (auth, reason, status) in [
            ("sk-sy-good", Reason::Admitted, None),
            ("sk-sy-nope", Reason::KeyUnknown, Some(401)),
            ("sk-sy-narrow", Reason::ModelNotAllowed, Some(403)),
            ("sk-sy-zero", Reason::RateLimitExceeded, Some(429)),
        ] {
            let host = request(&[("authorization", &format!("Bearer {auth}"))]);
            governance::apply(
                &host,
                &GovState {
                    version: table.version(),
                    table: Some(table.clone()),
                    envoys: 1,
                    grants: vec![],
                },
            );
            let (mut p, _) = plan(&host, body);
            let replies: Vec<u16> = host.replies.borrow().iter().map(|r| r.status).collect();
            assert_eq!(replies, status.into_iter().collect::<Vec<_>>(), "{auth}");
            assert_eq!(crate::audit::backlog(&host), 0, "kept until it ends");
            p.on_done(&host);
            let taken = crate::audit::take(&host);
            let (got, dropped) = (taken.decisions, taken.dropped);
            assert_eq!((got.len(), dropped), (1, 0), "{auth}");
            let d = &got[0];
            assert_eq!((d.request_id.as_str(), d.reason), ("r1", reason), "{auth}");
            let id = auth
                .strip_prefix("sk-sy-")
                .filter(|_| reason != Reason::KeyUnknown);
            assert_eq!(d.key.as_deref(), id, "{auth}");
            assert_eq!(d.problem(), None);
            let json = serde_json::to_string(d).unwrap();
            assert!(
                !json.contains("sk-sy") && !json.contains("secret"),
                "{json}"
            );
        }
    }
}
