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

pub mod adapter;
pub mod circuit;
pub mod cooldown;
pub mod host;
pub mod ledger;
pub mod planner;

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use switchyard_core::config::{FilterConfig, Role};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Root context: holds the last good config of one plugin instance.
#[derive(Default)]
pub struct Root {
    config: Option<Rc<FilterConfig>>,
}

impl Context for Root {}

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
}
