//! The embedded default config: real providers when their keys are in the
//! environment, otherwise the two local mock providers of the demo.

use std::path::Path;

use crate::config::{self, Config, ConfigError};

/// Demo config: mock providers on 127.0.0.1:18101 (OpenAI) and :18102 (Anthropic).
pub const MOCK: &str = include_str!("defaults/mock.yaml");
/// Real-provider config (OpenAI, Anthropic, Gemini, Bedrock).
pub const CLOUD: &str = include_str!("defaults/cloud.yaml");

/// Environment variables holding real provider keys, with their provider names.
pub const PROVIDER_KEYS: &[(&str, &str)] = &[
    ("openai", "OPENAI_API_KEY"),
    ("anthropic", "ANTHROPIC_API_KEY"),
    ("gemini", "GEMINI_API_KEY"),
    ("bedrock", "AWS_BEARER_TOKEN_BEDROCK"),
];

/// Whether any real provider key is set.
pub fn has_provider_keys(env: &dyn Fn(&str) -> Option<String>) -> bool {
    PROVIDER_KEYS
        .iter()
        .any(|(_, k)| env(k).is_some_and(|v| !v.is_empty()))
}

/// The default config for this environment; relative paths resolve against `cwd`.
pub fn config(cwd: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    if !has_provider_keys(env) {
        return config::parse(MOCK, "<built-in mock config>", cwd, env);
    }
    // Parse with a marker for absent keys, then drop those providers and their
    // chain entries.
    const ABSENT: &str = "\u{0}absent";
    let with_marker = |k: &str| {
        env(k)
            .filter(|v| !v.is_empty())
            .or_else(|| Some(ABSENT.to_string()))
    };
    let mut cfg = config::parse(CLOUD, "<built-in provider config>", cwd, &with_marker)?;
    let dropped: Vec<String> = cfg
        .providers
        .iter()
        .filter(|p| p.api_keys.iter().any(|k| k == ABSENT))
        .map(|p| p.name.clone())
        .collect();
    cfg.providers.retain(|p| !dropped.contains(&p.name));
    for route in cfg.routes.values_mut() {
        route.chain.retain(|t| !dropped.contains(&t.provider));
    }
    cfg.routes.retain(|_, route| !route.chain.is_empty());
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_without_keys() {
        let c = config(Path::new("/x"), &|_| None).unwrap();
        assert_eq!(c.providers.len(), 2);
        assert_eq!(c.providers[0].name, "mock-openai");
    }

    #[test]
    fn only_providers_with_keys() {
        let env = |k: &str| (k == "ANTHROPIC_API_KEY").then(|| "sk-ant".to_string());
        let c = config(Path::new("/x"), &env).unwrap();
        assert_eq!(c.providers.len(), 1);
        assert_eq!(c.providers[0].name, "anthropic");
        assert_eq!(c.routes["chat"].chain.len(), 1);
        let both = |k: &str| Some(format!("key-{k}"));
        assert_eq!(
            config(Path::new("/x"), &both).unwrap().routes["chat"]
                .chain
                .len(),
            4
        );
    }
}
