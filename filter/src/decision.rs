//! What observers outside the filter learn of each request, through filter
//! state (`switchyard_core::observe`, docs/observability.md): the decision
//! record Envoy's access log writes, and the facts Envoy's tracer puts on the
//! request's and the attempts' spans.

use switchyard_core::config::FilterConfig;
use switchyard_core::observe::{
    AttemptRecord, Caller, DECISION_STATE, Decision, MAX_DECISION_BYTES, MovedBack,
    SPAN_NAME_STATE, Served, Tokens,
};

use crate::cost;
use crate::host::Host;
use crate::ledger::Entry;
use crate::metrics::Summary;

/// What the planner knows of a request beyond its ledger entry.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Arrival, host clock (ms).
    pub arrived_ms: u64,
    /// The request id.
    pub request_id: String,
    /// This Envoy.
    pub node: String,
    /// Route alias, `_direct` or `_none` (rejected before a model was named).
    pub route: String,
    /// The `endpoint` label.
    pub endpoint: &'static str,
    /// A stream was asked for.
    pub stream: bool,
    /// The caller's key id and team (governance).
    pub caller: Option<(String, Option<String>)>,
    /// Targets moved back in the plan, and why.
    pub moved_back: Vec<(String, &'static str)>,
}

/// The span's name: `<operation> <model>`, as OpenTelemetry's GenAI
/// conventions name spans (written when the request is planned).
pub fn name_span(host: &impl Host, endpoint: &'static str, model: &str) {
    let operation = if endpoint == "embeddings" {
        "embeddings"
    } else {
        "chat"
    };
    host.set_filter_state(SPAN_NAME_STATE, &format!("{operation} {model}"));
}

/// The request's span facts (written when its response ends).
pub fn request_facts(
    host: &impl Host,
    cfg: &FilterConfig,
    route: &str,
    caller: Option<&str>,
    entry: &Entry,
    summary: &Summary,
) {
    let served = summary
        .served
        .and_then(|i| entry.attempts.get(i).map(|a| (i, a)));
    let failures: Vec<&str> = summary
        .attempts
        .iter()
        .map(|s| s.result)
        .filter(|r| *r != "success" && *r != "cancelled")
        .collect();
    let (_, cost) = cost::charged(cfg, entry);
    let usage = served.and_then(|(_, a)| a.usage);
    let facts: [(&str, String); 11] = [
        ("sy_t_route", route.to_string()),
        ("sy_t_attempts", entry.attempts.len().to_string()),
        (
            "sy_t_provider",
            served
                .map(|(_, a)| a.target.provider.clone())
                .unwrap_or_default(),
        ),
        (
            "sy_t_model",
            served
                .map(|(_, a)| a.target.model.clone())
                .unwrap_or_default(),
        ),
        (
            "sy_t_position",
            served.map(|(i, _)| (i + 1).to_string()).unwrap_or_default(),
        ),
        ("sy_t_failures", failures.join(",")),
        ("sy_t_hedge", hedge(entry, summary).to_string()),
        (
            "sy_t_cost_micros",
            if cfg.prices.is_empty() {
                String::new()
            } else {
                cost.to_string()
            },
        ),
        (
            "sy_t_input_tokens",
            usage
                .map(|u| u.prompt_tokens.to_string())
                .unwrap_or_default(),
        ),
        (
            "sy_t_output_tokens",
            usage
                .map(|u| u.completion_tokens.to_string())
                .unwrap_or_default(),
        ),
        ("sy_t_caller", caller.unwrap_or_default().to_string()),
    ];
    for (key, value) in facts {
        if !value.is_empty() {
            host.set_filter_state(key, &value);
        }
    }
}

/// `none`, `fired` (a hedge started and lost) or `won`.
fn hedge(entry: &Entry, summary: &Summary) -> &'static str {
    let fired = summary.attempts.iter().any(|s| s.hedge);
    let won = summary
        .served
        .is_some_and(|i| summary.attempts.get(i).is_some_and(|s| s.hedge));
    match (fired, won, entry.hedge_cluster.is_some()) {
        (_, true, _) => "won",
        (true, false, _) => "fired",
        _ => "none",
    }
}

/// The decision record of a request: planned (`entry`, `summary`) or answered
/// by the gateway itself (`rejection`, the error code).
pub fn record(
    cfg: &FilterConfig,
    req: &Request,
    planned: Option<(&Entry, &Summary)>,
    rejection: Option<&str>,
    status: Option<u16>,
    now_ms: u64,
) -> Decision {
    let mut d = Decision {
        v: 1,
        ts_ms: req.arrived_ms,
        request_id: req.request_id.clone(),
        node: req.node.clone(),
        route: req.route.clone(),
        endpoint: req.endpoint.to_string(),
        stream: req.stream,
        caller: req.caller.as_ref().map(|(key, team)| Caller {
            key: key.clone(),
            team: team.clone(),
        }),
        moved_back: req
            .moved_back
            .iter()
            .map(|(target, why)| MovedBack {
                target: target.clone(),
                why: (*why).to_string(),
            })
            .collect(),
        outcome: if rejection.is_some() {
            "rejected"
        } else {
            "cancelled"
        }
        .to_string(),
        status: status.unwrap_or(0),
        rejection: rejection.map(str::to_string),
        hedge: "none".to_string(),
        duration_ms: now_ms.saturating_sub(req.arrived_ms),
        ..Decision::default()
    };
    let Some((entry, summary)) = planned else {
        return d;
    };
    d.plan = entry.plan.iter().map(ToString::to_string).collect();
    d.outcome = summary.outcome.to_string();
    d.hedge = hedge(entry, summary).to_string();
    d.continuation = entry
        .continuation
        .map(|s| if s { "spliced" } else { "failed" }.to_string());
    let (_, micros) = cost::charged(cfg, entry);
    d.cost_micros = micros;
    d.cost_estimated = !cfg.prices.is_empty() && cost::estimated(entry);
    d.attempts = entry
        .attempts
        .iter()
        .zip(&summary.attempts)
        .enumerate()
        .map(|(i, (a, s))| {
            let t = a.timing;
            AttemptRecord {
                position: u32::try_from(i + 1).unwrap_or(u32::MAX),
                provider: a.target.provider.clone(),
                model: a.target.model.clone(),
                // A provider's only credential is key 0.
                key: a
                    .key
                    .or_else(|| cfg.providers.get(&a.target.provider).map(|_| 0))
                    .and_then(|k| u32::try_from(k).ok()),
                status: a.status,
                result: s.result.to_string(),
                hedge: s.hedge,
                start_ms: t.started.saturating_sub(req.arrived_ms),
                headers_ms: t.headers.map(|h| h.saturating_sub(t.started)),
                first_token_ms: t.first_content.map(|f| f.saturating_sub(t.started)),
                duration_ms: t.ended.map(|e| e.saturating_sub(t.started)),
            }
        })
        .collect();
    if let Some(a) = summary.served.and_then(|i| entry.attempts.get(i)) {
        d.served_by = Some(Served {
            provider: a.target.provider.clone(),
            model: a.target.model.clone(),
            position: summary
                .served
                .map_or(0, |i| u32::try_from(i + 1).unwrap_or(u32::MAX)),
        });
        d.usage = a.usage.map(|u| Tokens {
            input: u.prompt_tokens,
            output: u.completion_tokens,
        });
    }
    d
}

/// Writes the record for Envoy's access log: one JSON object, bounded (the
/// attempts are left out of one that would not fit, and it says so by
/// `attempts: []` with `plan` kept).
pub fn write(host: &impl Host, mut d: Decision) {
    let mut line = serde_json::to_string(&d).unwrap_or_default();
    if line.len() > MAX_DECISION_BYTES {
        d.attempts.clear();
        d.moved_back.clear();
        line = serde_json::to_string(&d).unwrap_or_default();
    }
    if line.len() <= MAX_DECISION_BYTES {
        host.set_filter_state(DECISION_STATE, &line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Attempt, Timing};
    use crate::metrics::summarize;
    use crate::testing::MemHost;
    use switchyard_core::config::Target;

    #[test]
    fn a_request_that_fell_over_is_one_record() {
        let cfg = crate::testing::config("planner");
        let t = |s: &str| Target::parse(s).unwrap_or_else(|| unreachable!());
        let entry = Entry {
            route: "chat".into(),
            plan: vec![t("a/gpt"), t("b/claude")],
            attempts: vec![
                Attempt {
                    target: t("a/gpt"),
                    status: Some(503),
                    class: None,
                    key: Some(0),
                    message: Some("the provider's words stay out".into()),
                    usage: None,
                    committed: false,
                    timing: Timing {
                        started: 1001,
                        headers: Some(1041),
                        first_content: None,
                        ended: Some(1042),
                    },
                },
                Attempt {
                    target: t("b/claude"),
                    status: Some(200),
                    class: None,
                    key: None,
                    message: None,
                    usage: Some(switchyard_core::cost::Usage {
                        prompt_tokens: 12,
                        completion_tokens: 48,
                    }),
                    committed: true,
                    timing: Timing {
                        started: 1044,
                        headers: Some(1310),
                        first_content: Some(1310),
                        ended: Some(1620),
                    },
                },
            ],
            ..Entry::default()
        };
        let summary = summarize(&entry, Some(200));
        let req = Request {
            arrived_ms: 1000,
            request_id: "r1".into(),
            node: "n1".into(),
            route: "chat".into(),
            endpoint: "chat",
            ..Request::default()
        };
        let d = record(&cfg, &req, Some((&entry, &summary)), None, Some(200), 1665);
        assert_eq!(d.outcome, "served");
        assert_eq!(d.plan, vec!["a/gpt", "b/claude"]);
        assert_eq!(d.attempts[0].result, "server_error");
        assert_eq!(
            (d.attempts[0].start_ms, d.attempts[0].headers_ms),
            (1, Some(40))
        );
        assert_eq!(d.attempts[1].first_token_ms, Some(266));
        assert_eq!(d.served_by.as_ref().map(|s| s.position), Some(2));
        assert_eq!(
            d.usage,
            Some(Tokens {
                input: 12,
                output: 48
            })
        );
        assert_eq!(d.duration_ms, 665);
        let host = MemHost::default();
        write(&host, d);
        let line = host
            .filter_state
            .borrow()
            .get(DECISION_STATE)
            .cloned()
            .unwrap_or_default();
        assert!(!line.contains('\n') && !line.contains("words"), "{line}");
        // Rejected before planning: a record all the same.
        let d = record(&cfg, &req, None, Some("invalid_json"), Some(400), 1001);
        assert_eq!(
            (d.outcome.as_str(), d.status, d.plan.len()),
            ("rejected", 400, 0)
        );
    }
}
