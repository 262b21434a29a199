//! `tracing:` (Envoy's OpenTelemetry tracer: where spans go, how many
//! requests are sampled) and `decision_log:` (one JSON line per request,
//! written by an Envoy access log).

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTracing {
    /// OTLP/gRPC collector, `host:port` (plain text) or `https://host:port`.
    otlp_grpc: String,
    /// Share of requests traced when the client did not decide (a `traceparent`
    /// with the sampled flag is always continued).
    #[serde(default = "default_sampling")]
    sampling_percent: f64,
    /// `service.name` of the spans.
    #[serde(default = "default_service")]
    service_name: String,
}

fn default_sampling() -> f64 {
    100.0
}
fn default_service() -> String {
    "switchyard".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDecisionLog {
    /// File each Envoy appends to (on the Envoy's host; relative to the config
    /// file's folder).
    path: PathBuf,
}

/// The checked `tracing:` section.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracing {
    /// Collector host (IP or name).
    pub host: String,
    /// Collector port.
    pub port: u16,
    /// Whether the collector is reached over TLS.
    pub tls: bool,
    /// Share of requests sampled, 0..=100.
    pub sampling_percent: f64,
    /// `service.name`.
    pub service_name: String,
}

/// The checked `decision_log:` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionLog {
    /// Absolute path of the file.
    pub path: PathBuf,
}

impl RawTracing {
    pub(super) fn check(&self, problems: &mut Vec<String>) -> Option<Tracing> {
        let (tls, rest) = match self.otlp_grpc.strip_prefix("https://") {
            Some(r) => (true, r),
            None => (
                false,
                self.otlp_grpc
                    .strip_prefix("http://")
                    .unwrap_or(&self.otlp_grpc),
            ),
        };
        let parsed = rest
            .trim_end_matches('/')
            .rsplit_once(':')
            .and_then(|(h, p)| {
                Some((
                    h.trim_matches(['[', ']']).to_string(),
                    p.parse::<u16>().ok()?,
                ))
            })
            .filter(|(h, p)| !h.is_empty() && *p > 0);
        if parsed.is_none() {
            problems.push(format!(
                "tracing.otlp_grpc: expected `host:port` or `https://host:port` of an OTLP/gRPC collector, got `{}`",
                self.otlp_grpc
            ));
        }
        if !(0.0..=100.0).contains(&self.sampling_percent) {
            problems.push(format!(
                "tracing.sampling_percent: expected 0..=100, got {}",
                self.sampling_percent
            ));
        }
        if self.service_name.is_empty() {
            problems.push("tracing.service_name: expected a name".to_string());
        }
        let (host, port) = parsed?;
        Some(Tracing {
            host,
            port,
            tls,
            sampling_percent: self.sampling_percent,
            service_name: self.service_name.clone(),
        })
    }
}

impl RawDecisionLog {
    pub(super) fn check(&self, base: &Path, problems: &mut Vec<String>) -> Option<DecisionLog> {
        if self.path.as_os_str().is_empty() {
            problems.push("decision_log.path: expected a file".to_string());
            return None;
        }
        let p = if self.path.is_relative() {
            base.join(&self.path)
        } else {
            self.path.clone()
        };
        Some(DecisionLog {
            path: std::path::absolute(&p).unwrap_or(p),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn parse(extra: &str) -> Result<crate::config::Config, String> {
        let text = format!(
            "providers:\n  - {{name: a, dialect: openai, base_url: 'http://127.0.0.1:1/v1', api_key: {{value: k}}}}\nroutes:\n  - {{model: chat, chain: [a/m]}}\n{extra}"
        );
        crate::config::parse(&text, "t.yaml", Path::new("/etc/sy"), &|_| None)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tracing_and_decision_log_sections() {
        let c = parse("tracing: { otlp_grpc: 'collector.local:4317', sampling_percent: 5 }\ndecision_log: { path: logs/decisions.log }\n")
            .unwrap();
        let t = c.tracing.unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tls, t.sampling_percent),
            ("collector.local", 4317, false, 5.0)
        );
        assert_eq!(t.service_name, "switchyard");
        assert_eq!(
            c.decision_log.unwrap().path,
            Path::new("/etc/sy/logs/decisions.log")
        );
        let t = parse("tracing: { otlp_grpc: 'https://otel.example.com:443' }\n")
            .unwrap()
            .tracing
            .unwrap();
        assert!(t.tls);
        assert_eq!(t.sampling_percent, 100.0);
        assert!(parse("").unwrap().tracing.is_none());
    }

    #[test]
    fn bad_tracing_is_explained() {
        let e = parse("tracing: { otlp_grpc: 'nowhere', sampling_percent: 101 }\n").unwrap_err();
        assert!(e.contains("tracing.otlp_grpc: expected `host:port`"), "{e}");
        assert!(
            e.contains("tracing.sampling_percent: expected 0..=100"),
            "{e}"
        );
    }
}
