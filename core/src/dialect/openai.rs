//! OpenAI chat completions: the client's own dialect, so requests pass through with
//! the target's model name and without gateway-only fields.

use serde_json::Value;

use super::{GATEWAY_FIELDS, TranslateError};

/// The request for an OpenAI-dialect provider.
pub fn request(request: &Value, model: &str) -> Result<Value, TranslateError> {
    let mut out = request.clone();
    let obj = out
        .as_object_mut()
        .ok_or_else(|| TranslateError::Invalid("request body must be a JSON object".into()))?;
    for f in GATEWAY_FIELDS {
        obj.remove(*f);
    }
    obj.insert("model".into(), Value::String(model.to_string()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn rewrites_model_and_strips_gateway_fields() {
        let r = json!({"model":"chat","messages":[],"fallbacks":["a/b"],"temperature":0.2});
        let out = super::request(&r, "gpt-4o-mini").unwrap();
        assert_eq!(
            out,
            json!({"model":"gpt-4o-mini","messages":[],"temperature":0.2})
        );
    }
}
