"""The real `google-genai` Python SDK in Vertex AI mode pointed at Tollgate's Vertex-native
surface: generate, stream, count tokens and an error, on a Vertex route (the mock's Vertex
surface behind Tollgate) and on an OpenAI-compatible route (the mock's OpenAI surface)."""

import google.oauth2.credentials
import pytest
from google import genai
from google.genai import errors, types


@pytest.fixture()
def collection_client(gateway):
    """The SDK with a collection-scoped base URL: project-less paths, no Google credentials."""
    base = gateway["base_url"]  # http://127.0.0.1:PORT/v1
    return genai.Client(
        vertexai=True,
        http_options=types.HttpOptions(
            base_url=base,
            base_url_resource_scope=types.ResourceScope.COLLECTION,
            headers={"Authorization": f"Bearer {gateway['key']}"},
        ),
    )


@pytest.fixture()
def project_client(gateway):
    """The SDK with a project and location: full /v1/projects/... paths, the gateway key as
    the OAuth token it sends."""
    root = gateway["base_url"].removesuffix("/v1") + "/"
    return genai.Client(
        vertexai=True,
        project="sdk-project",
        location="us-central1",
        credentials=google.oauth2.credentials.Credentials(token=gateway["key"]),
        http_options=types.HttpOptions(base_url=root, api_version="v1"),
    )


@pytest.mark.parametrize("model", ["gemini", "m"])
def test_generate(collection_client, model):
    answer = collection_client.models.generate_content(
        model=model,
        contents="Say hello",
        config=types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=40),
    )
    assert answer.text.strip()
    assert answer.candidates[0].finish_reason == types.FinishReason.STOP
    usage = answer.usage_metadata
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count


@pytest.mark.parametrize("model", ["gemini", "m"])
def test_stream(project_client, model):
    chunks = list(project_client.models.generate_content_stream(model=model, contents="Tell me more"))
    text = "".join(chunk.text or "" for chunk in chunks)
    assert text.strip()
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.total_token_count > 0


def test_count_tokens(project_client):
    counted = project_client.models.count_tokens(model="gemini", contents="How many tokens is this?")
    assert counted.total_tokens > 0


def test_an_error_is_the_sdks_own(collection_client):
    with pytest.raises(errors.ClientError) as caught:
        collection_client.models.generate_content(model="no-such-model", contents="hi")
    assert caught.value.code == 404
    assert caught.value.status == "NOT_FOUND"
