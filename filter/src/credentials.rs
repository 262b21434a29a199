//! Provider credentials. With the fleet exchange on, the control plane leaves
//! them out of the filter config (Envoy's `/config_dump` shows configs) and
//! sends them over the exchange instead; the planner's background task keeps
//! them in shared state (process memory natively, the VM's shared data with
//! proxy-wasm — neither is in any dump), and every worker's adapter reads them
//! from there, parsed once per version. Without the fleet exchange they are in
//! the adapter's config, as before.

use std::cell::RefCell;
use std::rc::Rc;

use switchyard_core::config::{AwsAuth, FilterConfig, Provider};
use switchyard_core::fleet::{Credentials, Secrets};

use crate::host::{self, Host};

const VERSION: &str = "sy:cred:ver";
const VALUE: &str = "sy:cred";

thread_local! {
    /// This worker's parsed credentials, by version.
    static CACHE: RefCell<Option<(String, Rc<Credentials>)>> = const { RefCell::new(None) };
}

/// Stores credentials an exchange answer brought (a new version).
pub fn apply(host: &impl Host, c: &Credentials) {
    let json = serde_json::to_vec(c).unwrap_or_default();
    // The value first: a reader that sees the new version finds it.
    host.shared_set(VALUE, &json, None);
    host.shared_set(VERSION, c.version.as_bytes(), None);
    host.gauge(crate::host::Gauge::CredentialsReady, &[], 1);
}

/// The version this Envoy holds (empty: none yet), for the next report.
pub fn version(host: &impl Host) -> String {
    host::shared_text(host, VERSION)
}

/// The credentials the exchange brought, parsed once per version and worker.
fn current(host: &impl Host) -> Option<Rc<Credentials>> {
    let version = version(host);
    if version.is_empty() {
        return None;
    }
    if let Some(c) = CACHE.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(v, _)| *v == version)
            .map(|(_, c)| c.clone())
    }) {
        return Some(c);
    }
    let bytes = host.shared_get(VALUE).0.unwrap_or_default();
    let parsed: Credentials = serde_json::from_slice(&bytes).ok()?;
    let parsed = Rc::new(parsed);
    CACHE.with(|c| *c.borrow_mut() = Some((parsed.version.clone(), parsed.clone())));
    Some(parsed)
}

/// Whether the credentials a request needs are here (always, when they come in
/// the config).
pub fn ready(host: &impl Host, cfg: &FilterConfig) -> bool {
    !cfg.credentials_from_fleet || !version(host).is_empty()
}

/// One provider's secrets, wherever they come from.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    secrets: Option<Rc<Credentials>>,
    name: String,
    config: Secrets,
}

impl Keys {
    fn secrets(&self) -> &Secrets {
        self.secrets
            .as_ref()
            .and_then(|c| c.providers.get(&self.name))
            .unwrap_or(&self.config)
    }

    /// How many keys the provider has.
    pub fn count(&self) -> usize {
        self.secrets().api_keys.len()
    }

    /// Key `i`.
    pub fn key(&self, i: usize) -> Option<&str> {
        self.secrets().api_keys.get(i).map(String::as_str)
    }

    /// The AWS credentials, if the provider signs with SigV4.
    pub fn aws(&self) -> Option<&AwsAuth> {
        self.secrets().aws.as_ref()
    }
}

/// The secrets of provider `name` (`provider` its config).
pub fn of(host: &impl Host, cfg: &FilterConfig, name: &str, provider: &Provider) -> Keys {
    if cfg.credentials_from_fleet {
        Keys {
            secrets: current(host),
            name: name.to_string(),
            config: Secrets::default(),
        }
    } else {
        Keys {
            secrets: None,
            name: name.to_string(),
            config: Secrets {
                api_keys: provider.api_keys.clone(),
                aws: provider.aws.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemHost;

    #[test]
    fn credentials_come_from_the_exchange_once_it_brought_them() {
        let mut cfg = (*crate::testing::config("adapter")).clone();
        let provider = cfg.providers["a"].clone();
        let host = MemHost::default();
        // In the config: as configured.
        assert_eq!(of(&host, &cfg, "a", &provider).key(0), Some("key-a"));
        cfg.credentials_from_fleet = true;
        assert!(!ready(&host, &cfg));
        assert_eq!(
            of(&host, &cfg, "a", &provider).key(0),
            None,
            "not the config's"
        );
        let mut c = Credentials {
            version: "v1".into(),
            ..Credentials::default()
        };
        c.providers.insert(
            "a".into(),
            Secrets {
                api_keys: vec!["from-fleet".into()],
                aws: None,
            },
        );
        apply(&host, &c);
        assert!(ready(&host, &cfg));
        assert_eq!(version(&host), "v1");
        assert_eq!(of(&host, &cfg, "a", &provider).key(0), Some("from-fleet"));
        c.version = "v2".into();
        if let Some(a) = c.providers.get_mut("a") {
            a.api_keys = vec!["rotated".into()];
        }
        apply(&host, &c);
        assert_eq!(of(&host, &cfg, "a", &provider).key(0), Some("rotated"));
        assert!(!format!("{c:?}").contains("rotated"), "no secret in Debug");
    }
}
