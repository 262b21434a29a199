//! What the filter records about each request for observers outside it: the
//! facts Envoy's tracer puts on spans, and the decision record Envoy's access
//! log writes as one JSON line per request. Both travel in filter state, the
//! one store both builds can write and Envoy's formatters can read
//! (`%FILTER_STATE(<key>:PLAIN)%`; proxy-wasm's keys read as `wasm.<key>`).
//! The control plane generates the listener's `tracing.custom_tags` and
//! decision-log access log from the constants here; docs/observability.md has
//! the schema.

use serde::{Deserialize, Serialize};

/// Filter state holding the request's [`Decision`] as one JSON object (no
/// newline). The planner writes it when the request is over (its log
/// callback: proxy-wasm's `on_log` and the native module's
/// `on_stream_complete` both run before Envoy's access logs).
pub const DECISION_STATE: &str = "sy_decision";

/// Largest decision record the planner writes (bytes): attempts are bounded by
/// `limits.max_attempts`, and no free text but ids and names goes in.
pub const MAX_DECISION_BYTES: usize = 16 * 1024;

/// Filter state naming the request's span, `<operation> <model>` as
/// OpenTelemetry's GenAI conventions name spans (`chat gpt-4o`, `embeddings
/// embed`; the model is the route alias or `provider/model` the client named).
/// The planner writes it when it plans (Envoy names the span when it ends,
/// from this key).
pub const SPAN_NAME_STATE: &str = "sy_t_name";

/// Span attributes of a request and the filter state each is read from, as
/// `(attribute, key)`. The planner writes these when the response ends (its
/// last response callback, `end_of_stream`): Envoy finishes the request's span
/// before the log callbacks run, so later writes miss it.
///
/// Envoy applies one list of custom tags to every span of a request; the
/// attempt spans show these too, as they stood when each attempt ended.
pub const REQUEST_SPAN_FACTS: &[(&str, &str)] = &[
    ("switchyard.route", "sy_t_route"),
    ("gen_ai.request.model", "sy_t_route"),
    ("switchyard.attempts", "sy_t_attempts"),
    ("switchyard.served.provider", "sy_t_provider"),
    ("gen_ai.provider.name", "sy_t_provider"),
    ("switchyard.served.model", "sy_t_model"),
    ("gen_ai.response.model", "sy_t_model"),
    ("switchyard.served.position", "sy_t_position"),
    ("switchyard.failure_classes", "sy_t_failures"),
    ("switchyard.hedge", "sy_t_hedge"),
    ("switchyard.cost_micros", "sy_t_cost_micros"),
    ("gen_ai.usage.input_tokens", "sy_t_input_tokens"),
    ("gen_ai.usage.output_tokens", "sy_t_output_tokens"),
    ("switchyard.caller", "sy_t_caller"),
];

/// Span attributes of an attempt, as `(attribute, key)`. The adapter writes
/// them for each attempt (overwriting the previous attempt's): target and key
/// in its request-headers callback, the result when the answer is classified.
/// Envoy finishes an attempt's span when the attempt ends, with the values
/// current then; an attempt that never got an answer (refused, reset, timed
/// out) shows Envoy's own `error` and `response_flags` tags instead of a
/// result.
pub const ATTEMPT_SPAN_FACTS: &[(&str, &str)] = &[
    ("switchyard.attempt.provider", "sy_t_attempt_provider"),
    ("switchyard.attempt.model", "sy_t_attempt_model"),
    ("switchyard.attempt.position", "sy_t_attempt_position"),
    ("switchyard.attempt.key", "sy_t_attempt_key"),
    ("switchyard.attempt.result", "sy_t_attempt_result"),
    ("switchyard.attempt.role", "sy_t_attempt_role"),
];

/// The decision record of one request (`v` 1). Only ids, names, numbers and
/// fixed words: no credential, no prompt or answer text, no provider message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Schema version (1).
    pub v: u32,
    /// When the request arrived (Unix ms).
    pub ts_ms: u64,
    /// The request id (`x-request-id`, as echoed to the client).
    pub request_id: String,
    /// The Envoy that served it (node id).
    pub node: String,
    /// The route alias the request named, or `_direct` for `provider/model`.
    pub route: String,
    /// `chat` or `embeddings`.
    pub endpoint: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Who called, when virtual keys are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<Caller>,
    /// The plan: `provider/model` of each slot, in order (empty when the
    /// request was rejected before planning).
    pub plan: Vec<String>,
    /// Targets the planner moved to the back of the plan, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved_back: Vec<MovedBack>,
    /// Every attempt, in the order they started.
    pub attempts: Vec<AttemptRecord>,
    /// `served`, `all_failed`, `rejected` or `cancelled` (the client left).
    pub outcome: String,
    /// Status sent to the client (0: none, the client left).
    pub status: u16,
    /// The error code of the gateway's own answer, when it rejected the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<String>,
    /// The attempt whose answer the client got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<Served>,
    /// Tokens the served answer reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Tokens>,
    /// Cost charged for the request, all billable attempts (millionths of the
    /// price unit; 0 without `prices:`).
    pub cost_micros: u64,
    /// Whether part of the cost is a prompt estimate (no usage reported).
    #[serde(default)]
    pub cost_estimated: bool,
    /// `none`, `fired` (a hedge started, the primary won) or `won` (the hedge's
    /// answer won).
    pub hedge: String,
    /// `spliced` or `failed` when a committed stream was continued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation: Option<String>,
    /// Request start to the end of the response (ms).
    pub duration_ms: u64,
}

/// The caller of a request (virtual keys).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The key's id (never the key).
    pub key: String,
    /// Its team, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

/// A target moved to the back of a plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedBack {
    /// `provider/model`.
    pub target: String,
    /// `cooling_down`, `circuit_open`, `fleet_open` or `unhealthy`.
    pub why: String,
}

/// One attempt of a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The plan slot it went to (1-based).
    pub position: u32,
    /// Provider name.
    pub provider: String,
    /// The provider's model.
    pub model: String,
    /// Index of the provider key used (0-based), when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u32>,
    /// The provider's status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `success`, a failure class (`unreachable`, `rate_limited`,
    /// `server_error`, `auth`, `model_unavailable`, `content_filter`,
    /// `bad_request`, `bad_response`) or `cancelled` (a hedge's loser, or the
    /// client left).
    pub result: String,
    /// Whether it was started as a hedge.
    #[serde(default)]
    pub hedge: bool,
    /// When it started, from the request's arrival (ms).
    pub start_ms: u64,
    /// Start to the provider's response headers (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_ms: Option<u64>,
    /// Start to the first content (ms; served attempts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<u64>,
    /// Start to its end (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// The attempt that served a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    /// Provider name.
    pub provider: String,
    /// The provider's model.
    pub model: String,
    /// Its plan slot (1 = primary).
    pub position: u32,
}

/// Token counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    /// Prompt tokens.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_filter_state_names_and_attributes_unique() {
        let all = REQUEST_SPAN_FACTS.iter().chain(ATTEMPT_SPAN_FACTS);
        let mut attrs: Vec<&str> = all.clone().map(|(a, _)| *a).collect();
        attrs.sort_unstable();
        let n = attrs.len();
        attrs.dedup();
        assert_eq!(attrs.len(), n, "an attribute listed twice");
        for (_, key) in all {
            assert!(
                key.starts_with("sy_t_")
                    && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            );
        }
    }

    #[test]
    fn a_record_is_one_json_line() {
        let d = Decision {
            v: 1,
            request_id: "r1".into(),
            route: "chat".into(),
            plan: vec!["a/m".into(), "b/n".into()],
            attempts: vec![AttemptRecord {
                position: 1,
                provider: "a".into(),
                model: "m".into(),
                result: "server_error".into(),
                status: Some(503),
                ..AttemptRecord::default()
            }],
            outcome: "served".into(),
            hedge: "none".into(),
            ..Decision::default()
        };
        let line = serde_json::to_string(&d).unwrap_or_default();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Decision>(&line).ok(), Some(d));
    }
}
