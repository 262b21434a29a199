//! Fleet-wide target state: outcomes reported by every filter of every Envoy are
//! aggregated per target with the circuit-breaker state machine
//! (`switchyard_core::circuit`); targets whose fleet circuit is open are sent back
//! to every filter, which then leaves them out of plans.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use switchyard_core::circuit::{self, Settings};
use switchyard_core::fleet::{Open, Report, State};

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
}

#[derive(Debug, Default)]
struct Entry {
    view: TargetView,
    state: circuit::State,
}

/// The aggregate, shared by the HTTP handlers.
#[derive(Clone, Debug, Default)]
pub struct Fleet(Arc<Mutex<HashMap<String, Entry>>>);

impl Fleet {
    /// Takes one filter's report and answers with the targets open fleet-wide.
    pub fn exchange(&self, report: Report, settings: Option<&Settings>, now_ms: u64) -> State {
        let Ok(mut m) = self.0.lock() else {
            return State::default();
        };
        if let Some(settings) = settings {
            for o in report.outcomes {
                let e = m.entry(o.target.clone()).or_default();
                e.view.ok += o.ok;
                e.view.failed += o.failed;
                e.view.reporters.insert(report.node.clone());
                if o.ok > 0 {
                    e.state = e.state.success().0;
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
        State { open }
    }

    /// Every target's view.
    pub fn view(&self) -> BTreeMap<String, TargetView> {
        self.0
            .lock()
            .map(|m| m.iter().map(|(k, e)| (k.clone(), e.view.clone())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::fleet::Outcome;

    #[test]
    fn failures_from_several_envoys_open_the_circuit_for_all() {
        let fleet = Fleet::default();
        let s = Settings {
            consecutive_failures: 3,
            base_open_ms: 1000,
            max_open_ms: 8000,
        };
        let report = |node: &str, ok, failed| Report {
            node: node.into(),
            outcomes: vec![Outcome {
                target: "a/m".into(),
                ok,
                failed,
            }],
        };
        assert!(
            fleet
                .exchange(report("e1", 0, 2), Some(&s), 10)
                .open
                .is_empty()
        );
        let state = fleet.exchange(report("e2", 0, 1), Some(&s), 20);
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
                .exchange(
                    Report {
                        node: "e3".into(),
                        outcomes: vec![]
                    },
                    Some(&s),
                    30
                )
                .open
                .len(),
            1
        );
        assert!(
            fleet
                .exchange(Report::default(), Some(&s), 1020)
                .open
                .is_empty(),
            "expired"
        );
        assert_eq!(fleet.view()["a/m"].reporters.len(), 2);
        // A success closes it again.
        fleet.exchange(report("e1", 1, 0), Some(&s), 1100);
        assert_eq!(fleet.view()["a/m"].open_until_ms, 0);
    }
}
