//! Client APIs besides OpenAI chat completions (`/v1/messages`, `/v1/responses`).
//!
//! The gateway's internal request is an OpenAI chat-completions body: every
//! dialect's translation starts from it and every answer comes back as one. An
//! inbound API is therefore two translations at the edge — its request into a
//! chat request, and the chat answer (complete, or the SSE chunk stream) back
//! into its own shape — plus its error shape. A target that speaks the inbound
//! API natively gets the client's own body instead (nothing lost); its answer is
//! still checked by that dialect's [`crate::dialect::Api`] before it is released.

pub mod anthropic;
pub mod native;
pub mod responses;

use serde_json::Value;

use crate::dialect::{Answer, Context, Dialect, StreamTranslator};

/// The largest output-token limit the chat form takes: `request::inspect`
/// bounds its `max_tokens` and `max_completion_tokens` so. A client API's own
/// limit (Messages' `max_tokens`, Responses' `max_output_tokens`) is bounded
/// here too, so that a client over it is told in the words of its own API, not
/// about a member of the chat form it never sent.
pub const MAX_OUTPUT_TOKENS: u64 = 10_000_000;

/// The API a client speaks. Embeddings are [`crate::request::Endpoint`]'s
/// business; this is about chat-like requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientApi {
    /// OpenAI chat completions (`POST /v1/chat/completions`), the internal form.
    #[default]
    Chat,
    /// Anthropic Messages (`POST /v1/messages`).
    Messages,
    /// OpenAI Responses (`POST /v1/responses`).
    Responses,
}

impl ClientApi {
    /// The API served at `path` (without query), besides chat completions.
    pub fn from_path(path: &str) -> Option<ClientApi> {
        match path {
            "/v1/messages" => Some(ClientApi::Messages),
            "/v1/responses" => Some(ClientApi::Responses),
            _ => None,
        }
    }

    /// The client-facing path.
    pub fn path(self) -> &'static str {
        match self {
            ClientApi::Chat => "/v1/chat/completions",
            ClientApi::Messages => "/v1/messages",
            ClientApi::Responses => "/v1/responses",
        }
    }

    /// Whether a target of `dialect` speaks this API itself (and gets the
    /// client's body as it is).
    pub fn native_to(self, dialect: Dialect) -> bool {
        match self {
            ClientApi::Chat => dialect.speaks_openai(),
            ClientApi::Messages => dialect == Dialect::Anthropic,
            ClientApi::Responses => matches!(dialect, Dialect::Openai | Dialect::AzureOpenai),
        }
    }

    /// The path of this API at a target of `dialect` that speaks it natively.
    pub fn native_path(self, dialect: Dialect, base_path: &str) -> String {
        let base = base_path.trim_end_matches('/');
        match (self, dialect) {
            (ClientApi::Responses, Dialect::AzureOpenai) => format!("{base}/openai/v1/responses"),
            (ClientApi::Responses, _) => format!("{base}/responses"),
            (_, _) => format!("{base}/messages"),
        }
    }

    /// The client's request in the gateway's chat form.
    pub fn to_chat(self, body: &[u8]) -> Result<Inbound, InboundError> {
        match self {
            ClientApi::Messages => anthropic::to_chat(body),
            ClientApi::Responses => responses::to_chat(body),
            ClientApi::Chat => Err(InboundError {
                code: "invalid_request",
                message: "a chat request is already in chat form".into(),
            }),
        }
    }

    /// Whether a [`ClientApi::to_chat`] error only means that targets of other
    /// APIs cannot take the request (those of its own API still can).
    pub fn only_native(self, e: &InboundError) -> bool {
        match self {
            ClientApi::Messages => e.code == anthropic::UNTRANSLATABLE,
            ClientApi::Responses => matches!(
                e.code,
                responses::PREVIOUS_RESPONSE_NOT_SUPPORTED
                    | responses::CONVERSATION_NOT_SUPPORTED
                    | responses::UNSUPPORTED_TOOL
                    | responses::UNSUPPORTED_PARAMETER
                    | responses::UNSUPPORTED_INPUT
            ),
            ClientApi::Chat => false,
        }
    }

    /// What of a request of this API names state stored at the provider that
    /// made it (a Responses `previous_response_id`, `conversation`, an
    /// `item_reference` input item): the member, and the code it is refused
    /// with where no target can hold it. Such a request can go to one provider
    /// only.
    pub fn stored_state(self, req: &Value) -> Option<(&'static str, &'static str)> {
        if self != ClientApi::Responses {
            return None;
        }
        let set = |k: &str| req.get(k).is_some_and(|v| !v.is_null());
        if set("previous_response_id") {
            return Some((
                "previous_response_id",
                responses::PREVIOUS_RESPONSE_NOT_SUPPORTED,
            ));
        }
        if set("conversation") {
            return Some(("conversation", responses::CONVERSATION_NOT_SUPPORTED));
        }
        let referenced = req
            .get("input")
            .and_then(Value::as_array)
            .is_some_and(|items| {
                items
                    .iter()
                    .any(|i| i.get("type").and_then(Value::as_str) == Some("item_reference"))
            });
        referenced.then_some(("item_reference", responses::CONVERSATION_NOT_SUPPORTED))
    }

    /// An error answer in this API's shape. Anthropic's error has a `type` but
    /// no `code`: the gateway's code leads its message (`budget_exceeded: …`),
    /// so answers of one type (`rate_limit_exceeded` and `budget_exceeded` are
    /// both a `rate_limit_error`) stay apart.
    pub fn error_body(self, status: u16, code: &str, message: &str, request_id: &str) -> Vec<u8> {
        match self {
            ClientApi::Messages => {
                anthropic::error_body(status, &format!("{code}: {message}"), request_id)
            }
            ClientApi::Responses => responses::error_body(status, code, message, request_id),
            ClientApi::Chat => crate::error::body(
                message,
                crate::error::type_for_status(status),
                code,
                request_id,
            ),
        }
    }

    /// A target's complete answer for this client: its chat translation turned
    /// into this API's shape, or (`native`) its own bytes once judged.
    pub fn answer(
        self,
        dialect: Dialect,
        native: bool,
        body: &[u8],
        ctx: &Context<'_>,
        client_model: &str,
    ) -> Answer {
        let api = crate::dialect::api(dialect);
        if native {
            return native::answer(self, body, |b| api.answer(b, ctx));
        }
        let back = |chat: Vec<u8>| -> Result<Vec<u8>, InboundError> {
            match self {
                ClientApi::Chat => Ok(chat),
                ClientApi::Messages => anthropic::answer_from_chat(&chat, client_model),
                ClientApi::Responses => {
                    responses::answer_from_chat(&chat, client_model, ctx.created)
                }
            }
        };
        let failed =
            |e: InboundError| Answer::Failed(crate::failure::FailureClass::BadResponse, e.message);
        match api.answer(body, ctx) {
            Answer::Ok(chat) => back(chat).map_or_else(failed, Answer::Ok),
            Answer::Filtered(chat, why) => {
                back(chat).map_or_else(failed, |out| Answer::Filtered(out, why))
            }
            f @ Answer::Failed(..) => f,
        }
    }

    /// A translator of a target's stream for this client.
    pub fn stream(
        self,
        dialect: Dialect,
        native: bool,
        ctx: &Context<'_>,
        client_model: &str,
    ) -> ClientStream {
        let inner = match (self, native) {
            (ClientApi::Responses, true) => Box::new(native::ResponsesWatch::default()),
            _ => crate::dialect::api(dialect).stream(ctx),
        };
        match (self, native) {
            (ClientApi::Chat, _) => ClientStream::Chat(inner),
            (_, true) => ClientStream::Native(native::NativeStream::new(self, inner)),
            (ClientApi::Messages, false) => ClientStream::Back {
                inner,
                back: Box::new(anthropic::MessageStream::new(client_model)),
                chat: Vec::new(),
            },
            (ClientApi::Responses, false) => ClientStream::Back {
                inner,
                back: Box::new(responses::ResponseStream::new(
                    client_model,
                    ctx.created,
                    ctx.request_id,
                )),
                chat: Vec::new(),
            },
        }
    }
}

/// A target's stream as its client gets it.
pub enum ClientStream {
    /// A chat client: the dialect's translation.
    Chat(Box<dyn StreamTranslator>),
    /// The client's own API, passed on and judged.
    Native(native::NativeStream),
    /// Translated to chat, then into the client's API.
    Back {
        /// The dialect's translation into chat.
        inner: Box<dyn StreamTranslator>,
        /// Chat into the client's API.
        back: Box<dyn StreamBack>,
        /// The chat form not yet taken.
        chat: Vec<u8>,
    },
}

impl ClientStream {
    /// The chat form of what was fed since the last call (what the gateway
    /// counts usage from); for chat clients, nothing (their bytes are it).
    pub fn take_chat(&mut self) -> Option<Vec<u8>> {
        match self {
            ClientStream::Chat(_) => None,
            ClientStream::Native(n) => Some(n.take_chat()),
            ClientStream::Back { chat, .. } => Some(std::mem::take(chat)),
        }
    }
}

impl StreamTranslator for ClientStream {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        match self {
            ClientStream::Chat(t) => t.feed(bytes),
            ClientStream::Native(n) => n.feed(bytes),
            ClientStream::Back { inner, back, chat } => {
                let c = inner.feed(bytes);
                chat.extend_from_slice(&c);
                back.feed(&c)
            }
        }
    }

    fn finish(&mut self) -> Vec<u8> {
        match self {
            ClientStream::Chat(t) => t.finish(),
            ClientStream::Native(n) => n.finish(),
            ClientStream::Back { inner, back, chat } => {
                let c = inner.finish();
                chat.extend_from_slice(&c);
                let mut out = back.feed(&c);
                out.extend(back.finish());
                out
            }
        }
    }

    fn progress(&self) -> crate::dialect::Progress {
        match self {
            ClientStream::Chat(t) => t.progress(),
            ClientStream::Native(n) => n.progress(),
            // The client's error event is the back translation's, of another length.
            ClientStream::Back { inner, .. } => crate::dialect::Progress {
                error_tail: 0,
                ..inner.progress()
            },
        }
    }
}

/// A client request turned into the gateway's chat-completions form.
#[derive(Clone, Debug, PartialEq)]
pub struct Inbound {
    /// The OpenAI chat-completions body (with `model` as the client named it,
    /// `stream` and `stream_options.include_usage` as the inbound API implies).
    pub chat: Value,
    /// The client asked for a stream.
    pub stream: bool,
}

/// Why a client request could not be understood: an OpenAI-style error code
/// (`invalid_request_error` family) and a message for the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InboundError {
    /// A stable machine-readable code (`invalid_json`, `missing_required_parameter`, …).
    pub code: &'static str,
    /// What was wrong, for the client.
    pub message: String,
}

/// Turns a chat-completions SSE stream (the bytes the gateway would send an
/// OpenAI client: `data: {chunk}\n\n` … `data: [DONE]\n\n`, error events
/// included) into the inbound API's own event stream, fed as it comes.
pub trait StreamBack {
    /// Translates the next bytes; returns the bytes for the client.
    fn feed(&mut self, chat_sse: &[u8]) -> Vec<u8>;
    /// The chat stream ended: whatever closes the client's stream (an `error`
    /// event when it ended without its final event).
    fn finish(&mut self) -> Vec<u8>;
}
