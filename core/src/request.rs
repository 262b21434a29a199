//! Validation of a client's OpenAI request (chat completions or embeddings),
//! without building a JSON tree: only the members the gateway needs are parsed.

use std::borrow::Cow;

use serde_json::value::RawValue;

/// The OpenAI endpoints the gateway serves with a plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    #[default]
    Chat,
    /// `POST /v1/embeddings`.
    Embeddings,
}

impl Endpoint {
    /// The client-facing path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Embeddings => "/v1/embeddings",
        }
    }

    /// The endpoint served at `path` (without query).
    pub fn from_path(path: &str) -> Option<Endpoint> {
        [Endpoint::Chat, Endpoint::Embeddings]
            .into_iter()
            .find(|e| e.path() == path)
    }
}

/// The top-level members of a JSON object, in order, values left unparsed.
#[derive(Debug)]
pub struct Members<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The raw value of member `key`.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// A low estimate of the tokens a chat request's messages hold: the bytes of
/// their text (strings and text parts; images, audio and files left out) over
/// four. English text runs about four bytes a token, code and other scripts
/// fewer, so this errs low: a target is only left out for a window the prompt
/// surely does not fit.
pub fn prompt_tokens_low(body: &[u8]) -> u64 {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        messages: Vec<Message>,
    }
    #[derive(serde::Deserialize)]
    struct Message {
        #[serde(default)]
        content: Option<serde_json::Value>,
    }
    let Ok(b) = serde_json::from_slice::<Body>(body) else {
        return 0;
    };
    let bytes: usize = b
        .messages
        .iter()
        .map(|m| match &m.content {
            Some(serde_json::Value::String(s)) => s.len(),
            Some(serde_json::Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(serde_json::Value::as_str))
                .map(str::len)
                .sum(),
            _ => 0,
        })
        .sum();
    (bytes / 4) as u64
}

/// What the planner needs from a valid request.
#[derive(Debug, PartialEq, Eq)]
pub struct ChatRequest<'a> {
    /// `model`: a route alias or `provider/model`.
    pub model: Cow<'a, str>,
    /// `fallbacks`: more aliases or `provider/model` targets, in order.
    pub fallbacks: Vec<Cow<'a, str>>,
    /// `stream`.
    pub stream: bool,
    /// `max_completion_tokens` (or the older `max_tokens`): the most the answer
    /// may hold, for governance's estimate at admission.
    pub max_tokens: Option<u64>,
}

/// Why a request is invalid: becomes a 400 with this code and message.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestError {
    /// OpenAI-style error code.
    pub code: &'static str,
    /// Message for the client.
    pub message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> RequestError {
    RequestError {
        code,
        message: message.into(),
    }
}

fn string<'a>(raw: &'a RawValue) -> Option<Cow<'a, str>> {
    serde_json::from_str::<Cow<'a, str>>(raw.get()).ok()
}

/// Checks the body of a request to `endpoint`.
pub fn inspect(body: &[u8], endpoint: Endpoint) -> Result<ChatRequest<'_>, RequestError> {
    let members: Members<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            err("invalid_request", "The request body must be a JSON object.")
        } else {
            err(
                "invalid_json",
                format!("The request body is not valid JSON: {e}"),
            )
        }
    })?;
    let model = match members.get("model") {
        None => {
            return Err(err(
                "missing_required_parameter",
                "Missing required parameter: 'model'.",
            ));
        }
        Some(raw) => string(raw)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| err("invalid_type", "`model` must be a non-empty string."))?,
    };
    if endpoint == Endpoint::Embeddings {
        check_input(members.get("input"))?;
    }
    match members.get("messages") {
        None if endpoint == Endpoint::Embeddings => {}
        None => {
            return Err(err(
                "missing_required_parameter",
                "Missing required parameter: 'messages'.",
            ));
        }
        Some(raw) => check_messages(raw)?,
    }
    check_known_fields(&members, endpoint)?;
    let stream = match members.get("stream").map(RawValue::get) {
        Some(_) if endpoint == Endpoint::Embeddings => false,
        None | Some("null") | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(err("invalid_type", "`stream` must be a boolean.")),
    };
    let fallbacks = match members.get("fallbacks") {
        None => Vec::new(),
        Some(raw) if raw.get() == "null" => Vec::new(),
        Some(raw) => {
            let items: Vec<&RawValue> = serde_json::from_str(raw.get())
                .map_err(|_| err("invalid_type", "`fallbacks` must be an array of strings."))?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(string(item).ok_or_else(|| {
                    err(
                        "invalid_type",
                        format!("fallbacks[{i}] must be a string `provider/model`."),
                    )
                })?);
            }
            out
        }
    };
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .into_iter()
        .find_map(|k| members.get(k).and_then(|v| v.get().parse::<u64>().ok()));
    Ok(ChatRequest {
        model,
        fallbacks,
        stream,
        max_tokens,
    })
}

/// The shape of one chat message, as far as the gateway relies on it.
#[derive(serde::Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Option<&'a RawValue>,
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
    #[serde(default, borrow)]
    name: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tool_call_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tool_calls: Option<&'a RawValue>,
}

const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// `messages`: a non-empty array of messages, each with a known role and content
/// that is a string, null, or an array of typed parts.
fn check_messages(raw: &RawValue) -> Result<(), RequestError> {
    let not_array = || {
        err(
            "invalid_type",
            "`messages` must be a non-empty array of messages.",
        )
    };
    let messages: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(|_| not_array())?;
    if messages.is_empty() {
        return Err(not_array());
    }
    for (i, m) in messages.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        let m: Message<'_> = serde_json::from_str(m.get())
            .map_err(|_| err("invalid_type", format!("messages[{i}] must be an object.")))?;
        let role = m
            .role
            .and_then(string)
            .ok_or_else(|| err("invalid_type", format!("{} must be a string.", at("role"))))?;
        if !ROLES.contains(&role.as_ref()) {
            return Err(err(
                "invalid_value",
                format!("{} must be one of {}.", at("role"), ROLES.join(", ")),
            ));
        }
        if let Some(content) = m.content.filter(|c| c.get() != "null") {
            check_content(content, &at("content"))?;
        }
        for (name, v) in [("name", m.name), ("tool_call_id", m.tool_call_id)] {
            if v.is_some_and(|v| v.get() != "null" && string(v).is_none()) {
                return Err(err(
                    "invalid_type",
                    format!("{} must be a string.", at(name)),
                ));
            }
        }
        if let Some(calls) = m.tool_calls.filter(|c| c.get() != "null") {
            check_tool_calls(calls, &at("tool_calls"))?;
        }
    }
    Ok(())
}

/// Message content: a string, or an array of parts that are objects with a string
/// `type`.
fn check_content(raw: &RawValue, at: &str) -> Result<(), RequestError> {
    if string(raw).is_some() {
        return Ok(());
    }
    #[derive(serde::Deserialize)]
    struct Part<'a> {
        #[serde(borrow)]
        r#type: Option<&'a RawValue>,
    }
    let parts: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(|_| {
        err(
            "invalid_type",
            format!("{at} must be a string or an array of content parts."),
        )
    })?;
    for (j, p) in parts.iter().enumerate() {
        let part: Part<'_> = serde_json::from_str(p.get())
            .map_err(|_| err("invalid_type", format!("{at}[{j}] must be an object.")))?;
        if part.r#type.and_then(string).is_none() {
            return Err(err(
                "invalid_type",
                format!("{at}[{j}].type must be a string."),
            ));
        }
    }
    Ok(())
}

/// Assistant `tool_calls`: objects whose `function.name` is a string and
/// `function.arguments` a string.
fn check_tool_calls(raw: &RawValue, at: &str) -> Result<(), RequestError> {
    #[derive(serde::Deserialize)]
    struct Function<'a> {
        #[serde(borrow)]
        name: Option<&'a RawValue>,
        #[serde(default, borrow)]
        arguments: Option<&'a RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Call<'a> {
        #[serde(borrow)]
        function: Option<Function<'a>>,
    }
    let calls: Vec<Call<'_>> = serde_json::from_str(raw.get()).map_err(|_| {
        err(
            "invalid_type",
            format!("{at} must be an array of tool calls with a `function` object."),
        )
    })?;
    for (j, c) in calls.iter().enumerate() {
        let f = c.function.as_ref().ok_or_else(|| {
            err(
                "invalid_type",
                format!("{at}[{j}].function must be an object."),
            )
        })?;
        if f.name.and_then(string).is_none() || f.arguments.is_some_and(|a| string(a).is_none()) {
            return Err(err(
                "invalid_type",
                format!("{at}[{j}].function needs a string `name` and string `arguments`."),
            ));
        }
    }
    Ok(())
}

/// What a member of a request must be, when present and not null.
#[derive(Clone, Copy)]
enum Kind {
    Bool,
    /// A number within the bounds.
    Number(f64, f64),
    /// An integer within the bounds.
    Integer(i64, i64),
    Str,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    Object,
    /// An array of strings, at most this many.
    Strings(usize),
    /// A string, or an array of at most this many strings.
    StrOrStrings(usize),
}

/// The OpenAI request members the gateway knows, with what each must be.
const CHAT_FIELDS: &[(&str, Kind)] = &[
    ("temperature", Kind::Number(0.0, 2.0)),
    ("top_p", Kind::Number(0.0, 1.0)),
    ("n", Kind::Integer(1, 128)),
    ("max_tokens", Kind::Integer(1, 10_000_000)),
    ("max_completion_tokens", Kind::Integer(1, 10_000_000)),
    ("presence_penalty", Kind::Number(-2.0, 2.0)),
    ("frequency_penalty", Kind::Number(-2.0, 2.0)),
    ("seed", Kind::Integer(i64::MIN, i64::MAX)),
    ("stop", Kind::StrOrStrings(4)),
    ("user", Kind::Str),
    ("logprobs", Kind::Bool),
    ("top_logprobs", Kind::Integer(0, 20)),
    ("logit_bias", Kind::Object),
    ("parallel_tool_calls", Kind::Bool),
    ("response_format", Kind::Object),
    ("stream_options", Kind::Object),
    ("store", Kind::Bool),
    ("metadata", Kind::Object),
    ("modalities", Kind::Strings(4)),
    (
        "reasoning_effort",
        Kind::OneOf(&["minimal", "low", "medium", "high"]),
    ),
    ("service_tier", Kind::Str),
];

const EMBEDDINGS_FIELDS: &[(&str, Kind)] = &[
    ("encoding_format", Kind::OneOf(&["float", "base64"])),
    ("dimensions", Kind::Integer(1, 100_000)),
    ("user", Kind::Str),
];

/// Whether `raw` is what `kind` says.
fn is_kind(raw: &RawValue, kind: Kind) -> bool {
    let text = raw.get();
    match kind {
        Kind::Bool => text == "true" || text == "false",
        Kind::Number(lo, hi) => {
            serde_json::from_str::<f64>(text).is_ok_and(|n| n.is_finite() && (lo..=hi).contains(&n))
        }
        Kind::Integer(lo, hi) => {
            serde_json::from_str::<i64>(text).is_ok_and(|n| (lo..=hi).contains(&n))
        }
        Kind::Str => string(raw).is_some(),
        Kind::OneOf(values) => string(raw).is_some_and(|s| values.contains(&s.as_ref())),
        Kind::Object => text.starts_with('{'),
        Kind::Strings(max) => {
            serde_json::from_str::<Vec<Cow<'_, str>>>(text).is_ok_and(|v| v.len() <= max)
        }
        Kind::StrOrStrings(max) => string(raw).is_some() || is_kind(raw, Kind::Strings(max)),
    }
}

fn describe(kind: Kind) -> String {
    match kind {
        Kind::Bool => "a boolean".to_string(),
        Kind::Number(lo, hi) => format!("a number from {lo} to {hi}"),
        Kind::Integer(i64::MIN, i64::MAX) => "an integer".to_string(),
        Kind::Integer(lo, hi) => format!("an integer from {lo} to {hi}"),
        Kind::Str => "a string".to_string(),
        Kind::OneOf(values) => format!("one of {}", values.join(", ")),
        Kind::Object => "an object".to_string(),
        Kind::Strings(max) => format!("an array of at most {max} strings"),
        Kind::StrOrStrings(max) => format!("a string or an array of at most {max} strings"),
    }
}

/// The known members of the request have the types OpenAI's API gives them (the
/// gateway forwards or translates them: a wrong one is the client's 400, never a
/// provider's error counted against it). Unknown members pass through.
fn check_known_fields(members: &Members<'_>, endpoint: Endpoint) -> Result<(), RequestError> {
    let fields = match endpoint {
        Endpoint::Chat => CHAT_FIELDS,
        Endpoint::Embeddings => EMBEDDINGS_FIELDS,
    };
    for (name, kind) in fields {
        if let Some(raw) = members.get(name).filter(|r| r.get() != "null")
            && !is_kind(raw, *kind)
        {
            return Err(err(
                "invalid_type",
                format!("`{name}` must be {}.", describe(*kind)),
            ));
        }
    }
    if endpoint == Endpoint::Chat {
        check_tools(members)?;
    }
    Ok(())
}

/// `tools` (objects with a string `type`; function tools with a string
/// `function.name`) and `tool_choice` (`none`, `auto`, `required`, or an object).
fn check_tools(members: &Members<'_>) -> Result<(), RequestError> {
    #[derive(serde::Deserialize)]
    struct Function<'a> {
        #[serde(borrow)]
        name: Option<&'a RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Tool<'a> {
        #[serde(borrow)]
        r#type: Option<&'a RawValue>,
        #[serde(default, borrow)]
        function: Option<Function<'a>>,
    }
    if let Some(raw) = members.get("tools").filter(|r| r.get() != "null") {
        let tools: Vec<Tool<'_>> = serde_json::from_str(raw.get())
            .map_err(|_| err("invalid_type", "`tools` must be an array of tool objects."))?;
        for (i, t) in tools.iter().enumerate() {
            let kind = t.r#type.and_then(string);
            let ok = match kind.as_deref() {
                Some("function") => t
                    .function
                    .as_ref()
                    .and_then(|f| f.name)
                    .and_then(string)
                    .is_some(),
                Some(_) => true,
                None => false,
            };
            if !ok {
                return Err(err(
                    "invalid_type",
                    format!(
                        "tools[{i}] needs a string `type` (and a `function` with a string `name`)."
                    ),
                ));
            }
        }
    }
    if let Some(raw) = members.get("tool_choice").filter(|r| r.get() != "null") {
        let ok =
            is_kind(raw, Kind::OneOf(&["none", "auto", "required"])) || raw.get().starts_with('{');
        if !ok {
            return Err(err(
                "invalid_type",
                "`tool_choice` must be `none`, `auto`, `required` or a tool object.",
            ));
        }
    }
    Ok(())
}

/// `input` of an embeddings request: a non-empty string, or a non-empty array of
/// strings, of token ids, or of token-id arrays.
fn check_input(raw: Option<&RawValue>) -> Result<(), RequestError> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Input {
        Text(String),
        Texts(Vec<String>),
        Tokens(Vec<u32>),
        TokenArrays(Vec<Vec<u32>>),
    }
    let Some(raw) = raw else {
        return Err(err(
            "missing_required_parameter",
            "Missing required parameter: 'input'.",
        ));
    };
    let empty = match serde_json::from_str::<Input>(raw.get()) {
        Ok(Input::Text(s)) => s.is_empty(),
        Ok(Input::Texts(v)) => v.is_empty() || v.iter().any(|s| s.is_empty()),
        Ok(Input::Tokens(v)) => v.is_empty(),
        Ok(Input::TokenArrays(v)) => v.is_empty() || v.iter().any(Vec::is_empty),
        Err(_) => {
            return Err(err(
                "invalid_type",
                "`input` must be a string, an array of strings, or an array of token ids (or of arrays of them).",
            ));
        }
    };
    if empty {
        return Err(err("invalid_value", "`input` must not be empty."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> &'static str {
        inspect(body.as_bytes(), Endpoint::Chat).unwrap_err().code
    }

    #[test]
    fn embeddings() {
        let e = |body: &str| {
            inspect(body.as_bytes(), Endpoint::Embeddings).map(|r| r.model.into_owned())
        };
        assert_eq!(e(r#"{"model":"m","input":"hi"}"#).unwrap(), "m");
        assert!(e(r#"{"model":"m","input":["a","b"],"encoding_format":"float"}"#).is_ok());
        assert!(e(r#"{"model":"m","input":[1,2,3]}"#).is_ok());
        assert!(e(r#"{"model":"m","input":[[1],[2,3]]}"#).is_ok());
        assert_eq!(
            e(r#"{"model":"m"}"#).unwrap_err().code,
            "missing_required_parameter"
        );
        assert_eq!(
            e(r#"{"model":"m","input":{"a":1}}"#).unwrap_err().code,
            "invalid_type"
        );
        assert_eq!(
            e(r#"{"model":"m","input":""}"#).unwrap_err().code,
            "invalid_value"
        );
        assert_eq!(
            e(r#"{"model":"m","input":[]}"#).unwrap_err().code,
            "invalid_value"
        );
        assert_eq!(
            e(r#"{"input":"x"}"#).unwrap_err().code,
            "missing_required_parameter"
        );
    }

    #[test]
    fn valid() {
        let r = inspect(br#"{"model":"ch\u0061t","stream":true,"fallbacks":["a/b"],"messages":[{"role":"user","content":"x"}],"extra":{"deep":[1,2]}}"#, Endpoint::Chat).unwrap();
        assert_eq!(r.model, "chat");
        assert!(r.stream);
        assert_eq!(r.fallbacks, vec!["a/b"]);
    }

    #[test]
    fn invalid() {
        assert_eq!(code("{\"model\":"), "invalid_json");
        assert_eq!(code("[1]"), "invalid_request");
        assert_eq!(
            code("{\"model\":\"m\",\"messages\":[{}],} "),
            "invalid_json"
        );
        assert_eq!(code(r#"{"messages":[{}]}"#), "missing_required_parameter");
        assert_eq!(code(r#"{"model":"m"}"#), "missing_required_parameter");
        assert_eq!(code(r#"{"model":5,"messages":[{}]}"#), "invalid_type");
        assert_eq!(code(r#"{"model":"","messages":[{}]}"#), "invalid_type");
        assert_eq!(code(r#"{"model":"m","messages":[]}"#), "invalid_type");
        assert_eq!(code(r#"{"model":"m","messages":"hi"}"#), "invalid_type");
        assert_eq!(code(r#"{"model":"m","messages":[1]}"#), "invalid_type");
        assert_eq!(
            code(r#"{"model":"m","messages":[{}],"stream":"yes"}"#),
            "invalid_type"
        );
        assert_eq!(
            code(r#"{"model":"m","messages":[{}],"fallbacks":"a/b"}"#),
            "invalid_type"
        );
        assert_eq!(
            code(r#"{"model":"m","messages":[{}],"fallbacks":[1]}"#),
            "invalid_type"
        );
        // Known members with the wrong type are the client's error.
        for bad in [
            r#""temperature":"hot""#,
            r#""temperature":9"#,
            r#""max_tokens":"10""#,
            r#""max_tokens":0"#,
            r#""n":1.5"#,
            r#""stop":[1]"#,
            r#""stop":["a","b","c","d","e"]"#,
            r#""tools":[{"type":"function","function":{}}]"#,
            r#""tool_choice":"always""#,
            r#""response_format":"json""#,
            r#""logprobs":"yes""#,
        ] {
            let body =
                format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{bad}}}"#);
            assert_eq!(code(&body), "invalid_type", "{bad}");
        }
        for bad in [
            r#"[{"role":"robot","content":"x"}]"#,
            r#"[{"role":5,"content":"x"}]"#,
            r#"[{"role":"user","content":[[[["deep"]]]]}]"#,
            r#"[{"role":"user","content":[{"text":"no type"}]}]"#,
            r#"[{"role":"user","content":{"a":1}}]"#,
            r#"[{"role":"assistant","tool_calls":[{"function":{"name":1}}]}]"#,
            r#"[{"role":"tool","tool_call_id":7,"content":"x"}]"#,
        ] {
            let body = format!(r#"{{"model":"m","messages":{bad}}}"#);
            assert!(
                ["invalid_type", "invalid_value"].contains(&code(&body)),
                "{bad}"
            );
        }
        // Nulls, unknown members and good values pass.
        let ok = r#"{"model":"m","temperature":null,"max_tokens":5,"stop":"x","tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}},"x-extra":{"deep":[1]},"messages":[{"role":"user","content":[{"type":"text","text":"x"}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"r"}]}"#;
        assert!(inspect(ok.as_bytes(), Endpoint::Chat).is_ok());
        // Deep nesting in a member the gateway does not read is skipped without
        // recursion (serde_json's `RawValue` scanner): no stack overflow in the VM.
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(code(&deep), "missing_required_parameter");
        assert_eq!(
            code(&format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))),
            "invalid_request"
        );
    }
}
