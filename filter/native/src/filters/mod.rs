//! The filters and cluster specifiers this module exports, chosen by the `filter_name` /
//! `specifier_name` of Envoy's config. Add Switchyard's planner and adapter here.
#![forbid(unsafe_code)]

use crate::api::{ClusterSpecifier, ConfigHandle, FilterConfig};

pub mod noop;
pub mod probe;
pub mod switchyard;

/// Creates the config for `DynamicModuleFilter.filter_name` = `name` (main thread). An error
/// makes Envoy reject the configuration (the message is logged).
pub fn new_http_filter_config(
    name: &str,
    config: &[u8],
    handle: &mut ConfigHandle<'_>,
) -> Result<Box<dyn FilterConfig>, String> {
    match name {
        "switchyard" => Ok(Box::new(switchyard::SwitchyardConfig::new(config, handle)?)),
        "noop" => Ok(Box::new(noop::NoopConfig::new(config)?)),
        "probe" => Ok(Box::new(probe::ProbeConfig::new(config, handle)?)),
        other => Err(format!(
            "unknown filter_name {other:?} (known: switchyard, noop, probe)"
        )),
    }
}

/// Creates the cluster specifier for `DynamicModuleClusterSpecifier.specifier_name` = `name`.
pub fn new_cluster_specifier(
    name: &str,
    config: &[u8],
) -> Result<Box<dyn ClusterSpecifier>, String> {
    match name {
        "probe" => Ok(Box::new(probe::ProbeSpecifier::new(config)?)),
        other => Err(format!("unknown specifier_name {other:?} (known: probe)")),
    }
}
