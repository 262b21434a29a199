//! The Switchyard proxy-wasm filter.
//!
//! One module, two roles (ARCHITECTURE.md §2), chosen by the plugin configuration:
//! - the **planner** runs as a downstream HTTP filter: it validates the OpenAI
//!   request, plans the chain of targets and hands the plan to the router through
//!   filter state;
//! - the **adapter** runs in the router's `upstream_http_filters`, once per attempt:
//!   it rewrites the attempt for its provider and translates the answer back.
//!
//! Both roles run in the same VM (same `vm_id` and code), so they share the
//! per-worker [`ledger`] of attempts.

/// Times the rest of the block as callback `$name` (feature `profile` only).
macro_rules! profile_span {
    ($name:expr) => {
        #[cfg(feature = "profile")]
        let _span = crate::profile::Span::new($name);
    };
}

pub mod adapter;
pub mod circuit;
pub mod cooldown;
pub mod cost;
pub mod fleet;
pub mod health;
pub mod host;
pub mod ledger;
pub mod planner;
#[cfg(feature = "profile")]
pub mod profile;

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use switchyard_core::config::{FilterConfig, Role};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Root context: holds the last good config of one plugin instance; the
/// planner's also runs the fleet exchange on a timer.
#[derive(Default)]
pub struct Root {
    config: Option<Rc<FilterConfig>>,
    /// An exchange is in flight (its token).
    exchange: Option<u32>,
    /// Outcomes taken for the exchange in flight, restored if it fails.
    in_flight: Vec<switchyard_core::fleet::Outcome>,
    /// Health checks in flight: token → provider.
    checks: Vec<(u32, String)>,
}

impl Root {
    fn exchange(&mut self, link: &switchyard_core::fleet::Link) {
        if self.exchange.is_some() {
            return;
        }
        let node = host::property(&["node", "id"])
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .unwrap_or_default();
        let outcomes = fleet::take();
        let body = serde_json::to_vec(&switchyard_core::fleet::Report {
            node,
            outcomes: outcomes.clone(),
        })
        .unwrap_or_default();
        let headers = vec![
            (":method", "POST"),
            (":path", switchyard_core::fleet::EXCHANGE_PATH),
            (":authority", "switchyard"),
            ("content-type", "application/json"),
        ];
        match proxy_wasm::hostcalls::dispatch_http_call(
            &link.cluster,
            headers,
            Some(&body),
            vec![],
            std::time::Duration::from_millis(link.interval_ms.max(100) * 4),
        ) {
            Ok(token) => {
                self.exchange = Some(token);
                self.in_flight = outcomes;
            }
            Err(_) => restore(&outcomes),
        }
    }
}

/// Puts outcomes that could not be reported back into the counters.
fn restore(outcomes: &[switchyard_core::fleet::Outcome]) {
    for o in outcomes {
        fleet::restore(o);
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if let Some(i) = self.checks.iter().position(|(t, _)| *t == token) {
            let (_, provider) = self.checks.swap_remove(i);
            let status = proxy_wasm::hostcalls::get_map_value(
                proxy_wasm::types::MapType::HttpCallResponseHeaders,
                ":status",
            )
            .ok()
            .flatten();
            let passed = status.as_deref().is_some_and(|s| s.starts_with('2'));
            if let Some(hc) = self.config.as_ref().and_then(|c| c.health_check.clone()) {
                health::record(&provider, &hc, passed);
            }
            return;
        }
        if self.exchange != Some(token) {
            return;
        }
        self.exchange = None;
        let status = proxy_wasm::hostcalls::get_map_value(
            proxy_wasm::types::MapType::HttpCallResponseHeaders,
            ":status",
        )
        .ok()
        .flatten();
        let body = host::body(
            proxy_wasm::types::BufferType::HttpCallResponseBody,
            body_size,
        );
        match (
            status.as_deref(),
            serde_json::from_slice::<switchyard_core::fleet::State>(&body),
        ) {
            (Some("200"), Ok(state)) => {
                self.in_flight.clear();
                fleet::apply(&state);
                fleet::apply_weights(&state);
            }
            _ => {
                // The control plane is away: keep the counts for the next try and
                // keep serving with the last fleet state.
                let lost = std::mem::take(&mut self.in_flight);
                restore(&lost);
            }
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = host::plugin_configuration().unwrap_or_default();
        match FilterConfig::from_json(&bytes) {
            Ok(cfg) => {
                log::info!(
                    "switchyard {:?}: config version {} ({} providers, {} routes)",
                    cfg.role,
                    cfg.version,
                    cfg.providers.len(),
                    cfg.routes.len()
                );
                if let Some(hc) = cfg
                    .health_check
                    .as_ref()
                    .filter(|_| cfg.role == Role::Adapter)
                {
                    let period =
                        std::time::Duration::from_millis((hc.interval_ms / 4).clamp(50, 1000));
                    let _ = proxy_wasm::hostcalls::set_tick_period(period);
                }
                if let Some(link) = cfg.fleet.as_ref().filter(|_| cfg.role == Role::Planner) {
                    let _ = proxy_wasm::hostcalls::set_tick_period(
                        std::time::Duration::from_millis(link.interval_ms.max(50)),
                    );
                }
                self.config = Some(Rc::new(cfg));
                true
            }
            Err(e) => {
                log::error!("switchyard: rejected config: {e}");
                // Keep serving with the last good config; refuse only a first bad one.
                self.config.is_some()
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let cfg = self.config.clone()?;
        Some(match cfg.role {
            Role::Planner => Box::new(planner::Planner::new(cfg)),
            Role::Adapter => Box::new(adapter::Adapter::new(cfg)),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn on_tick(&mut self) {
        let Some(cfg) = self.config.clone() else {
            return;
        };
        if let Some(link) = &cfg.fleet {
            self.exchange(link);
        }
        if let Some(hc) = cfg
            .health_check
            .as_ref()
            .filter(|_| cfg.role == Role::Adapter)
        {
            let now = host::now_ms();
            for (name, p) in &cfg.providers {
                if health::claim(name, hc, now)
                    && let Some(token) = health::check(name, p, hc)
                {
                    self.checks.push((token, name.clone()));
                }
            }
        }
    }
}
