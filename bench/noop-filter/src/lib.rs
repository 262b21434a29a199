//! A proxy-wasm HTTP filter that does nothing. `make bench` runs two of them (one
//! downstream, one in the router's upstream filters, as Switchyard's planner and
//! adapter are placed) on an otherwise bare Envoy: the cost of the V8 runtime and
//! its callbacks, under which Switchyard's own logic cannot go.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Noop) });
}}

struct Noop;

impl Context for Noop {}

impl RootContext for Noop {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl HttpContext for Noop {}
