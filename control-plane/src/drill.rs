//! Fail-over drills: the control plane tells every filter, through the fleet
//! exchange, to fail a share of the attempts to one target for a bounded time
//! ([`Fault`]); filters fail them locally, before sending, and report what the
//! fault did ([`DrillOutcome`]). The drill watches the fleet meanwhile and then
//! judges it: requests affected, the share the fallbacks still served, the
//! latency that cost, whether the target's fleet circuit opened and closed
//! again. It aborts on its own when more requests than its error budget failed
//! for clients, and can be aborted by hand. One drill at a time; `switchyard
//! status` shows it while it runs.
//!
//! Starting or aborting a drill takes the admin token (the same as the admin
//! API's): a drill makes real requests fail over.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use switchyard_core::failure::FailureClass;
use switchyard_core::fleet::{DrillOutcome, Fault};

use crate::fleet::TargetView;

/// Longest fault a drill may inject (s).
pub const MAX_DURATION_S: u64 = 600;
/// Longest wait after the fault for the target's circuit to close (s).
pub const MAX_SETTLE_S: u64 = 300;

/// A drill as asked for (`POST /drill/v1`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillSpec {
    /// `provider/model`, a target of a configured route.
    pub target: String,
    /// Share of the target's attempts to fail (%), above 0 and at most 100.
    #[serde(default = "default_share")]
    pub share_percent: f64,
    /// `server_error` or `unreachable`.
    #[serde(default = "default_class")]
    pub class: FailureClass,
    /// How long the fault is injected (s), 1..=[`MAX_DURATION_S`].
    pub duration_s: u64,
    /// Requests that may fail for clients (every attempt failed) before the
    /// drill aborts.
    #[serde(default)]
    pub error_budget: u64,
    /// Share of the affected requests the fallbacks must serve to pass (%).
    #[serde(default = "default_min_rescued")]
    pub min_rescued_percent: f64,
    /// Most latency the fail-over may add to an affected request, on average,
    /// against the target's before the drill (ms); unchecked when absent.
    #[serde(default)]
    pub max_added_ms: Option<f64>,
    /// How long after the fault the target's circuit may take to close (s).
    #[serde(default = "default_settle")]
    pub settle_s: u64,
}

fn default_share() -> f64 {
    100.0
}
fn default_class() -> FailureClass {
    FailureClass::ServerError
}
fn default_min_rescued() -> f64 {
    99.0
}
fn default_settle() -> u64 {
    30
}

/// Where a drill is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Filters are failing the target's attempts.
    Injecting,
    /// The fault is over; waiting for late reports and for the circuit to close.
    Settling,
    /// Over: every threshold held.
    Passed,
    /// Over: a threshold did not hold.
    Failed,
    /// Stopped early (error budget spent, or by hand).
    Aborted,
}

impl Phase {
    /// Whether the drill is over.
    pub fn done(self) -> bool {
        matches!(self, Phase::Passed | Phase::Failed | Phase::Aborted)
    }
}

/// A drill as `switchyard status` and `switchyard drill` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillView {
    /// Its id.
    pub id: String,
    /// What was asked.
    pub spec: DrillSpec,
    /// Where it is.
    pub phase: Phase,
    /// When it started (Unix ms).
    pub started_ms: u64,
    /// When the fault ends (Unix ms).
    pub fault_until_ms: u64,
    /// When it ended (Unix ms), once over.
    #[serde(default)]
    pub ended_ms: Option<u64>,
    /// Attempts the filters failed.
    pub injected: u64,
    /// Requests with at least one failed attempt.
    pub affected: u64,
    /// Of those, served by a fallback.
    pub rescued: u64,
    /// Of those, failed for the client.
    pub lost: u64,
    /// `rescued / affected` (%), once something was affected.
    pub rescued_percent: Option<f64>,
    /// Mean time to response headers of the rescued requests (ms).
    pub rescued_ms: Option<f64>,
    /// The target's time to response headers before the drill (ms; the
    /// fleet's smoothed figure).
    pub baseline_ms: Option<f64>,
    /// `rescued_ms - baseline_ms`.
    pub added_ms: Option<f64>,
    /// Whether the target's fleet circuit opened during the drill.
    pub circuit_opened: bool,
    /// Whether it closed again afterwards (a probe succeeded).
    pub circuit_closed: bool,
    /// Why it failed or was aborted.
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// Why a drill cannot start or stop.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The spec is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// Another drill is running.
    #[error("drill {0} is running: abort it first")]
    Busy(String),
    /// No drill is running.
    #[error("no drill is running")]
    NotRunning,
}

impl DrillError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            DrillError::Invalid(_) => 400,
            DrillError::Busy(_) => 409,
            DrillError::NotRunning => 404,
        }
    }
}

#[derive(Debug)]
struct Run {
    view: DrillView,
    settle_until_ms: u64,
}

/// The drill of this control plane (at most one; the last one is kept for
/// `status` until the next starts).
#[derive(Clone, Debug, Default)]
pub struct Drills {
    run: Arc<Mutex<Option<Run>>>,
    serial: Arc<std::sync::atomic::AtomicU64>,
}

impl Drills {
    /// Starts a drill on `spec.target`, one of `targets`, at `now_ms`;
    /// `fleet` gives the target's latency before it.
    pub fn start(
        &self,
        spec: DrillSpec,
        targets: &HashSet<String>,
        fleet: &BTreeMap<String, TargetView>,
        now_ms: u64,
    ) -> Result<DrillView, DrillError> {
        check(&spec, targets)?;
        let mut run = self.lock();
        if let Some(r) = run.as_ref().filter(|r| !r.view.phase.done()) {
            return Err(DrillError::Busy(r.view.id.clone()));
        }
        let n = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let fault_until_ms = now_ms + spec.duration_s * 1000;
        let settle_until_ms = fault_until_ms + spec.settle_s * 1000;
        let view = DrillView {
            id: format!("drill-{now_ms}-{n}"),
            baseline_ms: fleet
                .get(&spec.target)
                .map(|v| v.latency_ms)
                .filter(|l| *l > 0.0),
            spec,
            phase: Phase::Injecting,
            started_ms: now_ms,
            fault_until_ms,
            ended_ms: None,
            injected: 0,
            affected: 0,
            rescued: 0,
            lost: 0,
            rescued_percent: None,
            rescued_ms: None,
            added_ms: None,
            circuit_opened: false,
            circuit_closed: false,
            reasons: Vec::new(),
        };
        tracing::warn!(
            drill = %view.id,
            target = %view.spec.target,
            "fail-over drill started: {} % of attempts fail as {} for {} s",
            view.spec.share_percent,
            view.spec.class.as_str(),
            view.spec.duration_s
        );
        *run = Some(Run {
            view: view.clone(),
            settle_until_ms,
        });
        Ok(view)
    }

    /// Aborts the running drill: filters stop failing attempts with their
    /// next exchange (within the exchange interval).
    pub fn abort(&self, reason: &str, now_ms: u64) -> Result<DrillView, DrillError> {
        let mut run = self.lock();
        match run.as_mut().filter(|r| !r.view.phase.done()) {
            Some(r) => {
                finish(
                    &mut r.view,
                    Phase::Aborted,
                    vec![reason.to_string()],
                    now_ms,
                );
                Ok(r.view.clone())
            }
            None => Err(DrillError::NotRunning),
        }
    }

    /// The faults to send with an exchange answer at `now_ms`.
    pub fn faults(&self, now_ms: u64) -> Vec<Fault> {
        let run = self.lock();
        run.as_ref()
            .map(|r| &r.view)
            .filter(|v| v.phase == Phase::Injecting && now_ms < v.fault_until_ms)
            .map(|v| Fault {
                id: v.id.clone(),
                target: v.spec.target.clone(),
                share_permille: (v.spec.share_percent * 10.0).round().clamp(1.0, 1000.0) as u32,
                class: v.spec.class,
                until_ms: v.fault_until_ms,
            })
            .into_iter()
            .collect()
    }

    /// Adds one filter's report of the drill (ignored unless it names the
    /// current drill and the drill is not over). Counts are clamped as circuit
    /// counts are. Spends the error budget: past it, the drill aborts.
    pub fn record(&self, o: &DrillOutcome, now_ms: u64) {
        let mut run = self.lock();
        let Some(r) = run
            .as_mut()
            .filter(|r| r.view.id == o.id && !r.view.phase.done())
        else {
            return;
        };
        let clamp = |n: u64| n.min(switchyard_core::fleet::MAX_ATTEMPTS_PER_REPORT);
        let v = &mut r.view;
        let rescued = clamp(o.rescued).min(clamp(o.affected));
        let sum_before = v.rescued_ms.unwrap_or(0.0) * v.rescued as f64;
        v.injected = v.injected.saturating_add(clamp(o.injected));
        v.affected = v.affected.saturating_add(clamp(o.affected));
        v.rescued = v.rescued.saturating_add(rescued);
        v.lost = v.affected - v.rescued;
        let sum = sum_before
            + o.rescued_ms_sum
                .min(rescued.saturating_mul(switchyard_core::fleet::MAX_LATENCY_MS_PER_ATTEMPT))
                as f64;
        summarise(v, sum);
        if v.lost > v.spec.error_budget {
            let reason = format!(
                "error budget spent: {} requests failed for clients (budget {})",
                v.lost, v.spec.error_budget
            );
            tracing::warn!(drill = %v.id, "{reason}: drill aborted");
            finish(v, Phase::Aborted, vec![reason], now_ms);
        }
    }

    /// Moves the drill on at `now_ms`, watching the target's fleet circuit in
    /// `fleet`: the fault ends, the circuit closes, the drill is judged.
    pub fn tick(&self, fleet: &BTreeMap<String, TargetView>, now_ms: u64) {
        let mut run = self.lock();
        let Some(r) = run.as_mut().filter(|r| !r.view.phase.done()) else {
            return;
        };
        let settle_until_ms = r.settle_until_ms;
        let v = &mut r.view;
        let circuit = fleet.get(&v.spec.target);
        let open = circuit.is_some_and(|c| c.open_until_ms > now_ms);
        if open {
            v.circuit_opened = true;
        }
        if v.phase == Phase::Injecting && now_ms >= v.fault_until_ms {
            v.phase = Phase::Settling;
        }
        if v.phase != Phase::Settling {
            return;
        }
        // Closed again: not open, and a success since (no trips left).
        if v.circuit_opened && !open && circuit.is_some_and(|c| c.trips == 0) {
            v.circuit_closed = true;
        }
        // Late reports (requests in flight when the fault ended) arrive within
        // a couple of exchange intervals.
        let reports_in = now_ms >= v.fault_until_ms + LATE_REPORTS_MS;
        if reports_in && (!v.circuit_opened || v.circuit_closed) || now_ms >= settle_until_ms {
            let reasons = verdict(v);
            let phase = if reasons.is_empty() {
                Phase::Passed
            } else {
                Phase::Failed
            };
            tracing::warn!(drill = %v.id, "fail-over drill over: {phase:?} {reasons:?}");
            finish(v, phase, reasons, now_ms);
        }
    }

    /// The current (or last) drill.
    pub fn view(&self) -> Option<DrillView> {
        self.lock().as_ref().map(|r| r.view.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Run>> {
        self.run
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How long after the fault a drill waits for reports of requests that were
/// in flight (a few fleet exchange intervals).
const LATE_REPORTS_MS: u64 = 1500;

fn check(spec: &DrillSpec, targets: &HashSet<String>) -> Result<(), DrillError> {
    let bad = |m: String| Err(DrillError::Invalid(m));
    if !targets.contains(&spec.target) {
        return bad(format!(
            "target `{}` is not a target of a configured route",
            spec.target
        ));
    }
    if !(spec.share_percent > 0.0 && spec.share_percent <= 100.0) {
        return bad(format!(
            "share_percent: expected above 0 and at most 100, got {}",
            spec.share_percent
        ));
    }
    if !matches!(
        spec.class,
        FailureClass::ServerError | FailureClass::Unreachable
    ) {
        return bad(format!(
            "class: expected server_error or unreachable, got {}",
            spec.class.as_str()
        ));
    }
    if spec.duration_s == 0 || spec.duration_s > MAX_DURATION_S {
        return bad(format!(
            "duration_s: expected 1 to {MAX_DURATION_S}, got {}",
            spec.duration_s
        ));
    }
    if spec.settle_s > MAX_SETTLE_S {
        return bad(format!(
            "settle_s: expected at most {MAX_SETTLE_S}, got {}",
            spec.settle_s
        ));
    }
    if !(0.0..=100.0).contains(&spec.min_rescued_percent) {
        return bad(format!(
            "min_rescued_percent: expected 0 to 100, got {}",
            spec.min_rescued_percent
        ));
    }
    Ok(())
}

/// Derived figures, from the rescued requests' latency sum.
fn summarise(v: &mut DrillView, rescued_ms_sum: f64) {
    if v.affected > 0 {
        v.rescued_percent = Some(v.rescued as f64 * 100.0 / v.affected as f64);
    }
    if v.rescued > 0 {
        let mean = rescued_ms_sum / v.rescued as f64;
        v.rescued_ms = Some(mean);
        v.added_ms = v.baseline_ms.map(|b| mean - b);
    }
}

/// Why the drill failed (empty: it passed).
fn verdict(v: &DrillView) -> Vec<String> {
    let mut reasons = Vec::new();
    if v.affected == 0 {
        reasons.push(format!(
            "no request was affected: no traffic reached {} while the fault was on",
            v.spec.target
        ));
    }
    if let Some(p) = v.rescued_percent
        && p < v.spec.min_rescued_percent
    {
        reasons.push(format!(
            "fallbacks served {p:.1} % of the affected requests, below {} %",
            v.spec.min_rescued_percent
        ));
    }
    if let (Some(max), Some(added)) = (v.spec.max_added_ms, v.added_ms)
        && added > max
    {
        reasons.push(format!(
            "fail-over added {added:.0} ms on average, above {max:.0} ms"
        ));
    }
    if v.circuit_opened && !v.circuit_closed {
        reasons.push(format!(
            "the circuit of {} opened and did not close within {} s of the fault's end",
            v.spec.target, v.spec.settle_s
        ));
    }
    reasons
}

fn finish(v: &mut DrillView, phase: Phase, reasons: Vec<String>, now_ms: u64) {
    v.phase = phase;
    v.reasons = reasons;
    v.ended_ms = Some(now_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DrillSpec {
        DrillSpec {
            target: "a/m".into(),
            share_percent: 50.0,
            class: FailureClass::ServerError,
            duration_s: 10,
            error_budget: 2,
            min_rescued_percent: 90.0,
            max_added_ms: Some(500.0),
            settle_s: 20,
        }
    }

    fn targets() -> HashSet<String> {
        ["a/m".to_string(), "b/n".to_string()].into()
    }

    fn fleet(latency_ms: f64, open_until_ms: u64, trips: u32) -> BTreeMap<String, TargetView> {
        [(
            "a/m".to_string(),
            TargetView {
                latency_ms,
                open_until_ms,
                trips,
                ..TargetView::default()
            },
        )]
        .into()
    }

    fn outcome(id: &str, affected: u64, rescued: u64, ms: u64) -> DrillOutcome {
        DrillOutcome {
            id: id.into(),
            injected: affected,
            affected,
            rescued,
            rescued_ms_sum: ms,
        }
    }

    #[test]
    fn a_drill_injects_watches_the_circuit_and_passes() {
        let d = Drills::default();
        let v = d
            .start(spec(), &targets(), &fleet(100.0, 0, 0), 1_000)
            .unwrap();
        assert!(matches!(
            d.start(spec(), &targets(), &fleet(0.0, 0, 0), 1_001),
            Err(DrillError::Busy(_))
        ));
        let f = d.faults(2_000);
        assert_eq!(
            (f.len(), f[0].share_permille, f[0].until_ms),
            (1, 500, 11_000)
        );
        d.record(&outcome(&v.id, 10, 10, 3_000), 3_000);
        d.record(&outcome("another", 10, 0, 0), 3_000);
        d.tick(&fleet(100.0, 20_000, 1), 4_000);
        d.tick(&fleet(100.0, 20_000, 1), 11_000);
        assert!(d.faults(11_000).is_empty(), "the fault ends on time");
        assert_eq!(d.view().unwrap().phase, Phase::Settling);
        d.tick(&fleet(100.0, 20_000, 1), 15_000);
        assert_eq!(
            d.view().unwrap().phase,
            Phase::Settling,
            "waits for the circuit"
        );
        d.tick(&fleet(100.0, 20_000, 0), 21_000);
        let v = d.view().unwrap();
        assert_eq!(v.phase, Phase::Passed, "{v:?}");
        assert_eq!((v.affected, v.rescued, v.lost), (10, 10, 0));
        assert_eq!(v.rescued_percent, Some(100.0));
        assert_eq!(v.added_ms, Some(200.0));
        assert!(v.circuit_opened && v.circuit_closed);
    }

    #[test]
    fn a_drill_aborts_past_its_error_budget_and_fails_its_thresholds() {
        let d = Drills::default();
        let v = d.start(spec(), &targets(), &fleet(100.0, 0, 0), 0).unwrap();
        d.record(&outcome(&v.id, 10, 8, 800), 1_000);
        assert_eq!(
            d.view().unwrap().phase,
            Phase::Injecting,
            "2 lost: within the budget"
        );
        d.record(&outcome(&v.id, 1, 0, 0), 1_200);
        let v = d.view().unwrap();
        assert_eq!(v.phase, Phase::Aborted);
        assert!(v.reasons[0].contains("error budget"), "{v:?}");
        assert!(d.faults(1_300).is_empty());
        // A new drill: slow fallbacks, a circuit that never closes.
        let v = d
            .start(spec(), &targets(), &fleet(100.0, 0, 0), 2_000)
            .unwrap();
        d.record(&outcome(&v.id, 10, 10, 10 * 900), 3_000);
        d.tick(&fleet(100.0, 99_000, 3), 5_000);
        d.tick(&fleet(100.0, 99_000, 3), 32_000);
        let v = d.view().unwrap();
        assert_eq!(v.phase, Phase::Failed);
        assert_eq!(v.reasons.len(), 2, "{v:?}");
        assert!(d.abort("by hand", 33_000).is_err(), "nothing left to abort");
    }

    #[test]
    fn specs_are_checked() {
        let mut s = spec();
        s.target = "x/y".into();
        assert!(matches!(
            Drills::default().start(s, &targets(), &BTreeMap::new(), 0),
            Err(DrillError::Invalid(_))
        ));
        let mut s = spec();
        s.class = FailureClass::Auth;
        assert!(
            Drills::default()
                .start(s, &targets(), &BTreeMap::new(), 0)
                .is_err()
        );
        let mut s = spec();
        s.duration_s = MAX_DURATION_S + 1;
        assert!(
            Drills::default()
                .start(s, &targets(), &BTreeMap::new(), 0)
                .is_err()
        );
        let mut s = spec();
        s.share_percent = 0.0;
        assert!(
            Drills::default()
                .start(s, &targets(), &BTreeMap::new(), 0)
                .is_err()
        );
    }
}

// === the `switchyard drill` command ===

/// Usage of `switchyard drill`.
pub const USAGE: &str = "usage:
  switchyard drill --target PROVIDER/MODEL [--share 100] [--class server_error|unreachable]
                   [--duration 30] [--error-budget 0] [--min-rescued 99] [--max-added-ms MS]
                   [--settle 30] [--json]
  switchyard drill show|abort
  common: [--status-addr 127.0.0.1:18001] [--token-file FILE | $SWITCHYARD_ADMIN_TOKEN | --data-dir .switchyard/data]
          [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]   (a status port that runs TLS)
A drill makes the fleet's filters fail that share of the target's attempts for --duration
seconds (at most 600), watches fail-over, and passes when the fallbacks served at least
--min-rescued % of the affected requests, added at most --max-added-ms, and the target's
circuit, if it opened, closed again within --settle seconds. More than --error-budget
requests failing for clients aborts it. Exit status: 0 passed, 1 failed or aborted.";

/// What `switchyard drill` prints, and whether the drill passed.
#[derive(Debug)]
pub struct CliResult {
    /// The report (text or JSON).
    pub output: String,
    /// Passed (or, for `show`/`abort`, the call succeeded).
    pub ok: bool,
}

/// Runs `switchyard drill …` against the control plane's status endpoint.
pub fn cli(args: &[String]) -> Result<CliResult, String> {
    let a = crate::governance::client::Args::parse(args)?;
    let flag = |f: &str| a.flags.get(f).map(String::as_str);
    let tls = crate::status::client_tls(flag("--tls-ca"), flag("--tls-cert"), flag("--tls-key"))?;
    let addr = flag("--status-addr").unwrap_or("127.0.0.1:18001");
    // Reading a drill needs the token only when the status port runs TLS
    // (and no client certificate is given): send it when there is one.
    let reader = crate::status::Client::new(addr, tls.as_ref(), token(&a).unwrap_or_default())?;
    let admin = || crate::status::Client::new(addr, tls.as_ref(), token(&a)?);
    let json = a.flags.contains_key("--json");
    let show = |v: &DrillView| {
        if json {
            serde_json::to_string_pretty(v).unwrap_or_default()
        } else {
            crate::status::render_drill(v)
        }
    };
    match a.positional.first().map(String::as_str) {
        Some("show") => {
            let (code, body) = call(&reader, "GET", None)?;
            let v = drill_answer(code, &body)?;
            return Ok(CliResult {
                output: show(&v),
                ok: true,
            });
        }
        Some("abort") => {
            let (code, body) = call(&admin()?, "DELETE", None)?;
            let v = drill_answer(code, &body)?;
            return Ok(CliResult {
                output: show(&v),
                ok: true,
            });
        }
        Some(other) => return Err(format!("unknown drill command `{other}`")),
        None => {}
    }
    let number = |f: &str, default: f64| -> Result<f64, String> {
        flag(f).map_or(Ok(default), |v| {
            v.trim_end_matches(['s', '%'])
                .parse()
                .map_err(|_| format!("{f}: expected a number, got `{v}`"))
        })
    };
    let spec = DrillSpec {
        target: flag("--target")
            .ok_or("--target PROVIDER/MODEL is required")?
            .to_string(),
        share_percent: number("--share", default_share())?,
        class: match flag("--class") {
            None => default_class(),
            Some(c) => {
                FailureClass::parse(c).ok_or_else(|| format!("--class: unknown class `{c}`"))?
            }
        },
        duration_s: number("--duration", 30.0)? as u64,
        error_budget: number("--error-budget", 0.0)? as u64,
        min_rescued_percent: number("--min-rescued", default_min_rescued())?,
        max_added_ms: flag("--max-added-ms")
            .map(|_| number("--max-added-ms", 0.0))
            .transpose()?,
        settle_s: number("--settle", default_settle() as f64)? as u64,
    };
    let body = serde_json::to_string(&spec).unwrap_or_default();
    let (code, answer) = call(&admin()?, "POST", Some(&body))?;
    let started = drill_answer(code, &answer)?;
    eprintln!(
        "drill {} started: {} % of {}'s attempts fail as {} for {} s",
        started.id,
        spec.share_percent,
        spec.target,
        spec.class.as_str(),
        spec.duration_s
    );
    let deadline = std::time::Instant::now()
        + std::time::Duration::from_secs(spec.duration_s + spec.settle_s + 15);
    let mut last_print = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let (code, body) = call(&reader, "GET", None)?;
        let v = drill_answer(code, &body)?;
        if v.id != started.id {
            return Err(format!("drill {} was replaced by {}", started.id, v.id));
        }
        if v.phase.done() {
            return Ok(CliResult {
                output: show(&v),
                ok: v.phase == Phase::Passed,
            });
        }
        if last_print.elapsed() >= std::time::Duration::from_secs(2) {
            eprintln!(
                "  {:?}: attempts failed {}, affected {}, served by a fallback {}, failed for clients {}{}",
                v.phase,
                v.injected,
                v.affected,
                v.rescued,
                v.lost,
                if v.circuit_opened {
                    ", circuit opened"
                } else {
                    ""
                }
            );
            last_print = std::time::Instant::now();
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("drill {} did not end in time", v.id));
        }
    }
}

/// The admin token, as `switchyard keys` finds it.
fn token(a: &crate::governance::client::Args) -> Result<String, String> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map(|t| t.trim().to_string())
            .map_err(|e| format!("cannot read the admin token {}: {e}", p.display()))
    };
    match (
        a.flags.get("--token-file"),
        std::env::var(crate::governance::client::TOKEN_ENV).ok(),
    ) {
        (Some(f), _) => read(std::path::Path::new(f)),
        (None, Some(t)) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => {
            let dir = a
                .flags
                .get("--data-dir")
                .map(String::as_str)
                .unwrap_or(crate::governance::client::DEFAULT_DATA_DIR);
            read(&std::path::Path::new(dir).join("admin-token"))
        }
    }
}

fn drill_answer(code: u16, body: &str) -> Result<DrillView, String> {
    if code == 200 {
        return serde_json::from_str(body).map_err(|e| format!("unexpected answer: {e}"));
    }
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    Err(format!("{code}: {}", v["error"].as_str().unwrap_or(body)))
}

/// One blocking HTTP/1.1 call to the drill endpoint.
fn call(
    client: &crate::status::Client,
    method: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    client
        .call(method, crate::status::DRILL_PATH, body)
        .map_err(|e| e.to_string())
}
