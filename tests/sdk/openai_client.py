"""Drives the gateway with the official OpenAI Python SDK.

Usage: openai_client.py BASE_URL MODEL MOCK_HEADER
Prints one JSON line: what the SDK returned for a plain call, a streamed call
(with usage), and the error it raised when every provider failed.
"""
import json
import sys

import openai

base_url, model, fail_primary = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url, api_key="client-key", max_retries=0)
messages = [{"role": "user", "content": "Say hello"}]
out = {}

raw = client.chat.completions.with_raw_response.create(
    model=model, messages=messages, extra_headers={"x-mock": fail_primary}
)
completion = raw.parse()
out["plain"] = {
    "content": completion.choices[0].message.content,
    "finish_reason": completion.choices[0].finish_reason,
    "total_tokens": completion.usage.total_tokens,
    "provider": raw.headers.get("x-switchyard-provider"),
}

stream = client.chat.completions.create(
    model=model,
    messages=messages,
    stream=True,
    stream_options={"include_usage": True},
    extra_headers={"x-mock": fail_primary},
)
text, usage = "", None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage:
        usage = chunk.usage.total_tokens
out["stream"] = {"content": text, "total_tokens": usage}

try:
    client.chat.completions.create(model=model, messages=messages, extra_headers={"x-mock": "*:status=503"})
    out["all_failed"] = None
except openai.APIStatusError as e:
    out["all_failed"] = {
        "status": e.status_code,
        "code": e.code,
        "attempts": len((e.body or {}).get("attempts", [])),
        "request_id": e.response.headers.get("x-request-id"),
    }

print(json.dumps(out))
