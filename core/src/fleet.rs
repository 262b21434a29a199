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

/// The gRPC service of the fleet stream (the pushed alternative to
/// [`EXCHANGE_PATH`], `proto/switchyard/fleet/v1/fleet.proto`).
pub const SERVICE: &str = "switchyard.fleet.v1.Fleet";

/// The method of the fleet stream.
pub const METHOD: &str = "Stream";

/// How often a filter sends a bare report on the fleet stream when it has no
/// news (each is answered); the control plane sends a bare state after 1.5 to
/// 2 heartbeats of silence. A filter that hears nothing for three heartbeats
/// (the control plane's, as its states say) reconnects.
pub const HEARTBEAT_MS: u64 = 5_000;

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

/// What a filter observed since its last report beyond [`Report`]'s circuit
/// counts, for `switchyard status`'s fleet-wide rates and for drills. Sent in
/// the same JSON object as the report ([`FullReport`]); every part may be
/// omitted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// Per-route fail-over and chain positions (configured routes, and
    /// `_direct`; at most [`MAX_ROUTES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteOutcome>,
    /// Per-target latency histograms (configured targets; at most
    /// [`MAX_OUTCOMES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<TargetLatency>,
    /// What the drill in force did, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillOutcome>,
}

/// A report as a filter sends it: [`Report`]'s fields and [`Observed`]'s, in
/// one JSON object (a filter that sends a plain [`Report`] is read as having
/// observed nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullReport {
    /// Circuit counts, node, governance.
    #[serde(flatten)]
    pub report: Report,
    /// Rates and drills.
    #[serde(flatten)]
    pub observed: Observed,
}

/// One target's successful attempts' times to response headers since the last
/// report, per bucket of [`LATENCY_BUCKETS_MS`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetLatency {
    /// `provider/model`.
    pub target: String,
    /// Entry `i` counts times `<= LATENCY_BUCKETS_MS[i]` (and above the bucket
    /// before); the entry after the last bound counts the rest. At most
    /// `LATENCY_BUCKETS_MS.len() + 1` entries; trailing zeros may be left out.
    pub buckets: Vec<u64>,
}

/// Upper bounds (ms) of the latency buckets a report counts per target
/// ([`TargetLatency`]): fleet-wide percentiles per target come from their
/// sums.
pub const LATENCY_BUCKETS_MS: [u64; 16] = [
    10, 25, 50, 100, 150, 250, 400, 600, 1000, 1500, 2500, 4000, 6000, 10_000, 20_000, 60_000,
];

/// The bucket of [`LATENCY_BUCKETS_MS`] a time falls in (the last index,
/// `LATENCY_BUCKETS_MS.len()`, for longer times).
pub fn latency_bucket(ms: u64) -> usize {
    LATENCY_BUCKETS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(LATENCY_BUCKETS_MS.len())
}

/// What the requests of one route did since the last report. Only configured
/// routes are counted, and `_direct` for requests naming `provider/model`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteOutcome {
    /// Route alias, or `_direct`.
    pub route: String,
    /// Planned requests that ended (served, all failed, or cancelled).
    pub requests: u64,
    /// Requests served per plan slot: entry `i` counts those slot `i + 1`
    /// served (at most [`MAX_POSITIONS`] entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served: Vec<u64>,
    /// Requests whose every attempt failed.
    #[serde(default)]
    pub all_failed: u64,
    /// Attempts that failed and moved the request to another target, per
    /// failure class (`FailureClass::as_str`; each class once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<ClassCount>,
}

/// A count per failure class.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCount {
    /// `unreachable`, `rate_limited`, `server_error`… (`FailureClass::as_str`).
    pub class: String,
    /// How many.
    pub n: u64,
}

/// Most plan slots a report counts per route (longer plans are counted in the
/// last entry).
pub const MAX_POSITIONS: usize = 16;

/// Most routes one report may list.
pub const MAX_ROUTES: usize = 1024;

/// A fail-over drill's instruction to every filter: fail `share_permille` ‰ of
/// the attempts to `target` locally, before sending, as `class`, until
/// `until_ms`. The filter draws per attempt, counts the attempt as that
/// failure (its circuits, fleet counts and fail-over follow as for a real one)
/// and reports what the drill did ([`DrillOutcome`]). It stops at `until_ms`
/// on its own clock even if the control plane is gone, and as soon as an
/// exchange answer no longer lists the fault (an aborted drill).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// The drill's id (reports name it).
    pub id: String,
    /// `provider/model`, a configured target.
    pub target: String,
    /// Share of its attempts to fail, in ‰ (1..=1000).
    pub share_permille: u32,
    /// `unreachable` or `server_error`.
    pub class: crate::failure::FailureClass,
    /// Unix ms after which the fault no longer applies.
    pub until_ms: u64,
}

/// What a drill did on one filter since the last report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillOutcome {
    /// The drill's id ([`Fault::id`]).
    pub id: String,
    /// Attempts the fault failed.
    pub injected: u64,
    /// Requests with at least one attempt the fault failed, that ended.
    pub affected: u64,
    /// Of those, the requests served all the same (by a fallback).
    pub rescued: u64,
    /// Sum over the rescued requests of the time from the request's arrival to
    /// the response headers sent to the client (ms).
    #[serde(default)]
    pub rescued_ms_sum: u64,
}

/// A filter's report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Reporting Envoy (node id).
    pub node: String,
    /// Per-target outcomes since the last report (omitted when none).
    pub outcomes: Vec<Outcome>,
    /// Governance: per-key and per-team use, refusals, demand (when on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gov: Option<crate::governance::GovReport>,
    /// Version of the provider credentials the filter holds (empty: none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credentials: String,
}

/// Provider credentials, delivered over the authenticated fleet exchange rather
/// than in the filter config (which Envoy's `/config_dump` shows).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Changes whenever any secret does.
    pub version: String,
    /// Per provider name.
    pub providers: std::collections::BTreeMap<String, Secrets>,
}

/// One provider's secrets.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets {
    /// API keys (or the bearer token), tried in turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<String>,
    /// AWS credentials for SigV4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<crate::config::AwsAuth>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets themselves (logs, panics).
        f.debug_struct("Credentials")
            .field("version", &self.version)
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("api_keys", &self.api_keys.len())
            .field("aws", &self.aws.is_some())
            .finish()
    }
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
    /// Governance: the key table (when changed) and allowance lent to this Envoy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gov: Option<crate::governance::GovState>,
    /// Faults a fail-over drill asks filters to inject (at most one now).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    /// Provider credentials, when the filter's version differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
}

/// The fleet's view of targets for one Envoy: what is set aside and what
/// weighs less.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    /// Targets set aside now.
    pub open: Vec<Open>,
    /// Targets whose effective weight is below their configured weight.
    #[serde(default)]
    pub weights: Vec<Weight>,
}

/// One message of the control plane on the fleet stream: the parts of the
/// state that changed for this Envoy (`None`: unchanged), stamped with the
/// control-plane process (`epoch`) and a version that grows with every message
/// of that process. A message with no part is a heartbeat. The same parts as
/// [`State`], the HTTP exchange's answer, which always carries the targets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Push {
    /// The control-plane process (random per start).
    pub epoch: String,
    /// Grows with every message that process sends.
    pub version: u64,
    /// The control plane's heartbeat interval (ms).
    pub heartbeat_ms: u64,
    /// The fleet's view of targets, when it changed: replaces the last.
    pub targets: Option<Targets>,
    /// Faults a fail-over drill asks filters to inject (at most one now), when
    /// they changed: replaces the last.
    pub faults: Option<Vec<Fault>>,
    /// Governance: the key table (when the filter's copy is stale) and
    /// allowance lent to this Envoy.
    pub gov: Option<crate::governance::GovState>,
    /// Provider credentials, when the filter's version differs.
    pub credentials: Option<Credentials>,
}

impl Push {
    /// Whether this is a heartbeat (nothing changed).
    pub fn is_heartbeat(&self) -> bool {
        self.targets.is_none()
            && self.faults.is_none()
            && self.gov.is_none()
            && self.credentials.is_none()
    }
}

/// Whether a state stamped `(epoch, version)` may be applied after the one
/// stamped `applied`: another control-plane process (or none applied yet), or
/// a newer version of the same one. Anything else is stale.
pub fn is_newer(epoch: &str, version: u64, applied: Option<(&str, u64)>) -> bool {
    match applied {
        None => true,
        Some((e, v)) => e != epoch || version > v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_newer_states_apply() {
        assert!(is_newer("a", 1, None));
        assert!(is_newer("a", 2, Some(("a", 1))));
        assert!(!is_newer("a", 1, Some(("a", 1))));
        assert!(!is_newer("a", 1, Some(("a", 2))));
        // A restarted control plane starts its versions again.
        assert!(is_newer("b", 1, Some(("a", 9))));
    }

    #[test]
    fn a_full_report_is_one_object_and_a_plain_one_reads_as_full() {
        let full = FullReport {
            report: Report {
                node: "n".into(),
                outcomes: vec![Outcome {
                    target: "a/m".into(),
                    ok: 2,
                    ..Outcome::default()
                }],
                ..Report::default()
            },
            observed: Observed {
                routes: vec![RouteOutcome {
                    route: "chat".into(),
                    requests: 3,
                    served: vec![2, 1],
                    all_failed: 0,
                    fallbacks: vec![ClassCount {
                        class: "server_error".into(),
                        n: 1,
                    }],
                }],
                latency: vec![TargetLatency {
                    target: "a/m".into(),
                    buckets: vec![0, 2],
                }],
                drill: None,
            },
        };
        let json = serde_json::to_value(&full).unwrap_or_default();
        assert_eq!(json["node"], "n");
        assert_eq!(json["routes"][0]["served"][1], 1);
        assert_eq!(
            serde_json::from_value::<FullReport>(json).ok(),
            Some(full.clone())
        );
        let plain = serde_json::to_vec(&full.report).unwrap_or_default();
        let read: Option<FullReport> = serde_json::from_slice(&plain).ok();
        assert_eq!(read.map(|r| r.observed), Some(Observed::default()));
    }

    #[test]
    fn latency_buckets() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(10), 0);
        assert_eq!(latency_bucket(11), 1);
        assert_eq!(latency_bucket(60_000), LATENCY_BUCKETS_MS.len() - 1);
        assert_eq!(latency_bucket(60_001), LATENCY_BUCKETS_MS.len());
    }
}
