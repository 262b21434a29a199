"""Drives the gateway with the official OpenAI Python SDK.

Usage: openai_client.py BASE_URL CASES_JSON
CASES_JSON is a list of {"model": ..., "mock": <x-mock header>}. For each case it
makes a plain call, a streamed call (with usage) and a tool-call round trip
(streamed and not); then embeddings from route `emb` with its primary failing;
then, with the first case's model, a call where every provider fails. Prints one JSON object with what the SDK returned.
"""
import json
import sys

import openai

base_url, cases = sys.argv[1], json.loads(sys.argv[2])
client = openai.OpenAI(base_url=base_url, api_key="client-key", max_retries=0)
messages = [{"role": "user", "content": "Say hello"}]
tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}]


def run(model, mock):
    headers = {"x-mock": mock}
    out = {}
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, extra_headers=headers)
    completion = raw.parse()
    out["plain"] = {
        "content": completion.choices[0].message.content,
        "finish_reason": completion.choices[0].finish_reason,
        "total_tokens": completion.usage.total_tokens,
        "provider": raw.headers.get("x-switchyard-provider"),
    }

    stream = client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}, extra_headers=headers
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage.total_tokens
    out["stream"] = {"content": text, "total_tokens": usage}

    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=model, messages=question, tools=tools, extra_headers=headers)
    call = first.choices[0].message.tool_calls[0]
    streamed = {"id": None, "name": "", "arguments": ""}
    for chunk in client.chat.completions.create(
        model=model, messages=question, tools=tools, stream=True, extra_headers=headers
    ):
        for d in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            streamed["id"] = d.id or streamed["id"]
            streamed["name"] += (d.function.name or "") if d.function else ""
            streamed["arguments"] += (d.function.arguments or "") if d.function else ""
    follow_up = question + [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"},
    ]
    answer = client.chat.completions.create(model=model, messages=follow_up, tools=tools, extra_headers=headers)
    out["tools"] = {
        "finish_reason": first.choices[0].finish_reason,
        "name": call.function.name,
        "arguments": json.loads(call.function.arguments),
        "streamed": {**streamed, "arguments": json.loads(streamed["arguments"] or "null")},
        "answer": answer.choices[0].message.content,
    }
    return out


result = {c["model"]: run(c["model"], c["mock"]) for c in cases}
# Embeddings (the SDK asks for base64 and decodes it), served by the fallback.
embedded = client.embeddings.create(model="emb", input=["hello world"], extra_headers={"x-mock": "oa:status=503"})
result["embeddings"] = [d.embedding for d in embedded.data]
try:
    client.chat.completions.create(
        model=cases[0]["model"], messages=messages, extra_headers={"x-mock": "*:status=503"}
    )
    result["all_failed"] = None
except openai.APIStatusError as e:
    result["all_failed"] = {
        "status": e.status_code,
        "code": e.code,
        "attempts": len((e.body or {}).get("attempts", [])),
        "request_id": e.response.headers.get("x-request-id"),
    }
print(json.dumps(result))
