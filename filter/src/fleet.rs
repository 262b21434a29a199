//! The filter's side of the fleet exchange: outcome counters per target in the
//! shared state (every worker adds to them), taken and sent to the control plane
//! by the planner's background task on a timer; the answer (targets open
//! fleet-wide, effective weights) is written to shared state for the planner of
//! every worker.

use switchyard_core::config::Target;
use switchyard_core::fleet::{Outcome, State};

use crate::host::{self, Gauge, Host};
use crate::metrics;

const INDEX: &str = "sy:rep:index";

fn counter_key(target: &str) -> String {
    format!("sy:rep:{target}")
}

fn open_key(target: &str) -> String {
    format!("sy:fleet:{target}")
}

fn weight_key(target: &str) -> String {
    format!("sy:w:{target}")
}

/// The targets that have counters (configured targets only: see the adapter).
fn index(host: &impl Host) -> String {
    host::shared_text(host, INDEX)
}

/// `(ok, failed, latency_ms_sum)` of a counter value.
fn counts(v: &[u8]) -> (u64, u64, u64) {
    let v = std::str::from_utf8(v).unwrap_or_default();
    let mut it = v.split(',').map(|n| n.parse::<u64>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// Counts one attempt's outcome for the next report.
pub fn record(host: &impl Host, t: &Target, ok: bool) {
    let name = t.to_string();
    host::shared_update(host, INDEX, |index| {
        let index = std::str::from_utf8(index).unwrap_or_default();
        if index.split(',').any(|n| n == name) {
            None
        } else if index.is_empty() {
            Some(name.clone().into_bytes())
        } else {
            Some(format!("{index},{name}").into_bytes())
        }
    });
    add(host, &name, u64::from(ok), u64::from(!ok), 0);
}

/// Counts a successful attempt's time to response headers.
pub fn record_latency(host: &impl Host, t: &Target, ms: u64) {
    add(host, &t.to_string(), 0, 0, ms);
}

/// Puts counts that could not be reported back, for the next report.
pub fn restore(host: &impl Host, o: &Outcome) {
    add(host, &o.target, o.ok, o.failed, o.latency_ms_sum);
}

fn add(host: &impl Host, name: &str, ok: u64, failed: u64, latency_ms: u64) {
    host::shared_update(host, &counter_key(name), |v| {
        let (o, f, l) = counts(v);
        Some(
            format!(
                "{},{},{}",
                o.saturating_add(ok),
                f.saturating_add(failed),
                l.saturating_add(latency_ms)
            )
            .into_bytes(),
        )
    });
}

/// Takes (and zeroes) every target's counters since the last report.
pub fn take(host: &impl Host) -> Vec<Outcome> {
    let mut out = Vec::new();
    for target in index(host).split(',').filter(|t| !t.is_empty()) {
        let taken = std::cell::Cell::new((0, 0, 0));
        host::shared_update(host, &counter_key(target), |v| {
            let c = counts(v);
            taken.set(c);
            (c.0 != 0 || c.1 != 0).then(|| b"0,0,0".to_vec())
        });
        let (ok, failed, latency_ms_sum) = taken.get();
        if ok != 0 || failed != 0 {
            out.push(Outcome {
                target: target.to_string(),
                ok,
                failed,
                latency_ms_sum,
            });
        }
    }
    out
}

/// Stores the control plane's answer: open targets get their time, others 0;
/// effective weight factors (1 for targets not listed).
pub fn apply(host: &impl Host, state: &State) {
    let index = index(host);
    let mut names: Vec<&str> = index.split(',').filter(|t| !t.is_empty()).collect();
    for o in &state.open {
        if !names.contains(&o.target.as_str()) {
            names.push(&o.target);
        }
    }
    for name in names {
        let until = state
            .open
            .iter()
            .find(|o| o.target == name)
            .map_or(0, |o| o.until_ms);
        set_if_changed(host, &open_key(name), until.to_string(), "0");
        let factor = state
            .weights
            .iter()
            .find(|w| w.target == name)
            .map_or(1.0, |w| w.factor);
        set_if_changed(host, &weight_key(name), factor.to_string(), "1");
        if let Some(t) = Target::parse(name) {
            let permille = (factor.clamp(0.0, 1000.0) * 1000.0).round() as u64;
            host.gauge(
                Gauge::WeightPermille,
                &[&metrics::label(&t.provider), &metrics::label(&t.model)],
                permille,
            );
        }
    }
}

/// Writes `value` unless it is there already (or the key is unset and `value` is
/// what unset means).
fn set_if_changed(host: &impl Host, key: &str, value: String, unset: &str) {
    let current = host::shared_text(host, key);
    if current != value && !(current.is_empty() && value == unset) {
        host.shared_set(key, value.as_bytes(), None);
    }
}

/// `t`'s effective weight factor (1 when the fleet has not lowered it).
pub fn weight_factor(host: &impl Host, t: &Target) -> f64 {
    host::shared_text(host, &weight_key(&t.to_string()))
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .unwrap_or(1.0)
}

/// Whether the fleet has set `t` aside at `now_ms`.
pub fn is_open(host: &impl Host, t: &Target, now_ms: u64) -> bool {
    host::shared_text(host, &open_key(&t.to_string()))
        .parse::<u64>()
        .is_ok_and(|until| until > now_ms)
}
