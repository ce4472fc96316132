"""Prompt templates through the real SDKs: the `openai` client naming a prompt in the body
(`extra_body`) or in headers (`extra_headers`), streaming, a variable error as the SDK's own
exception, and the `google-genai` client naming one in headers on the Vertex-native surface.
The gateway serves the repository's `config/prompts` (see conftest), `production` = 1."""

import json

import openai
import pytest
from google import genai
from google.genai import errors, types

VARIABLES = {"product": "Tollgate", "question": "How do I get a refund?"}


@pytest.fixture()
def client(gateway):
    return openai.OpenAI(base_url=gateway["base_url"], api_key=gateway["key"], max_retries=0, timeout=20)


@pytest.fixture()
def genai_client(gateway):
    return genai.Client(
        vertexai=True,
        http_options=types.HttpOptions(
            base_url=gateway["base_url"],
            base_url_resource_scope=types.ResourceScope.COLLECTION,
            headers={"Authorization": f"Bearer {gateway['key']}"},
        ),
    )


def prompt_headers(reference, variables):
    """The header form: `json.dumps` escapes non-ASCII as \\u, as header values need."""
    return {"x-tollgate-prompt": reference, "x-tollgate-prompt-variables": json.dumps(variables)}


def test_body_form_renders_the_production_version(client):
    raw = client.chat.completions.with_raw_response.create(
        model="demo",
        messages=[],
        extra_body={"prompt": {"id": "support-answer", "variables": VARIABLES}},
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["x-tollgate-prompt-version"] == "support-answer@1"
    assert len(raw.headers["x-tollgate-prompt-hash"]) == 12
    answer = raw.parse()
    assert answer.choices[0].message.content.strip()
    # The rendered system and user messages went upstream: the mock counts a quarter token
    # per body byte, and a bare request with the same question is much smaller.
    bare = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": VARIABLES["question"]}]
    )
    assert answer.usage.prompt_tokens > bare.usage.prompt_tokens + 20


def test_body_form_names_a_version(client):
    raw = client.chat.completions.with_raw_response.create(
        model="demo",
        messages=[{"role": "user", "content": "And for annual plans?"}],
        extra_body={"prompt": {"id": "support-answer", "version": "2", "variables": {**VARIABLES, "plan": "Pro"}}},
    )
    assert raw.headers["x-tollgate-prompt-version"] == "support-answer@2"
    assert raw.parse().choices[0].finish_reason == "stop"


def test_header_form(client):
    raw = client.chat.completions.with_raw_response.create(
        model="demo",
        messages=[],
        extra_headers=prompt_headers("support-answer@1", {**VARIABLES, "language": "Français"}),
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["x-tollgate-prompt-version"] == "support-answer@1"
    assert raw.parse().choices[0].message.content.strip()

    by_label = client.chat.completions.with_raw_response.create(
        model="demo", messages=[], extra_headers=prompt_headers("support-answer:production", VARIABLES)
    )
    assert by_label.headers["x-tollgate-prompt-version"] == "support-answer@1"


def test_missing_required_variable_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="demo",
            messages=[],
            extra_body={"prompt": {"id": "support-answer", "variables": {"product": "Tollgate"}}},
        )
    assert caught.value.code == "invalid_prompt_variable"
    assert caught.value.param == "prompt.variables.question"
    assert caught.value.body["code"] == "invalid_prompt_variable"
    assert caught.value.body["param"] == "prompt.variables.question"


def test_unknown_prompt_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="demo", messages=[], extra_body={"prompt": {"id": "no-such-prompt"}}
        )
    assert caught.value.code == "prompt_not_found"


def test_stream_with_a_prompt(client):
    with client.chat.completions.with_streaming_response.create(
        model="demo",
        messages=[],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"prompt": {"id": "support-answer", "variables": VARIABLES}},
    ) as response:
        assert response.headers["x-tollgate-prompt-version"] == "support-answer@1"
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 6
    assert chunks[-1].usage.completion_tokens == 6


def test_prompts_are_listed(client):
    listing = client.get("/prompts", cast_to=object)
    (prompt,) = [p for p in listing["data"] if p["id"] == "support-answer"]
    assert prompt["labels"] == {"production": "1"}
    assert [v["version"] for v in prompt["versions"]] == ["1", "2"]
    assert prompt["versions"][0]["variables"]["question"]["required"] is True


def test_genai_header_form(genai_client):
    answer = genai_client.models.generate_content(
        model="demo",
        contents="And for annual plans?",
        config=types.GenerateContentConfig(
            http_options=types.HttpOptions(headers=prompt_headers("support-answer@2", {**VARIABLES, "plan": "Pro"}))
        ),
    )
    assert answer.text.strip()
    assert answer.candidates[0].finish_reason == types.FinishReason.STOP
    assert answer.sdk_http_response.headers["x-tollgate-prompt-version"] == "support-answer@2"


def test_genai_unknown_prompt_is_the_sdks_404(genai_client):
    with pytest.raises(errors.ClientError) as caught:
        genai_client.models.generate_content(
            model="demo",
            contents="hi",
            config=types.GenerateContentConfig(
                http_options=types.HttpOptions(headers=prompt_headers("no-such-prompt", VARIABLES))
            ),
        )
    assert caught.value.code == 404
    assert caught.value.status == "NOT_FOUND"
