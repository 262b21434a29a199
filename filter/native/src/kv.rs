//! The `key=value;key=value` format of the `noop`/`probe` filter configs (std only, no JSON).
#![forbid(unsafe_code)]

use std::collections::HashMap;

/// Parses `a=1;b=2` (whitespace around items ignored; an item without `=` maps to "").
pub fn parse(config: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(config)
        .split([';', '\n'])
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (item.to_string(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_items() {
        let m = parse(b" role=down; log=/tmp/x.log ;flag\n tick_ms = 50");
        assert_eq!(m["role"], "down");
        assert_eq!(m["log"], "/tmp/x.log");
        assert_eq!(m["flag"], "");
        assert_eq!(m["tick_ms"], "50");
    }
}
