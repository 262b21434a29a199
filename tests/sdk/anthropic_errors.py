"""The gateway's refusals as the official Anthropic Python SDK sees them.

Usage: anthropic_errors.py BASE_URL CASES_JSON
BASE_URL is the gateway's root (the SDK adds /v1/messages). CASES_JSON is a list
of {"name", "key": <the Switchyard key the SDK sends>, "model", "call":
"create"|"count_tokens", "tries": <calls before giving up on an error>}. For
each case it calls until the SDK raises (a rate limit may let a first call
through) and prints one JSON object: per case, the exception and what it holds.
"""
import json
import sys

import anthropic

base_url, cases = sys.argv[1], json.loads(sys.argv[2])
messages = [{"role": "user", "content": "Say hello"}]


def status_error(e, served):
    return {
        "exception": type(e).__name__,
        "status": e.status_code,
        "body": e.body,
        "request_id": e.response.headers.get("x-request-id"),
        "limit": e.response.headers.get("x-switchyard-limit"),
        "limit_subject": e.response.headers.get("x-switchyard-limit-subject"),
        "served_before": served,
    }


result = {}
for case in cases:
    client = anthropic.Anthropic(base_url=base_url, api_key=case["key"], max_retries=0)
    served = 0
    out = None
    for _ in range(case.get("tries", 1)):
        try:
            if case.get("call") == "count_tokens":
                client.messages.count_tokens(model=case["model"], messages=messages)
            else:
                client.messages.create(model=case["model"], max_tokens=16, messages=messages)
            served += 1
        except anthropic.APIStatusError as e:
            out = status_error(e, served)
            break
    result[case["name"]] = out if out is not None else {"served": served}
print(json.dumps(result))
