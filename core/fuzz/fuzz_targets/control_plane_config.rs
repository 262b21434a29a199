//! `switchyard_control_plane::config::parse`: the control plane's YAML config.
//!
//! Input: the YAML text. The environment is a fixed map (`OPENAI_API_KEY` and
//! `ANTHROPIC_API_KEY` are set) and the base folder does not exist.
//!
//! A config's credentials may come from a `command` (run) or a `file` (read):
//! inputs that use either are skipped, since a fuzzer must neither start
//! programs nor read the machine's files. They are found the way the parser
//! sees them, by walking the YAML document (so escapes, anchors and tags do not
//! hide them), and skipped whenever that walk cannot decide.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use serde_yaml::Value;
use switchyard_control_plane::config;

/// Whether any mapping in `v` has a `command` or `file` key (a tag is looked
/// through, keys included).
fn reaches_outside(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => m.iter().any(|(k, v)| {
            let key = match k {
                Value::Tagged(t) => &t.value,
                k => k,
            };
            !key.is_string()
                || matches!(key.as_str(), Some("command" | "file"))
                || reaches_outside(key)
                || reaches_outside(v)
        }),
        Value::Sequence(s) => s.iter().any(reaches_outside),
        Value::Tagged(t) => reaches_outside(&t.value),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match serde_yaml::from_str::<Value>(text) {
        Ok(doc) if !reaches_outside(&doc) => {}
        _ => return,
    }
    let env = |name: &str| {
        matches!(name, "OPENAI_API_KEY" | "ANTHROPIC_API_KEY").then(|| format!("key-{name}"))
    };
    let base = Path::new("/nonexistent/switchyard-fuzz");
    match config::parse(text, "fuzz.yaml", base, &env) {
        Ok(cfg) => {
            assert!((1..=16).contains(&cfg.max_attempts));
            assert!(!cfg.providers.is_empty() || cfg.routes.is_empty());
        }
        Err(e) => {
            // Every error names the file.
            assert!(e.to_string().starts_with("fuzz.yaml"), "{e}");
        }
    }
    let _ = config::parse_bootstrap_limits(text, "fuzz.yaml");
});
