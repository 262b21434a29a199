//! The fleet exchange between every filter and the control plane: filters report
//! per-target outcomes, the control plane aggregates them across all Envoys and
//! answers with the targets the fleet has set aside (open circuits).
//!
//! Transport: each worker's planner root context POSTs JSON to
//! [`EXCHANGE_PATH`] on the control plane every `interval_ms` with
//! `dispatch_http_call` (see docs/architecture.md for why not a gRPC stream).

use serde::{Deserialize, Serialize};

/// Path of the exchange on the control plane's HTTP endpoint.
pub const EXCHANGE_PATH: &str = "/fleet/v1/exchange";

/// Where and how often a filter exchanges state (part of the filter config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Envoy cluster that reaches the control plane's HTTP endpoint.
    pub cluster: String,
    /// Milliseconds between exchanges.
    pub interval_ms: u64,
    /// Node id of the Envoy this config was sent to: the control plane stamps
    /// it from the node's xDS stream (the native module cannot read it, and
    /// proxy-wasm only as `xds.node.id`); the filter reports under it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

/// Largest report body the control plane reads (bytes); a report holds one
/// small entry per configured target.
pub const MAX_REPORT_BYTES: usize = 256 * 1024;

/// Most outcomes one report may list.
pub const MAX_OUTCOMES: usize = 1024;

/// Most attempts (successes, failures) one report may count per target: what
/// one Envoy can plausibly do in an interval, with room for the counts kept
/// while the control plane was away (at 250 ms, 400 000 attempts a second on
/// one target). Larger counts are clamped to it.
pub const MAX_ATTEMPTS_PER_REPORT: u64 = 100_000;

/// Longest time to response headers one successful attempt can add to a
/// report's latency sum (ms); larger sums are clamped to `ok` times it.
pub const MAX_LATENCY_MS_PER_ATTEMPT: u64 = 600_000;

/// Longest node id a report may carry (bytes).
pub const MAX_NODE_BYTES: usize = 256;

/// Outcomes of one target since the last report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `provider/model`.
    pub target: String,
    /// Attempts that succeeded.
    pub ok: u64,
    /// Attempts that failed in a way that counts (no answer, 5xx).
    pub failed: u64,
    /// Sum of the successful attempts' times to response headers (ms).
    #[serde(default)]
    pub latency_ms_sum: u64,
}

/// A filter's report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Reporting Envoy (node id).
    pub node: String,
    /// Per-target outcomes since the last report (omitted when none).
    pub outcomes: Vec<Outcome>,
}

/// A target the fleet has set aside, until a wall-clock time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    /// `provider/model`.
    pub target: String,
    /// Unix milliseconds.
    pub until_ms: u64,
}

/// A target's effective weight factor (0..=1), from its fleet-wide error rate
/// and latency; multiplies its configured weight in weighted routes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Weight {
    /// `provider/model`.
    pub target: String,
    /// Factor applied to the configured weight.
    pub factor: f64,
}

/// Bounds of adaptive weights (the `adaptive_weights` config section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveWeights {
    /// Lowest factor a target's weight can be scaled down to.
    pub min_factor: f64,
}

/// The control plane's answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Targets set aside now.
    pub open: Vec<Open>,
    /// Targets whose effective weight is below their configured weight.
    #[serde(default)]
    pub weights: Vec<Weight>,
}
