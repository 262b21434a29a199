//! `listener:` (where the gateway listens) and `filter:` (which build of the
//! filter the Envoys load).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{DEFAULT_MODULE, DEFAULT_WASM, FilterBuild, ServedFilter};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    #[serde(default = "default_address")]
    pub(super) address: String,
    #[serde(default = "default_port")]
    pub(super) port: u16,
}

impl Default for RawListener {
    fn default() -> Self {
        RawListener {
            address: default_address(),
            port: default_port(),
        }
    }
}

fn default_address() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    8080
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFilter {
    #[serde(default)]
    wasm: Option<PathBuf>,
    #[serde(default)]
    module: Option<PathBuf>,
    /// The control plane serves the Wasm file; Envoys fetch it (see [`ServedFilter`]).
    #[serde(default)]
    serve: bool,
    /// The filters' configs come by extension config discovery (ECDS).
    #[serde(default)]
    pub(super) ecds: bool,
}

impl RawListener {
    /// Checks the section; problems are added to `problems`.
    pub(super) fn check(&self, problems: &mut Vec<String>) {
        if self.address.parse::<std::net::IpAddr>().is_err() {
            problems.push(format!(
                "listener.address: expected an IP address, got `{}`",
                self.address
            ));
        }
    }
}

impl RawFilter {
    /// The build the section names (paths relative to `base`); unspecified: the
    /// faster build when it was built, else the portable one.
    pub(super) fn resolve(&self, base: &Path) -> Result<FilterBuild, String> {
        let absolute = |p: &Path| {
            let p = if p.is_relative() {
                base.join(p)
            } else {
                p.to_path_buf()
            };
            std::path::absolute(&p).unwrap_or(p)
        };
        Ok(match (&self.wasm, &self.module) {
            (Some(w), None) => FilterBuild::Wasm(absolute(w)),
            (None, Some(m)) => FilterBuild::Native(absolute(m)),
            (Some(_), Some(_)) => {
                return Err("filter: expected `wasm` or `module`, not both".to_string());
            }
            (None, None) => {
                let module = absolute(&PathBuf::from(DEFAULT_MODULE));
                if module.exists() {
                    FilterBuild::Native(module)
                } else {
                    FilterBuild::Wasm(absolute(&PathBuf::from(DEFAULT_WASM)))
                }
            }
        })
    }

    /// With `serve: true`, the Wasm file the control plane serves to its Envoys,
    /// read now (its SHA-256 goes into the listener). Refused for the native
    /// module: Envoy 1.40 installs no dynamic module it failed to fetch and lets
    /// requests through unfiltered (fail-open), where a Wasm filter fails closed.
    pub(super) fn served(&self, build: &FilterBuild) -> Result<Option<ServedFilter>, String> {
        if !self.serve {
            return Ok(None);
        }
        if self.ecds {
            // Measured with Envoy 1.40: planner and adapter each fetch the code;
            // the second finds the fetch in progress and is created without its
            // plugin, so for a moment requests are planned by one VM and adapted
            // by another (`0 attempts failed`), and an in-place update fails every
            // request. Istio's agent writes the code to a local file first.
            return Err("filter: `serve` and `ecds` together are not supported (Envoy 1.40 creates one of the two filters before the fetched code arrives): deliver the code as a local file with `ecds`, or serve it without `ecds`".to_string());
        }
        match build {
            FilterBuild::Native(_) => Err("filter.serve: only for `wasm` (Envoy 1.40 passes requests unfiltered when it cannot fetch a dynamic module): deliver the module as a file".to_string()),
            FilterBuild::Wasm(path) => ServedFilter::read(path)
                .map(Some)
                .map_err(|e| format!("filter.wasm: {}: cannot read it to serve it: {e}", path.display())),
        }
    }
}
