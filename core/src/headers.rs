//! Which client request headers reach a provider: an allow-list, never a
//! deny-list. Everything a client sends that is not named here or in the
//! configuration (`forward_headers`, globally or per provider) is removed before
//! the request is planned, so it can neither reach a provider nor steer Envoy
//! (`x-envoy-*`) or the gateway (`x-switchyard-*`).

/// Request headers every attempt keeps: the pseudo-headers (the adapter rewrites
/// `:path` and `:authority`), content negotiation, the client's user agent, the
/// request id, and `x-forwarded-proto`, which Envoy sets itself (the listener
/// trusts no client) and without which Envoy 1.40 matches no route.
pub const ALWAYS_FORWARDED: &[&str] = &[
    ":method",
    ":path",
    ":authority",
    ":scheme",
    "content-type",
    "content-length",
    "accept",
    "accept-encoding",
    "user-agent",
    "x-request-id",
    "x-forwarded-proto",
];

/// What happens to one client request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Stays on the request for every attempt.
    Keep,
    /// Removed from the request; set again on attempts to providers that forward it.
    PerProvider,
    /// Removed.
    Drop,
}

/// The disposition of header `name` (lower-case) given the global and the union
/// of per-provider forward lists.
pub fn disposition(name: &str, global: &[String], per_provider: &[&str]) -> Disposition {
    if ALWAYS_FORWARDED.contains(&name) || global.iter().any(|g| g == name) {
        Disposition::Keep
    } else if per_provider.contains(&name) {
        Disposition::PerProvider
    } else {
        Disposition::Drop
    }
}

/// Why a configuration may not name `name` (lower-case) as a header to forward or
/// to set: credentials (the gateway's own are injected per attempt), hop-by-hop
/// and framing headers, and what only Envoy or the gateway may set.
pub fn reserved(name: &str) -> Option<&'static str> {
    const CREDENTIALS: &[&str] = &[
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-content-sha256",
    ];
    const FRAMING: &[&str] = &[
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ];
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    {
        Some("a header name is lower-case letters, digits, `-`, `_` or `.`")
    } else if CREDENTIALS.contains(&name) {
        Some("credentials are the gateway's own, injected per attempt")
    } else if FRAMING.contains(&name) {
        Some("framing and hop-by-hop headers are Envoy's")
    } else if name.starts_with("x-envoy-") || name.starts_with("x-switchyard-") {
        Some("`x-envoy-*` and `x-switchyard-*` are set by Envoy and the gateway only")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        let global = vec!["x-trace".to_string()];
        let d = |n| disposition(n, &global, &["anthropic-beta"]);
        assert_eq!(d(":path"), Disposition::Keep);
        assert_eq!(d("x-trace"), Disposition::Keep);
        assert_eq!(d("anthropic-beta"), Disposition::PerProvider);
        for evil in [
            "proxy-authorization",
            "x-goog-user-project",
            "x-envoy-attempt-count",
            "x-switchyard-provider",
            "x-forwarded-for",
            "authorization",
            "transfer-encoding",
        ] {
            assert_eq!(d(evil), Disposition::Drop, "{evil}");
        }
        assert!(reserved("authorization").is_some());
        assert!(reserved("x-envoy-retry-on").is_some());
        assert!(reserved("X-Upper").is_some());
        assert!(reserved("anthropic-beta").is_none());
    }
}
