//! OpenAI chat completions: the client's own dialect, so requests pass through with
//! the target's model name and without gateway-only fields.

use super::{GATEWAY_FIELDS, Members, TranslateError};

/// The request for an OpenAI-dialect provider, built from the client's raw members.
pub fn request_bytes(members: &Members<'_>, model: &str) -> Result<Vec<u8>, TranslateError> {
    let model = serde_json::to_string(model).map_err(|e| TranslateError::Invalid(e.to_string()))?;
    let mut out = Vec::with_capacity(
        members
            .0
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>()
            + 16,
    );
    out.push(b'{');
    let mut first = true;
    let mut wrote_model = false;
    for (k, v) in &members.0 {
        if GATEWAY_FIELDS.contains(&k.as_ref()) || (k == "model" && wrote_model) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        let key = serde_json::to_string(k.as_ref())
            .map_err(|e| TranslateError::Invalid(e.to_string()))?;
        out.extend_from_slice(key.as_bytes());
        out.push(b':');
        if k == "model" {
            out.extend_from_slice(model.as_bytes());
            wrote_model = true;
        } else {
            out.extend_from_slice(v.get().as_bytes());
        }
    }
    if !wrote_model {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(b"\"model\":");
        out.extend_from_slice(model.as_bytes());
    }
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[test]
    fn raw_rewrite_keeps_everything_else_byte_for_byte() {
        let body = br#"{"model":"chat","messages":[{"role":"user","content":"h\u00e9 \"q\""}],"fallbacks":["a/b"],"temperature":0.20}"#;
        let p = crate::dialect::prepare_request(
            crate::config::Dialect::Openai,
            crate::request::Endpoint::Chat,
            body,
            "gpt-4o",
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&p.body).unwrap(),
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"h\u00e9 \"q\""}],"temperature":0.20}"#
        );
        let p = crate::dialect::prepare_request(
            crate::config::Dialect::Openai,
            crate::request::Endpoint::Chat,
            br#"{"stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
            "m",
        )
        .unwrap();
        assert!(p.stream && p.include_usage);
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(v["model"], "m");
        assert!(
            crate::dialect::prepare_request(
                crate::config::Dialect::Openai,
                crate::request::Endpoint::Chat,
                b"[1]",
                "m"
            )
            .is_err()
        );
    }
}
