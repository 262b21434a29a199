//! Circuit breakers per target, in the state all workers share so every worker of
//! an Envoy sees one state; updated with compare-and-swap. The state machine is
//! `switchyard_core::circuit`; this module stores it, logs and counts transitions.

use std::cell::Cell;

use switchyard_core::circuit::{Settings, State, Transition};
use switchyard_core::config::Target;

use crate::host::{self, Counter, Gauge, Host};
use crate::metrics;

fn key(t: &Target) -> String {
    format!("sy:cb:{}/{}", t.provider, t.model)
}

/// The transition counter and the state gauge of `t` (0 closed, 1 half-open,
/// 2 open).
fn count(host: &impl Host, cfg_target: (&str, &str), tr: Transition) {
    let (provider, model) = cfg_target;
    let (to, state) = match tr {
        Transition::Opened => ("open", 2),
        Transition::HalfOpened => ("half_open", 1),
        Transition::Closed => ("closed", 0),
    };
    host.count(Counter::CircuitTransitions, &[provider, model, to], 1);
    host.gauge(Gauge::CircuitState, &[provider, model], state);
}

/// Applies `f` to the target's state atomically; returns `f`'s result.
fn update<R: Copy + Default>(
    host: &impl Host,
    t: &Target,
    f: impl Fn(State) -> (R, State, Option<Transition>),
) -> Option<R> {
    let result = Cell::new(None);
    let transition = Cell::new(None);
    let written = host::shared_update(host, &key(t), |bytes| {
        let current = std::str::from_utf8(bytes)
            .ok()
            .map(State::decode)
            .unwrap_or_default();
        let (r, next, tr) = f(current);
        result.set(Some(r));
        transition.set(tr.map(|tr| (tr, next)));
        (next != current).then(|| next.encode().into_bytes())
    });
    if written && let Some((tr, next)) = transition.get() {
        log::warn!("switchyard circuit {t}: {tr:?} ({})", next.encode());
        // Circuits exist for configured targets only.
        count(
            host,
            (&metrics::label(&t.provider), &metrics::label(&t.model)),
            tr,
        );
    }
    result.get().filter(|_| written)
}

/// Whether a request planned now may use `t` (claims the half-open probe).
pub fn admit(host: &impl Host, settings: &Settings, t: &Target, now_ms: u64) -> bool {
    update(host, t, |s| s.admit(settings, now_ms)).unwrap_or(true)
}

/// Records an attempt's outcome: `ok`, or a failure that counts. It also counts
/// towards the next fleet report.
pub fn record(host: &impl Host, settings: &Settings, t: &Target, ok: bool, now_ms: u64) {
    crate::fleet::record(host, t, ok);
    update(host, t, |s| {
        let (next, tr) = if ok {
            s.success(settings, now_ms)
        } else {
            s.failure(settings, now_ms)
        };
        ((), next, tr)
    });
}
