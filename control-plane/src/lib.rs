//! Switchyard's control plane: config loading and validation, Envoy resource
//! generation, the ADS server and the bootstrap generator. `main.rs` is the CLI.

pub mod bootstrap;
pub mod config;
pub mod defaults;
pub mod drill;
pub mod fleet;
pub mod governance;
pub mod health;
pub mod rates;
pub mod status;
pub mod tls;
pub mod xds;
