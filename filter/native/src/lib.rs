//! Switchyard as a native Envoy dynamic module (`libswitchyard_native.so`, loaded by
//! `envoy.filters.http.dynamic_modules`, Envoy 1.40, ABI `v0.2.0`).
//!
//! * `abi` (private): the C ABI: declarations of Envoy's callbacks, the exported event
//!   hooks, and the only `unsafe` code of the workspace.
//! * [`api`]: the safe API filters are written against: implement [`api::FilterConfig`] and
//!   [`api::Filter`] (and [`api::ClusterSpecifier`]), talk to Envoy through the handles lent
//!   to each hook ([`api::Stream`], [`api::ConfigHandle`], [`api::RouteContext`]).
//! * [`filters`]: what this module exports, chosen by `filter_name`: `switchyard` (the
//!   planner or the adapter, by the role in its JSON config), `noop` (the benchmark
//!   floor) and `probe` (diagnostics for `tests/envoy_probe.rs`).
//! * [`ticker`]: periodic main-thread work for a filter config.
//!
//! docs/native-module.md records how Envoy 1.40 behaves behind each call (checked by
//! `tests/envoy_probe.rs` on the real binary).
#![deny(unsafe_code)]

mod abi;
pub mod api;
pub mod filters;
mod grpc;
pub mod kv;
mod logger;
mod store;
pub mod ticker;
