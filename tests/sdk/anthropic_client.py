"""Drives the gateway's Anthropic Messages API with the official Anthropic Python SDK.

Usage: anthropic_client.py BASE_URL CASES_JSON
BASE_URL is the gateway's root (the SDK adds /v1/messages). CASES_JSON is a list
of {"model": <route alias>, "mock": <x-mock header>}. For each case it makes a
plain call, a streamed call (the SDK's `messages.stream` helper and
`get_final_message()`), and a tool-use round trip (tool_use, then tool_result,
then the final answer; the first call also streamed); then, with the first
case's model, `count_tokens`, a call to a model the gateway does not know, and a
call where every provider fails. Prints one JSON object with what the SDK
returned.
"""
import json
import sys

import anthropic

base_url, cases = sys.argv[1], json.loads(sys.argv[2])
client = anthropic.Anthropic(base_url=base_url, api_key="client-key", max_retries=0)
messages = [{"role": "user", "content": "Say hello"}]
tools = [{
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}]


def texts(message):
    return "".join(b.text for b in message.content if b.type == "text")


def usage(message):
    return {"input_tokens": message.usage.input_tokens, "output_tokens": message.usage.output_tokens}


def status_error(e):
    return {
        "exception": type(e).__name__,
        "internal_server_error": isinstance(e, anthropic.InternalServerError),
        "status": e.status_code,
        "body": e.body,
        "request_id": e.response.headers.get("x-request-id"),
        "content_type": e.response.headers.get("content-type"),
    }


def run(model, mock):
    headers = {"x-mock": mock}
    out = {}
    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=256, messages=messages, extra_headers=headers
    )
    message = raw.parse()
    out["plain"] = {
        "type": message.type,
        "role": message.role,
        "id": message.id,
        "model": message.model,
        "text": texts(message),
        "blocks": [b.type for b in message.content],
        "stop_reason": message.stop_reason,
        "usage": usage(message),
        "provider": raw.headers.get("x-switchyard-provider"),
        "chain_position": raw.headers.get("x-switchyard-chain-position"),
    }

    with client.messages.stream(model=model, max_tokens=256, messages=messages, extra_headers=headers) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
        provider = stream.response.headers.get("x-switchyard-provider")
    out["stream"] = {
        "text": streamed,
        "final_text": texts(final),
        "stop_reason": final.stop_reason,
        "usage": usage(final),
        "provider": provider,
    }

    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.messages.create(
        model=model, max_tokens=256, messages=question, tools=tools, extra_headers=headers
    )
    use = next(b for b in first.content if b.type == "tool_use")
    with client.messages.stream(
        model=model, max_tokens=256, messages=question, tools=tools, extra_headers=headers
    ) as stream:
        streamed_first = stream.get_final_message()
    streamed_use = next((b for b in streamed_first.content if b.type == "tool_use"), None)
    follow_up = question + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C and sunny"}]},
    ]
    answer = client.messages.create(
        model=model, max_tokens=256, messages=follow_up, tools=tools, extra_headers=headers
    )
    out["tools"] = {
        "stop_reason": first.stop_reason,
        "id": use.id,
        "name": use.name,
        "input": use.input,
        "streamed": None if streamed_use is None else {
            "stop_reason": streamed_first.stop_reason,
            "id": streamed_use.id,
            "name": streamed_use.name,
            "input": streamed_use.input,
        },
        "answer": texts(answer),
        "answer_stop_reason": answer.stop_reason,
    }
    return out


result = {"cases": {c["model"]: run(c["model"], c["mock"]) for c in cases}}
model = cases[0]["model"]
counted = client.messages.count_tokens(model=model, messages=messages, system="You are terse.")
result["count_tokens"] = counted.input_tokens
try:
    client.messages.create(model="no-such-model", max_tokens=16, messages=messages)
    result["unknown_model"] = None
except anthropic.APIStatusError as e:
    result["unknown_model"] = status_error(e)
try:
    client.messages.create(model=model, max_tokens=16, messages=messages, extra_headers={"x-mock": "*:status=503"})
    result["all_failed"] = None
except anthropic.APIStatusError as e:
    result["all_failed"] = status_error(e)
try:
    with client.messages.stream(
        model=model, max_tokens=16, messages=messages, extra_headers={"x-mock": "*:status=500"}
    ) as stream:
        stream.get_final_message()
    result["all_failed_stream"] = None
except anthropic.APIStatusError as e:
    result["all_failed_stream"] = status_error(e)
print(json.dumps(result))
