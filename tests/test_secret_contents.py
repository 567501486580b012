"""What the secret may hold, and what the relay says when it holds something else
(handler/credentials.py, read straight from a value): the key and the client tokens never show in
the credentials' repr; a reason names a field only when it looks like a field's name; the
organization and the project must be strings; a `CLIENT_TOKENS` entry with nothing before its
last colon is a token, not a plan; credentials once read cannot be changed."""

from __future__ import annotations

import dataclasses
import json

import pytest

from handler.credentials import CredentialsUnavailable, parse_secret, split_token_plan

KEY = "sk-proj-contents-0123456789abcdefghijklmnop"
TOKEN = "client-token-contents-0123456789abcdef"


def refusal(value: dict) -> str:
    with pytest.raises(CredentialsUnavailable) as refused:
        parse_secret(json.dumps(value))
    return refused.value.reason


def test_the_key_and_the_client_tokens_never_show_in_the_credentials_repr():
    credentials = parse_secret(json.dumps({"api_key": KEY, "client_tokens": [TOKEN]}))
    shown = repr(credentials)
    assert KEY not in shown and TOKEN not in shown
    assert credentials.api_key == KEY and credentials.client_tokens == (TOKEN.encode(),)


def test_a_reason_names_an_unknown_field_only_when_it_looks_like_a_field_name():
    longest = "f" * 40  # an identifier of up to 40 characters is a field name, shown as such
    assert f"`{longest}`" in refusal({"api_key": KEY, longest: 1})
    too_long = "f" * 41
    reason = refusal({"api_key": KEY, too_long: 1})
    assert too_long not in reason and "`<unprintable>`" in reason
    for odd in ("sk-proj-pasted-as-a-name", "two words"):
        reason = refusal({"api_key": KEY, odd: 1})
        assert odd not in reason and "`<unprintable>`" in reason


@pytest.mark.parametrize("name", ["organization", "project"])
def test_the_organization_and_the_project_must_be_strings(name):
    assert refusal({"api_key": KEY, name: 12345}) == f"secret `{name}` is not a string"
    assert getattr(parse_secret(json.dumps({"api_key": KEY, name: "x-1"})), name) == "x-1"
    assert getattr(parse_secret(json.dumps({"api_key": KEY, name: ""})), name) is None


def test_a_client_tokens_entry_with_nothing_before_its_last_colon_is_a_token():
    assert split_token_plan(":agents") == (":agents", None)
    assert split_token_plan("token:agents") == ("token", "agents")


def test_credentials_once_read_cannot_be_changed():
    """One value serves every request at once: nothing may change it under them."""
    credentials = parse_secret(json.dumps({"api_key": KEY, "client_tokens": [TOKEN]}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        credentials.api_key = "sk-proj-someone-elses-key"  # type: ignore[misc]
    assert credentials.api_key == KEY
