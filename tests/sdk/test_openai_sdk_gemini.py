"""The real `openai` Python SDK reaching Gemini through Tollgate (the mock's Vertex AI surface):
text, streams with usage, tool calls, and a Google quota error as the SDK's own error type."""

import json

import openai
import pytest


@pytest.fixture()
def client(gateway):
    return openai.OpenAI(base_url=gateway["base_url"], api_key=gateway["key"], max_retries=0, timeout=20)


MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Say hello"},
]

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_text(client):
    answer = client.chat.completions.create(model="gemini", messages=MESSAGES, max_tokens=40)
    assert answer.object == "chat.completion"
    assert answer.model.startswith("gemini-2.5-flash")
    assert answer.choices[0].message.content.strip()
    assert answer.choices[0].finish_reason == "stop"
    usage = answer.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_stream_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model="gemini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_tool_calls_unary_and_streamed(client):
    answer = client.chat.completions.create(
        model="gemini-tools", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER]
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "weather"
    assert isinstance(json.loads(call.function.arguments), dict)

    # The answer to that call goes back through the gateway as a functionResponse.
    followup = client.chat.completions.create(
        model="gemini",
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
        ],
        tools=[WEATHER],
    )
    assert followup.choices[0].message.content.strip()

    calls = {}
    finish = None
    for chunk in client.chat.completions.create(
        model="gemini-tools",
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[WEATHER],
        stream=True,
    ):
        for delta in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(delta.index, {"id": delta.id, "name": "", "arguments": ""})
            entry["name"] += delta.function.name or ""
            entry["arguments"] += delta.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [c["name"] for c in calls.values()] == ["weather"]
    assert calls[0]["id"]
    assert isinstance(json.loads(calls[0]["arguments"]), dict)


def test_google_quota_error_is_a_rate_limit_error(client):
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gemini-quota", messages=MESSAGES)
    assert caught.value.code == "resource_exhausted"
    assert caught.value.response.headers["retry-after"] == "2"
