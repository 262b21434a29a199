//! Fail-over drills (`switchyard drill`): the control plane lists a fault in
//! its exchange answers — fail a share of one target's attempts, as a class,
//! until a time — and every planner applies it when it plans: a drawn attempt
//! to the target is failed here, before anything is sent (the provider never
//! sees it), counted against the target's circuit like a real failure, and
//! the request goes on to the rest of its plan. What the drill did is reported
//! with the next exchange ([`crate::observed`]).

use switchyard_core::config::{FilterConfig, Target};
use switchyard_core::failure::FailureClass;
use switchyard_core::fleet::Fault;

use crate::host::{self, Host};
use crate::metrics::Counter;
use crate::{circuit, observed};

const FAULTS: &str = "sy:drill:faults";

/// Stores the faults of an exchange answer (none: a drill over or aborted).
pub fn apply(host: &impl Host, faults: &[Fault]) {
    let value = if faults.is_empty() {
        String::new()
    } else {
        serde_json::to_string(faults).unwrap_or_default()
    };
    if host::shared_text(host, FAULTS) != value {
        host.shared_set(FAULTS, value.as_bytes(), None);
    }
}

/// Attempts a drill failed in one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injected {
    /// The drill.
    pub id: String,
    /// The class the attempts failed with.
    pub class: FailureClass,
    /// The targets failed, in plan order.
    pub targets: Vec<Target>,
}

/// Takes out of `plan` the attempts a drill in force fails (each drawn at the
/// fault's share), counting each against its target's circuit.
pub fn inject(
    host: &impl Host,
    cfg: &FilterConfig,
    plan: Vec<Target>,
    now_ms: u64,
) -> (Vec<Target>, Option<Injected>) {
    let text = host::shared_text(host, FAULTS);
    if text.is_empty() {
        return (plan, None);
    }
    let faults: Vec<Fault> = serde_json::from_str(&text).unwrap_or_default();
    let mut injected: Option<Injected> = None;
    let mut kept = Vec::with_capacity(plan.len());
    for t in plan {
        let name = t.to_string();
        let hit = faults.iter().find(|f| {
            f.target == name
                && now_ms < f.until_ms
                && host::random_unit(host) * 1000.0 < f64::from(f.share_permille)
        });
        match hit {
            Some(f) => {
                if let Some(settings) = &cfg.circuit_breaker {
                    circuit::record(host, settings, &t, false, now_ms);
                }
                // Visible while the drill runs, apart from real failures.
                let (provider, model) = crate::metrics::target_labels(cfg, &t);
                host.count(Counter::DrillFailures, &[&provider, &model], 1);
                let i = injected.get_or_insert_with(|| Injected {
                    id: f.id.clone(),
                    class: f.class,
                    targets: Vec::new(),
                });
                i.targets.push(t);
            }
            None => kept.push(t),
        }
    }
    (kept, injected)
}

/// Counts a finished request a drill touched: served all the same (in `ms`
/// from its arrival to its response headers), or not.
pub fn done(host: &impl Host, injected: &Injected, served_in_ms: Option<u64>) {
    observed::record_drill(
        host,
        &injected.id,
        injected.targets.len() as u64,
        served_in_ms,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemHost;

    #[test]
    fn a_fault_in_force_takes_its_target_out_until_it_ends() {
        let cfg = crate::testing::config("planner");
        let host = MemHost::default();
        let t = |s: &str| Target::parse(s).unwrap_or_else(|| unreachable!());
        let plan = vec![t("a/gpt"), t("b/claude")];
        assert_eq!(inject(&host, &cfg, plan.clone(), 0), (plan.clone(), None));
        apply(
            &host,
            &[Fault {
                id: "d1".into(),
                target: "a/gpt".into(),
                share_permille: 1000,
                class: FailureClass::ServerError,
                until_ms: 5000,
            }],
        );
        let (kept, injected) = inject(&host, &cfg, plan.clone(), 1000);
        assert_eq!(kept, vec![t("b/claude")]);
        let injected = injected.unwrap_or_else(|| unreachable!());
        assert_eq!((injected.id.as_str(), injected.targets.len()), ("d1", 1));
        // Over by its own clock, and gone when the control plane stops listing it.
        assert_eq!(inject(&host, &cfg, plan.clone(), 5000).1, None);
        apply(&host, &[]);
        assert_eq!(inject(&host, &cfg, plan, 1000).1, None);
    }
}
