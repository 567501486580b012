"""What a SnapStart restore does with the secret (handler/credentials.py's `older_than_ttl`,
through init.py's restore hook), against the runtime-API emulator: a value older than
SECRET_TTL_S by the wall clock is read again by the restore itself, before the first event is
taken; after an init that could not read the secret there is nothing to re-read, the restore goes
through, and the first request reads it."""

from __future__ import annotations

import time

import pytest

from tests.aws_fakes import FakeAws, runtime_env_reading
from tests.conftest import TEST_KEY
from tests.test_runtime import CHAT_EVENT

SECRET_ID = "relay/openai-restored"


@pytest.fixture
def fake_aws():
    fake = FakeAws(secrets={SECRET_ID: TEST_KEY}).start()
    yield fake
    fake.stop()


def on_fake_aws(fake: FakeAws, **env: str) -> dict[str, str]:
    return runtime_env_reading(fake, SECRET_ID, AWS_LAMBDA_INITIALIZATION_TYPE="snap-start", **env)


def test_a_secret_older_than_its_ttl_is_read_again_by_the_restore_itself(
    start_runtime, runtime_api, fake_aws
):
    start_runtime(**on_fake_aws(fake_aws, SECRET_TTL_S="1"))
    assert runtime_api.emulator.restore_waiting.wait(30)
    assert fake_aws.secret_reads() == 1  # init's read
    time.sleep(1.2)  # the snapshot lies on the shelf longer than the secret's TTL
    runtime_api.restore()
    assert runtime_api.emulator.polled.wait(30)  # the restore's work is done: events come next
    assert fake_aws.secret_reads() == 2
    assert not runtime_api.emulator.restore_errors


def test_a_restore_after_an_init_that_could_not_read_the_secret_leaves_it_to_the_first_request(
    start_runtime, runtime_api, fake_aws, upstream
):
    fake_aws.fail_always = "ResourceNotFoundException"
    start_runtime(**on_fake_aws(fake_aws))
    assert runtime_api.emulator.restore_waiting.wait(30)  # init is over: the secret was absent
    fake_aws.fail_always = None
    read_at_init = fake_aws.secret_reads()
    runtime_api.restore()
    assert runtime_api.emulator.polled.wait(30)
    assert fake_aws.secret_reads() == read_at_init  # nothing read, so nothing to read again
    invocation = runtime_api.invoke(CHAT_EVENT).wait()
    assert invocation.prelude_and_body()[0]["statusCode"] == 200
    assert not runtime_api.emulator.restore_errors
    chats = [r for r in upstream.requests if r.method == "POST"]
    assert chats[0].headers["authorization"] == f"Bearer {TEST_KEY}"
