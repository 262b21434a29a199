//! The filter's side of governance: authenticate the key a client presents, keep
//! to what it may use, admit its requests against the allowance this Envoy holds
//! for the key and its team, settle them with what they really used, and — in
//! the fleet exchange — report use and demand and take the table and grants.
//!
//! Shared state (all workers of one Envoy):
//! - `sy:gov:ver` = `<table version>,<envoys in the fleet>`, `sy:gov:table` the
//!   table (JSON): each worker keeps the parsed index in a thread-local and
//!   re-reads the table only when the version changes — per request one small
//!   shared read, one SHA-256 and one map lookup;
//! - `sy:gov:s:<subject>`: a subject's meters
//!   ([`switchyard_core::governance::Local`]), updated with compare-and-swap at
//!   admission and at the end of the request (subjects with limits only);
//!   `sy:gov:index` lists them;
//! - `sy:gov:boot`: this Envoy process's id in reports;
//! - the decisions on requests, for the audit log ([`crate::audit`]).

use std::cell::RefCell;
use std::rc::Rc;

use switchyard_core::config::{FilterConfig, Target};
use switchyard_core::cost::{self, Usage};
use switchyard_core::governance::{
    Amounts, Decision, Dim, Entry, GovReport, GovState, Index, Local, Reason, Refusal, Table,
};

use crate::host::{self, Host};
use crate::{audit, ledger};

const VERSION: &str = "sy:gov:ver";
const TABLE: &str = "sy:gov:table";
const INDEX: &str = "sy:gov:index";
const BOOT: &str = "sy:gov:boot";

fn state_key(subject: &str) -> String {
    format!("sy:gov:s:{subject}")
}

/// Completion tokens assumed by a config sent before keys existed.
const DEFAULT_COMPLETION_ESTIMATE: u64 = 256;

/// Tokens of a subject not used for this long go back to the fleet.
const IDLE_RETURN_MS: u64 = 2_000;

thread_local! {
    /// This worker's parsed table: (version line, index).
    static CACHE: RefCell<Option<(String, Rc<Index>)>> = const { RefCell::new(None) };
}

/// The key table and the fleet's size, as this Envoy last heard them.
#[derive(Clone, Debug)]
pub struct View {
    /// The table.
    pub index: Rc<Index>,
    /// Envoys in the fleet.
    pub envoys: u32,
}

/// The current table; `None` before the first exchange brought one.
pub fn view(host: &impl Host) -> Option<View> {
    let line = host::shared_text(host, VERSION);
    if line.is_empty() {
        return None;
    }
    let envoys = line
        .rsplit_once(',')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(1);
    let cached = CACHE.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(v, _)| *v == line)
            .map(|(_, i)| i.clone())
    });
    let index = match cached {
        Some(i) => i,
        None => {
            let bytes = host.shared_get(TABLE).0.unwrap_or_default();
            let table: Table = serde_json::from_slice(&bytes).ok()?;
            let index = Rc::new(Index::new(&table));
            CACHE.with(|c| *c.borrow_mut() = Some((line, index.clone())));
            index
        }
    };
    Some(View { index, envoys })
}

/// A request's key, found in the table.
#[derive(Clone, Debug)]
pub struct Auth {
    view: View,
    at: usize,
}

impl Auth {
    /// The key's entry.
    pub fn entry(&self) -> &Entry {
        &self.view.index.entries()[self.at]
    }

    /// Governance's decision on a request of this key at `at_ms`: `reason`,
    /// nothing charged yet, the request id filled in when it is recorded.
    pub fn decision(&self, reason: Reason, at_ms: u64) -> Decision {
        decision_of(Some(self.entry()), reason, at_ms)
    }

    /// The decision to refuse a request of this key for a limit.
    pub fn over_limit(&self, r: &LimitRefusal, at_ms: u64) -> Decision {
        Decision {
            limit: Some(r.refusal.dim),
            team_limit: r.subject.starts_with("t:"),
            ..self.decision(Reason::of_limit(&r.refusal), at_ms)
        }
    }
}

fn decision_of(e: Option<&Entry>, reason: Reason, at_ms: u64) -> Decision {
    Decision {
        key: e.map(|e| e.key.id.clone()),
        team: e.and_then(|e| e.key.team.clone()),
        ..Decision::new(at_ms, "", reason)
    }
}

/// Why a request could not be authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The key is missing, unknown, revoked or expired (401): the decision,
    /// with the key's id when the table has it (revoked, expired).
    Refused(Box<Decision>),
    /// This Envoy has no key table yet (503).
    NotReady,
}

/// Finds the key a client presented (`authorization: Bearer …` or `x-api-key`),
/// read from the request headers already in hand.
///
/// Keys are required when this config says so (`required`: the control plane
/// held keys when it sent it) or as soon as the fleet exchange brought a key
/// table: so connections that an older listener config still serves while it
/// drains are governed too. `Ok(None)`: the gateway is open (no keys exist).
pub fn authenticate(
    host: &impl Host,
    required: bool,
    authorization: Option<&str>,
    x_api_key: Option<&str>,
) -> Result<Option<Auth>, AuthError> {
    let Some(view) = view(host) else {
        return if required {
            Err(AuthError::NotReady)
        } else {
            Ok(None)
        };
    };
    let presented = switchyard_core::governance::presented_key(authorization, x_api_key);
    let now = host.now_ms();
    match view.index.find(presented, now) {
        Ok(e) => {
            let at = position(&view.index, e);
            Ok(Some(Auth { view, at }))
        }
        // Recorded when the request ends, like every decision: a burst of
        // wrong keys costs three small shared-state calls each, no more.
        Err((why, e)) => Err(AuthError::Refused(Box::new(decision_of(
            e,
            Reason::of_key(why),
            now,
        )))),
    }
}

fn position(index: &Index, e: &Entry) -> usize {
    index
        .entries()
        .iter()
        .position(|x| std::ptr::eq(x, e))
        .unwrap_or(0)
}

/// Applies `f` to a subject's record (created and indexed on first use).
fn update(host: &impl Host, subject: &str, f: impl Fn(&mut Local) -> bool) -> bool {
    let key = state_key(subject);
    let done = std::cell::Cell::new(false);
    let fresh = std::cell::Cell::new(false);
    host::shared_update(host, &key, |v| {
        fresh.set(v.is_empty());
        let mut l = Local::decode(v);
        let ok = f(&mut l);
        done.set(ok);
        ok.then(|| l.encode().into_bytes())
    });
    if fresh.get() && done.get() {
        host::shared_update(host, INDEX, |index| {
            let index = std::str::from_utf8(index).unwrap_or_default();
            if index.split('\n').any(|n| n == subject) {
                None
            } else if index.is_empty() {
                Some(subject.as_bytes().to_vec())
            } else {
                Some(format!("{index}\n{subject}").into_bytes())
            }
        });
    }
    done.get()
}

// === admission ===

/// What a request was admitted with, to settle at its end.
#[derive(Clone, Debug)]
pub struct Admission {
    /// (subject, its limits, what it was charged) — the key, then its team,
    /// each when it has limits.
    subjects: Vec<(String, [Option<u64>; 4], Amounts)>,
    /// The raw estimate.
    est: Amounts,
    at_ms: u64,
}

/// A refusal with what the client needs to act on it.
#[derive(Clone, Debug)]
pub struct LimitRefusal {
    /// The meter and when to retry.
    pub refusal: Refusal,
    /// The subject (`k:…` or `t:…`) whose limit it is.
    pub subject: String,
    /// Its limits (for the `x-ratelimit-*` headers).
    pub limits: [Option<u64>; 4],
    /// Fleet-wide remaining per meter, when known.
    pub remaining: [Option<u64>; 4],
}

/// The estimate of a request at admission: one request, its prompt (request
/// bytes / 4) plus `max_tokens` or the configured completion estimate, and the
/// cost of that at the dearest target of its plan.
pub fn estimate(
    cfg: &FilterConfig,
    request_bytes: usize,
    max_tokens: Option<u64>,
    plan: &[Target],
) -> Amounts {
    let prompt = cost::estimated_prompt_tokens(request_bytes);
    let completion = max_tokens.unwrap_or_else(|| {
        cfg.governance
            .as_ref()
            .map_or(DEFAULT_COMPLETION_ESTIMATE, |g| g.completion_estimate)
    });
    let usage = Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
    };
    let micros = plan
        .iter()
        .filter_map(|t| cfg.prices.get(&t.to_string()))
        .map(|p| cost::micros(p, usage))
        .max()
        .unwrap_or(0);
    [1, prompt + completion, micros, micros]
}

/// Admits a request of `est` for `auth`'s key and team.
pub fn admit(host: &impl Host, auth: &Auth, est: Amounts) -> Result<Admission, Box<LimitRefusal>> {
    let e = auth.entry();
    let now = host.now_ms();
    let envoys = auth.view.envoys;
    // Subjects without limits have nothing to meter: no shared state is
    // touched for them.
    let mut subjects = Vec::with_capacity(2);
    if e.key.limits.any() {
        subjects.push((e.subject.clone(), e.key.limits.all(), [0; 4]));
    }
    if let (Some(s), Some(t)) = (&e.team_subject, &e.team) {
        subjects.push((s.clone(), t.limits.all(), [0; 4]));
    }
    for i in 0..subjects.len() {
        let (subject, limits, _) = &subjects[i];
        let outcome = std::cell::Cell::new(Ok([0; 4]));
        update(host, subject, |l| {
            outcome.set(
                l.admit(limits, &est, now, envoys)
                    .map_err(|r| (r, Dim::ALL.map(|d| l.remaining(d, now)))),
            );
            // A refusal is demand: reported too.
            true
        });
        let refused = match outcome.get() {
            Ok(charged) => {
                subjects[i].2 = charged;
                None
            }
            Err(r) => Some(r),
        };
        let (subject, limits, _) = &subjects[i];
        if let Some((refusal, remaining)) = refused {
            // Give back what the subjects before this one admitted.
            for (s, lim, charged) in &subjects[..i] {
                update(host, s, |l| {
                    l.undo(lim, charged);
                    true
                });
            }
            return Err(Box::new(LimitRefusal {
                refusal,
                subject: subject.clone(),
                limits: *limits,
                remaining,
            }));
        }
    }
    Ok(Admission {
        subjects,
        est,
        at_ms: now,
    })
}

/// Settles an admitted request with what its attempts really used (the cost
/// accounting's rules: usage from the answers, estimates for hedges that lost);
/// returns what it was charged: (tokens, micro-USD).
pub fn settle(host: &impl Host, cfg: &FilterConfig, a: &Admission, request_id: &str) -> (u64, u64) {
    let (tokens, micros) =
        ledger::read(request_id, |entry| crate::cost::charged(cfg, entry)).unwrap_or((0, 0));
    let actual = [1, tokens, micros, micros];
    let now = host.now_ms();
    for (subject, limits, charged) in &a.subjects {
        update(host, subject, |l| {
            l.settle(limits, charged, &a.est, &actual, a.at_ms, now);
            true
        });
    }
    (tokens, micros)
}

/// Records governance's decision on a request that ended, under the request
/// id the client saw, for the audit log.
pub fn record(host: &impl Host, mut d: Decision, request_id: &str) {
    (d.request_id, d.id_altered) = switchyard_core::governance::audit_request_id(request_id);
    audit::record(host, &d);
}

// === the exchange ===

/// This Envoy process's id in reports.
pub fn boot_id(host: &impl Host) -> String {
    let id = host::shared_text(host, BOOT);
    if !id.is_empty() {
        return id;
    }
    let fresh = format!(
        "{:x}-{:x}",
        host.now_ms(),
        (host::random_unit(host) * (u64::MAX >> 12) as f64) as u64
    );
    host.shared_set(BOOT, fresh.as_bytes(), None);
    // Another worker may have written first: use what is stored.
    let stored = host::shared_text(host, BOOT);
    if stored.is_empty() { fresh } else { stored }
}

/// Takes what the next report carries: per subject its use and demand (at
/// most `max` subjects, from `start` on, wrapping), and the decisions on
/// requests for the audit log; and whether more decisions wait beyond them.
pub fn take(host: &impl Host, start: usize, max: usize) -> (GovReport, bool) {
    let view = view(host);
    let now = host.now_ms();
    let index = host::shared_text(host, INDEX);
    let names: Vec<&str> = index.split('\n').filter(|s| !s.is_empty()).collect();
    let mut subjects = Vec::new();
    let n = names.len();
    for k in 0..n {
        if subjects.len() >= max {
            break;
        }
        let s = names[(start + k) % n];
        let limits = view
            .as_ref()
            .and_then(|v| v.index.limits_of(s))
            .unwrap_or([None; 4]);
        let taken = RefCell::new(None);
        host::shared_update(host, &state_key(s), |v| {
            let mut l = Local::decode(v);
            let r = l.take(s, &limits, now, IDLE_RETURN_MS);
            let changed = r.is_some();
            *taken.borrow_mut() = r;
            changed.then(|| l.encode().into_bytes())
        });
        if let Some(r) = taken.into_inner() {
            subjects.push(r);
        }
    }
    let (gov, more) = take_decisions(host);
    (GovReport { subjects, ..gov }, more)
}

/// A report's governance part with the decisions on requests only (no
/// meters: their demand is reckoned per exchange interval), and whether more
/// decisions wait beyond them.
pub fn take_decisions(host: &impl Host) -> (GovReport, bool) {
    let taken = audit::take(host);
    let gov = GovReport {
        boot: boot_id(host),
        table: current_version(host),
        subjects: Vec::new(),
        decisions: taken.decisions,
        dropped: taken.dropped,
    };
    (gov, taken.more)
}

/// Puts back what a report that did not arrive carried.
pub fn restore(host: &impl Host, r: &GovReport) {
    for s in &r.subjects {
        update(host, &s.s, |l| {
            l.restore(s);
            true
        });
    }
    audit::restore(host, &r.decisions, r.dropped);
}

/// Forgets what a report the control plane refused as malformed carried
/// (sending it again would not help): its decisions are counted as dropped,
/// and the count goes with the next report.
pub fn discard(host: &impl Host, r: &GovReport) {
    audit::add_dropped(host, (r.decisions.len() as u64).saturating_add(r.dropped));
}

/// Stores the control plane's answer: the table when it changed, the grants. An
/// empty version means no keys are required any more.
pub fn apply(host: &impl Host, state: &GovState) {
    if state.version.is_empty() {
        if !host::shared_text(host, VERSION).is_empty() {
            host.shared_set(VERSION, b"", None);
        }
        return;
    }
    let line = format!("{},{}", state.version, state.envoys.max(1));
    if let Some(table) = &state.table {
        let json = serde_json::to_vec(table).unwrap_or_default();
        host.shared_set(TABLE, &json, None);
    }
    if host::shared_text(host, VERSION) != line
        && (state.table.is_some() || current_version(host) == state.version)
    {
        host.shared_set(VERSION, line.as_bytes(), None);
    }
    for g in &state.grants {
        update(host, &g.s, |l| {
            l.grant(g);
            true
        });
    }
}

fn current_version(host: &impl Host) -> String {
    host::shared_text(host, VERSION)
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemHost;
    use switchyard_core::governance::{KeyRecord, Limits, hash_key};
    use switchyard_core::sigv4::hex;

    fn table() -> Table {
        Table {
            keys: vec![KeyRecord {
                id: "key_a".into(),
                name: "a".into(),
                sha256: hex(&hash_key("sk-sy-good")),
                team: None,
                routes: None,
                targets: None,
                direct: false,
                max_price: None,
                limits: Limits {
                    rpm: Some(4),
                    ..Limits::default()
                },
                expires_at_ms: None,
                revoked: false,
            }],
            teams: vec![],
        }
    }

    #[test]
    fn authenticates_admits_and_reports() {
        let host = MemHost::with_request(&[]);
        assert_eq!(
            authenticate(&host, true, Some("Bearer sk-sy-good"), None).unwrap_err(),
            AuthError::NotReady
        );
        assert!(
            authenticate(&host, false, None, None).unwrap().is_none(),
            "open"
        );
        let t = table();
        apply(
            &host,
            &GovState {
                version: t.version(),
                table: Some(t),
                envoys: 1,
                grants: vec![],
            },
        );
        let Err(AuthError::Refused(unknown)) =
            authenticate(&host, false, Some("Bearer sk-sy-bad"), None)
        else {
            panic!("an unknown key is refused")
        };
        assert_eq!((unknown.reason, &unknown.key), (Reason::KeyUnknown, &None));
        record(&host, *unknown, "r-0");
        let auth = authenticate(&host, false, None, Some("sk-sy-good"))
            .unwrap()
            .unwrap();
        assert_eq!(auth.entry().key.id, "key_a");
        // Credit: 4 / 2 = 2 requests before a grant.
        for id in ["r-1", "r-2"] {
            assert!(admit(&host, &auth, [1, 0, 0, 0]).is_ok());
            let mut d = auth.decision(Reason::Admitted, host.now_ms());
            d.micros = 12;
            record(&host, d, id);
        }
        let r = admit(&host, &auth, [1, 0, 0, 0]).unwrap_err();
        assert_eq!(r.refusal.dim, Dim::Requests);
        record(&host, auth.over_limit(&r, host.now_ms()), "r-3");
        let (report, _) = take(&host, 0, 100);
        let s = &report.subjects[0];
        assert_eq!((s.s.as_str(), s.dims[0].credit), ("k:key_a", 2));
        assert!(!report.boot.is_empty());
        assert_eq!(report.boot, boot_id(&host), "stable per process");
        // One decision per request, in order, each as the audit log wants it.
        let got: Vec<_> = report
            .decisions
            .iter()
            .map(|d| (d.request_id.as_str(), d.key.as_deref(), d.reason, d.micros))
            .collect();
        assert_eq!(
            got,
            vec![
                ("r-0", None, Reason::KeyUnknown, 0),
                ("r-1", Some("key_a"), Reason::Admitted, 12),
                ("r-2", Some("key_a"), Reason::Admitted, 12),
                ("r-3", Some("key_a"), Reason::RateLimitExceeded, 0),
            ]
        );
        assert_eq!(report.decisions[3].limit, Some(Dim::Requests));
        assert!(report.decisions.iter().all(|d| d.problem().is_none()));
        // A report that did not arrive gives them back; one refused as
        // malformed counts them as dropped.
        restore(&host, &report);
        let (again, _) = take(&host, 0, 100);
        assert_eq!((again.decisions.len(), again.dropped), (4, 0));
        discard(&host, &again);
        let (after, _) = take(&host, 0, 100);
        assert_eq!((after.decisions.len(), after.dropped), (0, 4));
    }

    #[test]
    fn a_team_refusal_names_the_team_and_keys_without_limits_touch_no_meter() {
        let host = MemHost::with_request(&[]);
        let mut t = table();
        t.keys[0].limits = Limits::default();
        t.keys[0].team = Some("research".into());
        t.teams.push(switchyard_core::governance::TeamRecord {
            name: "research".into(),
            limits: Limits {
                rpm: Some(0),
                ..Limits::default()
            },
        });
        apply(
            &host,
            &GovState {
                version: t.version(),
                table: Some(t),
                envoys: 1,
                grants: vec![],
            },
        );
        let auth = authenticate(&host, false, None, Some("sk-sy-good"))
            .unwrap()
            .unwrap();
        let r = admit(&host, &auth, [1, 0, 0, 0]).unwrap_err();
        let d = auth.over_limit(&r, 5);
        assert_eq!(
            (d.team.as_deref(), d.team_limit, d.reason),
            (Some("research"), true, Reason::RateLimitExceeded)
        );
        assert_eq!(d.problem(), None);
        assert!(
            host.shared_get(&state_key("k:key_a")).0.is_none(),
            "the key has no limits: no meter"
        );
    }
}
