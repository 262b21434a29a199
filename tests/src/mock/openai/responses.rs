//! The OpenAI Responses API (`POST /v1/responses`; Azure OpenAI's v1 API at
//! `POST /openai/v1/responses`, the deployment as `model`), from OpenAI's API
//! reference ("Create a model response", "Streaming events"): request validation
//! (unknown parameters, `input` as a string or items, message roles and their
//! content part types, `function_call_output` answering a `function_call`,
//! `tools` and `tool_choice`, `text.format`, `max_output_tokens`,
//! `previous_response_id` naming a response stored here), the `response` object
//! (`output` items `message` / `function_call` / `reasoning`, `usage` with its
//! details) and its event stream (`event: <type>` + `data: {…, "type",
//! "sequence_number"}`: `response.created`, `response.in_progress`,
//! `response.output_item.added`, `response.content_part.added`,
//! `response.output_text.delta`…, `response.output_text.done`,
//! `response.content_part.done`, `response.output_item.done`,
//! `response.completed`; in-stream failures as `error` or `response.failed`).

use hyper::Response;
use serde_json::{Map, Value, json};

use super::super::{
    Api, Body, Call, ChatRequest, Data, Event, Refused, Reply, Safety, StreamFailure, ToolChoice, cut_json, now, texts,
    unknown_param, words,
};
use super::OpenAi;

const PARAMS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "top_logprobs",
    "max_output_tokens",
    "max_tool_calls",
    "parallel_tool_calls",
    "previous_response_id",
    "conversation",
    "store",
    "metadata",
    "include",
    "reasoning",
    "text",
    "truncation",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "service_tier",
    "background",
    "prompt",
    "context_management",
];

/// Item types of `input` besides `message`, `function_call` and
/// `function_call_output` (built-in tool calls and their outputs, state).
const OTHER_ITEMS: &[&str] = &[
    "reasoning",
    "item_reference",
    "file_search_call",
    "web_search_call",
    "computer_call",
    "computer_call_output",
    "code_interpreter_call",
    "image_generation_call",
    "local_shell_call",
    "local_shell_call_output",
    "shell_call",
    "shell_call_output",
    "apply_patch_call",
    "apply_patch_call_output",
    "mcp_list_tools",
    "mcp_approval_request",
    "mcp_approval_response",
    "mcp_call",
    "custom_tool_call",
    "custom_tool_call_output",
    "compaction",
];

/// Tools OpenAI runs itself (never called by the mock, which answers in text).
const BUILT_IN_TOOLS: &[&str] = &[
    "web_search",
    "web_search_2025_08_26",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "file_search",
    "computer_use_preview",
    "computer_use",
    "code_interpreter",
    "image_generation",
    "mcp",
    "local_shell",
    "shell",
    "custom",
    "apply_patch",
];

const INCLUDES: &[&str] = &[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
];

const EFFORTS: &[&str] = &["none", "minimal", "low", "medium", "high", "xhigh"];

/// The reasoning summary and encrypted reasoning the mock's reasoning items carry.
pub const ENCRYPTED_REASONING: &str = "gAAAAABmockEncryptedReasoningOfTheMockProvider==";

/// OpenAI's wording of a `supported values` list: `'a', 'b', and 'c'`.
fn one_of(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{}, and {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

/// What the request's `input` holds, as the mock answers it.
#[derive(Default)]
struct Input {
    user_turns: usize,
    system: Vec<String>,
    tool_result: Option<String>,
}

impl OpenAi {
    /// Whether `call` is a Responses call.
    pub(super) fn is_responses(&self, call: &Call) -> bool {
        let path = if self.azure {
            "/openai/v1/responses"
        } else {
            "/v1/responses"
        };
        call.path == path
    }

    fn missing(&self, param: &str) -> Refused {
        Box::new(self.invalid(
            &format!("Missing required parameter: '{param}'."),
            Some(param),
            Some("missing_required_parameter"),
        ))
    }

    fn invalid_value(&self, value: &str, param: &str, supported: &[&str]) -> Refused {
        Box::new(self.invalid(
            &format!("Invalid value: '{value}'. Supported values are: {}.", one_of(supported)),
            Some(param),
            Some("invalid_value"),
        ))
    }

    fn invalid_type(&self, param: &str, expected: &str, got: &Value) -> Refused {
        let got = match got {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        Box::new(self.invalid(
            &format!("Invalid type for '{param}': expected {expected}, but got {got} instead."),
            Some(param),
            Some("invalid_type"),
        ))
    }

    /// A Responses request checked as OpenAI checks it.
    pub(super) fn responses(&self, call: &Call) -> Result<ChatRequest, Refused> {
        if call.method != "POST" {
            return Err(Box::new(self.invalid(
                &format!("Invalid URL ({} {})", call.method, call.path),
                None,
                None,
            )));
        }
        self.credential(call)?;
        if !call.is_json() {
            return Err(Box::new(self.invalid("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)", None, None)));
        }
        let Some(obj) = call.body.as_object() else {
            return Err(Box::new(self.invalid(
                "The request body must be a JSON object.",
                None,
                None,
            )));
        };
        if let Some(k) = unknown_param(obj, PARAMS) {
            return Err(Box::new(self.invalid(
                &format!("Unknown parameter: '{k}'."),
                Some(k),
                Some("unknown_parameter"),
            )));
        }
        let model = match obj.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.as_str(),
            None | Some(Value::Null) => return Err(self.missing("model")),
            Some(other) => return Err(self.invalid_type("model", "a string", other)),
        };
        if !call.state.serves(model) {
            return Err(Box::new(if self.azure {
                self.azure_error(404, "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.", Some("DeploymentNotFound"))
            } else {
                self.openai_error(
                    400,
                    &format!("The requested model '{model}' does not exist."),
                    "invalid_request_error",
                    Some("model"),
                    Some("model_not_found"),
                )
            }));
        }
        let previous = match obj.get("previous_response_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => {
                if !call.state.has_stored(id) {
                    return Err(Box::new(self.invalid(
                        &format!("Previous response with id '{id}' not found."),
                        Some("previous_response_id"),
                        Some("previous_response_not_found"),
                    )));
                }
                Some(id.as_str())
            }
            Some(other) => return Err(self.invalid_type("previous_response_id", "a string", other)),
        };
        let instructions = match obj.get("instructions") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(self.invalid_type("instructions", "a string", other)),
        };
        let input = match obj.get("input") {
            None | Some(Value::Null) => {
                if previous.is_none() && obj.get("prompt").is_none() && obj.get("conversation").is_none() {
                    return Err(self.missing("input"));
                }
                Input::default()
            }
            Some(Value::String(s)) => Input {
                user_turns: usize::from(!s.is_empty()),
                ..Input::default()
            },
            Some(Value::Array(items)) => self.items(items, previous.is_some())?,
            Some(other) => {
                return Err(self.invalid_type("input", "one of a string or array of input items", other));
            }
        };
        let tools = self.tools(obj)?;
        let tool_choice = self.tool_choice(obj, &tools)?;
        let stream = match obj.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(self.invalid_type("stream", "a boolean", other)),
        };
        if let Some(n) = obj.get("max_output_tokens").and_then(Value::as_i64)
            && n < 16
        {
            return Err(Box::new(self.invalid(
                &format!("Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got {n} instead."),
                Some("max_output_tokens"),
                Some("integer_below_min_value"),
            )));
        }
        let json = self.text_format(obj)?;
        let reasoning = match obj.get("reasoning") {
            None | Some(Value::Null) => false,
            Some(Value::Object(r)) => match r.get("effort") {
                None | Some(Value::Null) => true,
                Some(Value::String(e)) if EFFORTS.contains(&e.as_str()) => e != "none",
                Some(Value::String(e)) => return Err(self.invalid_value(e, "reasoning.effort", EFFORTS)),
                Some(other) => return Err(self.invalid_type("reasoning.effort", "a string", other)),
            },
            Some(other) => return Err(self.invalid_type("reasoning", "an object", other)),
        };
        let mut encrypted = false;
        if let Some(include) = obj.get("include").filter(|v| !v.is_null()) {
            let Some(list) = include.as_array() else {
                return Err(self.invalid_type("include", "an array", include));
            };
            for (i, v) in list.iter().enumerate() {
                let s = v.as_str().unwrap_or("");
                if !INCLUDES.contains(&s) {
                    return Err(self.invalid_value(s, &format!("include[{i}]"), INCLUDES));
                }
                encrypted |= s == "reasoning.encrypted_content";
            }
        }
        let mut system: Vec<String> = instructions.clone().into_iter().collect();
        system.extend(input.system);
        let echo = json!({
            "instructions": instructions,
            "max_output_tokens": obj.get("max_output_tokens").cloned().unwrap_or(Value::Null),
            "parallel_tool_calls": obj.get("parallel_tool_calls").cloned().unwrap_or(json!(true)),
            "previous_response_id": previous,
            "reasoning": {
                "effort": call.body.pointer("/reasoning/effort").cloned().unwrap_or(Value::Null),
                "summary": call.body.pointer("/reasoning/summary").cloned().unwrap_or(Value::Null),
            },
            "store": obj.get("store").cloned().unwrap_or(json!(true)),
            "temperature": obj.get("temperature").cloned().unwrap_or(json!(1.0)),
            "text": obj.get("text").cloned().unwrap_or(json!({"format": {"type": "text"}})),
            "tool_choice": obj.get("tool_choice").cloned().unwrap_or(json!("auto")),
            "tools": obj.get("tools").cloned().unwrap_or(json!([])),
            "top_p": obj.get("top_p").cloned().unwrap_or(json!(1.0)),
            "truncation": obj.get("truncation").cloned().unwrap_or(json!("disabled")),
            "user": obj.get("user").cloned().unwrap_or(Value::Null),
            "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
            "include_encrypted_reasoning": encrypted,
        });
        Ok(ChatRequest {
            model: model.to_string(),
            stream,
            include_usage: true,
            input_tokens: obj.get("input").map(words).unwrap_or(0)
                + obj
                    .get("input")
                    .and_then(Value::as_array)
                    .map(|items| items.iter().map(|i| i.get("output").map(words).unwrap_or(0)).sum())
                    .unwrap_or(0)
                + instructions.as_deref().map(|s| words(&json!(s))).unwrap_or(0),
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            user_turns: input.user_turns,
            tools,
            tool_result: input.tool_result,
            json,
            tool_choice,
            api: Api::Responses,
            reasoning,
            echo,
            ..ChatRequest::default()
        })
    }

    /// Checks `input` items; what they hold.
    fn items(&self, items: &[Value], continued: bool) -> Result<Input, Refused> {
        let mut out = Input::default();
        let mut calls: Vec<&str> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("input[{i}]");
            let Some(o) = item.as_object() else {
                return Err(self.invalid_type(&at, "an input item", item));
            };
            let kind = match o.get("type").and_then(Value::as_str) {
                Some(k) => k,
                None if o.contains_key("role") => "message",
                None => return Err(self.missing(&format!("{at}.type"))),
            };
            out.tool_result = None;
            match kind {
                "message" => {
                    let role = o.get("role").and_then(Value::as_str).unwrap_or("");
                    const ROLES: &[&str] = &["assistant", "system", "developer", "user"];
                    if !ROLES.contains(&role) {
                        return Err(self.invalid_value(role, &format!("{at}.role"), ROLES));
                    }
                    let parts: &[&str] = if role == "assistant" {
                        &["output_text", "refusal"]
                    } else {
                        &["input_text", "input_image", "input_file"]
                    };
                    match o.get("content") {
                        Some(Value::String(_)) => {}
                        Some(Value::Array(content)) => {
                            for (j, part) in content.iter().enumerate() {
                                let pat = format!("{at}.content[{j}]");
                                let t = part.get("type").and_then(Value::as_str).unwrap_or("");
                                if !parts.contains(&t) {
                                    return Err(self.invalid_value(t, &format!("{pat}.type"), parts));
                                }
                                let needs = match t {
                                    "input_text" | "output_text" => Some("text"),
                                    "refusal" => Some("refusal"),
                                    _ => None,
                                };
                                if let Some(k) = needs
                                    && !part.get(k).is_some_and(Value::is_string)
                                {
                                    return Err(self.missing(&format!("{pat}.{k}")));
                                }
                                if t == "input_image"
                                    && part.get("image_url").is_none()
                                    && part.get("file_id").is_none()
                                {
                                    return Err(Box::new(self.invalid(
                                        &format!("Invalid '{pat}': one of 'image_url' or 'file_id' must be provided."),
                                        Some(&pat),
                                        None,
                                    )));
                                }
                            }
                        }
                        Some(other) => {
                            return Err(self.invalid_type(
                                &format!("{at}.content"),
                                "one of a string or array of input content",
                                other,
                            ));
                        }
                        None => return Err(self.missing(&format!("{at}.content"))),
                    }
                    let text = texts(o.get("content"));
                    match role {
                        "system" | "developer" => out.system.extend(text),
                        "user" if text.is_some() => out.user_turns += 1,
                        _ => {}
                    }
                }
                "function_call" => {
                    for k in ["call_id", "name", "arguments"] {
                        if !o.get(k).is_some_and(Value::is_string) {
                            return Err(self.missing(&format!("{at}.{k}")));
                        }
                    }
                    calls.push(o.get("call_id").and_then(Value::as_str).unwrap_or(""));
                }
                "function_call_output" => {
                    let Some(id) = o.get("call_id").and_then(Value::as_str) else {
                        return Err(self.missing(&format!("{at}.call_id")));
                    };
                    let output = match o.get("output") {
                        Some(Value::String(s)) => s.clone(),
                        Some(v @ Value::Array(_)) => texts(Some(v)).unwrap_or_default(),
                        _ => return Err(self.missing(&format!("{at}.output"))),
                    };
                    if !continued && !calls.contains(&id) {
                        return Err(Box::new(self.invalid(
                            &format!("No tool call found for function call output with call_id {id}."),
                            Some("input"),
                            None,
                        )));
                    }
                    out.tool_result = Some(output);
                }
                "reasoning" => {
                    if !o.get("summary").is_some_and(Value::is_array) {
                        return Err(self.missing(&format!("{at}.summary")));
                    }
                }
                "item_reference" => {
                    if !o.get("id").is_some_and(Value::is_string) {
                        return Err(self.missing(&format!("{at}.id")));
                    }
                }
                k if OTHER_ITEMS.contains(&k) => {}
                other => {
                    let mut all = vec!["message", "function_call", "function_call_output"];
                    all.extend_from_slice(OTHER_ITEMS);
                    return Err(self.invalid_value(other, &format!("{at}.type"), &all));
                }
            }
        }
        Ok(out)
    }

    /// Checks `tools`; the names of the function tools.
    fn tools(&self, obj: &Map<String, Value>) -> Result<Vec<String>, Refused> {
        let tools = match obj.get("tools") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(t)) => t,
            Some(other) => return Err(self.invalid_type("tools", "an array", other)),
        };
        let mut names = Vec::new();
        for (i, t) in tools.iter().enumerate() {
            let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
            match kind {
                "function" => {
                    // The chat form (`{type, function: {name}}`) has no top-level name.
                    let Some(name) = t.get("name").and_then(Value::as_str) else {
                        return Err(self.missing(&format!("tools[{i}].name")));
                    };
                    names.push(name.to_string());
                }
                k if BUILT_IN_TOOLS.contains(&k) => {}
                "" => return Err(self.missing(&format!("tools[{i}].type"))),
                other => {
                    let mut all = vec!["function"];
                    all.extend_from_slice(BUILT_IN_TOOLS);
                    return Err(self.invalid_value(other, &format!("tools[{i}].type"), &all));
                }
            }
        }
        Ok(names)
    }

    fn tool_choice(&self, obj: &Map<String, Value>, tools: &[String]) -> Result<ToolChoice, Refused> {
        let not_found = |kind: &str| {
            Box::new(self.invalid(
                &format!("Tool choice '{kind}' not found in 'tools' parameter."),
                Some("tool_choice"),
                None,
            ))
        };
        Ok(match obj.get("tool_choice") {
            None | Some(Value::Null) => ToolChoice::Auto,
            Some(Value::String(s)) => match s.as_str() {
                "none" => ToolChoice::None,
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Any(Vec::new()),
                other => return Err(self.invalid_value(other, "tool_choice", &["none", "auto", "required"])),
            },
            Some(c) => match c.get("type").and_then(Value::as_str).unwrap_or("") {
                "function" => {
                    let name = c.get("name").and_then(Value::as_str).unwrap_or("");
                    if !tools.iter().any(|t| t == name) {
                        return Err(not_found("function"));
                    }
                    ToolChoice::Any(vec![name.to_string()])
                }
                "allowed_tools" => {
                    let allowed: Vec<String> = c
                        .get("tools")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
                        .filter_map(|t| t.get("name").and_then(Value::as_str))
                        .map(str::to_string)
                        .collect();
                    match c.get("mode").and_then(Value::as_str) {
                        Some("required") => ToolChoice::Any(allowed),
                        Some("auto") => ToolChoice::AutoAmong(allowed),
                        other => {
                            return Err(self.invalid_value(
                                other.unwrap_or(""),
                                "tool_choice.mode",
                                &["auto", "required"],
                            ));
                        }
                    }
                }
                // A built-in tool: OpenAI runs it; the mock answers in text.
                k if BUILT_IN_TOOLS.contains(&k) => ToolChoice::None,
                other => {
                    let mut all = vec!["function", "allowed_tools"];
                    all.extend_from_slice(BUILT_IN_TOOLS);
                    return Err(self.invalid_value(other, "tool_choice.type", &all));
                }
            },
        })
    }

    /// Checks `text.format`; whether JSON was asked for.
    fn text_format(&self, obj: &Map<String, Value>) -> Result<bool, Refused> {
        let Some(format) = obj.get("text").and_then(|t| t.get("format")).filter(|f| !f.is_null()) else {
            return Ok(false);
        };
        match format.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => Ok(false),
            "json_object" => Ok(true),
            "json_schema" => {
                for k in ["name", "schema"] {
                    if format.get(k).is_none() {
                        return Err(self.missing(&format!("text.format.{k}")));
                    }
                }
                Ok(true)
            }
            other => Err(self.invalid_value(other, "text.format.type", &["text", "json_object", "json_schema"])),
        }
    }

    /// OpenAI's answer to a prompt over the model's context window.
    pub(super) fn responses_too_long(&self) -> Response<Body> {
        self.openai_error(
            400,
            "Your input exceeds the context window of this model. Please adjust your input and try again.",
            "invalid_request_error",
            Some("input"),
            Some("context_length_exceeded"),
        )
    }
}

/// The output items of `reply` (complete), after a reasoning item when
/// reasoning was asked for.
fn output(req: &ChatRequest, reply: &Reply, n: u64) -> Vec<Value> {
    let mut out = Vec::new();
    if req.reasoning {
        out.push(reasoning_item(req, n));
    }
    match reply {
        Reply::Text(t) => out.push(message_item(n, "completed", json!([output_text(t)]))),
        Reply::Tool { id, name, args } => out.push(call_item(n, id, name, args, "completed")),
        // Cut by the content filter before any output.
        Reply::Blocked(_) => {}
    }
    out
}

fn reasoning_item(req: &ChatRequest, n: u64) -> Value {
    let mut item = json!({"type": "reasoning", "id": format!("rs_mock{n}"), "summary": []});
    if req.echo.get("include_encrypted_reasoning") == Some(&json!(true)) {
        item["encrypted_content"] = json!(ENCRYPTED_REASONING);
    }
    item
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn message_item(n: u64, status: &str, content: Value) -> Value {
    json!({"type": "message", "id": format!("msg_mock{n}"), "status": status, "role": "assistant", "content": content})
}

fn call_item(n: u64, call_id: &str, name: &str, args: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": format!("fc_mock{n}"), "call_id": call_id, "name": name,
        "arguments": args, "status": status})
}

fn usage(req: &ChatRequest, reply: &Reply) -> Value {
    let reasoning = if req.reasoning { 12 } else { 0 };
    let out = reply.out_tokens() + reasoning;
    json!({
        "input_tokens": req.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": req.input_tokens + out,
    })
}

/// The `response` object: `status`, `output` and `usage` as given, the rest as
/// the request set it.
fn response(req: &ChatRequest, status: &str, output: Vec<Value>, usage: Value) -> Value {
    let mut v = json!({
        "id": req.id, "object": "response", "created_at": now(), "status": status, "background": false,
        "error": null, "incomplete_details": null, "model": req.model, "output": output,
        "service_tier": "default", "usage": usage,
    });
    if let (Some(o), Some(echo)) = (v.as_object_mut(), req.echo.as_object()) {
        for (k, e) in echo {
            if k != "include_encrypted_reasoning" {
                o.insert(k.clone(), e.clone());
            }
        }
    }
    if status == "incomplete" {
        v["incomplete_details"] = json!({"reason": "content_filter"});
    }
    v
}

/// The complete answer.
pub(super) fn json(req: &ChatRequest, reply: &Reply, n: u64) -> Value {
    let status = if matches!(reply, Reply::Blocked(Safety::Finish)) {
        "incomplete"
    } else {
        "completed"
    };
    response(req, status, output(req, reply, n), usage(req, reply))
}

/// The answer as Responses stream events (numbered when framed).
pub(super) fn events(req: &ChatRequest, reply: &Reply, n: u64) -> Vec<Event> {
    let started = response(req, "in_progress", Vec::new(), Value::Null);
    let mut out = vec![
        Event::json(
            "response.created",
            json!({"type": "response.created", "response": started}),
        ),
        Event::json(
            "response.in_progress",
            json!({"type": "response.in_progress", "response": started}),
        ),
    ];
    for (index, item) in output(req, reply, n).into_iter().enumerate() {
        let id = item["id"].clone();
        match item["type"].as_str().unwrap_or("") {
            "message" => {
                let text = item.pointer("/content/0/text").and_then(Value::as_str).unwrap_or("");
                out.push(Event::json(
                    "response.output_item.added",
                    json!({"type": "response.output_item.added", "output_index": index,
                        "item": message_item(n, "in_progress", json!([]))}),
                ));
                out.push(Event::json(
                    "response.content_part.added",
                    json!({"type": "response.content_part.added", "item_id": id, "output_index": index,
                        "content_index": 0, "part": output_text("")}),
                ));
                for piece in Reply::pieces(text) {
                    out.push(Event::json(
                        "response.output_text.delta",
                        json!({"type": "response.output_text.delta", "item_id": id, "output_index": index,
                            "content_index": 0, "delta": piece, "logprobs": []}),
                    ));
                }
                out.push(Event::json(
                    "response.output_text.done",
                    json!({"type": "response.output_text.done", "item_id": id, "output_index": index,
                        "content_index": 0, "text": text, "logprobs": []}),
                ));
                out.push(Event::json(
                    "response.content_part.done",
                    json!({"type": "response.content_part.done", "item_id": id, "output_index": index,
                        "content_index": 0, "part": output_text(text)}),
                ));
            }
            "function_call" => {
                let args = item["arguments"].as_str().unwrap_or("").to_string();
                let mut added = item.clone();
                added["arguments"] = json!("");
                added["status"] = json!("in_progress");
                out.push(Event::json(
                    "response.output_item.added",
                    json!({"type": "response.output_item.added", "output_index": index, "item": added}),
                ));
                for piece in Reply::arg_pieces(&args) {
                    out.push(Event::json(
                        "response.function_call_arguments.delta",
                        json!({"type": "response.function_call_arguments.delta", "item_id": id,
                            "output_index": index, "delta": piece}),
                    ));
                }
                out.push(Event::json(
                    "response.function_call_arguments.done",
                    json!({"type": "response.function_call_arguments.done", "item_id": id,
                        "output_index": index, "name": item["name"], "arguments": args}),
                ));
            }
            _ => {
                out.push(Event::json(
                    "response.output_item.added",
                    json!({"type": "response.output_item.added", "output_index": index, "item": item}),
                ));
            }
        }
        out.push(Event::json(
            "response.output_item.done",
            json!({"type": "response.output_item.done", "output_index": index, "item": item}),
        ));
    }
    let done = json(req, reply, n);
    let kind = if done["status"] == "incomplete" {
        "response.incomplete"
    } else {
        "response.completed"
    };
    out.push(Event::json(kind, json!({"type": kind, "response": done})));
    out
}

/// Events as they go on the wire: `event: <type>` and the data numbered in order.
pub(super) fn frame(events: Vec<Event>) -> Vec<Vec<u8>> {
    let mut started = Value::Null;
    events
        .into_iter()
        .enumerate()
        .filter_map(|(seq, e)| {
            let (name, data) = match e.data {
                Data::Json(mut v) => {
                    v["sequence_number"] = json!(seq);
                    if e.name == "response.created" {
                        started = v["response"].clone();
                    }
                    (e.name, v.to_string())
                }
                Data::Corrupt(mut v) => {
                    v["sequence_number"] = json!(seq);
                    (e.name, cut_json(&v))
                }
                Data::Fail(StreamFailure::Overloaded) => (
                    "error",
                    json!({"type": "error", "code": "server_error",
                        "message": "The server had an error while processing your request. Sorry about that!",
                        "param": null, "sequence_number": seq})
                    .to_string(),
                ),
                Data::Fail(StreamFailure::MidStream) => {
                    let mut failed = started.clone();
                    failed["status"] = json!("failed");
                    failed["error"] = json!({"code": "server_error", "message": super::super::MID_STREAM_ERROR});
                    (
                        "response.failed",
                        json!({"type": "response.failed", "sequence_number": seq, "response": failed}).to_string(),
                    )
                }
                // The Responses stream has no `[DONE]`.
                Data::Done => return None,
            };
            Some(format!("event: {name}\ndata: {data}\n\n").into_bytes())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_values_are_listed_as_openai_lists_them() {
        assert_eq!(one_of(&["a"]), "'a'");
        assert_eq!(one_of(&["a", "b", "c"]), "'a', 'b', and 'c'");
    }

    fn request(reasoning: bool) -> ChatRequest {
        ChatRequest {
            model: "gpt-x".into(),
            input_tokens: 3,
            api: Api::Responses,
            reasoning,
            echo: json!({"store": false, "include_encrypted_reasoning": reasoning}),
            id: "resp_mock1".into(),
            ..ChatRequest::default()
        }
    }

    fn wire(events: Vec<Event>) -> Vec<(String, Value)> {
        frame(events)
            .into_iter()
            .map(|chunk| {
                let text = String::from_utf8(chunk).unwrap();
                let (head, data) = text.trim_end().split_once('\n').unwrap();
                let data = data.strip_prefix("data: ").unwrap();
                (
                    head.strip_prefix("event: ").unwrap().to_string(),
                    serde_json::from_str(data).unwrap_or(Value::Null),
                )
            })
            .collect()
    }

    #[test]
    fn a_text_answer_streams_the_documented_sequence() {
        let req = request(false);
        let reply = Reply::Text("Hello there".into());
        let ev = wire(events(&req, &reply, 1));
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (name, data)) in ev.iter().enumerate() {
            assert_eq!(data["type"], *name);
            assert_eq!(data["sequence_number"], i);
        }
        let done = &ev[9].1["response"];
        assert_eq!(done["id"], "resp_mock1");
        assert_eq!(done["status"], "completed");
        assert_eq!(done["store"], false);
        assert!(done.get("include_encrypted_reasoning").is_none());
        assert_eq!(done["output"][0]["content"][0]["text"], "Hello there");
        assert_eq!(done["usage"]["total_tokens"], 5);
        assert_eq!(json(&req, &reply, 1)["output"], done["output"]);
    }

    #[test]
    fn reasoning_and_function_calls_are_output_items() {
        let req = request(true);
        let reply = Reply::Tool {
            id: "call_1".into(),
            name: "get_weather".into(),
            args: r#"{"location":"Paris"}"#.into(),
        };
        let v = json(&req, &reply, 2);
        assert_eq!(v["output"][0]["type"], "reasoning");
        assert_eq!(v["output"][0]["encrypted_content"], ENCRYPTED_REASONING);
        assert_eq!(v["output"][1]["type"], "function_call");
        assert_eq!(v["output"][1]["call_id"], "call_1");
        assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 12);
        let ev = wire(events(&req, &reply, 2));
        let args: String = ev
            .iter()
            .filter(|(n, _)| n == "response.function_call_arguments.delta")
            .map(|(_, d)| d["delta"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(args, r#"{"location":"Paris"}"#);
    }

    #[test]
    fn in_stream_failures_are_numbered_events() {
        let req = request(false);
        let mut ev = events(&req, &Reply::Text("Hello".into()), 1);
        ev.truncate(3);
        ev.push(Event::fail(StreamFailure::MidStream));
        let wired = wire(ev);
        let (name, data) = wired.last().unwrap();
        assert_eq!(name, "response.failed");
        assert_eq!(data["sequence_number"], 3);
        assert_eq!(data["response"]["id"], "resp_mock1");
        assert_eq!(data["response"]["status"], "failed");
        assert_eq!(
            data["response"]["error"]["message"],
            super::super::super::MID_STREAM_ERROR
        );
        let wired = wire(vec![Event::fail(StreamFailure::Overloaded)]);
        assert_eq!(wired[0].0, "error");
        assert_eq!(wired[0].1["type"], "error");
        assert_eq!(wired[0].1["code"], "server_error");
        assert_eq!(wired[0].1["sequence_number"], 0);
    }
}
