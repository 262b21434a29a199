//! What the fleet report carries beyond circuit counts ([`Observed`]): per
//! route, requests, fall-overs by class and the slot that served; per target,
//! the times to response headers in [`LATENCY_BUCKETS_MS`] buckets; and what a
//! drill in force did. Counted in shared data (every worker adds), taken by the
//! planner's background task for each exchange, put back when it fails.

use std::cell::RefCell;

use switchyard_core::failure::FailureClass;
use switchyard_core::fleet::{
    ClassCount, DrillOutcome, LATENCY_BUCKETS_MS, MAX_POSITIONS, MAX_ROUTES, Observed,
    RouteOutcome, TargetLatency, latency_bucket,
};

use crate::host::{self, Host};
use crate::ledger::Entry;
use crate::metrics::Summary;

const ROUTES: &str = "sy:obs:routes";
const TARGETS: &str = "sy:obs:targets";
const DRILL: &str = "sy:obs:drill";

/// A route's counts: requests, all failed, served per slot, fall-overs per class.
const ROUTE_LEN: usize = 2 + MAX_POSITIONS + FailureClass::ALL.len();
/// A target's counts: one per latency bucket.
const LATENCY_LEN: usize = LATENCY_BUCKETS_MS.len() + 1;

fn route_key(route: &str) -> String {
    format!("sy:obs:r:{route}")
}

fn latency_key(target: &str) -> String {
    format!("sy:obs:l:{target}")
}

/// Counts of a shared value (`a,b,c…`), `len` of them.
fn parse(v: &[u8], len: usize) -> Vec<u64> {
    let mut out: Vec<u64> = std::str::from_utf8(v)
        .unwrap_or_default()
        .split(',')
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    out.resize(len, 0);
    out
}

fn join(counts: &[u64]) -> Vec<u8> {
    counts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

/// Adds `deltas` to the counts under `key`, listing `name` in `index` (at most
/// `max` names: beyond, nothing is counted).
fn add(host: &impl Host, index: &str, max: usize, name: &str, key: &str, deltas: &[u64]) {
    let listed = RefCell::new(true);
    host::shared_update(host, index, |v| {
        let names = std::str::from_utf8(v).unwrap_or_default();
        if names.split(',').any(|n| n == name) {
            return None;
        }
        let count = names.split(',').filter(|n| !n.is_empty()).count();
        if count >= max {
            *listed.borrow_mut() = false;
            return None;
        }
        Some(if names.is_empty() {
            name.as_bytes().to_vec()
        } else {
            format!("{names},{name}").into_bytes()
        })
    });
    if !*listed.borrow() {
        return;
    }
    host::shared_update(host, key, |v| {
        let mut c = parse(v, deltas.len());
        for (c, d) in c.iter_mut().zip(deltas) {
            *c = c.saturating_add(*d);
        }
        Some(join(&c))
    });
}

/// Takes (and zeroes) the counts under `key`.
fn take_counts(host: &impl Host, key: &str, len: usize) -> Vec<u64> {
    let taken = RefCell::new(vec![0; len]);
    host::shared_update(host, key, |v| {
        let c = parse(v, len);
        let any = c.iter().any(|n| *n != 0);
        *taken.borrow_mut() = c;
        any.then(|| join(&vec![0; len]))
    });
    taken.into_inner()
}

fn names(host: &impl Host, index: &str) -> Vec<String> {
    host::shared_text(host, index)
        .split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// Counts a finished planned request.
pub fn record(host: &impl Host, entry: &Entry, summary: &Summary) {
    let mut route = vec![0u64; ROUTE_LEN];
    route[0] = 1;
    route[1] = u64::from(summary.outcome == "all_failed");
    if let Some(i) = summary.served {
        route[2 + i.min(MAX_POSITIONS - 1)] = 1;
    }
    for s in &summary.attempts {
        if let Some((class, true)) = s.moved_on
            && let Some(k) = FailureClass::ALL.iter().position(|c| *c == class)
        {
            route[2 + MAX_POSITIONS + k] += 1;
        }
    }
    add(
        host,
        ROUTES,
        MAX_ROUTES,
        &entry.route,
        &route_key(&entry.route),
        &route,
    );
    for (a, s) in entry.attempts.iter().zip(&summary.attempts) {
        // Configured targets only: a client's own names are not reported.
        if s.result != "success" || entry.route == "_direct" {
            continue;
        }
        if let Some(h) = a.timing.headers {
            let mut buckets = vec![0u64; LATENCY_LEN];
            buckets[latency_bucket(h.saturating_sub(a.timing.started))] = 1;
            let name = a.target.to_string();
            add(
                host,
                TARGETS,
                switchyard_core::fleet::MAX_OUTCOMES,
                &name,
                &latency_key(&name),
                &buckets,
            );
        }
    }
}

/// Counts what a drill did to one finished request: `injected` attempts it
/// failed, and whether the request was served all the same, in `ms`.
pub fn record_drill(host: &impl Host, id: &str, injected: u64, served_in_ms: Option<u64>) {
    host::shared_update(host, DRILL, |v| {
        let text = std::str::from_utf8(v).unwrap_or_default();
        let (current, counts) = text.split_once(':').unwrap_or(("", ""));
        let mut c = if current == id {
            parse(counts.as_bytes(), 4)
        } else {
            vec![0; 4]
        };
        c[0] += injected;
        c[1] += 1;
        if let Some(ms) = served_in_ms {
            c[2] += 1;
            c[3] += ms;
        }
        let mut out = format!("{id}:").into_bytes();
        out.extend(join(&c));
        Some(out)
    });
}

/// Takes (and zeroes) everything counted since the last report.
pub fn take(host: &impl Host) -> Observed {
    let mut routes = Vec::new();
    for name in names(host, ROUTES) {
        let c = take_counts(host, &route_key(&name), ROUTE_LEN);
        if c[0] == 0 {
            continue;
        }
        let mut served = c[2..2 + MAX_POSITIONS].to_vec();
        while served.last() == Some(&0) {
            served.pop();
        }
        let fallbacks = FailureClass::ALL
            .iter()
            .zip(&c[2 + MAX_POSITIONS..])
            .filter(|(_, n)| **n != 0)
            .map(|(class, n)| ClassCount {
                class: class.as_str().to_string(),
                n: *n,
            })
            .collect();
        routes.push(RouteOutcome {
            route: name,
            requests: c[0],
            served,
            all_failed: c[1],
            fallbacks,
        });
    }
    let mut latency = Vec::new();
    for name in names(host, TARGETS) {
        let mut buckets = take_counts(host, &latency_key(&name), LATENCY_LEN);
        if buckets.iter().all(|n| *n == 0) {
            continue;
        }
        while buckets.last() == Some(&0) {
            buckets.pop();
        }
        latency.push(TargetLatency {
            target: name,
            buckets,
        });
    }
    let drill = RefCell::new(None);
    host::shared_update(host, DRILL, |v| {
        let text = std::str::from_utf8(v).unwrap_or_default();
        let (id, counts) = text.split_once(':')?;
        let c = parse(counts.as_bytes(), 4);
        if c.iter().all(|n| *n == 0) {
            return None;
        }
        *drill.borrow_mut() = Some(DrillOutcome {
            id: id.to_string(),
            injected: c[0],
            affected: c[1],
            rescued: c[2],
            rescued_ms_sum: c[3],
        });
        Some(format!("{id}:0,0,0,0").into_bytes())
    });
    Observed {
        routes,
        latency,
        drill: drill.into_inner(),
    }
}

/// Puts back what a failed exchange took.
pub fn restore(host: &impl Host, o: &Observed) {
    for r in &o.routes {
        let mut c = vec![0u64; ROUTE_LEN];
        c[0] = r.requests;
        c[1] = r.all_failed;
        for (i, n) in r.served.iter().take(MAX_POSITIONS).enumerate() {
            c[2 + i] = *n;
        }
        for f in &r.fallbacks {
            if let Some(k) = FailureClass::ALL.iter().position(|c| c.as_str() == f.class) {
                c[2 + MAX_POSITIONS + k] += f.n;
            }
        }
        add(host, ROUTES, MAX_ROUTES, &r.route, &route_key(&r.route), &c);
    }
    for l in &o.latency {
        let mut c = l.buckets.clone();
        c.resize(LATENCY_LEN, 0);
        add(
            host,
            TARGETS,
            switchyard_core::fleet::MAX_OUTCOMES,
            &l.target,
            &latency_key(&l.target),
            &c,
        );
    }
    if let Some(d) = &o.drill {
        host::shared_update(host, DRILL, |v| {
            let text = std::str::from_utf8(v).unwrap_or_default();
            let (id, counts) = text.split_once(':').unwrap_or(("", ""));
            let mut c = if id == d.id {
                parse(counts.as_bytes(), 4)
            } else {
                vec![0; 4]
            };
            for (c, n) in c
                .iter_mut()
                .zip([d.injected, d.affected, d.rescued, d.rescued_ms_sum])
            {
                *c += n;
            }
            let mut out = format!("{}:", d.id).into_bytes();
            out.extend(join(&c));
            Some(out)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Attempt, Timing};
    use crate::metrics::summarize;
    use crate::testing::MemHost;
    use switchyard_core::config::Target;

    fn attempt(target: &str, status: u16, committed: bool, start: u64, headers: u64) -> Attempt {
        Attempt {
            target: Target::parse(target).unwrap_or_else(|| unreachable!()),
            status: Some(status),
            class: None,
            key: None,
            message: None,
            usage: None,
            committed,
            timing: Timing {
                started: start,
                headers: Some(headers),
                first_content: committed.then_some(headers),
                ended: Some(headers),
            },
        }
    }

    #[test]
    fn routes_latency_and_drills_are_taken_once_and_restored() {
        let host = MemHost::default();
        let entry = Entry {
            route: "chat".into(),
            attempts: vec![
                attempt("a/m", 503, false, 0, 5),
                attempt("b/n", 200, true, 10, 130),
            ],
            ..Entry::default()
        };
        let summary = summarize(&entry, Some(200));
        record(&host, &entry, &summary);
        record(&host, &entry, &summary);
        record_drill(&host, "d1", 1, Some(40));
        let o = take(&host);
        assert_eq!(o.routes.len(), 1);
        let r = &o.routes[0];
        assert_eq!(
            (r.requests, r.all_failed, r.served.as_slice()),
            (2, 0, &[0, 2][..])
        );
        assert_eq!(
            r.fallbacks,
            vec![ClassCount {
                class: "server_error".into(),
                n: 2
            }]
        );
        // b's 120 ms fall in the 150 ms bucket.
        assert_eq!(o.latency[0].target, "b/n");
        assert_eq!(o.latency[0].buckets, vec![0, 0, 0, 0, 2]);
        assert_eq!(
            o.drill,
            Some(DrillOutcome {
                id: "d1".into(),
                injected: 1,
                affected: 1,
                rescued: 1,
                rescued_ms_sum: 40
            })
        );
        assert_eq!(take(&host), Observed::default(), "taken once");
        restore(&host, &o);
        assert_eq!(take(&host), o, "restored whole");
    }
}
