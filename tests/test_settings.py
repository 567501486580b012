"""`Settings` is the app's one reader of the environment: what the app decides from Lambda's own
variables it learns from `Settings` fields, so a test can state them without touching os.environ."""

from __future__ import annotations

import httpx
import pytest

from handler.app import create_app
from handler.settings import Settings
from tests.conftest import TEST_KEY
from tests.helpers import asgi_request

ORIGIN = "https://chat.example"


def _preflight(settings: Settings) -> httpx.Response:
    headers = {"origin": ORIGIN, "access-control-request-method": "POST"}
    return asgi_request(create_app(settings), "OPTIONS", "/chat", headers=headers)


@pytest.mark.parametrize("function_name", [None, "relay"])
def test_cors_origins_apply_wherever_they_are_set(function_name):
    """Off Lambda, and on Lambda behind the REST API (the template gives CORS_ORIGINS to that
    door only: a function URL answers CORS from its own settings)."""
    settings = Settings(
        _env_file=None,
        openai_api_key=TEST_KEY,
        cors_origins=ORIGIN,
        aws_lambda_function_name=function_name,
    )
    assert _preflight(settings).headers.get("access-control-allow-origin") == ORIGIN


def test_without_cors_origins_the_relay_sends_no_cors_headers():
    settings = Settings(_env_file=None, openai_api_key=TEST_KEY, aws_lambda_function_name="relay")
    assert "access-control-allow-origin" not in _preflight(settings).headers
