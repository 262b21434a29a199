//! The OpenAI Responses API (`POST /v1/responses`) as a client API, stateless.
//!
//! A Responses request becomes the gateway's chat-completions request
//! ([`to_chat`]); the chat answer comes back as a Responses `response` object
//! ([`answer_from_chat`]) or, streamed, as Responses events ([`ResponseStream`]).
//! Errors keep OpenAI's `{"error": {…}}` shape ([`error_body`]). A target that
//! speaks the Responses API itself (OpenAI) can be given the client's body
//! instead, and then nothing below applies.
//!
//! Shapes follow OpenAI's API reference ("Create a model response", the
//! `x-oaiMeta` examples of `paths./responses.post` in `openapi.yaml` of
//! openai/openai-openapi) and the types of openai-python
//! (`src/openai/types/responses/`), which say which fields the SDKs require.
//!
//! # How the request maps
//!
//! | Responses | chat completions |
//! | --- | --- |
//! | `instructions` | a first `system` message |
//! | `input` (a string) | one `user` message |
//! | `message` items (`user`, `assistant`, `system`, `developer`) | messages of that role; `input_text`/`output_text` parts → `text` parts, `input_image` (`image_url`, `detail`) → `image_url` parts, `input_file` with `file_data` → `file` parts; `assistant` content becomes one string |
//! | `function_call` items | an `assistant` message's `tool_calls` (`call_id` is the call's `id`); consecutive calls, and calls right after an assistant message, join that one message |
//! | `function_call_output` items | `tool` messages (`tool_call_id` = `call_id`) |
//! | `tools` of type `function` (`name`, `description`, `parameters`, `strict`) | function tools |
//! | `tool_choice` `auto`/`none`/`required`, `{type: function, name}` | the same choice; `{type: allowed_tools, mode, tools}` keeps only the allowed function tools and becomes `mode` |
//! | `parallel_tool_calls`, `temperature`, `top_p`, `user` | the same member |
//! | `max_output_tokens` (1 to [`MAX_OUTPUT_TOKENS`], the chat form's bound) | `max_completion_tokens` |
//! | `text.format` `json_schema` (`name`, `schema`, `strict`, `description`) / `json_object` | `response_format` of that type |
//! | `reasoning.effort` | `reasoning_effort` (`none` leaves it out; `xhigh` and `max` become `high`, chat's highest) |
//! | `stream: true` | `stream: true` with `stream_options.include_usage: true` (the final event carries usage) |
//! | `safety_identifier` | `user`, when `user` is not given |
//!
//! # What is lost
//!
//! Accepted, but nothing at a non-OpenAI target acts on it:
//! - `store` (`true` is the API's default): the gateway keeps nothing, so the
//!   answer cannot be fetched later or continued with `previous_response_id`.
//! - `metadata` (chat completions keeps metadata only for stored completions).
//! - `reasoning` items in `input`: dropped (they are OpenAI's own, often
//!   encrypted, reasoning; other providers cannot read them). `reasoning.summary`
//!   is dropped too, and answers carry no `reasoning` items.
//! - `include`, `top_logprobs`, `truncation`, `service_tier`, `prompt_cache_key`,
//!   `prompt_cache_retention`, `prompt_cache_options`, `max_tool_calls`,
//!   `context_management`, `stream_options`, `text.verbosity`: dropped; with
//!   `truncation: auto` an input too long for the model is an error, not cut.
//! - Message `id`, `status` and `phase`; members the API does not define.
//! - `refusal` parts of earlier assistant messages become plain text.
//! - `strict` on function tools and on `json_schema`: passed on, but only OpenAI
//!   enforces schemas; elsewhere the schema is a strong hint.
//! - In the answer: no `output_text` member (it is not in the API's JSON; the
//!   SDKs compute it from `output`), no `reasoning` items, no annotations or
//!   logprobs. `instructions`, `tools`, `tool_choice`, `parallel_tool_calls`,
//!   `temperature` and `top_p`, which the API echoes from the request, hold the
//!   API's defaults (`null`, `[]`, `"auto"`, `true`, `null`, `null`), not the
//!   request's. `usage.input_tokens_details.cache_write_tokens` is 0 unless the
//!   chat usage reports it.
//!
//! # What is refused ([`InboundError`] codes)
//!
//! The first five codes mean "OpenAI's own service only" (a target that speaks
//! Responses still gets the request, [`super::ClientApi::only_native`]); they
//! are returned only for a request that is well-formed otherwise, once the whole
//! of it has been checked, since the gateway routes such a request by its
//! `model` and `stream` alone. A malformed one is the client's error first.
//!
//! - `previous_response_not_supported`: `previous_response_id`. The gateway is
//!   stateless; the client sends the whole conversation as `input`.
//! - `conversation_not_supported`: `conversation`, and `item_reference` items
//!   (both name state stored at OpenAI).
//! - `unsupported_parameter`: `background: true` (needs stored responses to
//!   poll), `prompt` (a prompt template stored at OpenAI), `moderation`.
//! - `unsupported_tool`: every built-in tool (`web_search`, `file_search`,
//!   `computer_use_preview`, `code_interpreter`, `image_generation`, `mcp`,
//!   `local_shell`, `shell`, `apply_patch`, `custom`, …) and a `tool_choice`
//!   naming one: only OpenAI runs them.
//! - `unsupported_input`: `file_id` on `input_image` or `input_file` (a file
//!   stored at OpenAI: send the image as `image_url`, a URL or `data:` URL, and a
//!   file as `file_data`), `file_url` on `input_file`, images or files inside a
//!   `function_call_output`, images in `system`/`developer`/`assistant`
//!   messages, and every other item type (built-in tool calls and their outputs,
//!   `compaction`, …).
//! - `invalid_json`, `invalid_request`, `missing_required_parameter`,
//!   `invalid_type`, `invalid_value`: a malformed request (`model` must be a
//!   non-empty string; `input` a string or an array of items, left out or
//!   without a message to answer only in a request refused for OpenAI anyway,
//!   whose stored state may hold them; `max_output_tokens` at most
//!   [`MAX_OUTPUT_TOKENS`]).
//!
//! # Streams
//!
//! [`ResponseStream`] emits `response.created`, `response.in_progress`, then
//! per output item `response.output_item.added`, its content events and
//! `response.output_item.done`, and ends with `response.completed` (or
//! `response.incomplete` on `finish_reason` `length` / `content_filter`). An
//! error event in the chat stream, or a chat stream that ends without
//! `data: [DONE]`, ends it with `response.failed` (`error.code`
//! `rate_limit_exceeded` or `server_error`, the gateway's message).

use serde_json::{Map, Value, json};

use super::{Inbound, InboundError, MAX_OUTPUT_TOKENS, StreamBack};
use crate::sse;

/// The code for `previous_response_id`: the request needs a stored response.
pub const PREVIOUS_RESPONSE_NOT_SUPPORTED: &str = "previous_response_not_supported";
/// The code for `conversation` and `item_reference`: stored conversation state.
pub const CONVERSATION_NOT_SUPPORTED: &str = "conversation_not_supported";
/// The code for request members only OpenAI's own service can honour.
pub const UNSUPPORTED_PARAMETER: &str = "unsupported_parameter";
/// The code for OpenAI's built-in tools.
pub const UNSUPPORTED_TOOL: &str = "unsupported_tool";
/// The code for input items and content parts with no chat equivalent.
pub const UNSUPPORTED_INPUT: &str = "unsupported_input";

fn err(code: &'static str, message: impl Into<String>) -> InboundError {
    InboundError {
        code,
        message: message.into(),
    }
}

fn invalid_type(message: impl Into<String>) -> InboundError {
    err("invalid_type", message)
}

/// The first thing in a request that only OpenAI's own service can serve (a
/// refusal [`super::ClientApi::only_native`] names), kept aside while the rest
/// of the request is checked and returned last: a request that is malformed
/// besides is the client's error whatever its targets, and the planner routes
/// a refused one to the targets that speak Responses from its `model` and
/// `stream` alone, so those must have been checked.
#[derive(Debug, Default)]
struct OnlyOpenai(Option<InboundError>);

impl OnlyOpenai {
    fn refuse(&mut self, code: &'static str, message: impl Into<String>) {
        if self.0.is_none() {
            self.0 = Some(err(code, message));
        }
    }

    fn refused(&self) -> bool {
        self.0.is_some()
    }
}

// === request ===

/// Turns a Responses request body into the gateway's chat-completions request
/// (see the module documentation for what maps to what, and what is refused).
pub fn to_chat(body: &[u8]) -> Result<Inbound, InboundError> {
    let req = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return Err(err(
                "invalid_request",
                "The request body must be a JSON object.",
            ));
        }
        Err(e) => {
            return Err(err(
                "invalid_json",
                format!("The request body is not valid JSON: {e}"),
            ));
        }
    };
    let mut only = OnlyOpenai::default();
    refuse_stored_state(&req, &mut only)?;
    let model = match req.get("model") {
        None | Some(Value::Null) => {
            return Err(err(
                "missing_required_parameter",
                "Missing required parameter: 'model'.",
            ));
        }
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(invalid_type("`model` must be a non-empty string.")),
    };

    let mut messages = Vec::new();
    if let Some(instructions) = string(&req, "instructions")?.filter(|s| !s.is_empty()) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    match req.get("input") {
        // Refused for OpenAI anyway, where stored state (a prompt template, an
        // earlier response) may stand in for `input`.
        None | Some(Value::Null) if only.refused() => {}
        None | Some(Value::Null) => {
            return Err(err(
                "missing_required_parameter",
                "Missing required parameter: 'input'. The gateway is stateless: send the whole conversation as `input`.",
            ));
        }
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(&mut messages, item, i, &mut only)?;
            }
        }
        Some(_) => {
            return Err(invalid_type(
                "`input` must be a string or an array of input items.",
            ));
        }
    }
    let answerable = messages.iter().any(|m| {
        !matches!(
            m.get("role").and_then(Value::as_str),
            Some("system" | "developer")
        )
    });
    // What was refused (an item, a part) may be what OpenAI answers.
    if !answerable && !only.refused() {
        return Err(err(
            "invalid_value",
            "`input` holds no message for the model to answer.",
        ));
    }

    let mut chat = Map::new();
    chat.insert("model".into(), Value::String(model));
    chat.insert("messages".into(), Value::Array(messages));

    let mut tools = match present(&req, "tools") {
        None => None,
        Some(Value::Array(list)) => {
            let mut functions = Vec::with_capacity(list.len());
            for (i, t) in list.iter().enumerate() {
                functions.extend(function_tool(t, i, &mut only)?);
            }
            Some(functions)
        }
        Some(_) => return Err(invalid_type("`tools` must be an array of tools.")),
    };
    if let Some(choice) = present(&req, "tool_choice")
        && let Some(choice) = tool_choice(choice, &mut tools, &mut only)?
    {
        chat.insert("tool_choice".into(), choice);
    }
    if let Some(tools) = tools {
        chat.insert("tools".into(), Value::Array(tools));
    }
    if let Some(b) = boolean(&req, "parallel_tool_calls")? {
        chat.insert("parallel_tool_calls".into(), Value::Bool(b));
    }
    if let Some(n) = present(&req, "max_output_tokens") {
        let bounds =
            format!("`max_output_tokens` must be an integer from 1 to {MAX_OUTPUT_TOKENS}.");
        match n.as_u64() {
            Some(1..=MAX_OUTPUT_TOKENS) => {}
            Some(0) | None => return Err(invalid_type(bounds)),
            Some(_) => return Err(err("invalid_value", bounds)),
        }
        chat.insert("max_completion_tokens".into(), n.clone());
    }
    for (key, hi) in [("temperature", 2.0), ("top_p", 1.0)] {
        if let Some(v) = present(&req, key) {
            if !v.as_f64().is_some_and(|x| (0.0..=hi).contains(&x)) {
                return Err(invalid_type(format!(
                    "`{key}` must be a number from 0 to {hi}."
                )));
            }
            chat.insert(key.into(), v.clone());
        }
    }
    if let Some(format) = response_format(&req)? {
        chat.insert("response_format".into(), format);
    }
    if let Some(effort) = reasoning_effort(&req)? {
        chat.insert("reasoning_effort".into(), Value::String(effort.into()));
    }
    let user = string(&req, "user")?;
    let safety_identifier = string(&req, "safety_identifier")?;
    if let Some(user) = user.or(safety_identifier) {
        chat.insert("user".into(), Value::String(user.into()));
    }
    // Accepted and dropped (see the module documentation), but checked: a wrong
    // type is the client's error here as it would be at OpenAI.
    boolean(&req, "store")?;
    if present(&req, "metadata").is_some_and(|m| !m.is_object()) {
        return Err(invalid_type("`metadata` must be an object."));
    }
    if let Some(t) = string(&req, "truncation")?
        && !["auto", "disabled"].contains(&t)
    {
        return Err(err(
            "invalid_value",
            "`truncation` must be one of auto, disabled.",
        ));
    }
    let stream = boolean(&req, "stream")?.unwrap_or(false);
    if stream {
        chat.insert("stream".into(), Value::Bool(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    // The whole request is checked: now what only OpenAI serves.
    if let Some(e) = only.0 {
        return Err(e);
    }
    Ok(Inbound {
        chat: Value::Object(chat),
        stream,
    })
}

/// A member that is present and not null.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// An optional string member.
fn string<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, InboundError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid_type(format!("`{key}` must be a string."))),
    }
}

/// An optional boolean member.
fn boolean(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, InboundError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid_type(format!("`{key}` must be a boolean."))),
    }
}

/// A required string member of an object at `at` (`input[2]`, `tools[0]`).
fn required_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<&'a str, InboundError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(err(
            "missing_required_parameter",
            format!("Missing required parameter: '{at}.{key}'."),
        )),
        Some(_) => Err(invalid_type(format!("{at}.{key} must be a string."))),
    }
}

/// The members that need state stored at OpenAI, or its own service.
fn refuse_stored_state(
    req: &Map<String, Value>,
    only: &mut OnlyOpenai,
) -> Result<(), InboundError> {
    if present(req, "previous_response_id").is_some() {
        only.refuse(
            PREVIOUS_RESPONSE_NOT_SUPPORTED,
            "`previous_response_id` is not supported: the gateway is stateless and keeps no earlier responses. Send the full conversation in `input` instead (earlier outputs included, such as function_call items with their function_call_output).",
        );
    }
    if present(req, "conversation").is_some() {
        only.refuse(
            CONVERSATION_NOT_SUPPORTED,
            "`conversation` is not supported: the gateway is stateless and keeps no conversations. Send the full conversation in `input` instead.",
        );
    }
    if boolean(req, "background")? == Some(true) {
        only.refuse(
            UNSUPPORTED_PARAMETER,
            "`background: true` is not supported: the gateway is stateless and cannot store a response to poll for. Send the request without `background` (optionally with `stream: true`).",
        );
    }
    if present(req, "prompt").is_some() {
        only.refuse(
            UNSUPPORTED_PARAMETER,
            "`prompt` is not supported: prompt templates are stored at OpenAI. Send the prompt's text as `instructions` and `input` instead.",
        );
    }
    if present(req, "moderation").is_some() {
        only.refuse(
            UNSUPPORTED_PARAMETER,
            "`moderation` is not supported: moderated completions are run by OpenAI's own service.",
        );
    }
    Ok(())
}

/// Appends input item `i` to the chat messages (nothing, for an item only
/// OpenAI can read: that is set aside in `only`).
fn input_item(
    out: &mut Vec<Value>,
    item: &Value,
    i: usize,
    only: &mut OnlyOpenai,
) -> Result<(), InboundError> {
    let at = format!("input[{i}]");
    let obj = item
        .as_object()
        .ok_or_else(|| invalid_type(format!("{at} must be an object.")))?;
    // A message may leave out its `type` (the "easy input message").
    let kind = match obj.get("type") {
        None | Some(Value::Null) => "message",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(invalid_type(format!("{at}.type must be a string."))),
    };
    match kind {
        "message" => out.push(message(obj, &at, only)?),
        "function_call" => {
            let call = json!({
                "id": required_str(obj, "call_id", &at)?,
                "type": "function",
                "function": {
                    "name": required_str(obj, "name", &at)?,
                    "arguments": required_str(obj, "arguments", &at)?,
                },
            });
            // The calls of one model turn are one assistant message, with the
            // turn's text when a message item came just before them.
            if let Some(Value::Object(last)) = out.last_mut()
                && last.get("role").and_then(Value::as_str) == Some("assistant")
            {
                match last.get_mut("tool_calls") {
                    Some(Value::Array(calls)) => calls.push(call),
                    _ => {
                        last.insert("tool_calls".into(), json!([call]));
                    }
                }
            } else {
                out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
            }
        }
        "function_call_output" => {
            let call_id = required_str(obj, "call_id", &at)?;
            let content = match obj.get("output") {
                Some(Value::String(s)) => Value::String(s.clone()),
                Some(Value::Array(parts)) => {
                    let mut texts = Vec::with_capacity(parts.len());
                    for (j, p) in parts.iter().enumerate() {
                        let Some(part) = content_part(p, &format!("{at}.output[{j}]"), only)?
                        else {
                            continue;
                        };
                        if part.get("type").and_then(Value::as_str) == Some("text") {
                            texts.push(part);
                        } else {
                            only.refuse(
                                UNSUPPORTED_INPUT,
                                format!(
                                    "{at}.output[{j}]: a function_call_output can hold only text when the gateway translates it (chat tool messages carry text)."
                                ),
                            );
                        }
                    }
                    Value::Array(texts)
                }
                None | Some(Value::Null) => {
                    return Err(err(
                        "missing_required_parameter",
                        format!("Missing required parameter: '{at}.output'."),
                    ));
                }
                Some(_) => {
                    return Err(invalid_type(format!(
                        "{at}.output must be a string or an array of content parts."
                    )));
                }
            };
            out.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
        }
        // OpenAI's own (often encrypted) reasoning: no other provider can read it.
        "reasoning" => {}
        "item_reference" => only.refuse(
            CONVERSATION_NOT_SUPPORTED,
            format!(
                "{at} is an item_reference: the gateway is stateless and keeps no items. Send the item itself."
            ),
        ),
        other => only.refuse(
            UNSUPPORTED_INPUT,
            format!(
                "{at} is a `{other}` item, which has no equivalent outside OpenAI (built-in tool calls and their outputs run only there)."
            ),
        ),
    }
    Ok(())
}

/// A `message` item as a chat message (without the parts only OpenAI can
/// read: those are set aside in `only`).
fn message(
    obj: &Map<String, Value>,
    at: &str,
    only: &mut OnlyOpenai,
) -> Result<Value, InboundError> {
    let role = required_str(obj, "role", at)?;
    if !["user", "assistant", "system", "developer"].contains(&role) {
        return Err(err(
            "invalid_value",
            format!("{at}.role must be one of user, assistant, system, developer."),
        ));
    }
    let content = match obj.get("content") {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(parts)) => {
            let mut kept = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let at = format!("{at}.content[{j}]");
                let Some(part) = content_part(p, &at, only)? else {
                    continue;
                };
                let text = part.get("type").and_then(Value::as_str) == Some("text");
                if role == "user" || text {
                    kept.push(part);
                } else {
                    only.refuse(
                        UNSUPPORTED_INPUT,
                        format!(
                            "{at}: a {role} message can hold only text when the gateway translates it."
                        ),
                    );
                }
            }
            if role == "assistant" {
                // Chat assistant content is one text; the parts of an output
                // message are pieces of it (as the SDKs' `output_text` joins them).
                let texts: Vec<&str> = kept
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect();
                Value::String(texts.concat())
            } else {
                Value::Array(kept)
            }
        }
        None | Some(Value::Null) => {
            return Err(err(
                "missing_required_parameter",
                format!("Missing required parameter: '{at}.content'."),
            ));
        }
        Some(_) => {
            return Err(invalid_type(format!(
                "{at}.content must be a string or an array of content parts."
            )));
        }
    };
    Ok(json!({"role": role, "content": content}))
}

/// One content part as a chat content part; `None` for one only OpenAI can
/// read (set aside in `only`).
fn content_part(
    part: &Value,
    at: &str,
    only: &mut OnlyOpenai,
) -> Result<Option<Value>, InboundError> {
    let obj = part
        .as_object()
        .ok_or_else(|| invalid_type(format!("{at} must be an object.")))?;
    let kind = required_str(obj, "type", at)?;
    match kind {
        "input_text" | "output_text" => Ok(Some(
            json!({"type": "text", "text": required_str(obj, "text", at)?}),
        )),
        "refusal" => Ok(Some(
            json!({"type": "text", "text": required_str(obj, "refusal", at)?}),
        )),
        "input_image" => {
            if present(obj, "file_id").is_some() {
                only.refuse(
                    UNSUPPORTED_INPUT,
                    format!(
                        "{at}: input_image with a `file_id` is not supported: the file is stored at OpenAI, which other providers cannot read. Send the image as `image_url` (a URL or a data: URL)."
                    ),
                );
                return Ok(None);
            }
            let url = required_str(obj, "image_url", at)?;
            let mut image = Map::new();
            image.insert("url".into(), Value::String(url.into()));
            // `original` has no chat equivalent: the provider's default applies.
            if let Some(detail) = string(obj, "detail")?
                && ["auto", "low", "high"].contains(&detail)
            {
                image.insert("detail".into(), Value::String(detail.into()));
            }
            Ok(Some(json!({"type": "image_url", "image_url": image})))
        }
        "input_file" => {
            if present(obj, "file_id").is_some() || present(obj, "file_url").is_some() {
                only.refuse(
                    UNSUPPORTED_INPUT,
                    format!(
                        "{at}: input_file with a `file_id` or `file_url` is not supported: only OpenAI fetches those. Send the file's content as `file_data`."
                    ),
                );
                return Ok(None);
            }
            let mut file = Map::new();
            file.insert(
                "file_data".into(),
                Value::String(required_str(obj, "file_data", at)?.into()),
            );
            if let Some(name) = string(obj, "filename")? {
                file.insert("filename".into(), Value::String(name.into()));
            }
            Ok(Some(json!({"type": "file", "file": file})))
        }
        other => {
            only.refuse(
                UNSUPPORTED_INPUT,
                format!("{at}: content part type `{other}` is not supported."),
            );
            Ok(None)
        }
    }
}

/// Tool `i` as a chat function tool; `None` for a built-in tool (set aside in
/// `only`).
fn function_tool(
    tool: &Value,
    i: usize,
    only: &mut OnlyOpenai,
) -> Result<Option<Value>, InboundError> {
    let at = format!("tools[{i}]");
    let obj = tool
        .as_object()
        .ok_or_else(|| invalid_type(format!("{at} must be an object.")))?;
    let kind = required_str(obj, "type", &at)?;
    if kind != "function" {
        only.refuse(
            UNSUPPORTED_TOOL,
            format!(
                "{at} is OpenAI's built-in `{kind}` tool, which only OpenAI runs; through the gateway a request can use function tools only."
            ),
        );
        return Ok(None);
    }
    let name = required_str(obj, "name", &at)?;
    if name.is_empty() {
        return Err(err(
            "invalid_value",
            format!("{at}.name must not be empty."),
        ));
    }
    let mut function = Map::new();
    function.insert("name".into(), Value::String(name.into()));
    if let Some(d) = string(obj, "description")? {
        function.insert("description".into(), Value::String(d.into()));
    }
    match present(obj, "parameters") {
        None => {}
        Some(p @ Value::Object(_)) => {
            function.insert("parameters".into(), p.clone());
        }
        Some(_) => return Err(invalid_type(format!("{at}.parameters must be an object."))),
    }
    if let Some(strict) = boolean(obj, "strict")
        .map_err(|_| invalid_type(format!("{at}.strict must be a boolean.")))?
    {
        function.insert("strict".into(), Value::Bool(strict));
    }
    Ok(Some(json!({"type": "function", "function": function})))
}

/// The chat `tool_choice`; `allowed_tools` narrows `tools` to the allowed ones.
/// `None` for a choice of a built-in tool (set aside in `only`).
fn tool_choice(
    choice: &Value,
    tools: &mut Option<Vec<Value>>,
    only: &mut OnlyOpenai,
) -> Result<Option<Value>, InboundError> {
    let obj = match choice {
        Value::String(s) if ["auto", "none", "required"].contains(&s.as_str()) => {
            return Ok(Some(choice.clone()));
        }
        Value::String(_) => {
            return Err(err(
                "invalid_value",
                "`tool_choice` must be one of auto, none, required, or an object.",
            ));
        }
        Value::Object(obj) => obj,
        _ => {
            return Err(invalid_type(
                "`tool_choice` must be one of auto, none, required, or an object.",
            ));
        }
    };
    match required_str(obj, "type", "tool_choice")? {
        "function" => {
            let name = required_str(obj, "name", "tool_choice")?;
            Ok(Some(
                json!({"type": "function", "function": {"name": name}}),
            ))
        }
        "allowed_tools" => {
            let mode = required_str(obj, "mode", "tool_choice")?;
            if !["auto", "required"].contains(&mode) {
                return Err(err(
                    "invalid_value",
                    "tool_choice.mode must be one of auto, required.",
                ));
            }
            let Some(Value::Array(allowed)) = obj.get("tools") else {
                return Err(invalid_type("tool_choice.tools must be an array of tools."));
            };
            let mut names = Vec::with_capacity(allowed.len());
            for (j, t) in allowed.iter().enumerate() {
                let at = format!("tool_choice.tools[{j}]");
                let t = t
                    .as_object()
                    .ok_or_else(|| invalid_type(format!("{at} must be an object.")))?;
                let kind = required_str(t, "type", &at)?;
                if kind == "function" {
                    names.push(required_str(t, "name", &at)?);
                } else {
                    only.refuse(
                        UNSUPPORTED_TOOL,
                        format!(
                            "{at} names OpenAI's built-in `{kind}` tool, which only OpenAI runs."
                        ),
                    );
                }
            }
            // Chat completions has no list of allowed tools that every provider
            // understands: offering only the allowed ones is the same constraint.
            if let Some(list) = tools.as_mut() {
                list.retain(|t| {
                    t.pointer("/function/name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| names.contains(&n))
                });
            }
            Ok(Some(Value::String(mode.into())))
        }
        other => {
            only.refuse(
                UNSUPPORTED_TOOL,
                format!(
                    "`tool_choice` names OpenAI's built-in `{other}` tool, which only OpenAI runs."
                ),
            );
            Ok(None)
        }
    }
}

/// `text.format` as a chat `response_format` (`None` for plain text).
fn response_format(req: &Map<String, Value>) -> Result<Option<Value>, InboundError> {
    let Some(text) = present(req, "text") else {
        return Ok(None);
    };
    let text = text
        .as_object()
        .ok_or_else(|| invalid_type("`text` must be an object."))?;
    let Some(format) = present(text, "format") else {
        return Ok(None);
    };
    let format = format
        .as_object()
        .ok_or_else(|| invalid_type("text.format must be an object."))?;
    match required_str(format, "type", "text.format")? {
        "text" => Ok(None),
        "json_object" => Ok(Some(json!({"type": "json_object"}))),
        "json_schema" => {
            let mut schema = Map::new();
            schema.insert(
                "name".into(),
                Value::String(required_str(format, "name", "text.format")?.into()),
            );
            match format.get("schema") {
                Some(s @ Value::Object(_)) => {
                    schema.insert("schema".into(), s.clone());
                }
                None | Some(Value::Null) => {
                    return Err(err(
                        "missing_required_parameter",
                        "Missing required parameter: 'text.format.schema'.",
                    ));
                }
                Some(_) => return Err(invalid_type("text.format.schema must be an object.")),
            }
            if let Some(strict) = boolean(format, "strict")
                .map_err(|_| invalid_type("text.format.strict must be a boolean."))?
            {
                schema.insert("strict".into(), Value::Bool(strict));
            }
            if let Some(d) = string(format, "description")? {
                schema.insert("description".into(), Value::String(d.into()));
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        other => Err(err(
            "invalid_value",
            format!("text.format.type `{other}` must be one of text, json_schema, json_object."),
        )),
    }
}

/// `reasoning.effort` as chat's `reasoning_effort`.
fn reasoning_effort(req: &Map<String, Value>) -> Result<Option<&'static str>, InboundError> {
    let Some(reasoning) = present(req, "reasoning") else {
        return Ok(None);
    };
    let reasoning = reasoning
        .as_object()
        .ok_or_else(|| invalid_type("`reasoning` must be an object."))?;
    let effort = string(reasoning, "effort")
        .map_err(|_| invalid_type("reasoning.effort must be a string."))?;
    Ok(match effort {
        None | Some("none") => None,
        Some("minimal") => Some("minimal"),
        Some("low") => Some("low"),
        Some("medium") => Some("medium"),
        Some("high" | "xhigh" | "max") => Some("high"),
        Some(other) => {
            return Err(err(
                "invalid_value",
                format!(
                    "reasoning.effort `{other}` must be one of none, minimal, low, medium, high, xhigh, max."
                ),
            ));
        }
    })
}

// === answer ===

/// One output item of a response.
#[derive(Clone, Debug)]
enum Item {
    /// An assistant `message` with its content parts.
    Message {
        id: String,
        parts: Vec<Part>,
        status: &'static str,
    },
    /// A `function_call`.
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        status: &'static str,
    },
}

/// A content part of an output message.
#[derive(Clone, Debug)]
enum Part {
    Text(String),
    Refusal(String),
}

impl Part {
    fn json(&self) -> Value {
        match self {
            // `logprobs` is required by the API reference's `OutputTextContent`
            // (its examples leave it out; the SDKs make it optional).
            Part::Text(t) => {
                json!({"type": "output_text", "text": t, "annotations": [], "logprobs": []})
            }
            Part::Refusal(r) => json!({"type": "refusal", "refusal": r}),
        }
    }
}

impl Item {
    fn json(&self) -> Value {
        match self {
            Item::Message { id, parts, status } => json!({
                "id": id, "type": "message", "status": status, "role": "assistant",
                "content": parts.iter().map(Part::json).collect::<Vec<_>>(),
            }),
            Item::Call {
                id,
                call_id,
                name,
                arguments,
                status,
            } => json!({
                "id": id, "type": "function_call", "status": status,
                "call_id": call_id, "name": name, "arguments": arguments,
            }),
        }
    }

    fn set_status(&mut self, to: &'static str) {
        match self {
            Item::Message { status, .. } | Item::Call { status, .. } => *status = to,
        }
    }
}

/// How a response ended (or that it has not yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome<'a> {
    InProgress,
    Completed,
    /// `incomplete_details.reason`.
    Incomplete(&'static str),
    Failed {
        code: &'static str,
        message: &'a str,
    },
}

impl Outcome<'_> {
    /// The outcome of a chat `finish_reason`.
    fn of_finish(reason: Option<&str>) -> Outcome<'static> {
        match reason {
            Some("length") => Outcome::Incomplete("max_output_tokens"),
            Some("content_filter") => Outcome::Incomplete("content_filter"),
            _ => Outcome::Completed,
        }
    }

    /// The `status` of the output items it closes.
    fn item_status(self) -> &'static str {
        match self {
            Outcome::InProgress => "in_progress",
            Outcome::Completed => "completed",
            Outcome::Incomplete(_) | Outcome::Failed { .. } => "incomplete",
        }
    }
}

/// What every response object carries.
#[derive(Clone, Debug)]
struct Head {
    id: String,
    created_at: u64,
    model: String,
}

/// A `response` object. Besides `status` and `usage` it holds the members the
/// API reference lists as required (`components.schemas.Response`), a superset
/// of those openai-python's `Response` model requires; the echoes of request
/// settings hold the API's defaults.
fn response_object(
    head: &Head,
    outcome: Outcome<'_>,
    items: &[Item],
    usage: Option<&Value>,
) -> Value {
    let (status, error, incomplete) = match outcome {
        Outcome::InProgress => ("in_progress", Value::Null, Value::Null),
        Outcome::Completed => ("completed", Value::Null, Value::Null),
        Outcome::Incomplete(reason) => ("incomplete", Value::Null, json!({"reason": reason})),
        Outcome::Failed { code, message } => (
            "failed",
            json!({"code": code, "message": message}),
            Value::Null,
        ),
    };
    json!({
        "id": head.id,
        "object": "response",
        "created_at": head.created_at,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": null,
        "model": head.model,
        "output": items.iter().map(Item::json).collect::<Vec<_>>(),
        "parallel_tool_calls": true,
        "tool_choice": "auto",
        "tools": [],
        "temperature": null,
        "top_p": null,
        "metadata": {},
        "usage": usage.cloned().unwrap_or(Value::Null),
    })
}

/// A chat `usage` object as a Responses one (`None` when it is not an object).
fn usage(chat: &Value) -> Option<Value> {
    let u = chat.as_object()?;
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let input = n(u.get("prompt_tokens"));
    let output = n(u.get("completion_tokens"));
    let total = u
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| input.saturating_add(output));
    Some(json!({
        "input_tokens": input,
        "input_tokens_details": {
            "cached_tokens": n(chat.pointer("/prompt_tokens_details/cached_tokens")),
            "cache_write_tokens": n(chat.pointer("/prompt_tokens_details/cache_write_tokens")),
        },
        "output_tokens": output,
        "output_tokens_details": {
            "reasoning_tokens": n(chat.pointer("/completion_tokens_details/reasoning_tokens")),
        },
        "total_tokens": total,
    }))
}

/// The id of message item `output_index` of the answer `base` (the chat id).
fn message_id(base: &str, output_index: usize) -> String {
    if output_index == 0 {
        format!("msg_{base}")
    } else {
        format!("msg_{base}_{output_index}")
    }
}

/// Turns an OpenAI chat completion into a Responses `response` object for
/// `model` (the model as the client named it), created at `created_at` (Unix
/// seconds).
pub fn answer_from_chat(
    chat_answer: &[u8],
    model: &str,
    created_at: u64,
) -> Result<Vec<u8>, InboundError> {
    let bad = |m: String| err("bad_provider_response", m);
    let v: Value = serde_json::from_slice(chat_answer)
        .map_err(|e| bad(format!("the chat answer is not valid JSON: {e}")))?;
    let choice = v
        .pointer("/choices/0")
        .filter(|c| c.is_object())
        .ok_or_else(|| bad("the chat answer has no `choices`".to_string()))?;
    let base = v
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let base = if base.is_empty() {
        created_at.to_string()
    } else {
        base
    };
    let outcome = Outcome::of_finish(choice.get("finish_reason").and_then(Value::as_str));
    let status = outcome.item_status();
    let message = choice.get("message");
    let text = match message.and_then(|m| m.get("content")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    };
    let mut parts = Vec::new();
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    if let Some(r) = message
        .and_then(|m| m.get("refusal"))
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        parts.push(Part::Refusal(r.to_string()));
    }
    let mut items = Vec::new();
    if !parts.is_empty() {
        items.push(Item::Message {
            id: message_id(&base, 0),
            parts,
            status,
        });
    }
    for call in message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = |p: &str| call.pointer(p).and_then(Value::as_str).unwrap_or("");
        let call_id = field("/id").to_string();
        items.push(Item::Call {
            id: format!("fc_{call_id}"),
            call_id,
            name: field("/function/name").to_string(),
            arguments: field("/function/arguments").to_string(),
            status,
        });
    }
    let head = Head {
        id: format!("resp_{base}"),
        created_at,
        model: model.to_string(),
    };
    let usage = v.get("usage").and_then(usage);
    Ok(response_object(&head, outcome, &items, usage.as_ref())
        .to_string()
        .into_bytes())
}

// === stream ===

/// The most bytes a stream buffers without completing an event: the gateway's
/// chat chunks are small, so more means a broken stream, not a large answer.
pub const MAX_PENDING_BYTES: usize = 4 << 20;

/// The item being streamed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Open {
    None,
    /// The last item is a message; whether its last part is still open.
    Message {
        part_open: bool,
    },
    /// The last item is the function call of chat tool-call `index`.
    Call {
        index: u64,
    },
}

/// A chat tool call whose `id` or name has not arrived yet: it is announced
/// (`response.output_item.added` needs both) once they have.
#[derive(Clone, Debug)]
struct PendingCall {
    index: u64,
    call_id: String,
    name: String,
    arguments: String,
}

/// Turns the gateway's chat-completions SSE stream into Responses streaming
/// events (`event: <type>\ndata: {…}\n\n`, each with its `type` and a
/// `sequence_number` counting from 0).
#[derive(Debug)]
pub struct ResponseStream {
    parser: sse::Parser,
    model: String,
    created_at: u64,
    request_id: String,
    /// Set by the first event: `response.created` has been sent.
    head: Option<Head>,
    /// The chat id output item ids are named after.
    base: String,
    sequence: u64,
    items: Vec<Item>,
    open: Open,
    pending: Option<PendingCall>,
    /// Chat tool-call indexes whose items are done.
    closed_calls: Vec<u64>,
    finish: Option<String>,
    usage: Option<Value>,
    ended: bool,
}

impl ResponseStream {
    /// A stream whose responses name `model` (as the client named it) and were
    /// created at `created_at`; `request_id` names the response when the chat
    /// stream fails before its first chunk.
    pub fn new(model: &str, created_at: u64, request_id: &str) -> Self {
        ResponseStream {
            parser: sse::Parser::default(),
            model: model.to_string(),
            created_at,
            request_id: request_id.to_string(),
            head: None,
            base: String::new(),
            sequence: 0,
            items: Vec::new(),
            open: Open::None,
            pending: None,
            closed_calls: Vec::new(),
            finish: None,
            usage: None,
            ended: false,
        }
    }

    /// The stream has sent its last event.
    pub fn is_done(&self) -> bool {
        self.ended
    }

    /// Writes one event.
    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut event: Map<String, Value>) {
        event.insert("type".into(), Value::String(kind.into()));
        event.insert("sequence_number".into(), json!(self.sequence));
        self.sequence += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(Value::Object(event).to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn emit_json(&mut self, out: &mut Vec<u8>, kind: &str, event: Value) {
        if let Value::Object(map) = event {
            self.emit(out, kind, map);
        }
    }

    /// Sends `response.created` and `response.in_progress` once, naming the
    /// response after the chat id `chat_id` (the request id without one).
    fn start(&mut self, out: &mut Vec<u8>, chat_id: Option<&str>) {
        if self.head.is_some() {
            return;
        }
        self.base = chat_id
            .filter(|id| !id.is_empty())
            .unwrap_or(&self.request_id)
            .to_string();
        let head = Head {
            id: format!("resp_{}", self.base),
            created_at: self.created_at,
            model: self.model.clone(),
        };
        let response = response_object(&head, Outcome::InProgress, &[], None);
        self.head = Some(head);
        self.emit_json(out, "response.created", json!({"response": response}));
        let response = self.snapshot(Outcome::InProgress);
        self.emit_json(out, "response.in_progress", json!({"response": response}));
    }

    /// The response object as it stands.
    fn snapshot(&self, outcome: Outcome<'_>) -> Value {
        let head = self.head.clone().unwrap_or_else(|| Head {
            id: format!("resp_{}", self.request_id),
            created_at: self.created_at,
            model: self.model.clone(),
        });
        response_object(&head, outcome, &self.items, self.usage.as_ref())
    }

    fn output_index(&self) -> usize {
        self.items.len().saturating_sub(1)
    }

    /// Appends answer text (`refusal`: refusal text) to the open message,
    /// opening the message and the part as needed.
    fn text(&mut self, out: &mut Vec<u8>, delta: &str, refusal: bool) {
        if !matches!(self.open, Open::Message { .. }) {
            self.close_item(out, "completed");
            let index = self.items.len();
            self.items.push(Item::Message {
                id: message_id(&self.base, index),
                parts: Vec::new(),
                status: "in_progress",
            });
            self.open = Open::Message { part_open: false };
            let item = self.items.last().map(Item::json).unwrap_or(Value::Null);
            self.emit_json(
                out,
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            );
        }
        let same_kind = match self.last_part() {
            Some(Part::Refusal(_)) => refusal,
            Some(Part::Text(_)) => !refusal,
            None => false,
        };
        if !(self.open == (Open::Message { part_open: true }) && same_kind) {
            self.close_part(out);
            let part = if refusal {
                Part::Refusal(String::new())
            } else {
                Part::Text(String::new())
            };
            let json = part.json();
            let content_index = match self.items.last_mut() {
                Some(Item::Message { parts, .. }) => {
                    parts.push(part);
                    parts.len() - 1
                }
                _ => 0,
            };
            self.open = Open::Message { part_open: true };
            let (item_id, output_index) = (self.item_id(), self.output_index());
            self.emit_json(
                out,
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": output_index, "content_index": content_index, "part": json}),
            );
        }
        let content_index = match self.items.last_mut() {
            Some(Item::Message { parts, .. }) => {
                if let Some(Part::Text(t) | Part::Refusal(t)) = parts.last_mut() {
                    t.push_str(delta);
                }
                parts.len().saturating_sub(1)
            }
            _ => 0,
        };
        let (item_id, output_index) = (self.item_id(), self.output_index());
        if refusal {
            self.emit_json(
                out,
                "response.refusal.delta",
                json!({"item_id": item_id, "output_index": output_index, "content_index": content_index, "delta": delta}),
            );
        } else {
            self.emit_json(
                out,
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": output_index, "content_index": content_index, "delta": delta, "logprobs": []}),
            );
        }
    }

    fn last_part(&self) -> Option<&Part> {
        match self.items.last() {
            Some(Item::Message { parts, .. }) => parts.last(),
            _ => None,
        }
    }

    fn item_id(&self) -> String {
        match self.items.last() {
            Some(Item::Message { id, .. } | Item::Call { id, .. }) => id.clone(),
            None => String::new(),
        }
    }

    /// Ends the open content part of the open message.
    fn close_part(&mut self, out: &mut Vec<u8>) {
        if self.open != (Open::Message { part_open: true }) {
            return;
        }
        self.open = Open::Message { part_open: false };
        let Some(part) = self.last_part().cloned() else {
            return;
        };
        let content_index = match self.items.last() {
            Some(Item::Message { parts, .. }) => parts.len().saturating_sub(1),
            _ => 0,
        };
        let (item_id, output_index) = (self.item_id(), self.output_index());
        match &part {
            Part::Text(t) => self.emit_json(
                out,
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": output_index, "content_index": content_index, "text": t, "logprobs": []}),
            ),
            Part::Refusal(r) => self.emit_json(
                out,
                "response.refusal.done",
                json!({"item_id": item_id, "output_index": output_index, "content_index": content_index, "refusal": r}),
            ),
        }
        self.emit_json(
            out,
            "response.content_part.done",
            json!({"item_id": item_id, "output_index": output_index, "content_index": content_index, "part": part.json()}),
        );
    }

    /// Ends the open item (announcing a pending call first) with `status`.
    fn close_item(&mut self, out: &mut Vec<u8>, status: &'static str) {
        if let Some(p) = self.pending.take() {
            self.announce(out, p);
        }
        match self.open.clone() {
            Open::None => return,
            Open::Message { .. } => self.close_part(out),
            Open::Call { index } => {
                self.closed_calls.push(index);
                if let Some(Item::Call {
                    id,
                    name,
                    arguments,
                    ..
                }) = self.items.last()
                {
                    let event = json!({"item_id": id, "output_index": self.output_index(), "name": name, "arguments": arguments});
                    self.emit_json(out, "response.function_call_arguments.done", event);
                }
            }
        }
        self.open = Open::None;
        let output_index = self.output_index();
        if let Some(item) = self.items.last_mut() {
            item.set_status(status);
            let item = item.json();
            self.emit_json(
                out,
                "response.output_item.done",
                json!({"output_index": output_index, "item": item}),
            );
        }
    }

    /// Announces a function call (`response.output_item.added`) and sends the
    /// arguments that arrived before it.
    fn announce(&mut self, out: &mut Vec<u8>, p: PendingCall) {
        let call_id = if p.call_id.is_empty() {
            format!("call_{}_{}", self.base, p.index)
        } else {
            p.call_id
        };
        self.items.push(Item::Call {
            id: format!("fc_{call_id}"),
            call_id,
            name: p.name,
            arguments: String::new(),
            status: "in_progress",
        });
        self.open = Open::Call { index: p.index };
        let output_index = self.output_index();
        let item = self.items.last().map(Item::json).unwrap_or(Value::Null);
        self.emit_json(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": item}),
        );
        if !p.arguments.is_empty() {
            self.arguments(out, &p.arguments);
        }
    }

    /// Appends arguments to the open function call.
    fn arguments(&mut self, out: &mut Vec<u8>, delta: &str) {
        let output_index = self.output_index();
        if let Some(Item::Call { id, arguments, .. }) = self.items.last_mut() {
            arguments.push_str(delta);
            let event = json!({"item_id": id, "output_index": output_index, "delta": delta});
            self.emit_json(out, "response.function_call_arguments.delta", event);
        }
    }

    /// One entry of a chunk's `delta.tool_calls`. `Err` when the stream goes
    /// back to a call already done (Responses items cannot reopen).
    fn tool_delta(&mut self, out: &mut Vec<u8>, d: &Value) -> Result<(), String> {
        let id = d
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let name = d
            .pointer("/function/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let args = d
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        let current = match (&self.pending, &self.open) {
            (Some(p), _) => Some(p.index),
            (None, Open::Call { index }) => Some(*index),
            _ => None,
        };
        // OpenAI gives every tool-call delta its `index`; without one a delta that
        // names a new call starts one, any other continues the current call.
        let index = match d.get("index").and_then(Value::as_u64) {
            Some(i) => i,
            None => match (current, id) {
                (Some(c), None) => c,
                (Some(c), Some(_)) => c + 1,
                (None, _) => 0,
            },
        };
        if current != Some(index) {
            if self.closed_calls.contains(&index) {
                return Err(format!(
                    "The chat stream went back to tool call {index} after it had moved on; the answer cannot be streamed as Responses events."
                ));
            }
            self.close_item(out, "completed");
            self.pending = Some(PendingCall {
                index,
                call_id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
        }
        if let Some(p) = self.pending.as_mut() {
            if let Some(id) = id
                && p.call_id.is_empty()
            {
                p.call_id = id.to_string();
            }
            p.name.push_str(name);
            p.arguments.push_str(args);
            if !p.call_id.is_empty()
                && !p.name.is_empty()
                && let Some(p) = self.pending.take()
            {
                self.announce(out, p);
            }
        } else if !args.is_empty() {
            self.arguments(out, args);
        }
        Ok(())
    }

    /// Ends the stream with `response.failed`.
    fn fail(&mut self, out: &mut Vec<u8>, code: &'static str, message: &str) {
        if self.ended {
            return;
        }
        self.start(out, None);
        self.pending = None;
        for item in &mut self.items {
            if let Item::Message { status, .. } | Item::Call { status, .. } = item
                && *status == "in_progress"
            {
                *status = "incomplete";
            }
        }
        let response = self.snapshot(Outcome::Failed { code, message });
        self.emit_json(out, "response.failed", json!({"response": response}));
        self.ended = true;
        self.parser.take_pending();
    }

    /// The chat stream's `[DONE]`: closes what is open and sends the final event.
    fn complete(&mut self, out: &mut Vec<u8>) {
        self.start(out, None);
        let outcome = Outcome::of_finish(self.finish.as_deref());
        self.close_item(out, outcome.item_status());
        let response = self.snapshot(outcome);
        let kind = match outcome {
            Outcome::Incomplete(_) => "response.incomplete",
            _ => "response.completed",
        };
        self.emit_json(out, kind, json!({"response": response}));
        self.ended = true;
    }

    /// One chat chunk.
    fn chunk(&mut self, out: &mut Vec<u8>, v: &Value) {
        if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("The provider's stream failed.");
            let rate_limited = ["code", "type"].iter().any(|k| {
                e.get(*k)
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.contains("rate_limit"))
            });
            // `ResponseError.code` is an enum: these two are the ones that fit.
            let code = if rate_limited {
                "rate_limit_exceeded"
            } else {
                "server_error"
            };
            self.fail(out, code, message);
            return;
        }
        self.start(out, v.get("id").and_then(Value::as_str));
        if let Some(u) = v.get("usage").and_then(usage) {
            self.usage = Some(u);
        }
        let Some(choice) = v.get("choices").and_then(Value::as_array).and_then(|c| {
            c.iter()
                .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        }) else {
            return;
        };
        let delta = choice.get("delta");
        let text = |k: &str| {
            delta
                .and_then(|d| d.get(k))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if let Some(t) = text("content") {
            self.text(out, t, false);
        }
        if let Some(r) = text("refusal") {
            self.text(out, r, true);
        }
        for d in delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Err(message) = self.tool_delta(out, d) {
                self.fail(out, "server_error", &message);
                return;
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(reason.to_string());
            let status = Outcome::of_finish(Some(reason)).item_status();
            self.close_item(out, status);
        }
    }
}

impl StreamBack for ResponseStream {
    fn feed(&mut self, chat_sse: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        for ev in self.parser.feed(chat_sse) {
            if ev.data == "[DONE]" {
                self.complete(&mut out);
            } else if ev.data.is_empty() {
                continue;
            } else {
                match serde_json::from_str::<Value>(&ev.data) {
                    Ok(v) => self.chunk(&mut out, &v),
                    Err(e) => self.fail(
                        &mut out,
                        "server_error",
                        &format!("The chat stream held an event that is not valid JSON: {e}"),
                    ),
                }
            }
            if self.ended {
                return out;
            }
        }
        if self.parser.pending() > MAX_PENDING_BYTES {
            self.fail(
                &mut out,
                "server_error",
                "The chat stream sent an event larger than the gateway buffers.",
            );
        }
        out
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.fail(
            &mut out,
            "server_error",
            "The stream ended before the answer was complete.",
        );
        out
    }
}

// === errors ===

/// An error body for a Responses client: the API uses the same
/// `{"error": {"message", "type", "param", "code"}}` shape as chat completions
/// (`components.schemas.ErrorResponse` of OpenAI's spec), so this is
/// [`crate::error::body`] with the `type` that `status` implies (and the
/// gateway's `request_id`).
pub fn error_body(status: u16, code: &str, message: &str, request_id: &str) -> Vec<u8> {
    crate::error::body(
        message,
        crate::error::type_for_status(status),
        code,
        request_id,
    )
}
