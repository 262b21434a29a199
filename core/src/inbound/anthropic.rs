//! Anthropic Messages (`POST /v1/messages`) as a client API of the gateway.
//!
//! A Messages request becomes a chat-completions request ([`to_chat`]); the chat
//! answer goes back as a Messages `message` ([`answer_from_chat`]) or, streamed,
//! as Anthropic's event stream ([`MessageStream`]); errors take Anthropic's shape
//! ([`error_body`]). `POST /v1/messages/count_tokens` is answered with an estimate
//! ([`count_tokens_estimate`]). The opposite translations (a chat request to an
//! Anthropic target, its answer back) are [`crate::dialect::anthropic`]'s; the two
//! agree on every field both forms hold.
//!
//! # What a target that does not speak Messages loses
//!
//! A target that speaks Messages natively gets the client's own body and loses
//! nothing. Every other target gets the chat form, which cannot hold all of it.
//!
//! Dropped (the answer is still the one asked for; cost, speed or sampling may
//! differ):
//! - `top_k`: OpenAI's API has no top-k sampling.
//! - `cache_control` (top level, on blocks, on tools): a cost hint; other
//!   providers cache on their own or not at all.
//! - `service_tier`: a choice of Anthropic's capacity.
//! - `thinking` (`enabled`, `adaptive` or `disabled`) and `output_config.effort`:
//!   there is no portable switch for reasoning (OpenAI's `reasoning_effort` is
//!   refused by its models that do not reason), so the target reasons as it does
//!   by default, and the answer holds no `thinking` blocks.
//! - `thinking` and `redacted_thinking` blocks of the history: only Anthropic can
//!   check their signatures, and no other model reads them.
//! - `citations` of text blocks in the history; a document's `title`, `context`
//!   and `citations` settings (a PDF keeps its title as file name).
//! - Tool members other than `name`, `description`, `input_schema` and `strict`.
//!
//! Carried in another form:
//! - `system` (a string or text blocks) becomes the first message, role `system`.
//! - `tool_result` blocks become `tool` messages, ahead of the rest of their user
//!   turn (OpenAI wants them right after the assistant's tool calls). Their text
//!   blocks are joined with newlines; `is_error: true` becomes a `Tool error: `
//!   prefix of the text; their images move into the user message that follows,
//!   since OpenAI's tool messages hold text only.
//! - A text document becomes a text part; a base64 PDF an OpenAI `file` part
//!   (which only OpenAI-compatible targets read).
//! - `output_config.format` (a JSON schema) becomes `response_format`
//!   `json_schema`, not `strict`: the schema steers the answer, but a target need
//!   not guarantee it as Anthropic's structured outputs do.
//! - A final assistant message (prefill): Anthropic continues it; most other
//!   models answer after it instead.
//! - In answers: OpenAI reports a stop sequence and a natural end both as `stop`,
//!   so `stop_reason` is `end_turn` and `stop_sequence` null for both;
//!   `cache_creation_input_tokens` is 0 (OpenAI bills no cache writes); a stream's
//!   `message_start` counts 0 input tokens, since a chat stream reports its usage
//!   only at its end (the counts are in `message_delta`).
//!
//! Refused with [`UNTRANSLATABLE`] (valid for Anthropic, but another provider
//! would silently not do it):
//! - Tools that Anthropic defines (`tools[].type` other than `custom`: server
//!   tools such as `web_search_*` and `code_execution_*`, which Anthropic runs,
//!   and schema-less client tools such as `bash_*`, `text_editor_*` and
//!   `computer_*`, which only Claude is trained on), and any content block other
//!   than text, image, document, tool use and tool result (`server_tool_use`,
//!   `web_search_tool_result`, `search_result`, …).
//! - `mcp_servers`, `container` and `inference_geo`.
//! - Images and documents by Files API id (`source.type: file`), documents other
//!   than plain text and base64 PDF.
//! - More than 4 `stop_sequences` (OpenAI's limit).
//! - A conversation that holds nothing but assistant turns without content or
//!   with thinking blocks only: left out, they leave another provider nothing
//!   to answer.
//!
//! Members the gateway does not know (a newer or beta member, or a typo) are
//! refused with [`UNTRANSLATABLE`] too: Anthropic's own targets still get the
//! body and judge it themselves.
//!
//! A `max_tokens` over [`MAX_OUTPUT_TOKENS`] (10,000,000, the chat form's bound)
//! is the client's error (`invalid_value`) whatever the target: no model writes
//! that many.

use serde_json::{Map, Value, json};

use super::{Inbound, InboundError, MAX_OUTPUT_TOKENS, StreamBack};
use crate::sse;

/// [`InboundError::code`] of a valid Messages request that uses something only
/// Anthropic does (a server tool, MCP servers, …). A caller whose targets all
/// speak Messages natively can still serve it with the client's own body.
pub const UNTRANSLATABLE: &str = "untranslatable";

fn error(code: &'static str, message: impl Into<String>) -> InboundError {
    InboundError {
        code,
        message: message.into(),
    }
}

/// Anthropic words its validation errors `path: problem`; so does the gateway.
fn wrong_type(at: &str, expected: &str) -> InboundError {
    error("invalid_type", format!("{at}: Input should be {expected}"))
}

fn missing(at: &str) -> InboundError {
    error(
        "missing_required_parameter",
        format!("{at}: Field required"),
    )
}

/// Member `key` of `v` unless absent or null (Anthropic treats both alike).
fn present<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|v| !v.is_null())
}

/// The string member `key` of `v` (at path `at`).
fn string<'a>(v: &'a Value, key: &str, at: &str) -> Result<&'a str, InboundError> {
    match present(v, key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(wrong_type(&format!("{at}.{key}"), "a valid string")),
        None => Err(missing(&format!("{at}.{key}"))),
    }
}

// === request ===

/// The request members Messages documents, beside those the translation reads:
/// left out of the chat request (see the module docs).
const DROPPED: &[&str] = &["top_k", "thinking", "service_tier", "cache_control"];
/// Members only Anthropic can act on.
const ANTHROPIC_ONLY: &[&str] = &["mcp_servers", "container", "inference_geo"];
/// Members the translation reads.
const TRANSLATED: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "temperature",
    "top_p",
    "stop_sequences",
    "stream",
    "metadata",
    "tools",
    "tool_choice",
    "output_config",
];

/// OpenAI's limit on stop sequences.
const MAX_STOP_SEQUENCES: usize = 4;

/// Translates a Messages request into the gateway's chat-completions request.
///
/// `model`, `max_tokens` and `messages` are required and every member is
/// type-checked as Anthropic checks it; the module docs list what the chat form
/// cannot hold. The mapping: `system` → a system message; text blocks → text
/// parts; images (base64 or URL) → `image_url` parts; `tool_use` → `tool_calls`
/// (arguments: the input as a JSON string); `tool_result` → `tool` messages;
/// `tools` → function tools; `tool_choice` `auto`/`any`/`tool`/`none` →
/// `auto`/`required`/the function/`none`, `disable_parallel_tool_use` →
/// `parallel_tool_calls: false`; `max_tokens`, `temperature`, `top_p` as they
/// are; `stop_sequences` → `stop`; `metadata.user_id` → `user`; `stream` →
/// `stream` with `stream_options.include_usage` (Anthropic's `message_delta`
/// carries the usage).
pub fn to_chat(body: &[u8]) -> Result<Inbound, InboundError> {
    let (inbound, refused) = translate(&parse(body)?, true)?;
    match refused {
        Some(e) => Err(e),
        None => Ok(inbound),
    }
}

/// Tokens an image is counted as: Anthropic resizes larger images to about
/// 1.19 megapixels, which its vision guide counts as about 1,590 tokens.
const IMAGE_TOKENS: u64 = 1_600;

/// The answer to `POST /v1/messages/count_tokens`: `{"input_tokens": N}` with N
/// estimated by the gateway's rule for prompts (a token per four bytes of the
/// request, [`crate::cost::estimated_prompt_tokens`]), except that each base64
/// image counts [`IMAGE_TOKENS`] instead of the size of its data.
///
/// The request is checked as [`to_chat`] checks it, without requiring
/// `max_tokens`; what only Anthropic runs is counted, not refused.
pub fn count_tokens_estimate(body: &[u8]) -> Result<u64, InboundError> {
    let request = parse(body)?;
    translate(&request, false)?;
    let (images, image_bytes) = base64_images(&request);
    let text_bytes = body.len().saturating_sub(image_bytes);
    Ok(crate::cost::estimated_prompt_tokens(text_bytes)
        .saturating_add(IMAGE_TOKENS.saturating_mul(images)))
}

/// How many base64 images `v` holds (at any depth: tool results hold them too),
/// and the bytes of their data.
fn base64_images(v: &Value) -> (u64, usize) {
    match v {
        Value::Array(items) => items.iter().map(base64_images).fold((0, 0), add),
        Value::Object(m) => {
            let data = (m.get("type").and_then(Value::as_str) == Some("image"))
                .then(|| m.get("source"))
                .flatten()
                .filter(|s| s.get("type").and_then(Value::as_str) == Some("base64"))
                .and_then(|s| s.get("data"))
                .and_then(Value::as_str);
            match data {
                Some(d) => (1, d.len()),
                None => m.values().map(base64_images).fold((0, 0), add),
            }
        }
        _ => (0, 0),
    }
}

fn add(a: (u64, usize), b: (u64, usize)) -> (u64, usize) {
    (a.0.saturating_add(b.0), a.1.saturating_add(b.1))
}

fn parse(body: &[u8]) -> Result<Value, InboundError> {
    match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(error(
            "invalid_request",
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(error(
            "invalid_json",
            format!("The request body is not valid JSON: {e}"),
        )),
    }
}

/// The chat request of a Messages request `req` (an object), and the first thing
/// in it that only Anthropic does (kept aside so that the whole request is
/// checked first).
fn translate(
    req: &Value,
    needs_max_tokens: bool,
) -> Result<(Inbound, Option<InboundError>), InboundError> {
    let mut r = Reader { refused: None };
    let mut chat = Map::new();

    match present(req, "model") {
        Some(Value::String(m)) if (1..=256).contains(&m.len()) => {
            chat.insert("model".into(), json!(m));
        }
        Some(_) => return Err(wrong_type("model", "a string of 1 to 256 characters")),
        None => return Err(missing("model")),
    }

    let mut messages = Vec::new();
    if let Some(system) = present(req, "system") {
        messages.extend(system_message(system)?);
    }
    let turns = match present(req, "messages") {
        Some(Value::Array(turns)) if !turns.is_empty() => turns,
        Some(Value::Array(_)) => {
            return Err(error(
                "invalid_value",
                "messages: at least one message is required",
            ));
        }
        Some(_) => return Err(wrong_type("messages", "a valid list")),
        None => return Err(missing("messages")),
    };
    for (i, turn) in turns.iter().enumerate() {
        r.turn(&mut messages, i, turn, i + 1 == turns.len())?;
    }
    // Thinking blocks and an empty final assistant turn are left out of the
    // chat form: a conversation of nothing else leaves another provider
    // nothing to answer (the chat form needs a message), while Anthropic
    // continues it.
    if messages
        .iter()
        .all(|m| m.get("role").and_then(Value::as_str) == Some("system"))
    {
        r.refuse(
            "messages: nothing other providers can answer: an assistant turn without content, or with thinking blocks only, is left out for them".into(),
        );
    }
    chat.insert("messages".into(), Value::Array(messages));

    match present(req, "max_tokens") {
        Some(v) => {
            let n = v
                .as_u64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| wrong_type("max_tokens", "an integer of at least 1"))?;
            if n > MAX_OUTPUT_TOKENS {
                return Err(error(
                    "invalid_value",
                    format!(
                        "max_tokens: Input should be less than or equal to {MAX_OUTPUT_TOKENS} (the gateway's limit)"
                    ),
                ));
            }
            chat.insert("max_tokens".into(), json!(n));
        }
        None if needs_max_tokens => return Err(missing("max_tokens")),
        None => {}
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = present(req, key) {
            if !v.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)) {
                return Err(wrong_type(key, "a number from 0 to 1"));
            }
            chat.insert(key.into(), v.clone());
        }
    }
    if let Some(v) = present(req, "stop_sequences") {
        let stop = v
            .as_array()
            .filter(|s| s.iter().all(Value::is_string))
            .ok_or_else(|| wrong_type("stop_sequences", "a list of strings"))?;
        if stop.len() > MAX_STOP_SEQUENCES {
            r.refuse(format!(
                "stop_sequences: other providers take at most {MAX_STOP_SEQUENCES} stop sequences"
            ));
        }
        chat.insert("stop".into(), v.clone());
    }
    let stream = match present(req, "stream") {
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(wrong_type("stream", "a valid boolean")),
        None => false,
    };
    if stream {
        chat.insert("stream".into(), json!(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(metadata) = present(req, "metadata") {
        if !metadata.is_object() {
            return Err(wrong_type("metadata", "a valid dictionary"));
        }
        match present(metadata, "user_id") {
            Some(Value::String(user)) => {
                chat.insert("user".into(), json!(user));
            }
            Some(_) => return Err(wrong_type("metadata.user_id", "a valid string")),
            None => {}
        }
    }
    let tools = match present(req, "tools") {
        Some(Value::Array(tools)) => tools.as_slice(),
        Some(_) => return Err(wrong_type("tools", "a valid list")),
        None => &[],
    };
    let functions = r.tools(tools)?;
    if !functions.is_empty() {
        chat.insert("tools".into(), Value::Array(functions));
    }
    if let Some(choice) = present(req, "tool_choice") {
        tool_choice(choice, !tools.is_empty(), &mut chat)?;
    }
    if let Some(config) = present(req, "output_config") {
        output_config(config, &mut chat)?;
    }
    for (key, is_kind, kind) in [
        (
            "top_k",
            Value::is_u64 as fn(&Value) -> bool,
            "a non-negative integer",
        ),
        ("thinking", Value::is_object, "a valid dictionary"),
        ("service_tier", Value::is_string, "a valid string"),
        ("cache_control", Value::is_object, "a valid dictionary"),
    ] {
        if present(req, key).is_some_and(|v| !is_kind(v)) {
            return Err(wrong_type(key, kind));
        }
    }
    for key in req.as_object().into_iter().flat_map(Map::keys) {
        let key = key.as_str();
        if ANTHROPIC_ONLY.contains(&key) {
            r.refuse(format!(
                "{key}: only Anthropic can act on this; the gateway cannot carry it to other providers"
            ));
        } else if !TRANSLATED.contains(&key) && !DROPPED.contains(&key) {
            // Unknown here, perhaps a newer (beta) member Anthropic knows: its own
            // targets judge it; no other target could act on it.
            r.refuse(format!(
                "{key}: not a member the gateway can carry to other providers"
            ));
        }
    }
    Ok((
        Inbound {
            chat: Value::Object(chat),
            stream,
        },
        r.refused,
    ))
}

/// `system` as the chat request's first message (none for an empty list).
fn system_message(system: &Value) -> Result<Option<Value>, InboundError> {
    let content = match system {
        Value::String(s) => json!(s),
        Value::Array(blocks) if blocks.is_empty() => return Ok(None),
        Value::Array(blocks) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for (j, b) in blocks.iter().enumerate() {
                let at = format!("system.{j}");
                if block_type(&at, b)? != "text" {
                    return Err(error(
                        "invalid_value",
                        format!("{at}.type: system blocks must be text"),
                    ));
                }
                parts.push(text_part(&at, b)?);
            }
            Value::Array(parts)
        }
        _ => return Err(wrong_type("system", "a string or a list of text blocks")),
    };
    Ok(Some(json!({"role": "system", "content": content})))
}

fn block_type<'a>(at: &str, block: &'a Value) -> Result<&'a str, InboundError> {
    if !block.is_object() {
        return Err(wrong_type(at, "a content block object"));
    }
    string(block, "type", at)
}

/// A text block as an OpenAI text part (its `cache_control` and `citations` left out).
fn text_part(at: &str, block: &Value) -> Result<Value, InboundError> {
    Ok(json!({"type": "text", "text": string(block, "text", at)?}))
}

/// `tool_choice` as OpenAI's, with `parallel_tool_calls` (OpenAI refuses both
/// without tools; `tools_given`: the request has some).
fn tool_choice(
    choice: &Value,
    tools_given: bool,
    chat: &mut Map<String, Value>,
) -> Result<(), InboundError> {
    if !choice.is_object() {
        return Err(wrong_type("tool_choice", "a valid dictionary"));
    }
    let kind = string(choice, "type", "tool_choice")?;
    let openai = match kind {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => {
            let name = string(choice, "name", "tool_choice")?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => {
            return Err(error(
                "invalid_value",
                "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'",
            ));
        }
    };
    let one_call = match present(choice, "disable_parallel_tool_use") {
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(wrong_type(
                "tool_choice.disable_parallel_tool_use",
                "a valid boolean",
            ));
        }
        None => false,
    };
    if !tools_given {
        // Without tools, `auto` and `none` both mean what no tool_choice means.
        if matches!(kind, "any" | "tool") {
            return Err(error(
                "invalid_value",
                format!("tool_choice.type: `{kind}` needs `tools`"),
            ));
        }
        return Ok(());
    }
    chat.insert("tool_choice".into(), openai);
    if one_call && kind != "none" {
        chat.insert("parallel_tool_calls".into(), json!(false));
    }
    Ok(())
}

/// `output_config`: `format` (a JSON schema) becomes `response_format`; `effort`
/// is dropped (see the module docs).
fn output_config(config: &Value, chat: &mut Map<String, Value>) -> Result<(), InboundError> {
    let Some(members) = config.as_object() else {
        return Err(wrong_type("output_config", "a valid dictionary"));
    };
    for (key, value) in members {
        match key.as_str() {
            "effort" => {}
            "format" if value.is_null() => {}
            "format" => {
                if string(value, "type", "output_config.format")? != "json_schema" {
                    return Err(error(
                        "invalid_value",
                        "output_config.format.type: Input should be 'json_schema'",
                    ));
                }
                let schema = present(value, "schema")
                    .filter(|s| s.is_object())
                    .ok_or_else(|| {
                        wrong_type("output_config.format.schema", "a valid dictionary")
                    })?;
                chat.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}),
                );
            }
            other => {
                return Err(error(
                    "unknown_parameter",
                    format!("output_config.{other}: Extra inputs are not permitted"),
                ));
            }
        }
    }
    Ok(())
}

/// Reads the parts of a request that may hold what only Anthropic does: the
/// first such thing is remembered and left out, and reading goes on.
struct Reader {
    refused: Option<InboundError>,
}

impl Reader {
    fn refuse(&mut self, message: String) {
        if self.refused.is_none() {
            self.refused = Some(error(UNTRANSLATABLE, message));
        }
    }

    /// Appends the chat messages of `messages[i]` to `out`.
    fn turn(
        &mut self,
        out: &mut Vec<Value>,
        i: usize,
        turn: &Value,
        last: bool,
    ) -> Result<(), InboundError> {
        let at = format!("messages.{i}");
        if !turn.is_object() {
            return Err(wrong_type(&at, "a valid dictionary"));
        }
        let role = match present(turn, "role") {
            Some(Value::String(r)) if r == "user" || r == "assistant" => r.as_str(),
            Some(_) => {
                return Err(error(
                    "invalid_value",
                    format!("{at}.role: Input should be 'user' or 'assistant'"),
                ));
            }
            None => return Err(missing(&format!("{at}.role"))),
        };
        let blocks = match present(turn, "content") {
            Some(Value::String(text)) => {
                out.push(json!({"role": role, "content": text}));
                return Ok(());
            }
            Some(Value::Array(blocks)) => blocks,
            Some(_) => {
                return Err(wrong_type(
                    &format!("{at}.content"),
                    "a string or a list of content blocks",
                ));
            }
            None => return Err(missing(&format!("{at}.content"))),
        };
        if blocks.is_empty() && !(last && role == "assistant") {
            return Err(error(
                "invalid_value",
                format!(
                    "{at}: all messages must have non-empty content except for the optional final assistant message"
                ),
            ));
        }
        if role == "user" {
            self.user_turn(out, &at, blocks)
        } else {
            self.assistant_turn(out, &at, blocks)
        }
    }

    /// A user turn: its tool results as `tool` messages, then one user message
    /// with the rest (the tool results' images first).
    fn user_turn(
        &mut self,
        out: &mut Vec<Value>,
        at: &str,
        blocks: &[Value],
    ) -> Result<(), InboundError> {
        let mut results = Vec::new();
        let mut result_images = Vec::new();
        let mut parts = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let at = format!("{at}.content.{j}");
            match block_type(&at, block)? {
                "text" => parts.push(text_part(&at, block)?),
                "image" => parts.extend(self.image(&at, block)?),
                "document" => parts.extend(self.document(&at, block)?),
                "tool_result" => results.push(self.tool_result(&at, block, &mut result_images)?),
                kind @ ("tool_use" | "thinking" | "redacted_thinking") => {
                    return Err(error(
                        "invalid_value",
                        format!("{at}.type: `{kind}` blocks belong to assistant turns"),
                    ));
                }
                other => self.refuse(format!(
                    "{at}.type: `{other}` blocks cannot be carried to other providers"
                )),
            }
        }
        out.extend(results);
        result_images.extend(parts);
        if !result_images.is_empty() {
            out.push(json!({"role": "user", "content": result_images}));
        }
        Ok(())
    }

    /// An assistant turn: its text (a string, or parts when there are several
    /// blocks) and its tool calls; thinking blocks are left out.
    fn assistant_turn(
        &mut self,
        out: &mut Vec<Value>,
        at: &str,
        blocks: &[Value],
    ) -> Result<(), InboundError> {
        let mut texts = Vec::new();
        let mut calls = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let at = format!("{at}.content.{j}");
            match block_type(&at, block)? {
                "text" => texts.push(text_part(&at, block)?),
                "tool_use" => calls.push(tool_call(&at, block)?),
                "thinking" | "redacted_thinking" => {}
                kind @ ("tool_result" | "image" | "document") => {
                    return Err(error(
                        "invalid_value",
                        format!("{at}.type: `{kind}` blocks belong to user turns"),
                    ));
                }
                other => self.refuse(format!(
                    "{at}.type: `{other}` blocks cannot be carried to other providers"
                )),
            }
        }
        if texts.is_empty() && calls.is_empty() {
            return Ok(());
        }
        let content = match texts.len() {
            0 => Value::Null,
            1 => texts
                .pop()
                .and_then(|t| t.get("text").cloned())
                .unwrap_or_default(),
            _ => Value::Array(texts),
        };
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert("content".into(), content);
        if !calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        out.push(Value::Object(message));
        Ok(())
    }

    /// An image block as an `image_url` part (base64 as a data URL).
    fn image(&mut self, at: &str, block: &Value) -> Result<Option<Value>, InboundError> {
        let at = format!("{at}.source");
        let source = present(block, "source")
            .filter(|s| s.is_object())
            .ok_or_else(|| missing(&at))?;
        let url = match string(source, "type", &at)? {
            "base64" => format!(
                "data:{};base64,{}",
                string(source, "media_type", &at)?,
                string(source, "data", &at)?
            ),
            "url" => string(source, "url", &at)?.to_string(),
            "file" => {
                self.refuse(format!(
                    "{at}.type: images uploaded to Anthropic's Files API can only be read by Anthropic"
                ));
                return Ok(None);
            }
            _ => {
                return Err(error(
                    "invalid_value",
                    format!("{at}.type: Input should be 'base64', 'url' or 'file'"),
                ));
            }
        };
        Ok(Some(
            json!({"type": "image_url", "image_url": {"url": url}}),
        ))
    }

    /// A document block: plain text as a text part, a base64 PDF as a `file` part.
    fn document(&mut self, at: &str, block: &Value) -> Result<Option<Value>, InboundError> {
        let source_at = format!("{at}.source");
        let source = present(block, "source")
            .filter(|s| s.is_object())
            .ok_or_else(|| missing(&source_at))?;
        let kind = string(source, "type", &source_at)?;
        let media_type = present(source, "media_type").and_then(Value::as_str);
        match (kind, media_type) {
            ("text", _) => Ok(Some(
                json!({"type": "text", "text": string(source, "data", &source_at)?}),
            )),
            ("base64", Some("application/pdf")) => {
                let data = string(source, "data", &source_at)?;
                let name = present(block, "title")
                    .and_then(Value::as_str)
                    .unwrap_or("document.pdf");
                Ok(Some(json!({"type": "file", "file": {
                    "filename": name,
                    "file_data": format!("data:application/pdf;base64,{data}"),
                }})))
            }
            _ => {
                self.refuse(format!(
                    "{source_at}: documents other than plain text and base64 PDF can only be read by Anthropic"
                ));
                Ok(None)
            }
        }
    }

    /// A `tool_result` block as a `tool` message; its images go to `images`.
    fn tool_result(
        &mut self,
        at: &str,
        block: &Value,
        images: &mut Vec<Value>,
    ) -> Result<Value, InboundError> {
        let id = string(block, "tool_use_id", at)?;
        let mut text = match present(block, "content") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(blocks)) => {
                let mut texts = Vec::new();
                for (k, inner) in blocks.iter().enumerate() {
                    let at = format!("{at}.content.{k}");
                    match block_type(&at, inner)? {
                        "text" => texts.push(string(inner, "text", &at)?),
                        "image" => images.extend(self.image(&at, inner)?),
                        other => self.refuse(format!(
                            "{at}.type: `{other}` blocks in tool results cannot be carried to other providers"
                        )),
                    }
                }
                texts.join("\n")
            }
            Some(_) => {
                return Err(wrong_type(
                    &format!("{at}.content"),
                    "a string or a list of content blocks",
                ));
            }
        };
        match present(block, "is_error") {
            Some(Value::Bool(true)) => text = format!("Tool error: {text}"),
            Some(Value::Bool(false)) | None => {}
            Some(_) => return Err(wrong_type(&format!("{at}.is_error"), "a valid boolean")),
        }
        Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
    }

    /// `tools` as OpenAI function tools; tools that Anthropic defines are refused.
    fn tools(&mut self, tools: &[Value]) -> Result<Vec<Value>, InboundError> {
        let mut out = Vec::with_capacity(tools.len());
        for (i, tool) in tools.iter().enumerate() {
            let at = format!("tools.{i}");
            if !tool.is_object() {
                return Err(wrong_type(&at, "a valid dictionary"));
            }
            match present(tool, "type") {
                None => {}
                Some(Value::String(kind)) if kind == "custom" => {}
                Some(Value::String(kind)) => {
                    self.refuse(format!(
                        "{at}.type: `{kind}` is a tool that Anthropic defines; other providers cannot run it"
                    ));
                    continue;
                }
                Some(_) => return Err(wrong_type(&format!("{at}.type"), "a valid string")),
            }
            let name = string(tool, "name", &at)?;
            if !(1..=64).contains(&name.len()) {
                return Err(wrong_type(
                    &format!("{at}.name"),
                    "a string of 1 to 64 characters",
                ));
            }
            let schema = match present(tool, "input_schema") {
                Some(s) if s.is_object() => s,
                Some(_) => {
                    return Err(wrong_type(
                        &format!("{at}.input_schema"),
                        "a valid dictionary",
                    ));
                }
                None => return Err(missing(&format!("{at}.input_schema"))),
            };
            let mut function = Map::new();
            function.insert("name".into(), json!(name));
            if present(tool, "description").is_some() {
                function.insert(
                    "description".into(),
                    json!(string(tool, "description", &at)?),
                );
            }
            function.insert("parameters".into(), schema.clone());
            if let Some(strict) = present(tool, "strict").and_then(Value::as_bool) {
                function.insert("strict".into(), json!(strict));
            }
            out.push(json!({"type": "function", "function": function}));
        }
        Ok(out)
    }
}

/// A `tool_use` block as an OpenAI tool call.
fn tool_call(at: &str, block: &Value) -> Result<Value, InboundError> {
    let input = match present(block, "input") {
        Some(i) if i.is_object() => i,
        Some(_) => return Err(wrong_type(&format!("{at}.input"), "a valid dictionary")),
        None => return Err(missing(&format!("{at}.input"))),
    };
    Ok(json!({
        "id": string(block, "id", at)?,
        "type": "function",
        "function": {"name": string(block, "name", at)?, "arguments": input.to_string()},
    }))
}

// === answer ===

/// Anthropic's `stop_reason` for a chat answer's `finish_reason`. A `stop` with
/// tool calls is `tool_use` (some providers report it so, and Anthropic clients
/// run their tools on `tool_use` only); a refusal is `refusal`.
fn stop_reason(finish: Option<&str>, used_tools: bool, refused: bool) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("content_filter") => "refusal",
        Some("tool_calls" | "function_call") => "tool_use",
        _ if refused => "refusal",
        _ if used_tools => "tool_use",
        _ => "end_turn",
    }
}

/// Anthropic's `usage` for an OpenAI `usage` (zeros without one). OpenAI's
/// `prompt_tokens` include the cached ones; Anthropic counts them apart, in
/// `cache_read_input_tokens`.
fn usage(openai: Option<&Value>) -> Value {
    let count = |path: &str| {
        openai
            .and_then(|u| u.pointer(path))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let cached = count("/prompt_tokens_details/cached_tokens");
    json!({
        "input_tokens": count("/prompt_tokens").saturating_sub(cached),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": count("/completion_tokens"),
    })
}

/// Anthropic's message id for a chat answer's id: `msg_` and the id (an id that
/// already is one, such as an Anthropic target's, is kept).
fn message_id(chat_id: &str) -> String {
    if chat_id.starts_with("msg_") {
        chat_id.to_string()
    } else {
        format!("msg_{chat_id}")
    }
}

fn bad_answer(message: impl Into<String>) -> InboundError {
    error("bad_response", message)
}

/// Translates a chat completion into a Messages `message` for a client that
/// asked for `model` (the `model` it gets back, whichever target answered).
///
/// The `id` is `msg_` and the completion's id; the text becomes a text block,
/// each tool call a `tool_use` block with its arguments parsed (arguments that
/// are not a JSON object are an error, unless the answer was cut by its token
/// limit: then the input is `{}`, and `stop_reason: max_tokens` says why).
pub fn answer_from_chat(chat_answer: &[u8], model: &str) -> Result<Vec<u8>, InboundError> {
    let v: Value = serde_json::from_slice(chat_answer)
        .map_err(|e| bad_answer(format!("The answer is not valid JSON: {e}")))?;
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| bad_answer("The answer has no choices."))?;
    let message = present(choice, "message")
        .filter(|m| m.is_object())
        .ok_or_else(|| bad_answer("The answer has no message."))?;
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    let id = v.get("id").and_then(Value::as_str).unwrap_or("");

    let mut content = Vec::new();
    let text = match present(message, "content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    };
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    let refusal = present(message, "refusal")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    if let Some(r) = refusal {
        content.push(json!({"type": "text", "text": r}));
    }
    let calls = present(message, "tool_calls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, call) in calls.iter().enumerate() {
        let name = call
            .pointer("/function/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let args = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .filter(|a| !a.trim().is_empty())
            .unwrap_or("{}");
        let input = match serde_json::from_str::<Value>(args) {
            Ok(input @ Value::Object(_)) => input,
            _ if finish == Some("length") => json!({}),
            _ => {
                return Err(bad_answer(format!(
                    "The model's arguments for tool `{name}` are not a JSON object."
                )));
            }
        };
        let call_id = call
            .get("id")
            .and_then(Value::as_str)
            .map_or_else(|| format!("toolu_{id}_{i}"), str::to_string);
        content.push(json!({"type": "tool_use", "id": call_id, "name": name, "input": input}));
    }
    let answer = json!({
        "id": message_id(id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(finish, !calls.is_empty(), refusal.is_some()),
        "stop_sequence": null,
        "usage": usage(v.get("usage")),
    });
    Ok(answer.to_string().into_bytes())
}

// === errors ===

/// Anthropic's error `type` for an HTTP status, as its Errors page lists them
/// (other 4xx are `invalid_request_error`, other 5xx `api_error`). The gateway's
/// 503 (nothing could answer) reads as Anthropic's 529.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

fn error_value(kind: &str, message: &str, request_id: Option<&str>) -> Value {
    let mut e = Map::new();
    e.insert("type".into(), json!("error"));
    e.insert("error".into(), json!({"type": kind, "message": message}));
    if let Some(id) = request_id {
        e.insert("request_id".into(), json!(id));
    }
    Value::Object(e)
}

/// An Anthropic error body: `{"type":"error","error":{"type","message"},"request_id"}`.
pub fn error_body(status: u16, message: &str, request_id: &str) -> Vec<u8> {
    error_value(error_type(status), message, Some(request_id))
        .to_string()
        .into_bytes()
}

/// Anthropic's error types, for error messages that begin with one (the Anthropic
/// dialect relays a provider's stream error as `overloaded_error: Overloaded`).
const ERROR_TYPES: &[&str] = &[
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "conflict_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "timeout_error",
    "overloaded_error",
];

/// The Anthropic type and message of a chat stream's error object. The
/// gateway's own stream errors are `api_error`s.
fn stream_error(e: &Value) -> (&'static str, String) {
    let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
    let message = field("message");
    for kind in ERROR_TYPES {
        if let Some(rest) = message.strip_prefix(kind).and_then(|r| r.strip_prefix(':')) {
            return (kind, rest.trim_start().to_string());
        }
    }
    let kind = match (field("type"), field("code")) {
        ("rate_limit_error", _) | (_, "rate_limit_exceeded" | "rate_limited") => "rate_limit_error",
        ("invalid_request_error", _) => "invalid_request_error",
        ("authentication_error", _) => "authentication_error",
        _ if message.to_ascii_lowercase().contains("overloaded") => "overloaded_error",
        _ => "api_error",
    };
    (kind, message.to_string())
}

// === stream ===

/// The largest chat event held while waiting for its end: the bound the gateway
/// puts on a provider's event elsewhere ([`crate::eventstream`]).
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The content block being streamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Text,
    /// A tool call, by its OpenAI `index`.
    Tool(u64),
}

/// Turns the gateway's chat-completions SSE stream into Anthropic's Messages
/// event stream: `message_start`; per block `content_block_start`,
/// `content_block_delta`s (`text_delta`, `input_json_delta`) and
/// `content_block_stop`; `message_delta` (stop reason and usage, from the final
/// usage chunk); `message_stop`. Text and each tool call (by OpenAI `index`) are
/// blocks of their own, numbered in order, each closed before the next opens.
/// An error event of the chat stream, an event that is not JSON, and a stream
/// that ends before its finish reason all end the stream with an `error` event.
#[derive(Debug)]
pub struct MessageStream {
    model: String,
    parser: sse::Parser,
    /// The message id (see [`message_id`]), once `message_start` is sent.
    id: Option<String>,
    /// The open block; its index is `index`.
    open: Option<Block>,
    /// The index of the open block, or of the next one.
    index: u64,
    /// The OpenAI indexes of the tool calls given a block so far.
    tool_calls: Vec<u64>,
    finish: Option<String>,
    refused: bool,
    usage: Option<Value>,
    ended: bool,
}

impl MessageStream {
    /// A stream for a client that asked for `model` (the `model` its
    /// `message_start` names, as [`answer_from_chat`] does).
    pub fn new(model: &str) -> Self {
        MessageStream {
            model: model.to_string(),
            parser: sse::Parser::default(),
            id: None,
            open: None,
            index: 0,
            tool_calls: Vec::new(),
            finish: None,
            refused: false,
            usage: None,
            ended: false,
        }
    }

    /// Translates the next bytes of the chat stream into `out`.
    fn translate(&mut self, out: &mut String, bytes: &[u8]) {
        if self.ended {
            return;
        }
        for ev in self.parser.feed(bytes) {
            self.event(out, &ev.data);
            if self.ended {
                return;
            }
        }
        if self.parser.pending() > MAX_EVENT_BYTES {
            self.parser.take_pending();
            let message = "The answer's stream sent an event larger than 16 MiB.";
            self.fail(out, "api_error", message, None);
        }
    }

    /// Translates one event of the chat stream.
    fn event(&mut self, out: &mut String, data: &str) {
        if data == "[DONE]" {
            self.complete(out);
            return;
        }
        let chunk: Value = match serde_json::from_str(data) {
            Ok(c) => c,
            Err(e) => {
                let message = format!("The answer's stream sent an event that is not JSON: {e}");
                self.fail(out, "api_error", &message, None);
                return;
            }
        };
        if let Some(e) = present(&chunk, "error") {
            let (kind, message) = stream_error(e);
            self.fail(
                out,
                kind,
                &message,
                e.get("request_id").and_then(Value::as_str),
            );
            return;
        }
        self.start(out, &chunk);
        if let Some(u) = present(&chunk, "usage") {
            self.usage = Some(u.clone());
        }
        // Anthropic has one answer per request: choice 0 (the only one asked for).
        let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| {
                c.iter()
                    .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
            })
        else {
            return;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta.get("content").and_then(Value::as_str) {
            self.text(out, text);
        }
        if let Some(text) = delta.get("refusal").and_then(Value::as_str) {
            self.refused = true;
            self.text(out, text);
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.tool_call(out, call);
            if self.ended {
                return;
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(reason.to_string());
            self.close(out);
        }
    }

    /// `message_start`, before the first block.
    fn start(&mut self, out: &mut String, chunk: &Value) {
        if self.id.is_some() {
            return;
        }
        let id = message_id(chunk.get("id").and_then(Value::as_str).unwrap_or(""));
        let message = json!({
            "id": id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        push_event(out, &json!({"type": "message_start", "message": message}));
        self.id = Some(id);
    }

    fn open(&mut self, out: &mut String, block: Block, content_block: Value) {
        self.close(out);
        push_event(
            out,
            &json!({"type": "content_block_start", "index": self.index, "content_block": content_block}),
        );
        self.open = Some(block);
    }

    fn close(&mut self, out: &mut String) {
        if self.open.take().is_some() {
            push_event(
                out,
                &json!({"type": "content_block_stop", "index": self.index}),
            );
            self.index += 1;
        }
    }

    fn delta(&self, out: &mut String, delta: Value) {
        push_event(
            out,
            &json!({"type": "content_block_delta", "index": self.index, "delta": delta}),
        );
    }

    fn text(&mut self, out: &mut String, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.open != Some(Block::Text) {
            self.open(out, Block::Text, json!({"type": "text", "text": ""}));
        }
        self.delta(out, json!({"type": "text_delta", "text": text}));
    }

    fn tool_call(&mut self, out: &mut String, call: &Value) {
        let n = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        if self.open != Some(Block::Tool(n)) {
            if self.tool_calls.contains(&n) {
                // A block cannot be reopened; dropping the arguments would
                // corrupt the call without a word.
                let message = "The answer's stream went back to an earlier tool call, which Anthropic's stream cannot express.";
                self.fail(out, "api_error", message, None);
                return;
            }
            self.tool_calls.push(n);
            let id = call.get("id").and_then(Value::as_str).map_or_else(
                || format!("toolu_{}_{n}", self.id.as_deref().unwrap_or("")),
                str::to_string,
            );
            let name = call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            self.open(
                out,
                Block::Tool(n),
                json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
            );
        }
        if let Some(args) = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            self.delta(
                out,
                json!({"type": "input_json_delta", "partial_json": args}),
            );
        }
    }

    /// The chat stream is over: `message_delta` and `message_stop`.
    fn complete(&mut self, out: &mut String) {
        self.start(out, &Value::Null);
        self.close(out);
        let stop = stop_reason(
            self.finish.as_deref(),
            !self.tool_calls.is_empty(),
            self.refused,
        );
        let usage = usage(self.usage.as_ref());
        push_event(
            out,
            &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": usage}),
        );
        push_event(out, &json!({"type": "message_stop"}));
        self.ended = true;
    }

    fn fail(&mut self, out: &mut String, kind: &str, message: &str, request_id: Option<&str>) {
        push_event(out, &error_value(kind, message, request_id));
        self.ended = true;
    }
}

/// One Anthropic event: `event:` is the data's `type`.
fn push_event(out: &mut String, data: &Value) {
    let kind = data.get("type").and_then(Value::as_str).unwrap_or("");
    out.push_str(&format!("event: {kind}\ndata: {data}\n\n"));
}

impl StreamBack for MessageStream {
    fn feed(&mut self, chat_sse: &[u8]) -> Vec<u8> {
        let mut out = String::new();
        self.translate(&mut out, chat_sse);
        out.into_bytes()
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = String::new();
        // A last event without its blank line still counts.
        if self.parser.pending() > 0 {
            self.translate(&mut out, b"\n\n");
        }
        if self.ended {
            return out.into_bytes();
        }
        if self.finish.is_some() {
            // The answer is whole; only the end of the chat stream is missing.
            self.complete(&mut out);
        } else {
            let message = "The answer's stream ended before the answer was complete.";
            self.fail(&mut out, "api_error", message, None);
        }
        out.into_bytes()
    }
}
