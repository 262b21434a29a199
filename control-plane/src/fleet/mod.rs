//! Fleet-wide target state: outcomes reported by every filter of every Envoy are
//! aggregated per target with the circuit-breaker state machine
//! (`switchyard_core::circuit`); targets whose fleet circuit is open are sent back
//! to every filter, which then leaves them out of plans.
//!
//! Reports arrive on the status endpoint (mutual TLS when `serve` runs with
//! certificates, else unauthenticated), so each is [`check`]ed before it
//! touches the aggregate: bounded size and number of outcomes, a node the
//! client certificate names (with TLS) and this control plane serves over xDS, configured targets only (others are
//! ignored), counts and latency sums clamped to what one Envoy can do in an
//! interval. A report's counts are applied to a target's circuit at once
//! ([`circuit::State::record`]): the lock is held for time proportional to the
//! number of targets, never to the counts.
//!
//! Two transports carry the same exchange: the HTTP POST on the status port
//! (each filter worker polls) and the gRPC stream on the xDS port ([`stream`],
//! the control plane pushes on change). Both go through [`check`] /
//! [`check_report`] and [`answer`]: one copy of the rules.

pub mod answer;
pub mod stream;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use switchyard_core::circuit::{self, Settings, Transition};
use switchyard_core::fleet::{
    AdaptiveWeights, FullReport, LATENCY_BUCKETS_MS, MAX_ATTEMPTS_PER_REPORT,
    MAX_LATENCY_MS_PER_ATTEMPT, MAX_NODE_BYTES, MAX_OUTCOMES, MAX_POSITIONS, MAX_REPORT_BYTES,
    MAX_ROUTES, Observed, Open, Outcome, Report, State, Targets, Weight,
};
use switchyard_core::governance::{MAX_DECISION_BYTES, MAX_DECISIONS};

/// Why a report was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The body is larger than [`MAX_REPORT_BYTES`].
    #[error("report larger than {MAX_REPORT_BYTES} bytes")]
    TooLarge,
    /// The body is not a report (JSON shape, types, negative or fractional counts).
    #[error("not a fleet report: {0}")]
    Malformed(String),
    /// More outcomes than [`MAX_OUTCOMES`].
    #[error("{0} outcomes, at most {MAX_OUTCOMES} expected")]
    TooManyOutcomes(usize),
    /// The same target twice in one report.
    #[error("target `{0}` is listed twice")]
    Duplicate(String),
    /// More governance decisions than
    /// [`switchyard_core::governance::MAX_DECISIONS`].
    #[error("{0} decisions, at most {MAX_DECISIONS} expected")]
    TooManyDecisions(usize),
    /// An empty or over-long node id.
    #[error("node id: expected 1 to {MAX_NODE_BYTES} bytes")]
    BadNode,
    /// A node that has no xDS stream to this control plane (yet: a filter
    /// reporting right after a restart of the control plane keeps its counts
    /// and reports again).
    #[error("node `{0}` is not served by this control plane")]
    UnknownNode(String),
    /// With TLS on the status port: the client certificate is missing or
    /// does not name the report's node (docs/security.md).
    #[error("{0}")]
    NotYourNode(String),
}

impl Refused {
    /// The gRPC status that ends a fleet stream whose report was refused.
    pub fn grpc_status(&self) -> tonic::Status {
        let m = self.to_string();
        match self {
            Refused::TooLarge => tonic::Status::resource_exhausted(m),
            Refused::NotYourNode(_) => tonic::Status::permission_denied(m),
            Refused::UnknownNode(_) => tonic::Status::failed_precondition(m),
            _ => tonic::Status::invalid_argument(m),
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Refused::TooLarge => 413,
            Refused::UnknownNode(_) | Refused::NotYourNode(_) => 403,
            _ => 400,
        }
    }
}

/// A report within bounds: from a node served over xDS, outcomes of configured
/// targets only, counts clamped; and what it observed, within bounds. Made by
/// [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked(Report, Observed);

impl Checked {
    /// The reporting node.
    pub fn node(&self) -> &str {
        &self.0.node
    }

    /// The outcomes that count.
    pub fn outcomes(&self) -> &[Outcome] {
        &self.0.outcomes
    }

    /// The version of the provider credentials the filter holds.
    pub fn credentials(&self) -> &str {
        &self.0.credentials
    }

    /// The governance part, bounded.
    pub fn gov(&self) -> Option<&switchyard_core::governance::GovReport> {
        self.0.gov.as_ref()
    }

    /// Rates and drill counts (`switchyard_core::fleet::Observed`), bounded:
    /// each route and target once, at most [`MAX_ROUTES`] routes and
    /// [`MAX_OUTCOMES`] latency entries, [`MAX_POSITIONS`] positions and the
    /// latency buckets there are. Counts are clamped where they are summed.
    pub fn observed(&self) -> &Observed {
        &self.1
    }
}

/// Bounds what a report observed (see [`Checked::observed`]).
fn check_observed(o: Observed) -> Result<Observed, Refused> {
    if o.routes.len() > MAX_ROUTES || o.latency.len() > MAX_OUTCOMES {
        return Err(Refused::TooManyOutcomes(
            o.routes.len().max(o.latency.len()),
        ));
    }
    let mut seen = HashSet::new();
    for r in &o.routes {
        if !seen.insert(r.route.as_str()) {
            return Err(Refused::Duplicate(r.route.clone()));
        }
        let mut classes = HashSet::new();
        if r.served.len() > MAX_POSITIONS
            || r.fallbacks.len() > switchyard_core::failure::FailureClass::ALL.len()
            || !r.fallbacks.iter().all(|c| classes.insert(c.class.as_str()))
        {
            return Err(Refused::Malformed(format!(
                "routes: `{}`: at most {MAX_POSITIONS} positions and each failure class once",
                r.route
            )));
        }
    }
    let mut seen = HashSet::new();
    for l in &o.latency {
        if !seen.insert(l.target.as_str()) {
            return Err(Refused::Duplicate(l.target.clone()));
        }
        if l.buckets.len() > LATENCY_BUCKETS_MS.len() + 1 {
            return Err(Refused::Malformed(format!(
                "latency: `{}`: at most {} buckets",
                l.target,
                LATENCY_BUCKETS_MS.len() + 1
            )));
        }
    }
    if o.drill.as_ref().is_some_and(|d| d.id.len() > 64) {
        return Err(Refused::Malformed("drill.id: at most 64 bytes".into()));
    }
    Ok(o)
}

// A report's decisions for the audit log leave half the body for the rest.
const _: () = assert!(2 * MAX_DECISION_BYTES <= MAX_REPORT_BYTES);

/// Largest amount one report may carry per meter (tokens, micro-USD): what an
/// Envoy can plausibly use or ask for in an interval, with room to spare.
const MAX_METER_AMOUNT: u64 = 1 << 40;

/// Bounds the governance part of a report: a boot id of 1-64 bytes, at most
/// [`switchyard_core::governance::MAX_SUBJECTS`] subjects each listed once,
/// amounts clamped; at most [`MAX_DECISIONS`] decisions, each within its
/// bounds and consistent (a known reason, a request id of at most
/// `MAX_REQUEST_ID_BYTES` of visible ASCII, key ids and teams that are names,
/// nothing charged for a refusal: `Decision::problem`), their charges clamped.
fn check_gov(
    g: Option<switchyard_core::governance::GovReport>,
) -> Result<Option<switchyard_core::governance::GovReport>, Refused> {
    let Some(mut g) = g else {
        return Ok(None);
    };
    if g.boot.is_empty() || g.boot.len() > 64 {
        return Err(Refused::Malformed(
            "gov.boot: expected 1 to 64 bytes".into(),
        ));
    }
    if g.subjects.len() > switchyard_core::governance::MAX_SUBJECTS {
        return Err(Refused::TooManyOutcomes(g.subjects.len()));
    }
    let mut seen = HashSet::new();
    let clamp = |v: u64| v.min(MAX_METER_AMOUNT);
    for s in &mut g.subjects {
        if !seen.insert(s.s.clone()) {
            return Err(Refused::Duplicate(s.s.clone()));
        }
        for d in &mut s.dims {
            d.credit = clamp(d.credit);
            d.returned = clamp(d.returned);
            d.want = clamp(d.want);
            let m = MAX_METER_AMOUNT as i64;
            d.used = d.used.clamp(-m, m);
            d.held = d.held.clamp(-m, m);
        }
    }
    if g.decisions.len() > MAX_DECISIONS {
        return Err(Refused::TooManyDecisions(g.decisions.len()));
    }
    for (i, d) in g.decisions.iter_mut().enumerate() {
        if let Some(p) = d.problem() {
            return Err(Refused::Malformed(format!("gov.decisions[{i}]: {p}")));
        }
        d.micros = clamp(d.micros);
        d.tokens = clamp(d.tokens);
    }
    Ok(Some(g))
}

/// Parses and bounds a report body ([`check_report`]). `identity` tells whether the caller may
/// report as a node id (with TLS: whether its client certificate names it),
/// `known` whether a node id has an xDS stream to this control plane;
/// `targets` are the configured targets
/// (`provider/model` of every route's chain): outcomes of other targets are
/// dropped, since a filter only counts configured targets and anything else
/// would grow the aggregate without bound.
pub fn check(
    body: &[u8],
    identity: impl Fn(&str) -> Result<(), String>,
    known: impl Fn(&str) -> bool,
    targets: &HashSet<String>,
) -> Result<Checked, Refused> {
    if body.len() > MAX_REPORT_BYTES {
        return Err(Refused::TooLarge);
    }
    let full: FullReport =
        serde_json::from_slice(body).map_err(|e| Refused::Malformed(e.to_string()))?;
    check_report(full, identity, known, targets)
}

/// Bounds a parsed report (from the HTTP body or the gRPC message, each at
/// most [`MAX_REPORT_BYTES`]); the rest as [`check`].
pub fn check_report(
    full: FullReport,
    identity: impl Fn(&str) -> Result<(), String>,
    known: impl Fn(&str) -> bool,
    targets: &HashSet<String>,
) -> Result<Checked, Refused> {
    let FullReport { report, observed } = full;
    if report.outcomes.len() > MAX_OUTCOMES {
        return Err(Refused::TooManyOutcomes(report.outcomes.len()));
    }
    if report.node.is_empty() || report.node.len() > MAX_NODE_BYTES {
        return Err(Refused::BadNode);
    }
    identity(&report.node).map_err(Refused::NotYourNode)?;
    if !known(&report.node) {
        return Err(Refused::UnknownNode(report.node));
    }
    let mut seen = HashSet::new();
    let mut outcomes = Vec::new();
    for o in report.outcomes {
        if !seen.insert(o.target.clone()) {
            return Err(Refused::Duplicate(o.target));
        }
        if !targets.contains(&o.target) {
            continue;
        }
        let ok = o.ok.min(MAX_ATTEMPTS_PER_REPORT);
        outcomes.push(Outcome {
            ok,
            failed: o.failed.min(MAX_ATTEMPTS_PER_REPORT),
            latency_ms_sum: o.latency_ms_sum.min(ok * MAX_LATENCY_MS_PER_ATTEMPT),
            target: o.target,
        });
    }
    // A version the control plane made (a hex digest): anything longer is no
    // version of ours, and the filter gets the current credentials again.
    let mut credentials = report.credentials;
    if credentials.len() > 64 {
        credentials.clear();
    }
    Ok(Checked(
        Report {
            node: report.node,
            outcomes,
            gov: check_gov(report.gov)?,
            credentials,
        },
        check_observed(observed)?,
    ))
}

/// One target as the control plane sees it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TargetView {
    /// Successful attempts reported since start.
    pub ok: u64,
    /// Failed attempts reported since start.
    pub failed: u64,
    /// Open (left out of plans fleet-wide) until this Unix time in ms; 0: closed.
    pub open_until_ms: u64,
    /// Trips since the last success.
    pub trips: u32,
    /// Envoys that reported it.
    pub reporters: BTreeSet<String>,
    /// Share of attempts that succeeded, smoothed over reports (EWMA, 0..=1).
    pub success_rate: f64,
    /// Time to response headers of successful attempts, smoothed (ms).
    pub latency_ms: f64,
    /// Effective weight factor sent to the filters (1: configured weight).
    pub weight: f64,
}

#[derive(Debug)]
struct Entry {
    view: TargetView,
    state: circuit::State,
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            view: TargetView {
                success_rate: 1.0,
                weight: 1.0,
                ..TargetView::default()
            },
            state: circuit::State::default(),
        }
    }
}

/// Weight of the newest report in the smoothed success rate and latency.
const EWMA_ALPHA: f64 = 0.3;

/// The aggregate, shared by the HTTP handlers.
#[derive(Clone, Debug, Default)]
pub struct Fleet(Arc<Mutex<HashMap<String, Entry>>>);

impl Fleet {
    /// Takes one filter's checked report and answers with the targets open
    /// fleet-wide ([`Fleet::record`] then [`Fleet::targets`]).
    pub fn exchange(
        &self,
        report: &Checked,
        targets: &HashSet<String>,
        settings: Option<&Settings>,
        adaptive: Option<&AdaptiveWeights>,
        now_ms: u64,
    ) -> State {
        self.record(report, targets, settings, now_ms);
        let Targets { open, weights } = self.targets(targets, adaptive, now_ms);
        State {
            open,
            weights,
            gov: None,
            faults: Vec::new(),
            credentials: None,
        }
    }

    /// Takes one filter's checked report into the aggregate. Entries of
    /// targets no longer configured are dropped.
    pub fn record(
        &self,
        report: &Checked,
        targets: &HashSet<String>,
        settings: Option<&Settings>,
        now_ms: u64,
    ) {
        let mut opened = Vec::new();
        {
            let Ok(mut m) = self.0.lock() else {
                return;
            };
            m.retain(|t, _| targets.contains(t));
            for o in report.outcomes() {
                let e = m.entry(o.target.clone()).or_default();
                let n = o.ok.saturating_add(o.failed);
                if n > 0 {
                    let rate = o.ok as f64 / n as f64;
                    e.view.success_rate =
                        (1.0 - EWMA_ALPHA) * e.view.success_rate + EWMA_ALPHA * rate;
                }
                if o.ok > 0 && o.latency_ms_sum > 0 {
                    let mean = o.latency_ms_sum as f64 / o.ok as f64;
                    e.view.latency_ms = if e.view.latency_ms == 0.0 {
                        mean
                    } else {
                        (1.0 - EWMA_ALPHA) * e.view.latency_ms + EWMA_ALPHA * mean
                    };
                }
                let Some(settings) = settings else {
                    continue;
                };
                e.view.ok = e.view.ok.saturating_add(o.ok);
                e.view.failed = e.view.failed.saturating_add(o.failed);
                if !e.view.reporters.contains(report.node()) {
                    e.view.reporters.insert(report.node().to_string());
                }
                // Within one report, successes are taken to come before failures:
                // the failures are the news a circuit must not miss.
                let (next, transition) = e.state.record(settings, now_ms, o.ok, o.failed);
                e.state = next;
                if transition == Some(Transition::Opened) {
                    opened.push((o.target.clone(), next.open_until));
                }
                e.view.open_until_ms = e.state.open_until;
                e.view.trips = e.state.trips;
            }
        }
        for (target, until) in opened {
            tracing::warn!(target_model = %target, reporter = %report.node(), "fleet circuit opened until {until}");
        }
    }

    /// What every filter should know of the targets now: those open
    /// fleet-wide (sorted), and effective weights (with `adaptive`). Entries
    /// of targets no longer configured are dropped.
    pub fn targets(
        &self,
        targets: &HashSet<String>,
        adaptive: Option<&AdaptiveWeights>,
        now_ms: u64,
    ) -> Targets {
        let Ok(mut m) = self.0.lock() else {
            return Targets::default();
        };
        m.retain(|t, _| targets.contains(t));
        let mut open: Vec<Open> = m
            .iter()
            .filter(|(_, e)| e.state.open_until > now_ms)
            .map(|(t, e)| Open {
                target: t.clone(),
                until_ms: e.state.open_until,
            })
            .collect();
        open.sort_by(|a, b| a.target.cmp(&b.target));
        let mut weights = match adaptive {
            Some(a) => effective_weights(&mut m, a),
            None => Vec::new(),
        };
        weights.sort_by(|a, b| a.target.cmp(&b.target));
        Targets { open, weights }
    }

    /// Every target's view.
    pub fn view(&self) -> BTreeMap<String, TargetView> {
        self.0
            .lock()
            .map(|m| m.iter().map(|(k, e)| (k.clone(), e.view.clone())).collect())
            .unwrap_or_default()
    }
}

/// Effective weight factor per target: its smoothed success rate, times a
/// latency penalty when it is more than twice as slow as the fastest target,
/// bounded below by `min_factor`.
fn effective_weights(m: &mut HashMap<String, Entry>, a: &AdaptiveWeights) -> Vec<Weight> {
    let fastest = m
        .values()
        .map(|e| e.view.latency_ms)
        .filter(|l| *l > 0.0)
        .fold(f64::INFINITY, f64::min);
    let mut out = Vec::new();
    for (t, e) in m.iter_mut() {
        let latency = if fastest.is_finite() && e.view.latency_ms > 2.0 * fastest {
            2.0 * fastest / e.view.latency_ms
        } else {
            1.0
        };
        let factor = (e.view.success_rate * latency).clamp(a.min_factor.clamp(0.0, 1.0), 1.0);
        e.view.weight = factor;
        if factor < 0.999 {
            out.push(Weight {
                target: t.clone(),
                factor,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Settings = Settings {
        consecutive_failures: 3,
        base_open_ms: 1000,
        max_open_ms: 8000,
        failure_rate_percent: None,
        window_ms: 10_000,
        min_requests: 20,
    };

    fn targets() -> HashSet<String> {
        ["a/m", "bad/m", "fast/m", "slow/m"]
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn report(node: &str, target: &str, ok: u64, failed: u64, latency_ms_sum: u64) -> Checked {
        Checked(
            Report {
                gov: None,
                credentials: String::new(),
                node: node.into(),
                outcomes: vec![Outcome {
                    target: target.into(),
                    ok,
                    failed,
                    latency_ms_sum,
                }],
            },
            Observed::default(),
        )
    }

    fn empty(node: &str) -> Checked {
        Checked(
            Report {
                node: node.into(),
                outcomes: vec![],
                gov: None,
                credentials: String::new(),
            },
            Observed::default(),
        )
    }

    #[test]
    fn failures_from_several_envoys_open_the_circuit_for_all() {
        let (fleet, t) = (Fleet::default(), targets());
        assert!(
            fleet
                .exchange(&report("e1", "a/m", 0, 2, 0), &t, Some(&S), None, 10)
                .open
                .is_empty()
        );
        let state = fleet.exchange(&report("e2", "a/m", 0, 1, 0), &t, Some(&S), None, 20);
        assert_eq!(
            state.open,
            vec![Open {
                target: "a/m".into(),
                until_ms: 1020
            }]
        );
        // Any Envoy asking, even without outcomes, learns it.
        assert_eq!(
            fleet
                .exchange(&empty("e3"), &t, Some(&S), None, 30)
                .open
                .len(),
            1
        );
        assert!(
            fleet
                .exchange(&empty("e3"), &t, Some(&S), None, 1020)
                .open
                .is_empty(),
            "expired"
        );
        assert_eq!(fleet.view()["a/m"].reporters.len(), 2);
        // A success closes it again.
        fleet.exchange(&report("e1", "a/m", 1, 0, 5), &t, Some(&S), None, 1100);
        assert_eq!(fleet.view()["a/m"].open_until_ms, 0);
    }

    #[test]
    fn errors_and_slowness_lower_effective_weights_within_bounds() {
        let (fleet, t) = (Fleet::default(), targets());
        let big = Settings {
            consecutive_failures: 1000,
            ..S
        };
        let a = AdaptiveWeights { min_factor: 0.2 };
        for _ in 0..10 {
            fleet.exchange(
                &report("e1", "bad/m", 1, 9, 100),
                &t,
                Some(&big),
                Some(&a),
                0,
            );
            fleet.exchange(
                &report("e1", "fast/m", 10, 0, 1000),
                &t,
                Some(&big),
                Some(&a),
                0,
            );
            fleet.exchange(
                &report("e1", "slow/m", 10, 0, 8000),
                &t,
                Some(&big),
                Some(&a),
                0,
            );
        }
        let state = fleet.exchange(&empty("e1"), &t, Some(&big), Some(&a), 0);
        let w = |t: &str| {
            state
                .weights
                .iter()
                .find(|w| w.target == t)
                .map_or(1.0, |w| w.factor)
        };
        assert_eq!(w("fast/m"), 1.0);
        assert!(
            (w("slow/m") - 0.25).abs() < 0.01,
            "8x slower than the fastest: {}",
            w("slow/m")
        );
        assert_eq!(w("bad/m"), 0.2, "bounded below by min_factor");
        // Recovery: good reports bring the weight back.
        for _ in 0..20 {
            fleet.exchange(
                &report("e1", "bad/m", 10, 0, 100),
                &t,
                Some(&big),
                Some(&a),
                0,
            );
        }
        let state = fleet.exchange(&empty("e1"), &t, Some(&big), Some(&a), 0);
        assert!(
            state.weights.iter().all(|w| w.target != "bad/m"),
            "{state:?}"
        );
    }

    fn open(_: &str) -> Result<(), String> {
        Ok(())
    }

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn reports_are_bounded_before_they_count() {
        let t = targets();
        let known = |n: &str| n == "e1";
        let outcome = |target: &str, ok: u64, failed: u64, latency: u64| serde_json::json!({"target": target, "ok": ok, "failed": failed, "latency_ms_sum": latency});
        // Counts clamped, unknown targets dropped.
        let c = check(
            &body(serde_json::json!({"node": "e1", "outcomes": [
                outcome("a/m", u64::MAX, 600_000_000, u64::MAX),
                outcome("evil/made-up", 0, 5, 0),
            ]})),
            open,
            known,
            &t,
        )
        .unwrap();
        assert_eq!(
            c.outcomes(),
            &[Outcome {
                target: "a/m".into(),
                ok: MAX_ATTEMPTS_PER_REPORT,
                failed: MAX_ATTEMPTS_PER_REPORT,
                latency_ms_sum: MAX_ATTEMPTS_PER_REPORT * MAX_LATENCY_MS_PER_ATTEMPT,
            }]
        );
        let refused = |v: serde_json::Value| check(&body(v), open, known, &t).unwrap_err();
        assert!(matches!(
            refused(serde_json::json!({"node": "intruder", "outcomes": []})),
            Refused::UnknownNode(n) if n == "intruder"
        ));
        assert!(matches!(
            refused(serde_json::json!({"node": "", "outcomes": []})),
            Refused::BadNode
        ));
        assert!(matches!(
            refused(serde_json::json!({"node": "e1", "outcomes": [outcome("a/m", 1, 0, 0), outcome("a/m", 0, 9, 0)]})),
            Refused::Duplicate(t) if t == "a/m"
        ));
        assert!(matches!(
            refused(
                serde_json::json!({"node": "e1", "outcomes": [{"target": "a/m", "ok": -1, "failed": 0}]})
            ),
            Refused::Malformed(_)
        ));
        let many: Vec<_> = (0..=MAX_OUTCOMES)
            .map(|i| outcome(&format!("p/m{i}"), 1, 0, 0))
            .collect();
        let e = refused(serde_json::json!({"node": "e1", "outcomes": many}));
        assert!(
            matches!(e, Refused::TooManyOutcomes(n) if n == MAX_OUTCOMES + 1),
            "{e}"
        );
        let big = vec![b' '; MAX_REPORT_BYTES + 1];
        assert!(matches!(
            check(&big, open, known, &t).unwrap_err(),
            Refused::TooLarge
        ));
        assert_eq!(Refused::TooLarge.status(), 413);
        assert_eq!(Refused::UnknownNode("x".into()).status(), 403);
        // A certificate that names another node is refused before anything counts.
        let e = check(
            &body(serde_json::json!({"node": "e1", "outcomes": []})),
            |n: &str| Err(format!("not {n}")),
            known,
            &t,
        )
        .unwrap_err();
        assert!(
            matches!(e, Refused::NotYourNode(ref m) if m == "not e1"),
            "{e}"
        );
        assert_eq!(e.status(), 403);
    }

    #[test]
    fn a_huge_report_is_applied_at_once() {
        let (fleet, t) = (Fleet::default(), targets());
        let rate = Settings {
            failure_rate_percent: Some(50),
            consecutive_failures: u32::MAX,
            ..S
        };
        let started = std::time::Instant::now();
        let raw = report("e1", "a/m", u64::MAX, u64::MAX, u64::MAX);
        // Through `check`, as the endpoint does.
        let c = check(&serde_json::to_vec(&raw.0).unwrap(), open, |_| true, &t).unwrap();
        let state = fleet.exchange(&c, &t, Some(&rate), None, 10);
        assert_eq!(state.open.len(), 1, "half failed: open");
        // Even unclamped, the state machine takes the counts at once.
        fleet.exchange(&raw, &t, Some(&rate), None, 20);
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert_eq!(fleet.view()["a/m"].ok, u64::MAX, "totals saturate");
    }

    #[test]
    fn targets_dropped_from_the_config_are_forgotten() {
        let (fleet, t) = (Fleet::default(), targets());
        fleet.exchange(&report("e1", "a/m", 0, 3, 0), &t, Some(&S), None, 10);
        assert_eq!(fleet.view().len(), 1);
        let state = fleet.exchange(&empty("e1"), &HashSet::new(), Some(&S), None, 20);
        assert!(state.open.is_empty() && fleet.view().is_empty());
    }

    #[test]
    fn what_a_report_observed_is_bounded() {
        let t = targets();
        let body = |observed: &str| {
            format!(r#"{{"node":"n","outcomes":[{{"target":"a/m","ok":1,"failed":0}}]{observed}}}"#)
        };
        let ok = check(
            body(r#","routes":[{"route":"chat","requests":3,"served":[2,1],"fallbacks":[{"class":"server_error","n":1}]}],"latency":[{"target":"a/m","buckets":[0,1]}],"drill":{"id":"d","injected":1,"affected":1,"rescued":1}"#).as_bytes(),
            open,
            |_| true,
            &t,
        )
        .unwrap();
        assert_eq!(ok.observed().routes[0].served, vec![2, 1]);
        assert_eq!(ok.observed().drill.as_ref().map(|d| d.rescued), Some(1));
        // A plain report observed nothing.
        let plain = check(body("").as_bytes(), open, |_| true, &t).unwrap();
        assert_eq!(plain.observed(), &Observed::default());
        for bad in [
            r#","routes":[{"route":"chat","requests":1},{"route":"chat","requests":1}]"#,
            r#","routes":[{"route":"chat","requests":1,"served":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}]"#,
            r#","routes":[{"route":"chat","requests":1,"fallbacks":[{"class":"auth","n":1},{"class":"auth","n":1}]}]"#,
            r#","latency":[{"target":"a/m","buckets":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1]}]"#,
        ] {
            assert!(
                matches!(
                    check(body(bad).as_bytes(), open, |_| true, &t),
                    Err(Refused::Duplicate(_) | Refused::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn governance_decisions_are_checked_before_they_are_recorded() {
        use switchyard_core::governance::{MAX_REQUEST_ID_BYTES, Reason};
        let t = targets();
        let admitted = serde_json::json!({
            "at_ms": 1, "request_id": "5f0c7a4e-3b1d-4c4e-9a57-0d8f6b2e1c3a",
            "key": "key_a", "team": "research", "reason": "admitted",
            "micros": u64::MAX, "tokens": 80,
        });
        let report = |decisions: Vec<serde_json::Value>| {
            body(serde_json::json!({"node": "e1", "outcomes": [],
                "gov": {"boot": "b", "decisions": decisions, "dropped": 3}}))
        };
        let c = check(&report(vec![admitted.clone()]), open, |_| true, &t).unwrap();
        let gov = c.gov().unwrap();
        assert_eq!((gov.decisions.len(), gov.dropped), (1, 3));
        assert_eq!(gov.decisions[0].reason, Reason::Admitted);
        assert_eq!(gov.decisions[0].micros, MAX_METER_AMOUNT, "clamped");

        let refused = |decisions: Vec<serde_json::Value>| {
            check(&report(decisions), open, |_| true, &t).unwrap_err()
        };
        let with = |field: &str, v: serde_json::Value| {
            let mut d = admitted.clone();
            d[field] = v;
            d
        };
        let e = refused(vec![admitted.clone(); MAX_DECISIONS + 1]);
        assert!(
            matches!(e, Refused::TooManyDecisions(n) if n == MAX_DECISIONS + 1),
            "{e}"
        );
        assert_eq!(e.status(), 400);
        for (bad, why) in [
            (with("reason", "because".into()), "unknown variant"),
            (with("prompt", "hi".into()), "unknown field"),
            (
                with("request_id", "x".repeat(MAX_REQUEST_ID_BYTES + 1).into()),
                "request_id",
            ),
            (with("request_id", "a\nb".into()), "request_id"),
            (with("key", "../../k".into()), "key, team"),
            (with("key", serde_json::Value::Null), "key id is expected"),
            (with("reason", "key_missing".into()), "key id is expected"),
            (
                with("reason", "model_not_allowed".into()),
                "charges nothing",
            ),
            (
                with("reason", "budget_exceeded".into()),
                "`limit` is expected",
            ),
            (with("micros", (-1).into()), "invalid value"),
        ] {
            let e = refused(vec![admitted.clone(), bad.clone()]);
            assert!(
                matches!(&e, Refused::Malformed(m) if m.contains(why)),
                "{bad}: {e}"
            );
        }
    }
}
