"""Drives the gateway's OpenAI Responses API with the official OpenAI Python SDK.

Usage: responses_client.py BASE_URL CASES_JSON
BASE_URL ends in /v1. CASES_JSON is a list of {"model": <route alias>, "mock":
<x-mock header>}. For each case it makes a plain call (`responses.create`), a
streamed call with the SDK's helper (`responses.stream` and
`get_final_response()`), a raw event stream (`create(stream=True)`), and a
function-call round trip (function_call, then function_call_output, then the
final answer; the first call also streamed); then, with the first case's model,
a call to a model the gateway does not know and one where every provider fails.
Prints one JSON object with what the SDK returned.
"""
import json
import sys

import openai

base_url, cases = sys.argv[1], json.loads(sys.argv[2])
client = openai.OpenAI(base_url=base_url, api_key="client-key", max_retries=0)
tools = [{
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}]


def usage(response):
    u = response.usage
    return {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "total_tokens": u.total_tokens}


def calls(response):
    return [
        {"call_id": i.call_id, "name": i.name, "arguments": json.loads(i.arguments)}
        for i in response.output if i.type == "function_call"
    ]


def status_error(e):
    return {
        "exception": type(e).__name__,
        "status": e.status_code,
        "body": e.body,
        "code": e.code,
        "request_id": e.response.headers.get("x-request-id"),
    }


def run(model, mock):
    headers = {"x-mock": mock}
    out = {}
    raw = client.responses.with_raw_response.create(model=model, input="Say hello", extra_headers=headers)
    response = raw.parse()
    out["plain"] = {
        "object": response.object,
        "id": response.id,
        "status": response.status,
        "model": response.model,
        "text": response.output_text,
        "items": [i.type for i in response.output],
        "usage": usage(response),
        "provider": raw.headers.get("x-switchyard-provider"),
        "chain_position": raw.headers.get("x-switchyard-chain-position"),
    }

    deltas = ""
    with client.responses.stream(model=model, input="Say hello", extra_headers=headers) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas += event.delta
        final = stream.get_final_response()
    out["stream"] = {"text": deltas, "final_text": final.output_text, "status": final.status, "usage": usage(final)}

    kinds, numbers = [], []
    for event in client.responses.create(model=model, input="Say hello", stream=True, extra_headers=headers):
        kinds.append(event.type)
        numbers.append(event.sequence_number)
    out["events"] = {"types": kinds, "sequence_numbers": numbers}

    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.responses.create(model=model, input=question, tools=tools, extra_headers=headers)
    with client.responses.stream(model=model, input=question, tools=tools, extra_headers=headers) as stream:
        streamed = stream.get_final_response()
    call = next(i for i in first.output if i.type == "function_call")
    follow_up = question + [i.model_dump(exclude_none=True) for i in first.output] + [
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 C and sunny"},
    ]
    answer = client.responses.create(model=model, input=follow_up, tools=tools, extra_headers=headers)
    out["tools"] = {
        "calls": calls(first),
        "streamed": calls(streamed),
        "answer": answer.output_text,
        "answer_status": answer.status,
    }
    return out


result = {"cases": {c["model"]: run(c["model"], c["mock"]) for c in cases}}
model = cases[0]["model"]
try:
    client.responses.create(model="no-such-model", input="Say hello")
    result["unknown_model"] = None
except openai.APIStatusError as e:
    result["unknown_model"] = status_error(e)
try:
    client.responses.create(model=model, input="Say hello", extra_headers={"x-mock": "*:status=503"})
    result["all_failed"] = None
except openai.APIStatusError as e:
    result["all_failed"] = status_error(e)
print(json.dumps(result))
