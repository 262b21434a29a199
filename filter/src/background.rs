//! Work a filter configuration does off the request path, on a timer: the
//! planner's fleet exchange with the control plane and the adapter's active
//! health checks. The host calls [`Background::tick`] every
//! [`Background::tick_ms`] and hands back the answers of the HTTP calls it made.

use std::sync::Arc;

use switchyard_core::config::{FilterConfig, Role, Transport};
use switchyard_core::fleet::{EXCHANGE_PATH, FullReport, Observed, Outcome, Report, State};
use switchyard_core::governance::{GovReport, MAX_SUBJECTS};

use crate::host::Host;
use crate::{credentials, drill, fleet, governance, health, observed, stream};

/// The background state of one filter configuration.
#[derive(Debug)]
pub struct Background {
    cfg: Arc<FilterConfig>,
    /// An exchange is in flight (its token).
    exchange: Option<u32>,
    /// Outcomes taken for the exchange in flight, restored if it fails.
    in_flight: Vec<Outcome>,
    /// Governance use taken for the exchange in flight, restored if it fails.
    gov_in_flight: Option<GovReport>,
    /// Rates and drill counts taken for the exchange in flight, restored if it fails.
    observed_in_flight: Option<Observed>,
    /// Where the next report's governance subjects start (reports are bounded;
    /// a fleet with more subjects than one report holds takes turns).
    gov_start: usize,
    /// The report in flight went out full of decisions, and more wait.
    decisions_full: bool,
    /// Health checks in flight: token → provider.
    checks: Vec<(u32, String)>,
    /// The fleet stream (`Transport::Grpc`), in place of the HTTP exchange.
    stream: Option<stream::Stream>,
}

impl Background {
    /// Background work for `cfg`.
    pub fn new(cfg: Arc<FilterConfig>) -> Self {
        Self::with_name(cfg, String::new())
    }

    /// Background work for `cfg` of the worker named `me` (random per worker:
    /// the fleet stream's lease names its holder).
    pub fn with_name(cfg: Arc<FilterConfig>, me: String) -> Self {
        let stream = cfg
            .fleet
            .as_ref()
            .filter(|l| l.transport == Transport::Grpc && cfg.role == Role::Planner)
            .map(|_| stream::Stream::new(me));
        Background {
            stream,
            cfg,
            exchange: None,
            in_flight: Vec::new(),
            gov_in_flight: None,
            observed_in_flight: None,
            gov_start: 0,
            decisions_full: false,
            checks: Vec::new(),
        }
    }

    /// How often [`Background::tick`] should run; `None` when there is nothing to do.
    pub fn tick_ms(&self) -> Option<u64> {
        match self.cfg.role {
            Role::Planner => self.cfg.fleet.as_ref().map(|l| l.interval_ms.max(50)),
            Role::Adapter => self
                .cfg
                .health_check
                .as_ref()
                .map(|hc| (hc.interval_ms / 4).clamp(50, 1000)),
        }
    }

    /// One timer tick.
    pub fn tick(&mut self, envoy: &impl Host) {
        if self.cfg.role == Role::Planner {
            match (&mut self.stream, &self.cfg.fleet) {
                (Some(s), Some(link)) => {
                    let node = if link.node.is_empty() {
                        envoy.node_id()
                    } else {
                        link.node.clone()
                    };
                    s.tick(envoy, &link.cluster, &node, link.interval_ms.max(50));
                }
                _ => self.exchange(envoy),
            }
        }
        if let Some(hc) = self
            .cfg
            .health_check
            .as_ref()
            .filter(|_| self.cfg.role == Role::Adapter)
        {
            let now = envoy.now_ms();
            for (name, p) in &self.cfg.providers {
                if health::claim(envoy, name, hc, now)
                    && let Some(token) = health::check(envoy, &self.cfg, name, p, hc)
                {
                    self.checks.push((token, name.clone()));
                }
            }
        }
    }

    /// Sends this Envoy's outcomes since the last report; the answer is the
    /// fleet's state.
    fn exchange(&mut self, envoy: &impl Host) {
        if self.cfg.fleet.is_none() || self.exchange.is_some() {
            return;
        }
        let outcomes = fleet::take(envoy);
        // Always sent (boot and table version at least): the control plane
        // answers with the key table as soon as it holds keys.
        let (gov, full) = governance::take(envoy, self.gov_start, MAX_SUBJECTS);
        self.gov_start = self.gov_start.wrapping_add(gov.subjects.len());
        let observed = observed::take(envoy);
        self.decisions_full = full;
        self.send(envoy, outcomes, gov, observed);
    }

    /// After a report that went out full of decisions, sends those waiting
    /// beyond it at once, in a report of their own (no meters), and again
    /// while they fill reports, instead of one report per tick: on the native
    /// module one exchange drains the decisions of every worker.
    fn drain_decisions(&mut self, envoy: &impl Host) {
        if self.exchange.is_some() || !std::mem::take(&mut self.decisions_full) {
            return;
        }
        let (gov, full) = governance::take_decisions(envoy);
        if gov.decisions.is_empty() && gov.dropped == 0 {
            return;
        }
        self.decisions_full = full;
        self.send(envoy, Vec::new(), gov, Observed::default());
    }

    fn send(
        &mut self,
        envoy: &impl Host,
        outcomes: Vec<Outcome>,
        gov: GovReport,
        observed: Observed,
    ) {
        let Some(link) = &self.cfg.fleet else {
            return;
        };
        // The control plane stamps the node id into the config it sends each
        // Envoy; the host's own answer is the fallback.
        let node = if link.node.is_empty() {
            envoy.node_id()
        } else {
            link.node.clone()
        };
        let body = serde_json::to_vec(&FullReport {
            report: Report {
                node,
                outcomes: outcomes.clone(),
                gov: Some(gov.clone()),
                credentials: credentials::version(envoy),
            },
            observed: observed.clone(),
        })
        .unwrap_or_default();
        let headers = [
            (":method", "POST"),
            (":path", EXCHANGE_PATH),
            (":authority", "switchyard"),
            ("content-type", "application/json"),
        ];
        match envoy.http_call(
            &link.cluster,
            &headers,
            Some(&body),
            link.interval_ms.max(100) * 4,
        ) {
            Some(token) => {
                self.exchange = Some(token);
                self.in_flight = outcomes;
                self.gov_in_flight = Some(gov);
                self.observed_in_flight = Some(observed);
            }
            None => {
                restore(envoy, &outcomes);
                governance::restore(envoy, &gov);
                observed::restore(envoy, &observed);
            }
        }
    }

    /// A message on a gRPC stream this task opened.
    pub fn on_grpc_message(&mut self, envoy: &impl Host, token: u32, message: &[u8]) {
        if let Some(s) = &mut self.stream {
            s.on_message(envoy, token, message);
        }
    }

    /// A gRPC stream this task opened ended.
    pub fn on_grpc_close(&mut self, envoy: &impl Host, token: u32, status: u32) {
        if let Some(s) = &mut self.stream {
            s.on_close(envoy, token, status);
        }
    }

    /// The answer of an HTTP call this task made: `status` is `None` when the
    /// call failed without one.
    pub fn on_http_response(
        &mut self,
        envoy: &impl Host,
        token: u32,
        status: Option<u16>,
        body: &[u8],
    ) {
        if let Some(i) = self.checks.iter().position(|(t, _)| *t == token) {
            let (_, provider) = self.checks.swap_remove(i);
            let passed = status.is_some_and(|s| (200..300).contains(&s));
            if let Some(hc) = &self.cfg.health_check {
                health::record(envoy, &provider, hc, passed);
            }
            return;
        }
        if self.exchange != Some(token) {
            return;
        }
        self.exchange = None;
        match (status, serde_json::from_slice::<State>(body)) {
            (Some(200), Ok(state)) => {
                self.in_flight.clear();
                self.gov_in_flight = None;
                self.observed_in_flight = None;
                if let Some(c) = &state.credentials {
                    credentials::apply(envoy, c);
                }
                fleet::apply(envoy, &state);
                drill::apply(envoy, &state.faults);
                if let Some(gov) = &state.gov {
                    governance::apply(envoy, gov);
                }
                self.drain_decisions(envoy);
            }
            // Refused as malformed or too large: sending it again would not help
            // (its decisions are counted as not recorded, for the next report).
            (Some(400 | 413), _) => {
                self.in_flight.clear();
                if let Some(gov) = self.gov_in_flight.take() {
                    governance::discard(envoy, &gov);
                }
                self.observed_in_flight = None;
            }
            _ => {
                // The control plane is away: keep the counts for the next try and
                // keep serving with the last fleet state (and the allowance held).
                let lost = std::mem::take(&mut self.in_flight);
                restore(envoy, &lost);
                if let Some(gov) = self.gov_in_flight.take() {
                    governance::restore(envoy, &gov);
                }
                if let Some(o) = self.observed_in_flight.take() {
                    observed::restore(envoy, &o);
                }
            }
        }
    }
}

/// Puts outcomes that could not be reported back into the counters.
fn restore(envoy: &impl Host, outcomes: &[Outcome]) {
    for o in outcomes {
        fleet::restore(envoy, o);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::audit;
    use crate::testing::MemHost;
    use switchyard_core::governance::{Decision, MAX_DECISIONS, Reason};

    fn planner_with_fleet() -> Arc<FilterConfig> {
        let json = serde_json::json!({
            "version": "t", "role": "planner", "max_request_bytes": 1000, "max_attempts": 4,
            "providers": {"a": {"dialect": "openai", "cluster": "ca", "authority": "h", "base_path": "/v1"}},
            "routes": {"chat": {"chain": [{"provider": "a", "model": "m"}]}},
            "fleet": {"cluster": "sy_fleet", "interval_ms": 250, "node": "n"},
        });
        Arc::new(FilterConfig::from_json(json.to_string().as_bytes()).unwrap())
    }

    #[test]
    fn decisions_beyond_a_full_report_go_at_once_and_come_back_if_lost() {
        let host = MemHost::with_request(&[]);
        let mut bg = Background::new(planner_with_fleet());
        for n in 0..audit::CAPACITY {
            audit::record(&host, &Decision::new(n, "r", Reason::KeyMissing));
        }
        bg.tick(&host);
        assert_eq!(host.calls.borrow().len(), 1);
        assert_eq!(audit::backlog(&host), MAX_DECISIONS as u64);
        // Answered: what waits beyond a full report goes now, not in 250 ms.
        bg.on_http_response(&host, 1, Some(200), b"{\"open\":[]}");
        assert_eq!(host.calls.borrow().len(), 2);
        assert_eq!(audit::backlog(&host), 0);
        // That one was not full: decisions arriving meanwhile wait for the
        // tick.
        for n in 0..10 {
            audit::record(&host, &Decision::new(n, "r", Reason::KeyMissing));
        }
        // That one is lost: its decisions wait again; nothing more is sent
        // until the next tick.
        bg.on_http_response(&host, 2, None, b"");
        assert_eq!(audit::backlog(&host), MAX_DECISIONS as u64 + 10);
        assert_eq!(host.calls.borrow().len(), 2);
        bg.tick(&host);
        bg.on_http_response(&host, 3, Some(200), b"{\"open\":[]}");
        assert_eq!(host.calls.borrow().len(), 4, "full again: drained");
        bg.on_http_response(&host, 4, Some(200), b"{\"open\":[]}");
        assert_eq!((host.calls.borrow().len(), audit::backlog(&host)), (4, 0));
    }
}
