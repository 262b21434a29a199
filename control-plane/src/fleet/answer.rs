//! The answer to one checked fleet report, the same whichever transport
//! carried it (the HTTP exchange on the status port, the gRPC stream on the
//! xDS port): the report goes into the aggregate, governance, the audit log,
//! the rates and the drill; the answer holds what this Envoy should know.

use std::sync::Arc;

use switchyard_core::fleet::State;
use tokio::sync::watch;

use super::{Checked, Fleet};
use crate::drill::Drills;
use crate::governance::Governance;
use crate::rates::Window;
use crate::xds::server::Snapshot;

/// What answering a report takes; cheap to clone.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// The per-target aggregate.
    pub fleet: Fleet,
    /// Keys, budgets, allowance, the audit log.
    pub governance: Governance,
    /// The config served now.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Fleet-wide rates over the last minute.
    pub rates: Window,
    /// The fail-over drill.
    pub drills: Drills,
}

impl Exchange {
    /// Takes a checked report and answers it. The audit records its
    /// governance decisions carried are written (off the async workers)
    /// before the answer, so a filter drops them only once they are kept.
    pub async fn answer(&self, checked: &Checked, now_ms: u64) -> State {
        let snapshot = self.snapshots.borrow().clone();
        let mut state = self.fleet.exchange(
            checked,
            &snapshot.targets,
            snapshot.breaker.as_ref(),
            snapshot.adaptive_weights.as_ref(),
            now_ms,
        );
        if let Some(gov) = checked.gov() {
            state.gov = self.governance.exchange(gov, now_ms);
            if !gov.decisions.is_empty() || gov.dropped > 0 {
                // One write of the audit log per report.
                let (g, node) = (self.governance.clone(), checked.node().to_string());
                let (decisions, dropped) = (gov.decisions.clone(), gov.dropped);
                let written = tokio::task::spawn_blocking(move || {
                    g.record(&node, &decisions, dropped);
                });
                let _ = written.await;
            }
        }
        let observed = checked.observed();
        self.rates
            .add(observed, &snapshot.routes, &snapshot.targets, now_ms);
        if let Some(d) = &observed.drill {
            self.drills.record(d, now_ms);
        }
        state.faults = self.drills.faults(now_ms);
        // Only to a node the gate admitted (its certificate, with TLS).
        if checked.credentials() != snapshot.credentials.version {
            state.credentials = Some((*snapshot.credentials).clone());
        }
        state
    }
}
