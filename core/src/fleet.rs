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
}

/// Outcomes of one target since the last report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `provider/model`.
    pub target: String,
    /// Attempts that succeeded.
    pub ok: u64,
    /// Attempts that failed in a way that counts (no answer, 5xx).
    pub failed: u64,
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

/// The control plane's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Targets set aside now.
    pub open: Vec<Open>,
}
