//! Switchyard's filter logic, independent of the Envoy host it runs in.
//!
//! Two roles (ARCHITECTURE.md §2), chosen by the filter configuration:
//! - the **planner** runs as a downstream HTTP filter: it validates the OpenAI
//!   request, plans the chain of targets and hands the plan to the router through
//!   filter state;
//! - the **adapter** runs in the router's `upstream_http_filters`, once per attempt:
//!   it rewrites the attempt for its provider and translates the answer back.
//!
//! Both roles of one worker share the per-worker [`ledger`] of attempts. Everything
//! they ask of Envoy goes through [`host::Host`], implemented by the proxy-wasm
//! module (`filter/wasm`) and the native dynamic module (`filter/native`).

pub mod adapter;
pub mod audit;
pub mod background;
pub mod budget;
pub mod circuit;
pub mod continuation;
pub mod cooldown;
pub mod cost;
pub mod credentials;
pub mod decision;
pub mod drill;
pub mod fleet;
pub mod governance;
pub mod health;
pub mod host;
pub mod ledger;
pub mod metrics;
pub mod observed;
pub mod planner;
pub mod profile;
pub mod stream;
#[cfg(test)]
mod testing;
