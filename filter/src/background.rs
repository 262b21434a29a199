//! Work a filter configuration does off the request path, on a timer: the
//! planner's fleet exchange with the control plane and the adapter's active
//! health checks. The host calls [`Background::tick`] every
//! [`Background::tick_ms`] and hands back the answers of the HTTP calls it made.

use std::sync::Arc;

use switchyard_core::config::{FilterConfig, Role};
use switchyard_core::fleet::{EXCHANGE_PATH, FullReport, Observed, Outcome, Report, State};
use switchyard_core::governance::{GovReport, MAX_SUBJECTS};

use crate::host::Host;
use crate::{credentials, drill, fleet, governance, health, observed};

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
    /// Health checks in flight: token → provider.
    checks: Vec<(u32, String)>,
}

impl Background {
    /// Background work for `cfg`.
    pub fn new(cfg: Arc<FilterConfig>) -> Self {
        Background {
            cfg,
            exchange: None,
            in_flight: Vec::new(),
            gov_in_flight: None,
            observed_in_flight: None,
            gov_start: 0,
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
            self.exchange(envoy);
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
        let Some(link) = &self.cfg.fleet else {
            return;
        };
        if self.exchange.is_some() {
            return;
        }
        let outcomes = fleet::take(envoy);
        // Always sent (boot and table version at least): the control plane
        // answers with the key table as soon as it holds keys.
        let gov = governance::take(envoy, self.gov_start, MAX_SUBJECTS);
        self.gov_start = self.gov_start.wrapping_add(gov.subjects.len());
        // The control plane stamps the node id into the config it sends each
        // Envoy; the host's own answer is the fallback.
        let node = if link.node.is_empty() {
            envoy.node_id()
        } else {
            link.node.clone()
        };
        let observed = observed::take(envoy);
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
            }
            // Refused as malformed or too large: sending it again would not help.
            (Some(400 | 413), _) => {
                self.in_flight.clear();
                self.gov_in_flight = None;
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
