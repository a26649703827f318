#!/usr/bin/env python3
"""The official `openai` Python client against `r2 serve`.

    python tools/openai_client_check.py BASE_URL        (e.g. http://127.0.0.1:8080/v1)

Needs `pip install openai` and an `r2 serve` whose provider answers as the loopback provider of
crates/r2-cli/tests/gateway does: `Answer from <provider model id>.` with usage 12 + 5 tokens,
and a call of the requested tool (each required parameter set to "<parameter> from <model id>")
when the request has `tools`. `crates/r2-cli/tests/openai_client.rs` runs it that way (CI sets
$R2_TEST_PYTHON to a Python with `openai`).

Checks, with the client's own parsing: `model: "r2-router"` plain and streamed (the chunks make
the same text, every chunk names the routed pool model, usage arrives in the last chunk), a pool
model named directly (forwarded unrouted), an unknown model (404 `model_not_found` as the client's
NotFoundError), tools with a named `tool_choice` plain and streamed (the tool call parsed, its
arguments assembled from the streamed pieces), and the follow-up turn carrying the tool result.
Prints `SENT <json>` with the tools and tool choice it sent (the Rust test compares them with what
the provider received) and `OK` at the end; any failed check raises.
"""

import json
import sys

import openai

USER = [{"role": "user", "content": "What is the weather like in Paris today?"}]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The local time in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
]

TOOL_CHOICE = {"type": "function", "function": {"name": "get_weather"}}


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def main():
    base_url = sys.argv[1]
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)

    models = {m.id: m.to_dict() for m in client.models.list()}
    check("r2-router" in models, f"no r2-router in {list(models)}")
    provider_id = {name: m["openrouter_id"] for name, m in models.items() if "openrouter_id" in m}

    # Plain, routed.
    raw = client.chat.completions.with_raw_response.create(model="r2-router", messages=USER)
    plain = raw.parse()
    routed = plain.model
    check(routed in provider_id, f"answer names {routed!r}, not a pool model")
    check(raw.headers.get("x-r2-model") == routed, f"x-r2-model {raw.headers.get('x-r2-model')!r}")
    check(raw.headers.get("x-r2-budget"), "no x-r2-budget header")
    text = plain.choices[0].message.content
    check(text == f"Answer from {provider_id[routed]}.", f"content {text!r}")
    check(plain.choices[0].finish_reason == "stop", plain.choices[0].finish_reason)
    check(plain.usage.prompt_tokens == 12 and plain.usage.completion_tokens == 5, plain.usage)

    # Streamed, routed: the same text in pieces.
    pieces, chunk_models, usage, finish = [], set(), None, None
    stream = client.chat.completions.create(
        model="r2-router", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        chunk_models.add(chunk.model)
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    check(len(pieces) > 1, f"the stream came in {len(pieces)} piece(s)")
    check("".join(pieces) == text, f"streamed {''.join(pieces)!r}, plain {text!r}")
    check(chunk_models == {routed}, f"chunks name {chunk_models}, routed {routed!r}")
    check(finish == "stop", f"finish_reason {finish!r}")
    check(usage is not None and usage.total_tokens == 17, f"usage {usage}")

    # A pool model named directly: forwarded unrouted, the answer as the provider sent it.
    other = next(name for name, m in models.items() if m.get("available") and name != routed)
    raw = client.chat.completions.with_raw_response.create(model=other, messages=USER)
    direct = raw.parse()
    check(raw.headers.get("x-r2-model") == other, f"x-r2-model {raw.headers.get('x-r2-model')!r}")
    check(direct.model == provider_id[other], f"unrouted answer names {direct.model!r}")
    content = direct.choices[0].message.content
    check(content == f"Answer from {provider_id[other]}.", f"content {content!r}")

    # An unknown model: the client's NotFoundError with r2's error code.
    try:
        client.chat.completions.create(model="no-such-model", messages=USER)
        raise AssertionError("an unknown model was answered")
    except openai.NotFoundError as e:
        check(e.code == "model_not_found", f"error code {e.code!r}")

    # Tools, plain: the call comes back parsed.
    print("SENT " + json.dumps({"tools": TOOLS, "tool_choice": TOOL_CHOICE}), flush=True)
    called = client.chat.completions.create(
        model="r2-router", messages=USER, tools=TOOLS, tool_choice=TOOL_CHOICE
    )
    choice = called.choices[0]
    check(choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason!r}")
    check(called.model == routed, f"tool call routed to {called.model!r}, not {routed!r}")
    (call,) = choice.message.tool_calls
    expected = {"city": f"city from {provider_id[routed]}", "unit": f"unit from {provider_id[routed]}"}
    check(call.type == "function" and call.function.name == "get_weather", call)
    check(json.loads(call.function.arguments) == expected, call.function.arguments)

    # Tools, streamed: the arguments assembled from their pieces.
    name, arguments, call_id, finish, deltas = None, "", None, None, 0
    stream = client.chat.completions.create(
        model="r2-router", messages=USER, tools=TOOLS, tool_choice=TOOL_CHOICE, stream=True
    )
    for chunk in stream:
        for c in chunk.choices:
            for delta in c.delta.tool_calls or []:
                deltas += 1
                check(delta.index == 0, delta)
                call_id = delta.id or call_id
                if delta.function and delta.function.name:
                    name = delta.function.name
                if delta.function and delta.function.arguments:
                    arguments += delta.function.arguments
            if c.finish_reason:
                finish = c.finish_reason
    check(deltas > 2, f"the tool call came in {deltas} piece(s)")
    check(name == "get_weather" and call_id == call.id, (name, call_id))
    check(json.loads(arguments) == expected, arguments)
    check(finish == "tool_calls", f"finish_reason {finish!r}")

    # The follow-up turn with the tool's result.
    follow_up = USER + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"celsius": 21})},
    ]
    answer = client.chat.completions.create(
        model="r2-router", messages=follow_up, tools=TOOLS, tool_choice="none"
    )
    check(answer.model == routed, f"the follow-up went to {answer.model!r}, not {routed!r}")
    check(answer.choices[0].message.content == text, answer.choices[0].message.content)

    print(f"OK: openai {openai.__version__}, routed to {routed}, unrouted {other}")


if __name__ == "__main__":
    main()
