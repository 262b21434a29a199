//! The stats the filter emits (docs/metrics.md is the contract). Each host
//! defines them its own way: proxy-wasm defines a metric per name and label
//! values on first use (`<name>.<label>.<value>…`, turned back into tags by the
//! bootstrap's tag extraction); the native module defines them, with their label
//! names, when its configuration is created.

use std::borrow::Cow;

use switchyard_core::config::{FilterConfig, Target};
use switchyard_core::inbound::ClientApi;
use switchyard_core::request::Endpoint;

use switchyard_core::failure::FailureClass;

use crate::host::Host;
use crate::ledger::Entry;

/// A counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Client requests, by how they ended.
    Requests,
    /// Answers the gateway gave itself.
    Rejections,
    /// Every attempt, by result.
    Attempts,
    /// Attempts that failed and moved the request on.
    Fallbacks,
    /// Which slot of the plan served.
    Served,
    /// Hedges started / won.
    Hedges,
    /// Committed streams continued on the next target.
    Continuations,
    /// Same-target retries.
    Retries,
    /// Targets moved back in a plan.
    CooldownSkips,
    /// Circuit transitions.
    CircuitTransitions,
    /// Tokens the answers reported.
    Tokens,
    /// Cost charged per target, in millionths of the price unit.
    Cost,
    /// Cost charged from prompt estimates (no usage in the answer).
    CostEstimated,
    /// Attempts a fail-over drill failed before they were sent.
    DrillFailures,
}

/// A gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gauge {
    /// 0 closed, 1 half-open, 2 open.
    CircuitState,
    /// 1 healthy, 0 unhealthy.
    HealthState,
    /// The fleet's effective weight factor, in ‰.
    WeightPermille,
    /// 1 once the provider credentials are here (from the fleet exchange).
    CredentialsReady,
}

/// A histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Histogram {
    /// Attempt start to response headers (ms).
    TimeToHeaders,
    /// Attempt start to the first content (ms).
    TimeToFirstToken,
    /// Attempt start to the end of the answer (ms).
    Duration,
    /// Time per output token after the first (µs).
    TimePerOutputToken,
}

/// What every metric kind has: a name and label names.
pub trait Metric: Copy {
    /// The stat's name.
    fn name(self) -> &'static str;
    /// Its label names (the values are given in this order).
    fn labels(self) -> &'static [&'static str];
}

const TARGET: &[&str] = &["provider", "model"];

impl Counter {
    /// Every counter.
    pub const ALL: [Counter; 14] = [
        Counter::Requests,
        Counter::Rejections,
        Counter::Attempts,
        Counter::Fallbacks,
        Counter::Served,
        Counter::Hedges,
        Counter::Continuations,
        Counter::Retries,
        Counter::CooldownSkips,
        Counter::CircuitTransitions,
        Counter::Tokens,
        Counter::Cost,
        Counter::CostEstimated,
        Counter::DrillFailures,
    ];
}

impl Metric for Counter {
    fn name(self) -> &'static str {
        match self {
            Counter::Requests => "switchyard_requests_total",
            Counter::Rejections => "switchyard_rejections_total",
            Counter::Attempts => "switchyard_attempts_total",
            Counter::Fallbacks => "switchyard_fallbacks_total",
            Counter::Served => "switchyard_served_total",
            Counter::Hedges => "switchyard_hedges_total",
            Counter::Continuations => "switchyard_continuations_total",
            Counter::Retries => "switchyard_retries_total",
            Counter::CooldownSkips => "switchyard_cooldown_skips_total",
            Counter::CircuitTransitions => "switchyard_circuit_transitions_total",
            Counter::Tokens => "switchyard_tokens_total",
            Counter::Cost => "switchyard_cost_micros_total",
            Counter::CostEstimated => "switchyard_cost_estimated_micros_total",
            Counter::DrillFailures => "switchyard_drill_failures_total",
        }
    }

    fn labels(self) -> &'static [&'static str] {
        match self {
            Counter::Requests => &["route", "endpoint", "outcome", "status_class"],
            Counter::Rejections => &["reason"],
            Counter::Attempts => &["provider", "model", "result"],
            Counter::Fallbacks => &["route", "class"],
            Counter::Served => &["route", "position"],
            Counter::Hedges | Counter::Continuations => &["route", "outcome"],
            Counter::Retries
            | Counter::CooldownSkips
            | Counter::Cost
            | Counter::CostEstimated
            | Counter::DrillFailures => TARGET,
            Counter::CircuitTransitions => &["provider", "model", "to"],
            Counter::Tokens => &["provider", "model", "kind"],
        }
    }
}

impl Gauge {
    /// Every gauge.
    pub const ALL: [Gauge; 4] = [
        Gauge::CircuitState,
        Gauge::HealthState,
        Gauge::WeightPermille,
        Gauge::CredentialsReady,
    ];
}

impl Metric for Gauge {
    fn name(self) -> &'static str {
        match self {
            Gauge::CircuitState => "switchyard_circuit_state",
            Gauge::HealthState => "switchyard_health_state",
            Gauge::WeightPermille => "switchyard_weight_permille",
            Gauge::CredentialsReady => "switchyard_credentials_ready",
        }
    }

    fn labels(self) -> &'static [&'static str] {
        match self {
            Gauge::HealthState => &["provider"],
            Gauge::CredentialsReady => &[],
            Gauge::CircuitState | Gauge::WeightPermille => TARGET,
        }
    }
}

impl Histogram {
    /// Every histogram.
    pub const ALL: [Histogram; 4] = [
        Histogram::TimeToHeaders,
        Histogram::TimeToFirstToken,
        Histogram::Duration,
        Histogram::TimePerOutputToken,
    ];
}

impl Metric for Histogram {
    fn name(self) -> &'static str {
        match self {
            Histogram::TimeToHeaders => "switchyard_time_to_headers_ms",
            Histogram::TimeToFirstToken => "switchyard_time_to_first_token_ms",
            Histogram::Duration => "switchyard_duration_ms",
            Histogram::TimePerOutputToken => "switchyard_time_per_output_token_us",
        }
    }

    fn labels(self) -> &'static [&'static str] {
        TARGET
    }
}

/// The name a host without label support gives a labelled stat:
/// `<name>.<label>.<value>…`, the shape Envoy gives the native module's labelled
/// stats in `/stats`, so both hosts' stats read alike (and tag extraction makes
/// them labels again).
pub fn flat_name(metric: impl Metric, labels: &[&str]) -> String {
    let mut name = metric.name().to_string();
    for (label, v) in metric.labels().iter().zip(labels) {
        name.push('.');
        name.push_str(label);
        name.push('.');
        name.push_str(v);
    }
    name
}

/// A label value as stats carry it: `[A-Za-z0-9_-]` only, anything else `_`
/// (dots would split a flat stat name; `gpt-4.1` is `gpt-4_1`).
pub fn label(value: &str) -> Cow<'_, str> {
    if value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !value.is_empty()
    {
        Cow::Borrowed(value)
    } else if value.is_empty() {
        Cow::Borrowed("_")
    } else {
        Cow::Owned(
            value
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
        )
    }
}

/// The `(provider, model)` labels of a target: a target no route configures (a
/// client's own `provider/model`) is counted as `model="_direct"`, so client
/// names never become label values.
pub fn target_labels<'a>(cfg: &FilterConfig, t: &'a Target) -> (Cow<'a, str>, Cow<'a, str>) {
    if cfg.is_configured(t) {
        (label(&t.provider), label(&t.model))
    } else {
        (label(&t.provider), Cow::Borrowed("_direct"))
    }
}

thread_local! {
    /// The config version whose series this worker has started.
    static STARTED: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Starts the series of every configured route and target at 0, once per
/// worker and config: a series that is born at 1 shows Prometheus no
/// increase, so the first fall-over of its kind would be invisible to
/// `rate()` and to alerts.
pub fn start_series(host: &impl Host, cfg: &FilterConfig) {
    let fresh = STARTED.with(|v| {
        let mut v = v.borrow_mut();
        if *v == cfg.version {
            return false;
        }
        v.clone_from(&cfg.version);
        true
    });
    if !fresh {
        return;
    }
    for (alias, route) in &cfg.routes {
        let alias = label(alias);
        for (outcome, class) in [("served", "2xx"), ("all_failed", "5xx")] {
            host.count(Counter::Requests, &[&alias, "chat", outcome, class], 0);
        }
        for class in FailureClass::ALL {
            host.count(Counter::Fallbacks, &[&alias, class.as_str()], 0);
        }
        for position in 1..=route.chain.len() {
            host.count(Counter::Served, &[&alias, &position.to_string()], 0);
        }
        for t in &route.chain {
            let (provider, model) = (label(&t.provider), label(&t.model));
            host.count(Counter::Attempts, &[&provider, &model, "success"], 0);
            for class in FailureClass::ALL {
                host.count(Counter::Attempts, &[&provider, &model, class.as_str()], 0);
            }
        }
    }
}

/// The `status_class` label of a status.
fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// The `endpoint` label: the client's API.
pub fn endpoint(e: Endpoint, api: ClientApi) -> &'static str {
    match (e, api) {
        (Endpoint::Embeddings, _) => "embeddings",
        (Endpoint::Chat, ClientApi::Chat) => "chat",
        (Endpoint::Chat, ClientApi::Messages) => "messages",
        (Endpoint::Chat, ClientApi::Responses) => "responses",
    }
}

/// A request the gateway answered itself (`reason` is the error code of its
/// reply, one of a fixed set).
pub fn rejected(
    host: &impl Host,
    route: &str,
    (e, api): (Endpoint, ClientApi),
    reason: &str,
    status: u16,
) {
    host.count(Counter::Rejections, &[&label(reason)], 1);
    host.count(
        Counter::Requests,
        &[route, endpoint(e, api), "rejected", status_class(status)],
        1,
    );
}

/// What a finished request's attempts came to: computed once from its ledger
/// entry, then told to Envoy's stats ([`observe`]), the fleet report
/// ([`crate::observed`]) and the decision log ([`crate::decision`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// `served`, `all_failed` or `cancelled` (the client left before an answer).
    pub outcome: &'static str,
    /// The attempt (index) whose answer the client got.
    pub served: Option<usize>,
    /// Per attempt, in order.
    pub attempts: Vec<AttemptSummary>,
}

/// One attempt of a [`Summary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptSummary {
    /// `success`, `cancelled` or a failure class.
    pub result: &'static str,
    /// It failed, and the request moved on: to another target (`Some(true)`, a
    /// fall-over) or to the same one again (`Some(false)`, a retry).
    pub moved_on: Option<(FailureClass, bool)>,
    /// It started while the attempt before it still waited (a hedge).
    pub hedge: bool,
}

/// Sums up a finished request (`status` is the client's, `None` when it went
/// away first).
pub fn summarize(entry: &Entry, status: Option<u16>) -> Summary {
    let served = entry.attempts.iter().position(|a| a.committed);
    let outcome = match (served, status) {
        (Some(_), _) => "served",
        (None, Some(_)) => "all_failed",
        (None, None) => "cancelled",
    };
    let hedged = entry.hedge_cluster.is_some();
    let n = entry.attempts.len();
    let attempts = entry
        .attempts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let hedge = hedged
                && i > 0
                && entry.attempts[i - 1]
                    .timing
                    .ended
                    .is_none_or(|end| end > a.timing.started);
            let failure = a.failure();
            // An attempt with no answer cut off because another answered (a
            // hedge's loser), or because the client left, did not fail.
            let cancelled = a.unanswered()
                && a.status.is_none()
                && ((hedged && served.is_some_and(|s| s != i)) || (status.is_none() && i + 1 == n));
            let result = match failure {
                _ if cancelled => "cancelled",
                None => "success",
                Some(c) => c.as_str(),
            };
            let moved_on = match (failure, cancelled, entry.attempts.get(i + 1)) {
                (Some(c), false, Some(next)) => Some((c, next.target != a.target)),
                _ => None,
            };
            AttemptSummary {
                result,
                moved_on,
                hedge,
            }
        })
        .collect();
    Summary {
        outcome,
        served,
        attempts,
    }
}

/// Tells Envoy's stats everything a planned request's attempts say, once it is
/// over: the request's outcome, each attempt's result and latencies,
/// fall-overs, retries, hedges, the serving slot, a continuation, tokens.
pub fn observe(
    host: &impl Host,
    cfg: &FilterConfig,
    entry: &Entry,
    summary: &Summary,
    status: Option<u16>,
) {
    let route = label(&entry.route);
    let route = route.as_ref();
    let class = status.map_or("none", status_class);
    host.count(
        Counter::Requests,
        &[
            route,
            endpoint(entry.endpoint, entry.client_api),
            summary.outcome,
            class,
        ],
        1,
    );
    if let Some(i) = summary.served {
        host.count(Counter::Served, &[route, &(i + 1).to_string()], 1);
    }
    for (a, s) in entry.attempts.iter().zip(&summary.attempts) {
        let (provider, model) = target_labels(cfg, &a.target);
        let target = [provider.as_ref(), model.as_ref()];
        if s.hedge {
            host.count(Counter::Hedges, &[route, "fired"], 1);
            if a.committed {
                host.count(Counter::Hedges, &[route, "won"], 1);
            }
        }
        host.count(Counter::Attempts, &[target[0], target[1], s.result], 1);
        match s.moved_on {
            Some((c, true)) => host.count(Counter::Fallbacks, &[route, c.as_str()], 1),
            // The same target again: the retry is counted under its labels.
            Some((_, false)) => host.count(Counter::Retries, &target, 1),
            None => {}
        }
        let t = a.timing;
        if let Some(h) = t.headers {
            host.record(
                Histogram::TimeToHeaders,
                &target,
                h.saturating_sub(t.started),
            );
        }
        if a.committed
            && let (Some(first), Some(end)) = (t.first_content, t.ended)
        {
            host.record(
                Histogram::TimeToFirstToken,
                &target,
                first.saturating_sub(t.started),
            );
            host.record(Histogram::Duration, &target, end.saturating_sub(t.started));
            if let Some(u) = a.usage
                && end > first
                && u.completion_tokens > 1
            {
                let per_token_us = (end - first) * 1000 / (u.completion_tokens - 1);
                host.record(Histogram::TimePerOutputToken, &target, per_token_us);
            }
        }
        if let Some(u) = a.usage {
            host.count(
                Counter::Tokens,
                &[target[0], target[1], "input"],
                u.prompt_tokens,
            );
            host.count(
                Counter::Tokens,
                &[target[0], target[1], "output"],
                u.completion_tokens,
            );
        }
    }
    if let Some(spliced) = entry.continuation {
        let outcome = if spliced { "spliced" } else { "failed" };
        host.count(Counter::Continuations, &[route, outcome], 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Attempt, Timing};
    use crate::testing::MemHost;
    use switchyard_core::cost::Usage;

    #[test]
    fn names_and_labels() {
        assert_eq!(
            flat_name(Counter::Attempts, &["a", "gpt-4_1", "success"]),
            "switchyard_attempts_total.provider.a.model.gpt-4_1.result.success"
        );
        assert_eq!(label("gpt-4.1"), "gpt-4_1");
        assert_eq!(
            label("us.anthropic.claude-v1:0"),
            "us_anthropic_claude-v1_0"
        );
        assert_eq!(label("ok_name-1"), "ok_name-1");
        for c in Counter::ALL {
            assert!(c.name().starts_with("switchyard_"));
        }
    }

    fn attempt(target: &str, status: Option<u16>, committed: bool, t: [Option<u64>; 4]) -> Attempt {
        Attempt {
            target: Target::parse(target).unwrap(),
            status,
            class: None,
            key: None,
            message: None,
            usage: None,
            committed,
            timing: Timing {
                started: t[0].unwrap_or(0),
                headers: t[1],
                first_content: t[2],
                ended: t[3],
            },
        }
    }

    fn stat(host: &MemHost, name: &str) -> u64 {
        host.counters.borrow().get(name).copied().unwrap_or(0)
    }

    #[test]
    fn a_request_that_fell_over_is_told_once_per_attempt() {
        let cfg = crate::testing::config("planner");
        let host = MemHost::default();
        let mut served = attempt(
            "b/claude",
            Some(200),
            true,
            [Some(100), Some(150), Some(300), Some(1300)],
        );
        served.usage = Some(Usage {
            prompt_tokens: 10,
            completion_tokens: 11,
        });
        let mut limited = attempt(
            "a/gpt",
            Some(429),
            false,
            [Some(0), Some(40), None, Some(41)],
        );
        limited.class = Some(FailureClass::RateLimited);
        let entry = Entry {
            route: "chat".into(),
            attempts: vec![limited, served],
            ..Entry::default()
        };
        observe(
            &host,
            &cfg,
            &entry,
            &summarize(&entry, Some(200)),
            Some(200),
        );
        for (name, want) in [
            (
                "switchyard_requests_total.route.chat.endpoint.chat.outcome.served.status_class.2xx",
                1,
            ),
            ("switchyard_served_total.route.chat.position.2", 1),
            (
                "switchyard_attempts_total.provider.a.model.gpt.result.rate_limited",
                1,
            ),
            (
                "switchyard_attempts_total.provider.b.model.claude.result.success",
                1,
            ),
            (
                "switchyard_fallbacks_total.route.chat.class.rate_limited",
                1,
            ),
            ("switchyard_time_to_headers_ms.provider.b.model.claude", 50),
            (
                "switchyard_time_to_first_token_ms.provider.b.model.claude",
                200,
            ),
            ("switchyard_duration_ms.provider.b.model.claude", 1200),
            // 1000 ms over the 10 tokens after the first.
            (
                "switchyard_time_per_output_token_us.provider.b.model.claude",
                100_000,
            ),
            (
                "switchyard_tokens_total.provider.b.model.claude.kind.output",
                11,
            ),
            (
                "switchyard_tokens_total.provider.b.model.claude.kind.input",
                10,
            ),
        ] {
            assert_eq!(stat(&host, name), want, "{name}");
        }
        assert_eq!(
            stat(&host, "switchyard_hedges_total.route.chat.outcome.fired"),
            0
        );
    }

    #[test]
    fn hedges_retries_and_direct_targets() {
        let cfg = crate::testing::config("planner");
        let host = MemHost::default();
        // Hedged: the second attempt started while the first still waited, and won.
        let entry = Entry {
            route: "chat".into(),
            hedge_cluster: Some("sy_hedge".into()),
            attempts: vec![
                attempt("a/gpt", None, false, [Some(0), None, None, None]),
                attempt(
                    "b/claude",
                    Some(200),
                    true,
                    [Some(500), Some(600), Some(700), Some(700)],
                ),
            ],
            ..Entry::default()
        };
        observe(
            &host,
            &cfg,
            &entry,
            &summarize(&entry, Some(200)),
            Some(200),
        );
        assert_eq!(
            stat(&host, "switchyard_hedges_total.route.chat.outcome.fired"),
            1
        );
        assert_eq!(
            stat(&host, "switchyard_hedges_total.route.chat.outcome.won"),
            1
        );
        assert_eq!(
            stat(
                &host,
                "switchyard_attempts_total.provider.a.model.gpt.result.cancelled"
            ),
            1
        );
        assert_eq!(
            stat(
                &host,
                "switchyard_fallbacks_total.route.chat.class.unreachable"
            ),
            0
        );
        // A client's own target, retried after a 500, then failed for good.
        let host = MemHost::default();
        let entry = Entry {
            route: "_direct".into(),
            attempts: vec![
                attempt(
                    "a/my.own.model",
                    Some(500),
                    false,
                    [Some(0), Some(5), None, Some(6)],
                ),
                attempt(
                    "a/my.own.model",
                    Some(500),
                    false,
                    [Some(10), Some(15), None, Some(16)],
                ),
            ],
            ..Entry::default()
        };
        observe(
            &host,
            &cfg,
            &entry,
            &summarize(&entry, Some(500)),
            Some(500),
        );
        assert_eq!(
            stat(&host, "switchyard_retries_total.provider.a.model._direct"),
            1
        );
        assert_eq!(
            stat(
                &host,
                "switchyard_attempts_total.provider.a.model._direct.result.server_error"
            ),
            2
        );
        assert_eq!(
            stat(
                &host,
                "switchyard_requests_total.route._direct.endpoint.chat.outcome.all_failed.status_class.5xx"
            ),
            1
        );
        assert!(
            host.counters.borrow().keys().all(|k| !k.contains("own")),
            "client names are no labels"
        );
    }
}
