"""The secret is re-read after an upstream 401 at most once per 5 s (docs/api.md), to the end
of those 5 s: a key still refused four and a half seconds after the last re-read is not read
again. Against the fake Secrets Manager on loopback (tests/aws_fakes.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from handler.credentials import CredentialStore
from handler.settings import Settings
from tests.aws_fakes import FakeAws, secrets_manager_holding
from tests.conftest import TEST_KEY
from tests.helpers import run_coroutine

SECRET_ID = "relay/openai-refresh-interval"
ROTATED_KEY = "sk-test-rotated-late-0123456789abcdef"
INTERVAL_S = 5.0  # the contract's (docs/api.md)
LATE_S = 4.5  # well past any shorter interval, still within the contract's


fake_aws = secrets_manager_holding(SECRET_ID)


async def refused_again_late(fake: FakeAws) -> tuple[str, int, float]:
    """A 401 re-reads the secret (the same key still); the key is then rotated and refused
    again LATE_S later. Returns the key that second 401 gets, the reads it made, and the most
    time that can have passed between the first re-read and the second 401's look at it."""
    credentials = CredentialStore(
        Settings(_env_file=None, openai_api_key=None, openai_secret_id=SECRET_ID)
    )
    fake.secrets[SECRET_ID] = TEST_KEY
    rejected = await credentials.aget()
    before_first = time.monotonic()
    first = await credentials.refreshed(rejected)  # re-read: the same key
    fake.secrets[SECRET_ID] = ROTATED_KEY
    await asyncio.sleep(LATE_S)
    before = fake.secret_reads()
    late = await credentials.refreshed(first)
    return late.api_key, fake.secret_reads() - before, time.monotonic() - before_first


def test_a_key_still_refused_within_the_refresh_interval_is_not_read_again_even_late_in_it(
    fake_aws,
):
    """The sleep puts the second 401 at least LATE_S after the re-read; it is within the
    interval only if the event loop was not held up by more than the rest of it, which a
    loaded machine can do. Such a try is not judged (either answer would be right) and the
    store is tried again; the test fails if no try could be judged."""
    for _ in range(3):
        key, late_reads, most_elapsed = run_coroutine(refused_again_late(fake_aws))
        if most_elapsed < INTERVAL_S:
            assert (key, late_reads) == (TEST_KEY, 0)
            return
    pytest.fail(f"no try placed the second 401 within {INTERVAL_S} s of the re-read")
