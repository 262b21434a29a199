//! Per-request record of attempts, shared by the planner and the adapter.
//!
//! Envoy keeps every stream (and each of its upstream attempts) on one worker
//! thread, and both roles share that worker's VM, so a VM-local map keyed by the
//! request id is enough: no shared data, no locks, nothing left behind (the planner
//! removes the entry when the stream ends).

use std::cell::RefCell;
use std::collections::HashMap;

use switchyard_core::config::Target;
use switchyard_core::cost::Usage;
use switchyard_core::error::AttemptReport;
use switchyard_core::failure::FailureClass;
use switchyard_core::inbound::ClientApi;
use switchyard_core::policy::Policy;
use switchyard_core::request::Endpoint;

/// One attempt as the adapter saw it.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// Where it went.
    pub target: Target,
    /// The provider's status, if it answered.
    pub status: Option<u16>,
    /// The failure class, once the answer was classified.
    pub class: Option<FailureClass>,
    /// Index of the provider key used, when the provider has several.
    pub key: Option<usize>,
    /// The provider's error message, if it sent one.
    pub message: Option<String>,
    /// Tokens the answer reported (cost accounting only).
    pub usage: Option<Usage>,
    /// The answer was checked and released to the client.
    pub committed: bool,
    /// When it started, got headers, first content, ended.
    pub timing: Timing,
}

/// An attempt's moments (host clock, ms). Only those that happened are set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    /// The adapter sent it.
    pub started: u64,
    /// The provider's response headers came.
    pub headers: Option<u64>,
    /// The first content was released (the whole answer, for complete ones).
    pub first_content: Option<u64>,
    /// The answer (or the failure) was over.
    pub ended: Option<u64>,
}

/// A moment of [`Timing`] to record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// [`Timing::headers`].
    Headers,
    /// [`Timing::first_content`].
    FirstContent,
    /// [`Timing::ended`].
    Ended,
}

impl Attempt {
    /// The attempt got no answer: none at all (refused, reset, timed out), or a
    /// 2xx that broke off before it could be judged (a reset or truncation in the
    /// pre-commit window).
    pub fn unanswered(&self) -> bool {
        self.class.is_none()
            && !self.committed
            && self.status.is_none_or(|s| (200..300).contains(&s))
    }

    /// How the attempt failed, `None` when it did not (a committed answer, or one
    /// still in flight): the recorded class, else the status's, else no answer
    /// at all (`unreachable`) or a 2xx that broke off (`bad_response`).
    pub fn failure(&self) -> Option<FailureClass> {
        if self.committed {
            return None;
        }
        match (self.class, self.status) {
            (Some(c), _) => Some(c),
            (None, Some(s)) if (200..300).contains(&s) => Some(FailureClass::BadResponse),
            (None, Some(s)) => FailureClass::from_status(s),
            (None, None) => Some(FailureClass::Unreachable),
        }
    }
}

/// Everything known about one request's attempts.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    /// The plan.
    pub plan: Vec<Target>,
    /// The request's (tightened) policy.
    pub policy: Policy,
    /// Attempts in order (index = attempt number - 1).
    pub attempts: Vec<Attempt>,
    /// Size of the client's request body (for prompt estimates).
    pub request_bytes: usize,
    /// The endpoint the request is for.
    pub endpoint: Endpoint,
    /// The composite cluster a hedged request walks.
    pub hedge_cluster: Option<String>,
    /// Client headers forwarded only to providers that list them (set per attempt).
    pub client_headers: Vec<(String, String)>,
    /// The client tightened the time limits: an attempt that got no answer in time
    /// says nothing about the provider, so it counts against no circuit.
    pub client_limits: bool,
    /// The route as metrics name it: the configured alias, or `_direct`.
    pub route: String,
    /// A committed stream's continuation: `Some(true)` spliced in, `Some(false)`
    /// failed.
    pub continuation: Option<bool>,
    /// The API the client speaks (the request body Envoy holds is its chat form).
    pub client_api: ClientApi,
    /// The client's own body, for targets that speak its API natively (kept only
    /// when the plan has such a target).
    pub native_body: Option<Vec<u8>>,
    /// The client asked for a stream (its API's way).
    pub client_stream: bool,
    /// The model as the client named it (answers in its API name it so).
    pub client_model: String,
}

impl Entry {
    /// Reports for an error body; `last_detail` explains a final attempt that got
    /// no answer (Envoy's response code details).
    pub fn reports(&self, last_detail: Option<&str>) -> Vec<AttemptReport> {
        let n = self.attempts.len();
        self.attempts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let broke_off = a.status.is_some() && a.unanswered();
                let failure = a.failure().map_or("none", FailureClass::as_str);
                let message = a.message.clone().or_else(|| match (a.status, i + 1 == n) {
                    _ if broke_off => Some(format!(
                        "the answer broke off before it was complete{}",
                        last_detail
                            .filter(|_| i + 1 == n)
                            .map(|d| format!(" ({d})"))
                            .unwrap_or_default()
                    )),
                    (None, true) => last_detail.map(str::to_string),
                    (None, false) => Some("no response (connection failure or reset)".to_string()),
                    _ => None,
                });
                AttemptReport {
                    attempt: i + 1,
                    provider: a.target.provider.clone(),
                    model: a.target.model.clone(),
                    status: a.status,
                    key: a.key,
                    failure: failure.to_string(),
                    message,
                }
            })
            .collect()
    }
}

/// Whether an attempt of `entry` that got no answer (refused, reset, no headers in
/// time) counts against its target's circuit: only for configured targets, when
/// the client did not tighten the time limits (its own limit is not the provider's
/// failure) and the request was not hedged (the losing side is reset on purpose).
pub fn no_answer_counts(
    cfg: &switchyard_core::config::FilterConfig,
    entry: &Entry,
    attempt: &Attempt,
) -> bool {
    !entry.client_limits
        && entry.policy.hedge_after_ms.is_none()
        && cfg.is_configured(&attempt.target)
}

thread_local! {
    static LEDGER: RefCell<HashMap<String, Entry>> = RefCell::new(HashMap::new());
}

/// Opens the entry for a planned request.
pub fn open(request_id: &str, entry: Entry) {
    LEDGER.with(|l| {
        l.borrow_mut().insert(request_id.to_string(), entry);
    });
}

/// Records the start of attempt `n` (1-based). Only requests the planner opened
/// are tracked.
pub fn start_attempt(request_id: &str, n: usize, target: &Target, key: Option<usize>, now: u64) {
    LEDGER.with(|l| {
        if let Some(e) = l.borrow_mut().get_mut(request_id)
            && n >= 1
        {
            let attempt = Attempt {
                target: target.clone(),
                status: None,
                class: None,
                key,
                message: None,
                usage: None,
                committed: false,
                timing: Timing {
                    started: now,
                    ..Timing::default()
                },
            };
            if e.attempts.len() < n {
                e.attempts.resize(n, attempt.clone());
            }
            e.attempts[n - 1] = attempt;
        }
    });
}

/// Records a moment of attempt `n` (the first time only).
pub fn mark(request_id: &str, n: usize, moment: Moment, now: u64) {
    with_attempt(request_id, n, |a| {
        let slot = match moment {
            Moment::Headers => &mut a.timing.headers,
            Moment::FirstContent => &mut a.timing.first_content,
            Moment::Ended => &mut a.timing.ended,
        };
        slot.get_or_insert(now);
    });
}

/// Replaces the request's plan (the slots not yet tried).
pub fn set_plan(request_id: &str, plan: Vec<Target>) {
    LEDGER.with(|l| {
        if let Some(e) = l.borrow_mut().get_mut(request_id) {
            e.plan = plan;
        }
    });
}

/// Records how a committed stream's continuation went.
pub fn record_continuation(request_id: &str, spliced: bool) {
    LEDGER.with(|l| {
        if let Some(e) = l.borrow_mut().get_mut(request_id) {
            e.continuation = Some(spliced);
        }
    });
}

/// Keys of `provider` that this request's attempts have used so far.
pub fn keys_used(request_id: &str, provider: &str) -> Vec<usize> {
    LEDGER.with(|l| {
        l.borrow().get(request_id).map_or_else(Vec::new, |e| {
            e.attempts
                .iter()
                .filter(|a| a.target.provider == provider)
                .filter_map(|a| a.key)
                .collect()
        })
    })
}

/// Records attempt `n`'s response status.
pub fn record_status(request_id: &str, n: usize, status: u16) {
    with_attempt(request_id, n, |a| a.status = Some(status));
}

/// Records attempt `n`'s failure class.
pub fn record_class(request_id: &str, n: usize, class: FailureClass) {
    with_attempt(request_id, n, |a| a.class = Some(class));
}

/// Reads the request's entry without copying it.
pub fn read<R>(request_id: &str, f: impl FnOnce(&Entry) -> R) -> Option<R> {
    LEDGER.with(|l| l.borrow().get(request_id).map(f))
}

/// Records that attempt `n`'s answer was released to the client.
pub fn record_committed(request_id: &str, n: usize) {
    with_attempt(request_id, n, |a| a.committed = true);
}

/// Records the tokens attempt `n`'s answer reported.
pub fn record_usage(request_id: &str, n: usize, usage: Usage) {
    with_attempt(request_id, n, |a| a.usage = Some(usage));
}

/// Records attempt `n`'s error message.
pub fn record_message(request_id: &str, n: usize, message: String) {
    with_attempt(request_id, n, |a| a.message = Some(message));
}

fn with_attempt(request_id: &str, n: usize, f: impl FnOnce(&mut Attempt)) {
    LEDGER.with(|l| {
        if let Some(a) = l
            .borrow_mut()
            .get_mut(request_id)
            .and_then(|e| n.checked_sub(1).and_then(|i| e.attempts.get_mut(i)))
        {
            f(a);
        }
    });
}

/// Target of attempt `n` (1-based): the `n`-th entry of the request's plan.
pub fn target(request_id: &str, n: usize) -> Option<Target> {
    LEDGER.with(|l| {
        l.borrow()
            .get(request_id)
            .and_then(|e| n.checked_sub(1).and_then(|i| e.plan.get(i)).cloned())
    })
}

/// A copy of the entry.
pub fn get(request_id: &str) -> Option<Entry> {
    LEDGER.with(|l| l.borrow().get(request_id).cloned())
}

/// Whether a request with this id is in flight on this worker.
pub fn contains(request_id: &str) -> bool {
    LEDGER.with(|l| l.borrow().contains_key(request_id))
}

thread_local! {
    static SERIAL: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// An id not in flight on this worker, derived from `base`.
pub fn unique_id(base: &str) -> String {
    loop {
        let n = SERIAL.with(|s| {
            let n = s.get().wrapping_add(1);
            s.set(n);
            n
        });
        let id = if base.is_empty() {
            format!("sy-{n}")
        } else {
            format!("{base}-sy{n}")
        };
        if !contains(&id) {
            return id;
        }
    }
}

/// Forgets the request.
pub fn close(request_id: &str) {
    LEDGER.with(|l| {
        l.borrow_mut().remove(request_id);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    #[test]
    fn attempts_are_recorded_and_reported() {
        open(
            "r1",
            Entry {
                plan: vec![t("a/m1"), t("b/m2"), t("c/m3")],
                policy: Policy::default(),
                request_bytes: 100,
                endpoint: Endpoint::Chat,
                ..Entry::default()
            },
        );
        assert_eq!(target("r1", 2), Some(t("b/m2")));
        assert_eq!(target("r1", 4), None);
        assert_eq!(target("r1", 0), None);
        start_attempt("r1", 1, &t("a/m1"), None, 0);
        start_attempt("r1", 2, &t("b/m2"), None, 0);
        record_status("r1", 2, 400);
        record_class("r1", 2, FailureClass::RateLimited);
        record_message("r1", 2, "slow down".into());
        start_attempt("r1", 3, &t("c/m3"), None, 0);
        let reports = get("r1").unwrap().reports(Some(
            "upstream_reset_before_response_started{connection_failure}",
        ));
        assert_eq!(reports.len(), 3);
        assert_eq!(reports[0].failure, "unreachable");
        assert_eq!(
            reports[0].message.as_deref(),
            Some("no response (connection failure or reset)")
        );
        assert_eq!(
            (reports[1].status, reports[1].failure.as_str()),
            (Some(400), "rate_limited"),
            "a recorded class wins over the status"
        );
        assert_eq!(reports[1].message.as_deref(), Some("slow down"));
        assert!(
            reports[2]
                .message
                .as_deref()
                .unwrap()
                .contains("connection_failure")
        );
        close("r1");
        assert!(get("r1").is_none());
    }

    #[test]
    fn unknown_requests_are_not_tracked() {
        start_attempt("nobody", 1, &t("a/m"), Some(0), 0);
        record_status("nobody", 1, 500);
        assert!(get("nobody").is_none());
    }
}
