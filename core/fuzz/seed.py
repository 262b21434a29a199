#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into OUT/<target>/.

Seeds are the providers' documented examples (core/tests/fixtures/, see its
README) and a few hand-written cases, framed the way each target reads its
input (the layout is documented at the top of fuzz_targets/<target>.rs). The
campaign starts from these and the committed corpus (corpus/<target>/).

Usage: seed.py OUT
"""

import json
import os
import struct
import sys
import zlib
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
FIXTURES = FUZZ.parent / "tests" / "fixtures"
REPO = FUZZ.parent.parent

# Selector bytes: the dialect index in switchyard_fuzz::DIALECTS.
OPENAI, AZURE, ANTHROPIC, GEMINI, VERTEX, BEDROCK = range(6)
EMBEDDINGS = 0x40  # selector bit: the embeddings endpoint
INCLUDE_USAGE = 0x80  # dialect_stream selector bit
RAW = 0x40  # dialect_stream selector bit (Bedrock): raw event-stream bytes
CUT = (7).to_bytes(4, "little")  # a seed for the cutting
# inbound_request selector: the client API.
MESSAGES, RESPONSES = 0, 1
# inbound_stream selector: the stream (low two bits), the native judge's include_usage.
BACK_MESSAGES, BACK_RESPONSES, NATIVE_MESSAGES, NATIVE_RESPONSES = range(4)


def fixture(path):
    return (FIXTURES / path).read_bytes()


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def frame(headers, payload):
    """One binary event-stream frame (as switchyard_core::eventstream::encode)."""
    block = b""
    for name, value in headers:
        n, v = name.encode(), value.encode()
        block += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 12 + len(block) + len(payload) + 4
    prelude = struct.pack(">II", total, len(block))
    out = prelude + struct.pack(">I", zlib.crc32(prelude)) + block + payload
    return out + struct.pack(">I", zlib.crc32(out))


CHAT_REQUESTS = [
    fixture("openai/chat_request_default.json"),
    fixture("openai/chat_request_tools.json"),
    compact({
        "model": "chat", "stream": True, "stream_options": {"include_usage": True},
        "fallbacks": ["anthropic/claude-3-5-haiku-latest", "chat"],
        "temperature": 0.2, "top_p": 0.9, "max_completion_tokens": 64, "stop": ["END"], "seed": 3,
        "user": "u1", "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is in"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "look", "arguments": "{\"q\":\"cat\"}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "a cat"},
            {"role": "developer", "content": [{"type": "text", "text": "json"}]},
            {"role": "user", "content": "and?"}],
        "tools": [{"type": "function", "function": {"name": "look", "description": "d",
                                                    "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "look"}}}),
    b'{"model":"chat","messages":[{"role":"user","content":"h\\u00e9 \\"q\\" \\ud83d\\ude00"}],"model":"x","fallbacks":null,"stream":false,"tool_choice":"required","response_format":{"type":"json_object"},"max_tokens":1}',
]

EMBEDDINGS_REQUESTS = [
    compact({"model": "embed", "input": "The food was delicious", "encoding_format": "base64", "dimensions": 8}),
    compact({"model": "embed", "input": ["one", "two"], "user": "u"}),
    compact({"model": "embed", "input": [[1, 2, 3]], "encoding_format": "float"}),
]


def seeds():
    """Yields (target, name, bytes)."""
    # --- request_inspect ---------------------------------------------------
    for i, body in enumerate(CHAT_REQUESTS):
        yield "request_inspect", f"chat-{i}", b"\x00" + body
    for i, body in enumerate(EMBEDDINGS_REQUESTS):
        yield "request_inspect", f"embeddings-{i}", b"\x01" + body
    yield "request_inspect", "bad-0", b'\x00{"model":"","messages":[{"role":"robot"}],"stream":1}'

    # --- dialect_prepare -----------------------------------------------------
    models = {OPENAI: 0, AZURE: 0, ANTHROPIC: 1, GEMINI: 2, VERTEX: 2, BEDROCK: 3}
    for d, model in models.items():
        for i, body in enumerate(CHAT_REQUESTS):
            yield "dialect_prepare", f"chat-{d}-{i}", bytes([d, model]) + body
        embed_model = 4 if d == BEDROCK else model
        for i, body in enumerate(EMBEDDINGS_REQUESTS):
            yield "dialect_prepare", f"embeddings-{d}-{i}", bytes([d | EMBEDDINGS, embed_model]) + body
    yield "dialect_prepare", "titan", bytes([BEDROCK | EMBEDDINGS, 5]) + EMBEDDINGS_REQUESTS[0]

    # --- dialect_answer --------------------------------------------------------
    answers = [
        (OPENAI, "openai/chat_response.json"), (AZURE, "openai/chat_tool_call_response.json"),
        (OPENAI, "openai/error_rate_limit.json"),
        (ANTHROPIC, "anthropic/message_response.json"), (ANTHROPIC, "anthropic/tool_use_response.json"),
        (GEMINI, "gemini/generate_content_response.json"), (GEMINI, "gemini/safety_response.json"),
        (VERTEX, "gemini/thinking_response.json"), (GEMINI, "gemini/function_call_response.json"),
        (BEDROCK, "bedrock/converse_response.json"), (BEDROCK, "bedrock/tool_use_response.json"),
        (BEDROCK, "bedrock/converse_stop_sequence_response.json"),
        (BEDROCK, "bedrock/tool_result_answer_response.json"),
    ]
    for i, (d, path) in enumerate(answers):
        yield "dialect_answer", f"{i}-{Path(path).stem}", bytes([d, 1]) + fixture(path)
    # Regression: provider token counts near u64::MAX overflowed the total
    # (a panic with overflow checks, a wrapped total without).
    huge = 18446744073709551615
    yield "dialect_answer", "huge-usage-anthropic", bytes([ANTHROPIC, 1]) + compact(
        {"type": "message", "content": [{"type": "text", "text": "x"}], "usage": {"input_tokens": huge, "output_tokens": 1}})
    yield "dialect_answer", "huge-usage-gemini", bytes([GEMINI, 1]) + compact(
        {"candidates": [{"content": {"parts": [{"text": "x"}]}}],
         "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": huge, "thoughtsTokenCount": huge}})
    yield "dialect_stream", "huge-usage-bedrock", bytes([BEDROCK | INCLUDE_USAGE]) + CUT + (
        b'messageStop {"stopReason":"end_turn"}\nmetadata {"usage":{"inputTokens":%d,"outputTokens":%d}}\n' % (huge, huge))
    embeddings = [
        (OPENAI, {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2]}],
                  "model": "text-embedding-3-small", "usage": {"prompt_tokens": 5, "total_tokens": 5}}),
        (GEMINI, {"embeddings": [{"values": [0.1, 0.2, -0.3]}, {"values": []}]}),
        (VERTEX, {"predictions": [{"embeddings": {"values": [0.5, 1e3],
                                                  "statistics": {"token_count": 7, "truncated": False}}}]}),
        (BEDROCK, {"embedding": [0.25, -1.5], "inputTextTokenCount": 3}),
        (BEDROCK, {"embeddings": [[0.25], [1, 2]], "id": "x", "texts": ["a", "b"]}),
    ]
    for i, (d, body) in enumerate(embeddings):
        yield "dialect_answer", f"embeddings-{i}", bytes([d | EMBEDDINGS, 2]) + compact(body)

    # --- dialect_error ---------------------------------------------------------
    errors = [
        (OPENAI, 401, "openai/error_invalid_api_key.json"), (AZURE, 404, "openai/error_model_not_found.json"),
        (OPENAI, 429, "openai/error_rate_limit.json"), (OPENAI, 429, "openai/error_insufficient_quota.json"),
        (ANTHROPIC, 529, "anthropic/error_overloaded.json"), (ANTHROPIC, 404, "anthropic/error_not_found.json"),
        (ANTHROPIC, 429, "anthropic/error_rate_limit.json"),
        (GEMINI, 400, "gemini/error_api_key_invalid.json"), (GEMINI, 404, "gemini/error_not_found.json"),
        (VERTEX, 429, "gemini/error_quota_exceeded.json"), (VERTEX, 403, "gemini/error_permission_denied.json"),
    ]
    for i, (d, status, path) in enumerate(errors):
        yield "dialect_error", f"{i}-{Path(path).stem}", bytes([d]) + struct.pack(">H", status) + b"\xff" + fixture(path)
    for i, e in enumerate(json.loads(fixture("bedrock/errors.json"))):
        kind = (e["x-amzn-ErrorType"] + ":http://internal.amazon.com/coral/com.amazon.bedrock/").encode()[:254]
        yield "dialect_error", f"bedrock-{i}", bytes([BEDROCK]) + struct.pack(">H", e["status"]) + bytes([len(kind)]) + kind + compact(e["body"])
    yield "dialect_error", "bedrock-type-in-body", bytes([BEDROCK]) + struct.pack(">H", 400) + b"\xff" + b'{"__type":"com.amazon#ValidationException","Message":"The provided model identifier is invalid."}'
    yield "dialect_error", "openai-content-policy", bytes([OPENAI]) + struct.pack(">H", 400) + b"\xff" + b'{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","code":"content_policy_violation"}}'

    # --- dialect_stream and sse_parser ------------------------------------------
    streams = [
        (OPENAI, "openai/chat_stream.sse"), (AZURE | INCLUDE_USAGE, "openai/chat_stream.sse"),
        (ANTHROPIC | INCLUDE_USAGE, "anthropic/stream_text.sse"), (ANTHROPIC, "anthropic/stream_tool_use.sse"),
        (ANTHROPIC, "anthropic/stream_thinking.sse"), (ANTHROPIC, "anthropic/stream_error.sse"),
        (GEMINI | INCLUDE_USAGE, "gemini/stream.sse"), (VERTEX, "gemini/stream_function_call.sse"),
        (GEMINI, "gemini/stream_finish_every_chunk.sse"),
    ]
    for i, (selector, path) in enumerate(streams):
        yield "dialect_stream", f"{i}-{Path(path).stem}", bytes([selector]) + CUT + fixture(path)
        yield "sse_parser", f"{i}-{Path(path).stem}", CUT + fixture(path)
    yield "dialect_stream", "openai-error-first", bytes([OPENAI]) + CUT + b'data: {"error":{"message":"overloaded","type":"rate_limit_error"}}\n\n'
    yield "dialect_stream", "openai-cut", bytes([OPENAI]) + CUT + b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\ndata: {"choices":[{"del'
    # Regressions (docs/fuzzing.md, findings): `[DONE]` inside the answer's text
    # ended the OpenAI watch as complete; events after Anthropic's message_stop
    # were translated after its [DONE] (cut 7 feeds the stream in one piece).
    yield "dialect_stream", "openai-done-in-text", bytes([OPENAI]) + (1).to_bytes(4, "little") + b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\ndata: {"choices":[{"delta":{"content":"say [DONE]"}}]}\n\n'
    yield "dialect_stream", "anthropic-after-stop", bytes([ANTHROPIC]) + CUT + b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"c"}}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\nevent: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"late"}}\n\n'
    yield "dialect_stream", "gemini-error", bytes([GEMINI]) + CUT + b'data: {"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}\r\n\r\n'
    yield "dialect_stream", "gemini-blocked", bytes([GEMINI]) + CUT + b'data: {"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":8}}\n\n'
    converse = json.loads(fixture("bedrock/converse_stream.json"))
    lines = b"".join(e["type"].encode() + b" " + compact(e["payload"]) + b"\n" for e in converse["events"])
    exception = converse["exception"]
    yield "dialect_stream", "bedrock-frames", bytes([BEDROCK | INCLUDE_USAGE]) + CUT + lines
    yield "dialect_stream", "bedrock-exception", bytes([BEDROCK]) + CUT + lines.split(b"\n")[0] + b"\n!" + exception["type"].encode() + b" " + compact(exception["payload"]) + b"\n"
    wire = b"".join(
        frame([(":event-type", e["type"]), (":content-type", "application/json"), (":message-type", "event")],
              compact(e["payload"]))
        for e in converse["events"])
    yield "dialect_stream", "bedrock-raw", bytes([BEDROCK | RAW]) + CUT + wire
    yield "sse_parser", "comments-and-crlf", CUT + b": comment\n\nevent: a\r\ndata: 1\r\ndata:2\r\n\r\ndata: [DONE]\n\n"

    # --- eventstream_decoder ------------------------------------------------------
    yield "eventstream_decoder", "converse-stream", b"\x00" + CUT + wire
    yield "eventstream_decoder", "converse-stream-fixed", b"\x01" + CUT + wire
    exc = frame([(":message-type", "exception"), (":exception-type", exception["type"]),
                 (":content-type", "application/json")], compact(exception["payload"]))
    yield "eventstream_decoder", "exception", b"\x00" + CUT + exc
    # botocore's "all header types" vector (see eventstream.rs tests).
    all_types = (b"\x00\x00\x00\x62\x00\x00\x00\x52\x03\xb5\xcb\x9c"
                 b"\x010\x00\x011\x01\x012\x02\x02\x013\x03\x00\x03"
                 b"\x014\x04\x00\x00\x00\x04\x015\x05\x00\x00\x00\x00\x00\x00\x00\x05"
                 b"\x016\x06\x00\x05bytes\x017\x07\x00\x04utf8"
                 b"\x018\x08\x00\x00\x00\x00\x00\x00\x00\x08\x019\x090123456789abcdef"
                 b"\x63\x35\x36\x71")
    yield "eventstream_decoder", "all-header-types", b"\x01" + CUT + all_types

    # --- sigv4 -------------------------------------------------------------------
    date = b"X-Amz-Date:20150830T123600Z\n"
    sigv4 = {
        "get-vanilla": b"GET\n/\nHost:example.amazonaws.com\n" + date + b"\n",
        "get-query-order": b"GET\n/?Param2=value2&Param1=value1&Param1=value0\nHost:example.amazonaws.com\n" + date + b"\n",
        "get-space": b"GET\n/example space/\nHost:example.amazonaws.com\n" + date + b"\n",
        "get-utf8": "GET\n/ሴ?ሴ=bar&%E1%88%B4=b%20a+r&x=%zz\nHost:example.amazonaws.com\n".encode() + date + b"\n",
        "header-values": b"GET\n/\nHost:example.amazonaws.com\nMy-Header1:  value1 \nMy-Header1:   a   b   c  \nMy-Header2:\t\"a   b   c\"\n" + date + b"\n",
        "bedrock-converse": b"POST\n/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse\nhost:bedrock-runtime.us-east-1.amazonaws.com\ncontent-type:application/json\nx-amz-date:20261201T154600Z\nx-amz-security-token:AQoDYXdzEPT//////////wEXAMPLE\n\n" + CHAT_REQUESTS[0],
    }
    for name, data in sigv4.items():
        yield "sigv4", name, data

    # --- filter_config -------------------------------------------------------------
    provider = {"cluster": "sy_provider_a", "authority": "a.example", "base_path": "/v1"}
    cfg = {
        "version": "v1", "role": "adapter",
        "providers": {
            "a": dict(provider, dialect="openai", api_keys=["key-a", "key-b"], key_count=2,
                      headers=[["openai-organization", "org"]], forward_headers=["x-trace"]),
            "z": dict(provider, dialect="azure_openai", api_version="2024-10-21"),
            "b": dict(provider, dialect="bedrock", aws={"region": "us-east-1", "access_key_id": "AKID",
                                                        "secret_access_key": "s", "session_token": "t"}),
        },
        "routes": {
            "chat": {"chain": [{"provider": "a", "model": "gpt"}, {"provider": "b", "model": "claude"}],
                     "weights": [3, 1], "hedge_cluster": "sy_chain_chat", "max_price": {"input": 1.5, "output": 2},
                     "policy": {"fail_over_on": ["rate_limited", "server_error"], "first_byte_timeout_ms": 500,
                                "deadline_ms": 3000, "attempts_per_target": 2, "hedge_after_ms": 200,
                                "try_when_all_cooling": True}},
        },
        "default_policy": {"fail_over_on": ["unreachable"]},
        "max_request_bytes": 100000, "max_attempts": 4,
        "health_check": {"interval_ms": 5000, "timeout_ms": 1000, "unhealthy_after": 3, "healthy_after": 2},
        "prices": {"a/gpt": {"input": 0.15, "output": 0.6}},
        "circuit_breaker": {"consecutive_failures": 5, "base_open_ms": 1000, "max_open_ms": 60000,
                            "failure_rate_percent": 50},
        "fleet": {"cluster": "sy_control_plane", "interval_ms": 1000, "node": "envoy-1"},
        "forward_headers": ["anthropic-beta"],
    }
    yield "filter_config", "adapter", compact(cfg)
    yield "filter_config", "planner", compact({"version": "t", "role": "planner", "providers": {},
                                               "max_request_bytes": 1, "max_attempts": 1})

    # --- inbound_request ---------------------------------------------------------
    inbound = FIXTURES / "inbound"
    for path in sorted((inbound / "anthropic").glob("request_*.json")):
        yield "inbound_request", f"messages-{path.stem}", bytes([MESSAGES]) + path.read_bytes()
    for path in sorted((inbound / "responses").glob("*_request.json")):
        yield "inbound_request", f"responses-{path.stem}", bytes([RESPONSES]) + path.read_bytes()
    yield "inbound_request", "messages-everything", bytes([MESSAGES]) + compact({
        "model": "claude", "max_tokens": 64, "stream": True, "temperature": 0.5, "top_p": 0.9, "top_k": 5,
        "stop_sequences": ["END"], "metadata": {"user_id": "u1"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}, "effort": "low"},
        "tools": [{"name": "look", "description": "d", "input_schema": {"type": "object"}, "strict": True}],
        "tool_choice": {"type": "tool", "name": "look", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "what is in"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}},
                {"type": "document", "title": "a.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "text", "text": "looking"},
                {"type": "tool_use", "id": "t1", "name": "look", "input": {"q": "cat"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "is_error": True, "content": [
                    {"type": "text", "text": "no"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
                {"type": "text", "text": "and?"}]},
            {"role": "assistant", "content": []}]})
    yield "inbound_request", "messages-untranslatable", bytes([MESSAGES]) + compact({
        "model": "claude", "max_tokens": 8, "mcp_servers": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        "messages": [{"role": "user", "content": [{"type": "search_result", "source": "s"}]}]})
    yield "inbound_request", "responses-everything", bytes([RESPONSES]) + compact({
        "model": "gpt", "instructions": "be brief", "stream": True, "store": False, "max_output_tokens": 64,
        "temperature": 1.5, "top_p": 0.5, "parallel_tool_calls": False, "user": "u", "safety_identifier": "s",
        "truncation": "auto", "metadata": {"k": "v"}, "reasoning": {"effort": "xhigh", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True, "description": "d"}},
        "tools": [{"type": "function", "name": "look", "description": "d", "parameters": {"type": "object"}, "strict": True},
                  {"type": "function", "name": "other"}],
        "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "look"}]},
        "input": [
            {"role": "developer", "content": [{"type": "input_text", "text": "json"}]},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "what is in"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"role": "assistant", "content": [{"type": "output_text", "text": "looking"}, {"type": "refusal", "refusal": "no"}]},
            {"type": "function_call", "call_id": "c1", "name": "look", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "look", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "a cat"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "a dog"}]},
            {"role": "user", "content": "and?"}]})
    yield "inbound_request", "responses-stored-state", bytes([RESPONSES]) + compact(
        {"model": "gpt", "input": "hi", "previous_response_id": "resp_1"})
    yield "inbound_request", "responses-item-reference", bytes([RESPONSES]) + compact(
        {"model": "gpt", "input": [{"type": "item_reference", "id": "msg_1"}]})
    # Regressions of findings 5 and 6 (docs/fuzzing.md).
    yield "inbound_request", "finding-5-messages-max-tokens", bytes([MESSAGES]) + compact(
        {"model": "claude", "max_tokens": 10000001, "messages": [{"role": "user", "content": "hi"}]})
    yield "inbound_request", "finding-5-responses-max-output-tokens", bytes([RESPONSES]) + compact(
        {"model": "gpt", "max_output_tokens": 10000001, "input": "hi"})
    yield "inbound_request", "finding-6-responses-no-model", bytes([RESPONSES]) + compact(
        {"previous_response_id": "resp_1", "input": "hi"})
    yield "inbound_request", "finding-6-responses-stream-unchecked", bytes([RESPONSES]) + compact(
        {"model": "gpt", "previous_response_id": "resp_1", "stream": "yes", "input": "hi"})
    yield "inbound_request", "finding-6-responses-tool-stream-unchecked", bytes([RESPONSES]) + compact(
        {"model": "gpt", "tools": [{"type": "web_search"}], "stream": "yes", "input": "hi"})
    # Regression of finding 8: nothing left for other providers to answer.
    yield "inbound_request", "finding-8-messages-empty-assistant-only", bytes([MESSAGES]) + compact(
        {"model": "claude", "max_tokens": 1024, "messages": [{"role": "assistant", "content": []}]})

    # --- inbound_stream ------------------------------------------------------------
    chat_streams = [fixture("openai/chat_stream.sse"), fixture("inbound/anthropic/chat_stream_parallel_tools.sse")]
    chunk = lambda delta, finish=None, **kw: b"data: " + compact(dict(
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}, **kw)) + b"\n\n"
    chat_streams += [
        # A refusal, then a cut by the token limit.
        chunk({"role": "assistant", "refusal": "I can't"}) + chunk({"content": "but"}, "length")
        + b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\ndata: [DONE]\n\n',
        # Tool calls without index, their id and name late, then an error event.
        chunk({"tool_calls": [{"function": {"arguments": "{\"a\""}}]}) + chunk({"tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": ":1}"}}]})
        + chunk({"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "g"}}]}) + chunk({"tool_calls": [{"index": 0, "function": {"arguments": "x"}}]}),
        b'data: {"error":{"message":"rate_limit_error: slow down","type":"rate_limit_error","code":"rate_limited"}}\n\ndata: [DONE]\n\n',
        chunk({"content": "cut"}),
        chunk({"content": "no end"}, "stop"),
    ]
    for i, stream in enumerate(chat_streams):
        yield "inbound_stream", f"messages-{i}", bytes([BACK_MESSAGES]) + CUT + stream
        yield "inbound_stream", f"responses-{i}", bytes([BACK_RESPONSES]) + CUT + stream
    for path in ["anthropic/stream_text.sse", "anthropic/stream_tool_use.sse", "anthropic/stream_thinking.sse",
                 "anthropic/stream_error.sse"]:
        yield "inbound_stream", f"native-messages-{Path(path).stem}", bytes([NATIVE_MESSAGES | INCLUDE_USAGE]) + CUT + fixture(path)
    yield "inbound_stream", "native-messages-cut", bytes([NATIVE_MESSAGES]) + CUT + fixture("anthropic/stream_text.sse")[:300]
    yield "inbound_stream", "native-responses-streaming", bytes([NATIVE_RESPONSES]) + CUT + fixture("inbound/responses/streaming_response.sse")
    spec = json.loads(fixture("inbound/responses/spec_shapes.json"))["events"]
    def responses_sse(names):
        return b"".join(b"event: " + n.encode() + b"\ndata: " + compact(spec[n]["example"]) + b"\n\n" for n in names)
    body = ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
            "response.output_text.delta", "response.output_text.done", "response.content_part.done",
            "response.output_item.done", "response.function_call_arguments.delta",
            "response.function_call_arguments.done", "response.refusal.delta", "response.refusal.done"]
    for end in ["response.completed", "response.incomplete", "response.failed"]:
        yield "inbound_stream", f"native-responses-{end[9:]}", bytes([NATIVE_RESPONSES]) + CUT + responses_sse(body + [end])
    yield "inbound_stream", "native-responses-error", bytes([NATIVE_RESPONSES]) + CUT + responses_sse(body[:5]) + (
        b'event: error\ndata: {"type":"error","code":"rate_limit_exceeded","message":"slow down","param":null,"sequence_number":5}\n\n')
    # Regression of finding 7 (docs/fuzzing.md): events after the one that ended the stream.
    after = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"late"}}\n\n'
    yield "inbound_stream", "finding-7-native-messages-after-stop", bytes([NATIVE_MESSAGES]) + CUT + fixture("anthropic/stream_text.sse") + after
    yield "inbound_stream", "finding-7-native-responses-after-completed", bytes([NATIVE_RESPONSES]) + CUT + responses_sse(
        body[:5] + ["response.completed", "response.output_text.delta"])

    # --- control_plane_config ----------------------------------------------------------
    for path in ["control-plane/src/defaults/cloud.yaml", "control-plane/src/defaults/mock.yaml",
                 "bench/switchyard.yaml", "bench/switchyard-breaker.yaml"]:
        if (REPO / path).exists():
            yield "control_plane_config", Path(path).stem, (REPO / path).read_bytes()
    yield "control_plane_config", "everything", b"""\
version: v7
listener: { address: 0.0.0.0, port: 0 }
filter: { module: lib.so }
limits: { max_request_bytes: 2048, max_attempts: 3, stream_idle_timeout_ms: 30000, max_heap_bytes: 134217728 }
retry: { backoff_base_ms: 2, backoff_max_ms: 20, budget_percent: 20.0, min_retry_concurrency: 2 }
policy: { fail_over_on: [unreachable, rate_limited], deadline_ms: 9000 }
circuit_breaker: { consecutive_failures: 2, base_open_ms: 100, max_open_ms: 1000, failure_rate_percent: 40, window_ms: 500, min_requests: 5 }
health_check: { interval_ms: 1000, timeout_ms: 500, unhealthy_after: 2, healthy_after: 1 }
adaptive_weights: { min_factor: 0.1 }
forward_headers: [anthropic-beta, X-Trace]
prices: { "openai/gpt-4o": { input: 2.5, output: 10 } }
providers:
  - { name: openai, dialect: openai, base_url: "https://api.openai.com/v1", api_key: { env: OPENAI_API_KEY }, organization: org, project: p, headers: { HTTP-Referer: x } }
  - { name: az, dialect: azure_openai, base_url: "https://r.openai.azure.com", api_keys: [{ value: a }, { value: b }], api_version: "2024-10-21" }
  - name: br
    dialect: bedrock
    base_url: https://bedrock-runtime.eu-west-1.amazonaws.com
    aws: { access_key_id: { value: AKID }, secret_access_key: { env: ANTHROPIC_API_KEY }, session_token: { value: t } }
    credentials_refresh_s: 60
routes:
  - { model: chat, tiers: [[openai/gpt-4o], ["br/us.anthropic.claude-3-5-haiku-20241022-v1:0"]], max_price: { input: 3, output: 12 }, policy: { hedge_after_ms: 100 } }
  - { model: fast, chain: [az/gpt-4o-mini, openai/gpt-4o-mini], weights: [1, 2] }
"""


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    for target, name, data in seeds():
        path = out / target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


if __name__ == "__main__":
    main()
