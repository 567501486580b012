"""The relay's failures and their one mapping to HTTP: status, error type, body shape.

Routes raise `RelayError`; the exception-handler table in app.py renders it, and the streaming
responses reuse `error_payload` for the terminal error frame.
"""

from __future__ import annotations

import orjson

# Error types whose cause is the request itself: on /v1/* they take OpenAI's
# `invalid_request_error` type, with our type as the `code`.
REQUEST_ERROR_TYPES = frozenset(
    {"invalid_json", "body_too_large", "unsupported_media_type", "invalid_request"}
)


class RelayError(Exception):
    """A failure with a contract status and type; `message` is safe to show to the caller."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        outcome: str = "rejected",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.param = param
        self.headers = headers or {}
        self.outcome = outcome


def invalid_request(message: str, param: str | None = None) -> RelayError:
    return RelayError(422, "invalid_request", message, param=param)


def upstream_timeout(seconds: float) -> RelayError:
    return RelayError(
        504,
        "upstream_timeout",
        f"the model sent no token within {seconds:g} s",
        outcome="upstream_timeout",
    )


def upstream_error(message: str) -> RelayError:
    return RelayError(502, "upstream_error", message, outcome="upstream_error")


def error_payload(error: RelayError, openai_style: bool) -> dict:
    """The JSON error object: ours on /chat, OpenAI's shape on /v1/*."""
    if not openai_style:
        return {"error": {"type": error.type, "message": error.message}}
    if error.type in REQUEST_ERROR_TYPES:
        kind, code = "invalid_request_error", error.type
    else:
        kind, code = error.type, None
    return {"error": {"message": error.message, "type": kind, "param": error.param, "code": code}}


def error_json(error: RelayError, openai_style: bool) -> bytes:
    return orjson.dumps(error_payload(error, openai_style))
