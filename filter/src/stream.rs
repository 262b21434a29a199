//! The fleet exchange over a gRPC stream (`Transport::Grpc`): one worker per
//! Envoy holds `switchyard.fleet.v1.Fleet/Stream` to the control plane through
//! the bootstrap's xDS cluster, sends a report when it has news (or every
//! [`HEARTBEAT_MS`]), and applies the states the control plane pushes.
//!
//! Which worker: the first to claim the lease in shared data ([`LEASE_KEY`]);
//! it renews the lease every tick, and when it stops (its config was replaced,
//! its worker ended) another takes over after the lease runs out. What the
//! reports carry is shared by all workers already (counters in shared data),
//! and so is what a state sets: every worker plans with it at once.
//!
//! A state is applied only when newer than the last applied
//! ([`switchyard_core::fleet::is_newer`]; its stamp is kept in shared data, so
//! a worker taking over the stream never applies an older state either).
//! Parts a state leaves out are unchanged. A stream that fails, or that hears
//! nothing for three of the control plane's heartbeats, is dropped and opened
//! again after a back-off (250 ms doubling to 8 s, reset by a state received).
//!
//! Reports are numbered per stream; the control plane answers each with a
//! state naming it (`answers`). What a report carried is kept until it is
//! answered and put back into shared data (to go with the next report) when
//! the stream ends first, as the HTTP exchange does when a request fails.
//! At most [`MAX_UNANSWERED`] are kept: with that many unanswered the worker
//! waits (the counts stay in shared data) until answers come or the stream is
//! left as silent.

use std::collections::VecDeque;

use switchyard_core::fleet::{
    FullReport, HEARTBEAT_MS, METHOD, Observed, Outcome, Push, Report, SERVICE, State, is_newer,
};
use switchyard_core::governance::GovReport;
use switchyard_proto::convert;

use crate::host::{self, Cas, Host};
use crate::{credentials, drill, fleet, governance};

/// The lease on the stream: `<holder> <until_ms>`.
pub const LEASE_KEY: &str = "sy_fleet_stream_lease";

/// The stamp of the last state applied: `<epoch> <version>`.
pub const APPLIED_KEY: &str = "sy_fleet_stream_applied";

const BACKOFF_MIN_MS: u64 = 250;
const BACKOFF_MAX_MS: u64 = 8_000;

/// Reports sent and not answered that a worker keeps at most.
pub const MAX_UNANSWERED: usize = 8;

/// gRPC status INVALID_ARGUMENT: the control plane refused a report as
/// malformed (sending its counts again would not help).
const INVALID_ARGUMENT: u32 = 3;

/// What a report sent on the stream carried, until it is answered.
#[derive(Debug)]
struct Sent {
    seq: u64,
    outcomes: Vec<Outcome>,
    gov: GovReport,
    observed: Observed,
}

/// One worker's side of the stream.
#[derive(Debug)]
pub struct Stream {
    /// This worker's name in the lease.
    me: String,
    /// The open stream (its token).
    token: Option<u32>,
    /// The next report is the stream's first (it names the node).
    first: bool,
    /// When the last report went up.
    sent_ms: u64,
    /// When the control plane was last heard.
    heard_ms: u64,
    /// The control plane's heartbeat, as its states say.
    heartbeat_ms: u64,
    /// No stream opens before this.
    retry_at_ms: u64,
    backoff_ms: u64,
    /// The last report's number on this stream.
    seq: u64,
    /// Reports sent and not answered yet, oldest first.
    unanswered: VecDeque<Sent>,
}

impl Stream {
    /// A worker's side, named `me` in the lease (random per worker).
    pub fn new(me: String) -> Self {
        Stream {
            me,
            token: None,
            first: true,
            sent_ms: 0,
            heard_ms: 0,
            heartbeat_ms: HEARTBEAT_MS,
            retry_at_ms: 0,
            backoff_ms: BACKOFF_MIN_MS,
            seq: 0,
            unanswered: VecDeque::new(),
        }
    }

    /// The token of the open stream.
    pub fn token(&self) -> Option<u32> {
        self.token
    }

    /// Takes (or renews) the lease; `false` when another worker holds it.
    fn lease(&self, host: &impl Host, now: u64, ttl: u64) -> bool {
        let (value, cas) = host.shared_get(LEASE_KEY);
        let text = value
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        let mut parts = text.split(' ');
        let holder = parts.next().unwrap_or("");
        let until: u64 = parts.next().and_then(|u| u.parse().ok()).unwrap_or(0);
        if holder != self.me && until > now {
            return false;
        }
        let mine = format!("{} {}", self.me, now + ttl);
        host.shared_set(LEASE_KEY, mine.as_bytes(), cas) == Cas::Done
    }

    /// One timer tick (every `interval_ms`): keeps the stream (the lease, a
    /// silent control plane, reconnection) and sends a report with news.
    pub fn tick(&mut self, host: &impl Host, cluster: &str, node: &str, interval_ms: u64) {
        let now = host.now_ms();
        let ttl = (interval_ms * 4).max(1_000);
        if !self.lease(host, now, ttl) {
            // Another worker holds the stream; should this one still have one
            // (it lost the lease while stalled), it lets it go.
            if let Some(token) = self.token {
                host.grpc_stream_cancel(token);
            }
            self.drop_stream(host, now, false);
            return;
        }
        if let Some(token) = self.token
            && now.saturating_sub(self.heard_ms) > 3 * self.heartbeat_ms
        {
            log::warn!("switchyard: fleet stream silent for 3 heartbeats: reconnecting");
            host.grpc_stream_cancel(token);
            self.drop_stream(host, now, true);
        }
        if self.token.is_none() {
            if now < self.retry_at_ms {
                return;
            }
            match host.grpc_stream_open(cluster, SERVICE, METHOD) {
                Some(t) => {
                    self.token = Some(t);
                    self.first = true;
                    self.seq = 0;
                    self.heard_ms = now;
                }
                None => {
                    self.drop_stream(host, now, true);
                    return;
                }
            }
        }
        self.report(host, node, now);
    }

    /// Sends what this Envoy has to say: always the stream's first report
    /// (it names the node) and one per heartbeat; else only with news.
    fn report(&mut self, host: &impl Host, node: &str, now: u64) {
        let Some(token) = self.token else {
            return;
        };
        if self.unanswered.len() >= MAX_UNANSWERED {
            // The control plane is behind: the counts wait in shared data.
            return;
        }
        let outcomes = fleet::take(host);
        let (gov, _) = governance::take(host, 0, switchyard_core::governance::MAX_SUBJECTS);
        let observed = crate::observed::take(host);
        let news = !outcomes.is_empty()
            || !gov.subjects.is_empty()
            || !gov.decisions.is_empty()
            || gov.dropped > 0
            || observed != Observed::default();
        // Credit withdrawals (meters found lean) are pushed to every stream,
        // so an Envoy with keys but no news stays silent too.
        let due = self.first || now.saturating_sub(self.sent_ms) >= HEARTBEAT_MS;
        if !news && !due {
            governance::restore(host, &gov);
            return;
        }
        let full = FullReport {
            report: Report {
                node: node.to_string(),
                outcomes: outcomes.clone(),
                gov: Some(gov.clone()),
                credentials: credentials::version(host),
            },
            observed: observed.clone(),
        };
        let seq = self.seq + 1;
        let bytes = convert::encode(&switchyard_proto::fleet::v1::Report {
            seq,
            ..convert::report(&full)
        });
        if host.grpc_stream_send(token, &bytes) {
            self.first = false;
            self.sent_ms = now;
            self.seq = seq;
            self.unanswered.push_back(Sent {
                seq,
                outcomes,
                gov,
                observed,
            });
        } else {
            restore(host, &outcomes, &gov, &observed);
            host.grpc_stream_cancel(token);
            self.drop_stream(host, now, true);
        }
    }

    /// A message on the stream: a state to apply when newer than the last.
    pub fn on_message(&mut self, host: &impl Host, token: u32, bytes: &[u8]) {
        if self.token != Some(token) {
            return;
        }
        let now = host.now_ms();
        self.heard_ms = now;
        self.backoff_ms = BACKOFF_MIN_MS;
        let push = match convert::decode_state(bytes) {
            Ok(s) => {
                // Taken by the control plane (even when the state is stale).
                while self.unanswered.front().is_some_and(|r| r.seq <= s.answers) {
                    self.unanswered.pop_front();
                }
                convert::push(s)
            }
            Err(e) => {
                log::warn!("switchyard: fleet stream: not a state: {e}");
                return;
            }
        };
        if push.heartbeat_ms > 0 {
            self.heartbeat_ms = push.heartbeat_ms;
        }
        apply(host, push);
    }

    /// The stream ended (the control plane went away, or refused it).
    pub fn on_close(&mut self, host: &impl Host, token: u32, status: u32) {
        if self.token != Some(token) {
            return;
        }
        log::info!("switchyard: fleet stream closed (grpc-status {status}): reconnecting");
        if status == INVALID_ARGUMENT {
            for r in self.unanswered.drain(..) {
                governance::discard(host, &r.gov);
            }
        }
        self.drop_stream(host, host.now_ms(), true);
    }

    /// Lets the stream go; what its unanswered reports carried goes with the
    /// next report.
    fn drop_stream(&mut self, host: &impl Host, now: u64, back_off: bool) {
        for r in self.unanswered.drain(..) {
            restore(host, &r.outcomes, &r.gov, &r.observed);
        }
        self.token = None;
        if back_off {
            self.retry_at_ms = now + self.backoff_ms;
            self.backoff_ms = (self.backoff_ms * 2).min(BACKOFF_MAX_MS);
        }
    }
}

/// Applies a pushed state when it is newer than the last applied; parts it
/// leaves out stay as they are. Returns whether it was applied.
pub fn apply(host: &impl Host, push: Push) -> bool {
    let applied = host::shared_text(host, APPLIED_KEY);
    let last = applied
        .split_once(' ')
        .and_then(|(e, v)| v.parse::<u64>().ok().map(|v| (e, v)));
    if !is_newer(&push.epoch, push.version, last) {
        return false;
    }
    let stamp = format!("{} {}", push.epoch, push.version);
    if let Some(c) = &push.credentials {
        credentials::apply(host, c);
    }
    if let Some(t) = push.targets {
        fleet::apply(
            host,
            &State {
                open: t.open,
                weights: t.weights,
                ..State::default()
            },
        );
    }
    if let Some(f) = &push.faults {
        drill::apply(host, f);
    }
    if let Some(g) = &push.gov {
        governance::apply(host, g);
    }
    host.shared_set(APPLIED_KEY, stamp.as_bytes(), None);
    true
}

fn restore(host: &impl Host, outcomes: &[Outcome], gov: &GovReport, observed: &Observed) {
    for o in outcomes {
        fleet::restore(host, o);
    }
    governance::restore(host, gov);
    crate::observed::restore(host, observed);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::testing::MemHost;
    use switchyard_core::config::Target;
    use switchyard_core::fleet::{Open, Targets};

    fn open(host: &MemHost, t: &str) -> bool {
        fleet::is_open(host, &Target::parse(t).unwrap(), host.now)
    }

    fn push(epoch: &str, version: u64, open: &[&str]) -> Push {
        Push {
            epoch: epoch.into(),
            version,
            heartbeat_ms: 5000,
            targets: Some(Targets {
                open: open
                    .iter()
                    .map(|t| Open {
                        target: t.to_string(),
                        until_ms: u64::MAX / 2,
                    })
                    .collect(),
                weights: vec![],
            }),
            ..Push::default()
        }
    }

    #[test]
    fn stale_states_are_not_applied() {
        let host = MemHost::with_request(&[]);
        // A configured target (the filter counts it).
        fleet::record(&host, &Target::parse("p/m").unwrap(), true);
        assert!(apply(&host, push("a", 2, &["p/m"])));
        assert!(open(&host, "p/m"));
        // An older state of the same control plane (reordered) changes nothing.
        assert!(!apply(&host, push("a", 1, &[])));
        assert!(open(&host, "p/m"));
        // A restarted control plane starts again from 1.
        assert!(apply(&host, push("b", 1, &[])));
        assert!(!open(&host, "p/m"));
        // A heartbeat (no part) changes nothing but the stamp.
        assert!(apply(
            &host,
            Push {
                epoch: "b".into(),
                version: 2,
                ..Push::default()
            }
        ));
        assert!(!open(&host, "p/m"));
    }

    #[test]
    fn one_worker_holds_the_stream_and_another_takes_over_when_it_stops() {
        let mut host = MemHost::with_request(&[]);
        let mut w1 = Stream::new("w1".into());
        let mut w2 = Stream::new("w2".into());
        w1.tick(&host, "switchyard_xds", "n", 250);
        w2.tick(&host, "switchyard_xds", "n", 250);
        assert!(w1.token().is_some());
        assert!(w2.token().is_none());
        assert_eq!(host.streams.borrow().len(), 1);
        // The first report names the node.
        let sent = host.stream_sent.borrow();
        let first =
            <switchyard_proto::fleet::v1::Report as prost::Message>::decode(&sent[0][..]).unwrap();
        assert_eq!(first.node, "n");
        drop(sent);
        // Nothing new: nothing sent until the heartbeat is due.
        w1.tick(&host, "switchyard_xds", "n", 250);
        assert_eq!(host.stream_sent.borrow().len(), 1);
        // w1 stops ticking; once its lease ran out, w2 takes over.
        host.now += 1_001;
        w2.tick(&host, "switchyard_xds", "n", 250);
        assert!(w2.token().is_some());
        // w1 comes back: it lets its stream go.
        w1.tick(&host, "switchyard_xds", "n", 250);
        assert!(w1.token().is_none());
        assert_eq!(*host.stream_cancelled.borrow(), vec![1]);
    }

    #[test]
    fn a_closed_stream_is_opened_again_after_a_growing_back_off() {
        let mut host = MemHost::with_request(&[]);
        let mut w = Stream::new("w".into());
        w.tick(&host, "switchyard_xds", "n", 250);
        let mut opened = 1;
        for wait in [250, 500, 1000, 2000] {
            let token = w.token().unwrap();
            w.on_close(&host, token, 14);
            assert!(w.token().is_none());
            host.now += wait - 1;
            w.tick(&host, "switchyard_xds", "n", 250);
            assert!(w.token().is_none(), "reopened before {wait} ms");
            host.now += 1;
            w.tick(&host, "switchyard_xds", "n", 250);
            assert!(w.token().is_some(), "not reopened after {wait} ms");
            opened += 1;
            assert_eq!(host.streams.borrow().len(), opened);
        }
        // A state received resets the back-off.
        let token = w.token().unwrap();
        let state = switchyard_proto::convert::encode(&switchyard_proto::convert::state(&Push {
            epoch: "e".into(),
            version: 1,
            ..Push::default()
        }));
        w.on_message(&host, token, &state);
        w.on_close(&host, token, 14);
        host.now += 250;
        w.tick(&host, "switchyard_xds", "n", 250);
        assert!(w.token().is_some());
    }

    fn sent(host: &MemHost, i: usize) -> switchyard_proto::fleet::v1::Report {
        <switchyard_proto::fleet::v1::Report as prost::Message>::decode(
            &host.stream_sent.borrow()[i][..],
        )
        .unwrap()
    }

    fn answer(seq: u64, version: u64) -> Vec<u8> {
        let state = switchyard_proto::convert::state(&Push {
            epoch: "e".into(),
            version,
            ..Push::default()
        });
        switchyard_proto::convert::encode(&switchyard_proto::fleet::v1::State {
            answers: seq,
            ..state
        })
    }

    #[test]
    fn what_an_unanswered_report_carried_goes_again_when_the_stream_breaks() {
        let mut host = MemHost::with_request(&[]);
        let t = Target::parse("p/m").unwrap();
        let mut w = Stream::new("w".into());
        w.tick(&host, "switchyard_xds", "n", 250);
        assert_eq!(sent(&host, 0).seq, 1);
        let token = w.token().unwrap();
        // Report 2 carries an outcome; it is answered: gone for good.
        fleet::record(&host, &t, false);
        w.tick(&host, "switchyard_xds", "n", 250);
        let r = sent(&host, 1);
        assert_eq!((r.seq, r.outcomes.len()), (2, 1));
        w.on_message(&host, token, &answer(2, 1));
        // Report 3 carries another; the stream breaks before its answer.
        fleet::record(&host, &t, true);
        w.tick(&host, "switchyard_xds", "n", 250);
        assert_eq!(sent(&host, 2).seq, 3);
        w.on_close(&host, token, 14);
        host.now += 250;
        w.tick(&host, "switchyard_xds", "n", 250);
        // The new stream's first report carries report 3's outcome (only).
        let r = sent(&host, 3);
        assert_eq!(r.seq, 1);
        assert_eq!(r.outcomes.len(), 1);
        assert_eq!((r.outcomes[0].ok, r.outcomes[0].failed), (1, 0));
    }

    #[test]
    fn a_worker_waits_while_too_many_reports_are_unanswered() {
        let mut host = MemHost::with_request(&[]);
        let t = Target::parse("p/m").unwrap();
        let mut w = Stream::new("w".into());
        for i in 0..MAX_UNANSWERED + 3 {
            fleet::record(&host, &t, true);
            w.tick(&host, "switchyard_xds", "n", 250);
            host.now += 10;
            assert!(
                host.stream_sent.borrow().len() <= MAX_UNANSWERED,
                "report {i}"
            );
        }
        assert_eq!(host.stream_sent.borrow().len(), MAX_UNANSWERED);
        // An answer to them all: the waiting counts go with the next report.
        let token = w.token().unwrap();
        w.on_message(&host, token, &answer(MAX_UNANSWERED as u64, 1));
        w.tick(&host, "switchyard_xds", "n", 250);
        let r = sent(&host, MAX_UNANSWERED);
        assert_eq!(r.outcomes[0].ok, 3);
    }

    #[test]
    fn a_silent_control_plane_is_left_after_three_heartbeats() {
        let mut host = MemHost::with_request(&[]);
        let mut w = Stream::new("w".into());
        w.tick(&host, "switchyard_xds", "n", 250);
        let token = w.token().unwrap();
        host.now += 3 * HEARTBEAT_MS + 1;
        w.tick(&host, "switchyard_xds", "n", 250);
        assert_eq!(*host.stream_cancelled.borrow(), vec![token]);
    }
}
