//! Fleet-wide target state: outcomes reported by every filter of every Envoy are
//! aggregated per target with the circuit-breaker state machine
//! (`switchyard_core::circuit`); targets whose fleet circuit is open are sent back
//! to every filter, which then leaves them out of plans.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use switchyard_core::circuit::{self, Settings};
use switchyard_core::fleet::{AdaptiveWeights, Open, Report, State, Weight};

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
    /// Takes one filter's report and answers with the targets open fleet-wide.
    pub fn exchange(
        &self,
        report: Report,
        settings: Option<&Settings>,
        adaptive: Option<&AdaptiveWeights>,
        now_ms: u64,
    ) -> State {
        let Ok(mut m) = self.0.lock() else {
            return State::default();
        };
        for o in &report.outcomes {
            let e = m.entry(o.target.clone()).or_default();
            let n = o.ok + o.failed;
            if n > 0 {
                let rate = o.ok as f64 / n as f64;
                e.view.success_rate = (1.0 - EWMA_ALPHA) * e.view.success_rate + EWMA_ALPHA * rate;
            }
            if o.ok > 0 && o.latency_ms_sum > 0 {
                let mean = o.latency_ms_sum as f64 / o.ok as f64;
                e.view.latency_ms = if e.view.latency_ms == 0.0 {
                    mean
                } else {
                    (1.0 - EWMA_ALPHA) * e.view.latency_ms + EWMA_ALPHA * mean
                };
            }
        }
        if let Some(settings) = settings {
            for o in report.outcomes {
                let e = m.entry(o.target.clone()).or_default();
                e.view.ok += o.ok;
                e.view.failed += o.failed;
                e.view.reporters.insert(report.node.clone());
                if o.ok > 0 {
                    e.state = e.state.success(settings, now_ms).0;
                }
                for _ in 0..o.failed {
                    let (next, transition) = e.state.failure(settings, now_ms);
                    if transition.is_some() {
                        tracing::warn!(target_model = %o.target, reporter = %report.node, "fleet circuit opened until {}", next.open_until);
                    }
                    e.state = next;
                }
                e.view.open_until_ms = e.state.open_until;
                e.view.trips = e.state.trips;
            }
        }
        let open = m
            .iter()
            .filter(|(_, e)| e.state.open_until > now_ms)
            .map(|(t, e)| Open {
                target: t.clone(),
                until_ms: e.state.open_until,
            })
            .collect();
        let weights = match adaptive {
            Some(a) => effective_weights(&mut m, a),
            None => Vec::new(),
        };
        State { open, weights }
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
    use switchyard_core::fleet::Outcome;

    const S: Settings = Settings {
        consecutive_failures: 3,
        base_open_ms: 1000,
        max_open_ms: 8000,
        failure_rate_percent: None,
        window_ms: 10_000,
        min_requests: 20,
    };

    fn report(node: &str, target: &str, ok: u64, failed: u64, latency_ms_sum: u64) -> Report {
        Report {
            node: node.into(),
            outcomes: vec![Outcome {
                target: target.into(),
                ok,
                failed,
                latency_ms_sum,
            }],
        }
    }

    #[test]
    fn failures_from_several_envoys_open_the_circuit_for_all() {
        let fleet = Fleet::default();
        assert!(
            fleet
                .exchange(report("e1", "a/m", 0, 2, 0), Some(&S), None, 10)
                .open
                .is_empty()
        );
        let state = fleet.exchange(report("e2", "a/m", 0, 1, 0), Some(&S), None, 20);
        assert_eq!(
            state.open,
            vec![Open {
                target: "a/m".into(),
                until_ms: 1020
            }]
        );
        // Any Envoy asking, even without outcomes, learns it.
        let empty = Report {
            node: "e3".into(),
            outcomes: vec![],
        };
        assert_eq!(fleet.exchange(empty, Some(&S), None, 30).open.len(), 1);
        assert!(
            fleet
                .exchange(Report::default(), Some(&S), None, 1020)
                .open
                .is_empty(),
            "expired"
        );
        assert_eq!(fleet.view()["a/m"].reporters.len(), 2);
        // A success closes it again.
        fleet.exchange(report("e1", "a/m", 1, 0, 5), Some(&S), None, 1100);
        assert_eq!(fleet.view()["a/m"].open_until_ms, 0);
    }

    #[test]
    fn errors_and_slowness_lower_effective_weights_within_bounds() {
        let fleet = Fleet::default();
        let big = Settings {
            consecutive_failures: 1000,
            ..S
        };
        let a = AdaptiveWeights { min_factor: 0.2 };
        for _ in 0..10 {
            fleet.exchange(report("e1", "bad/m", 1, 9, 100), Some(&big), Some(&a), 0);
            fleet.exchange(report("e1", "fast/m", 10, 0, 1000), Some(&big), Some(&a), 0);
            fleet.exchange(report("e1", "slow/m", 10, 0, 8000), Some(&big), Some(&a), 0);
        }
        let state = fleet.exchange(Report::default(), Some(&big), Some(&a), 0);
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
            fleet.exchange(report("e1", "bad/m", 10, 0, 100), Some(&big), Some(&a), 0);
        }
        let state = fleet.exchange(Report::default(), Some(&big), Some(&a), 0);
        assert!(
            state.weights.iter().all(|w| w.target != "bad/m"),
            "{state:?}"
        );
    }
}
