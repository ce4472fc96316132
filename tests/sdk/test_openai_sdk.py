"""The real `openai` Python SDK against Tollgate: non-stream, stream, usage, errors."""

import openai
import pytest


@pytest.fixture()
def client(gateway):
    return openai.OpenAI(base_url=gateway["base_url"], api_key=gateway["key"], max_retries=0, timeout=20)


MESSAGES = [{"role": "user", "content": "Say hello"}]


def test_non_stream_chat(client):
    answer = client.chat.completions.create(model="m", messages=MESSAGES)
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.content.strip()
    assert answer.choices[0].finish_reason == "stop"
    usage = answer.usage
    assert usage.completion_tokens == 6
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_stream_without_usage_gets_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert all(chunk.usage is None for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 6
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_with_include_usage_ends_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.completion_tokens == 6
    assert last.usage.total_tokens == last.usage.prompt_tokens + 6


def test_completions_embeddings_and_models(client):
    completion = client.completions.create(model="m", prompt="Once upon")
    assert completion.choices[0].text.strip()
    embedding = client.embeddings.create(model="m", input=["a", "b"])
    assert len(embedding.data) == 2
    assert sorted(model.id for model in client.models.list()) == [
        "broken",
        "demo",
        "gemini",
        "gemini-quota",
        "gemini-tools",
        "m",
    ]


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert caught.value.code == "model_not_found"


def test_bad_key_is_an_authentication_error(gateway):
    client = openai.OpenAI(base_url=gateway["base_url"], api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.code == "invalid_api_key"


def test_upstream_dying_mid_stream_raises_instead_of_ending_quietly(client):
    stream = client.chat.completions.create(model="broken", messages=MESSAGES, stream=True)
    seen = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            seen.append(chunk)
    assert len(seen) == 2, "the events before the failure arrive"
    assert "upstream" in str(caught.value.message)
