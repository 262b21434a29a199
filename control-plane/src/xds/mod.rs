//! xDS: resources generated from the config, and the ADS server that serves them.

pub mod delta;
pub mod observe;
pub mod resources;
pub mod serve;
pub mod server;
