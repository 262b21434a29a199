//! The fleet's meters: for each subject (key or team) and limited dimension, the
//! allowance of the current window and how it is lent to Envoys.
//!
//! Per meter the control plane keeps `avail` — allowance nobody holds — and lends
//! it in grants to the Envoys that ask (their demand is about a second of their
//! recent use plus what they had to refuse). An Envoy admits a request only with
//! tokens at hand or, before its first grant in a window, on a small credit
//! (`limit / (2 × envoys)`) that is reserved here for every Envoy that has not
//! spent it. Tokens move one way per message (a grant down, a return up): a lost
//! message loses tokens, never duplicates them. So the sum of what Envoys can
//! admit never exceeds the limit; the overshoot is what requests in flight use
//! beyond their estimates.

use std::collections::HashMap;

use switchyard_core::governance::{Dim, DimReport, Grant, credit};

/// How long an Envoy that stopped reporting still counts (for credits).
const BOOT_TTL_MS: u64 = 60_000;

#[derive(Debug, Default)]
struct BootMeter {
    credit_spent: i64,
    held: i64,
    /// Pre-charged to its requests in flight (as last reported).
    pending: i64,
    /// When its credit was withdrawn (the meter ran lean).
    withdrawn_ms: Option<u64>,
}

/// How long a withdrawn credit stays reserved: time for the withdrawal to reach
/// the Envoy (two exchanges) before what it may still spend is lent.
const WITHDRAWAL_MS: u64 = 500;

/// One meter in its current window.
#[derive(Debug, Default)]
struct Meter {
    w: u64,
    limit: u64,
    /// Allowance nobody holds.
    avail: i64,
    /// Used in the window, fleet-wide (estimates of requests in flight included).
    used: i64,
    boots: HashMap<String, BootMeter>,
    /// Changed since the last save (budgets).
    dirty: bool,
    /// The largest single request an Envoy could not admit (grants smaller
    /// than what a request needs are of no use to anyone).
    need: i64,
    /// Found lean in this window (credit withdrawn from every Envoy).
    lean: bool,
}

/// What `status` shows of one meter.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MeterView {
    /// Subject.
    pub subject: String,
    /// Dimension.
    pub dim: Dim,
    /// Window.
    pub window: u64,
    /// Limit.
    pub limit: u64,
    /// Used fleet-wide.
    pub used: i64,
    /// Not lent.
    pub available: i64,
    /// Held by Envoys (as they last reported, plus grants since).
    pub held: i64,
}

/// Credit the known Envoys may still spend on `m` (a withdrawn credit stays
/// reserved until the withdrawal has surely reached its Envoy).
fn reserved(m: &Meter, known: &[String], c: i64, now_ms: u64) -> i64 {
    known
        .iter()
        .map(|k| match m.boots.get(k) {
            Some(b)
                if b.withdrawn_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) >= WITHDRAWAL_MS) =>
            {
                0
            }
            Some(b) => (c - b.credit_spent).max(0),
            None => c,
        })
        .sum()
}

/// Whether what is not lent cannot back every credit and still serve the
/// largest request seen: then credits are withdrawn and pooled.
fn is_lean(m: &Meter, known: &[String], c: i64, now_ms: u64) -> bool {
    let reserved = reserved(m, known, c, now_ms);
    reserved > 0 && m.avail - reserved < m.need.max(1)
}

/// All meters, and the Envoys (boots) that report.
#[derive(Debug, Default)]
pub struct Meters {
    meters: HashMap<(String, Dim), Meter>,
    boots: HashMap<String, u64>,
    /// Meters found lean so far: when it grows, every Envoy (not only the
    /// reporting one) has credit to be withdrawn, pushed at once.
    leaned: u64,
}

impl Meters {
    /// Notes that `boot` reported at `now_ms`.
    pub fn seen(&mut self, boot: &str, now_ms: u64) {
        self.boots.insert(boot.to_string(), now_ms);
        self.boots
            .retain(|_, t| now_ms.saturating_sub(*t) <= BOOT_TTL_MS);
    }

    /// How many meters were found lean so far (grows when credit is to be
    /// withdrawn from every Envoy).
    pub fn leaned(&self) -> u64 {
        self.leaned
    }

    /// Envoys reporting now (at least 1).
    pub fn envoys(&self) -> u32 {
        u32::try_from(self.boots.len().max(1)).unwrap_or(u32::MAX)
    }

    /// Takes one meter of a report from `boot`; `limit` is the subject's
    /// current limit, `saved` the use saved for a budget's window (after a
    /// restart). Returns the grant (possibly of 0) with the remaining allowance.
    pub fn report(
        &mut self,
        boot: &str,
        subject: &str,
        r: &DimReport,
        limit: u64,
        now_ms: u64,
        saved: impl Fn() -> i64,
    ) -> Option<Grant> {
        let w = r.d.window(now_ms);
        if r.w != w {
            // A window that is over (or a filter clock ahead): nothing to lend.
            return None;
        }
        let envoys = self.envoys();
        let known: Vec<String> = self.boots.keys().cloned().collect();
        let m = self.meters.entry((subject.to_string(), r.d)).or_default();
        if m.w != w {
            let used = if r.d.is_budget() { saved() } else { 0 };
            *m = Meter {
                w,
                limit,
                avail: limit as i64 - used,
                used,
                boots: HashMap::new(),
                dirty: false,
                need: 0,
                lean: false,
            };
        }
        if m.limit != limit {
            m.avail += limit as i64 - m.limit as i64;
            m.limit = limit;
        }
        let fresh = !m.boots.contains_key(boot);
        let b = m.boots.entry(boot.to_string()).or_default();
        if fresh && r.lent && r.held > 0 {
            // Tokens lent by an earlier run of the control plane.
            m.avail -= r.held;
        }
        let spent = r.credit as i64;
        m.avail -= spent;
        tracing::debug!(
            "meter {subject} {:?}: from {boot}: credit {} used {} returned {} want {} held {} need {} pending {} done {}; avail now {}",
            r.d,
            r.credit,
            r.used,
            r.returned,
            r.want,
            r.held,
            r.need,
            r.pending,
            r.credit_done,
            m.avail + r.returned as i64
        );
        b.credit_spent += spent;
        m.avail += r.returned as i64;
        m.used += r.used;
        m.dirty |= r.used != 0;
        b.held = r.held;
        b.pending = r.pending.max(0);
        let c = credit(limit, envoys) as i64;
        if r.credit_done {
            b.credit_spent = b.credit_spent.max(c);
        }
        m.need = m.need.max(r.need as i64);
        // Credit the reporting Envoys may still spend is not lent.
        let lean = is_lean(m, &known, c, now_ms);
        if lean && !m.lean {
            m.lean = true;
            self.leaned += 1;
        }
        if lean {
            // What is left cannot back every credit and serve a request: this
            // Envoy's credit is withdrawn.
            let b = m.boots.entry(boot.to_string()).or_default();
            if b.credit_spent < c && b.withdrawn_ms.is_none() {
                b.withdrawn_ms = Some(now_ms);
            }
        }
        let lendable = (m.avail - reserved(m, &known, c, now_ms)).max(0);
        let held = r.held.max(0);
        let want = (r.want as i64 - held).max(0);
        // All or nothing: a grant too small for the request it is wanted for
        // would sit unused while others wait.
        let at_least = (r.need as i64 - held).max(1);
        let n = if lendable >= at_least {
            want.min(lendable)
        } else {
            0
        };
        m.avail -= n;
        if let Some(b) = m.boots.get_mut(boot) {
            b.held += n;
        }
        // Exhausted for this Envoy's requests: nothing lendable now, and
        // nothing that others hold, may still spend, or that requests in
        // flight were pre-charged beyond their use could come back to it.
        let pending: i64 = m.boots.values().map(|b| b.pending).sum();
        let others: i64 = m
            .boots
            .iter()
            .filter(|(k, _)| k.as_str() != boot)
            .map(|(_, b)| b.held.max(0))
            .sum::<i64>()
            + reserved(m, &known, c, now_ms)
            + pending;
        let exhausted = n == 0 && r.need > 0 && lendable + others < at_least;
        // What is left once requests in flight are settled (at most).
        let settled_left = (m.limit as i64 - m.used + pending).max(0) as u64;
        Some(Grant {
            s: subject.to_string(),
            d: r.d,
            w,
            n: n as u64,
            remaining: if exhausted { 0 } else { settled_left },
            no_credit: lean,
        })
    }

    /// Zero grants that withdraw `boot`'s credit on every lean meter (what is
    /// left cannot back every Envoy's credit) it has not spent yet: sent in
    /// every answer, so an Envoy that never used a subject does not start
    /// spending credit on an allowance that is almost gone.
    pub fn withdrawals(&mut self, boot: &str, now_ms: u64) -> Vec<Grant> {
        let envoys = self.envoys();
        let known: Vec<String> = self.boots.keys().cloned().collect();
        let mut out = Vec::new();
        for ((s, d), m) in &mut self.meters {
            if m.w != d.window(now_ms) {
                continue;
            }
            let c = credit(m.limit, envoys) as i64;
            if c == 0 || !is_lean(m, &known, c, now_ms) {
                continue;
            }
            let b = m.boots.entry(boot.to_string()).or_default();
            if b.credit_spent >= c || b.withdrawn_ms.is_some() {
                continue;
            }
            b.withdrawn_ms = Some(now_ms);
            out.push(Grant {
                s: s.clone(),
                d: *d,
                w: m.w,
                n: 0,
                remaining: (m.limit as i64 - m.used).max(0) as u64,
                no_credit: true,
            });
        }
        out
    }

    /// Budget meters changed since the last call: `(subject, dim, window, used)`.
    pub fn take_dirty(&mut self) -> Vec<(String, Dim, u64, i64)> {
        let mut out = Vec::new();
        for ((s, d), m) in &mut self.meters {
            if m.dirty && d.is_budget() {
                m.dirty = false;
                out.push((s.clone(), *d, m.w, m.used));
            }
        }
        out
    }

    /// Every meter of the current windows.
    pub fn view(&self, now_ms: u64) -> Vec<MeterView> {
        let mut v: Vec<MeterView> = self
            .meters
            .iter()
            .filter(|((_, d), m)| m.w == d.window(now_ms))
            .map(|((s, d), m)| MeterView {
                subject: s.clone(),
                dim: *d,
                window: m.w,
                limit: m.limit,
                used: m.used,
                available: m.avail,
                held: m.boots.values().map(|b| b.held).sum(),
            })
            .collect();
        v.sort_by(|a, b| (&a.subject, a.dim.index()).cmp(&(&b.subject, b.dim.index())));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(credit: u64, used: i64, want: u64, held: i64, now: u64) -> DimReport {
        DimReport {
            d: Dim::Requests,
            w: Dim::Requests.window(now),
            credit,
            used,
            returned: 0,
            want,
            held,
            need: 1,
            credit_done: false,
            pending: 0,
            lent: false,
        }
    }

    #[test]
    fn lends_no_more_than_the_limit_and_reserves_credit() {
        let now = 1_700_000_000_000;
        let mut m = Meters::default();
        for b in ["e1", "e2", "e3"] {
            m.seen(b, now);
        }
        // Limit 60, 3 Envoys: credit 10 each, 30 reserved until spent.
        let g = m
            .report("e1", "k:a", &rep(10, 10, 100, 0, now), 60, now, || 0)
            .unwrap();
        // 60 - 10 spent = 50 avail; e2 and e3 keep 20 reserved: 30 lendable.
        assert_eq!(g.n, 30);
        assert_eq!(g.remaining, 50);
        let g = m
            .report("e2", "k:a", &rep(10, 10, 100, 0, now), 60, now, || 0)
            .unwrap();
        // avail 50 - 30 - 10 = 10; e3's 10 reserved.
        assert_eq!(g.n, 0);
        let g = m
            .report("e3", "k:a", &rep(5, 5, 100, 0, now), 60, now, || 0)
            .unwrap();
        assert_eq!(g.n, 0, "what is left is e3's own unspent credit");
        // Whatever was lent plus credit never exceeds the limit.
        let v = &m.view(now)[0];
        assert!(v.available >= 0, "{v:?}");
        // A raised limit is lendable at once.
        let g = m
            .report("e2", "k:a", &rep(0, 0, 10, 0, now), 80, now, || 0)
            .unwrap();
        assert_eq!(g.n, 10);
    }

    #[test]
    fn budgets_resume_from_saved_use() {
        let now = 1_700_000_000_000;
        let mut m = Meters::default();
        m.seen("e1", now);
        let r = DimReport {
            d: Dim::CostDay,
            w: Dim::CostDay.window(now),
            credit: 0,
            used: 0,
            returned: 0,
            want: 1000,
            held: 0,
            need: 50,
            credit_done: false,
            pending: 0,
            lent: false,
        };
        let g = m.report("e1", "k:a", &r, 1000, now, || 900).unwrap();
        // 100 left cannot back e1's credit of 500: withdrawn; lent a second
        // later, once the withdrawal has surely arrived.
        assert_eq!((g.n, g.remaining, g.no_credit), (0, 100, true));
        let later = now + WITHDRAWAL_MS;
        let g = m.report("e1", "k:a", &r, 1000, later, || 900).unwrap();
        assert_eq!(g.n, 100);
        // Another Envoy is told before it spends credit.
        m.seen("e2", later);
        let w = m.withdrawals("e2", later);
        assert_eq!(w.len(), 1);
        assert!(w[0].no_credit && w[0].n == 0);
        assert!(m.withdrawals("e2", later).is_empty(), "once");
        // …and stale windows get nothing.
        let old = DimReport { w: r.w - 1, ..r };
        assert!(m.report("e1", "k:a", &old, 1000, now, || 0).is_none());
    }

    /// Three Envoys with eight clients each against one budget, estimates five
    /// times what requests use: exchanges every 250 ms, requests taking 30 ms.
    /// Nothing is lost or made up: what is unlent, held and used adds up to the
    /// limit, and the budget is spent but for the last requests' estimates.
    #[test]
    fn a_simulated_fleet_spends_the_budget_and_no_more() {
        use switchyard_core::governance::{Amounts, Local};
        let limit = 200_000u64;
        let limits = [None, None, Some(limit), None];
        let raw: Amounts = [1, 0, 4400, 4400];
        let actual: Amounts = [1, 0, 900, 900];
        let t0 = 1_700_000_000_000u64;
        let mut cp = Meters::default();
        let boots = ["e1", "e2", "e3"];
        let mut locals = [Local::default(); 3];
        let mut inflight: Vec<Vec<(Amounts, u64)>> = vec![Vec::new(); 3];
        let mut spent = 0u64;
        // Every Envoy has exchanged once (that is how it got the key table).
        for b in boots {
            cp.seen(b, t0);
        }
        for step in 0..4000u64 {
            let now = t0 + step * 10;
            for e in 0..3 {
                // Requests take 30 ms.
                let (done, left): (Vec<_>, Vec<_>) =
                    inflight[e].drain(..).partition(|(_, at)| now >= at + 30);
                inflight[e] = left;
                for (charged, at) in done {
                    locals[e].settle(&limits, &charged, &raw, &actual, at, now);
                    spent += actual[2];
                }
                while inflight[e].len() < 8 {
                    match locals[e].admit(&limits, &raw, now, 3) {
                        Ok(charged) => inflight[e].push((charged, now)),
                        Err(_) => break,
                    }
                }
                if step % 25 == 10 + (e as u64) * 4 {
                    cp.seen(boots[e], now);
                    if let Some(r) = locals[e].take("k:a", &limits, now, 2000) {
                        for d in &r.dims {
                            if let Some(g) = cp.report(boots[e], "k:a", d, limit, now, || 0) {
                                locals[e].grant(&g);
                            }
                        }
                    }
                    for g in cp.withdrawals(boots[e], now) {
                        locals[e].grant(&g);
                    }
                }
            }
        }
        let v = &cp.view(t0)[0];
        let held: i64 = locals.iter().map(|l| l.dims[2].held).sum();
        assert_eq!(
            v.available + held + v.used,
            limit as i64,
            "unlent {} + held {held} + used {}",
            v.available,
            v.used
        );
        assert!(spent <= limit, "overshoot: {spent}");
        assert!(spent + 3 * 4400 >= limit, "only {spent} of {limit} spent");
    }
}
