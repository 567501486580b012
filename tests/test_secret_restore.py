"""A SnapStart restore after an init that could not read the secret (handler/credentials.py's
`older_than_ttl`, through init.py's restore hook), against the runtime-API emulator and moto:
there is nothing to re-read at the restore, which goes through, and the first request reads the
secret."""

from __future__ import annotations

from tests.conftest import TEST_KEY
from tests.test_runtime import CHAT_EVENT


def test_a_restore_after_an_init_that_could_not_read_the_secret_leaves_it_to_the_first_request(
    start_runtime, runtime_api, secrets, moto_endpoint, upstream
):
    name = "relay-test/unread-at-snapshot"
    start_runtime(
        OPENAI_API_KEY="",
        OPENAI_SECRET_ID=name,
        AWS_ENDPOINT_URL=moto_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_LAMBDA_INITIALIZATION_TYPE="snap-start",
    )
    assert runtime_api.emulator.restore_waiting.wait(30)  # init is over: the secret was absent
    secrets.create_secret(Name=name, SecretString=TEST_KEY)
    runtime_api.restore()
    invocation = runtime_api.invoke(CHAT_EVENT).wait()
    assert invocation.prelude_and_body()[0]["statusCode"] == 200
    assert not runtime_api.emulator.restore_errors
    chats = [r for r in upstream.requests if r.method == "POST"]
    assert chats[0].headers["authorization"] == f"Bearer {TEST_KEY}"
