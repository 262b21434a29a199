//! Time spent in each filter callback, for `BENCH_PROFILE=1 make bench` (the host
//! crates' cargo feature `profile` wraps every callback in a [`Span`]; without it
//! nothing here runs).
//!
//! Each callback's wall time (host calls included) is summed per worker and, every
//! `EVERY` requests, logged as one warning line of averages in microseconds. The
//! two clock reads per span are part of what is measured.

use std::cell::RefCell;
use std::collections::BTreeMap;

/// Requests per report.
const EVERY: u64 = 20_000;

/// Per callback: (nanoseconds, calls); and the requests counted.
type Totals = (BTreeMap<&'static str, (u64, u64)>, u64);

thread_local! {
    static TOTALS: RefCell<Totals> = const { RefCell::new((BTreeMap::new(), 0)) };
}

/// Times the rest of the enclosing block as callback `name`; `now_ns` is the
/// host's clock.
pub struct Span(&'static str, u64, fn() -> u64);

impl Span {
    /// Starts timing.
    pub fn new(name: &'static str, now_ns: fn() -> u64) -> Span {
        Span(name, now_ns(), now_ns)
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let spent = (self.2)().saturating_sub(self.1);
        TOTALS.with(|t| {
            let mut t = t.borrow_mut();
            let e = t.0.entry(self.0).or_insert((0, 0));
            e.0 += spent;
            e.1 += 1;
        });
    }
}

/// Counts a finished request; every `EVERY` requests logs the averages and starts over.
pub fn request_done() {
    TOTALS.with(|t| {
        let mut t = t.borrow_mut();
        t.1 += 1;
        if t.1 % EVERY != 0 {
            return;
        }
        let total: f64 =
            t.0.values().map(|(ns, _)| *ns as f64).sum::<f64>() / EVERY as f64 / 1000.0;
        let parts: Vec<String> =
            t.0.iter()
                .map(|(k, (ns, _))| format!("{k}={:.1}", *ns as f64 / EVERY as f64 / 1000.0))
                .collect();
        log::warn!(
            "switchyard profile (us per request): total={total:.1} {}",
            parts.join(" ")
        );
        t.0.clear();
    });
}
