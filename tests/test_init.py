"""The runtime's init phase and SnapStart's restore handshake, against the runtime-API emulator,
moto's Secrets Manager and the fake upstream: what init prepares, what it tolerates, and what a
restore renews."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from handler.app import create_app
from handler.init import after_restore
from handler.settings import Settings
from tests.conftest import TEST_KEY
from tests.test_runtime import CHAT_EVENT

ROTATED_KEY = "sk-test-rotated-key-9876543210zyxwvu"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def start_with_secret(start_runtime, moto_endpoint):
    """A runtime that reads its key from Secrets Manager (moto), as on Lambda."""

    def start(secret_id: str, **env: str):
        aws = {
            "AWS_ENDPOINT_URL": moto_endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        return start_runtime(OPENAI_API_KEY="", OPENAI_SECRET_ID=secret_id, **{**aws, **env})

    return start


def _status(invocation) -> tuple[int, bytes]:
    prelude, body = invocation.prelude_and_body()
    return prelude["statusCode"], body


def _chats(upstream) -> list:
    return [r for r in upstream.requests if r.method == "POST"]


def test_init_reads_the_secret_so_the_first_request_does_not(
    start_with_secret, runtime_api, secrets, upstream
):
    arn = secrets.create_secret(Name="relay-test/init-read", SecretString=TEST_KEY)["ARN"]
    runtime = start_with_secret(arn)
    assert runtime_api.emulator.polled.wait(30)
    # Read during init: a rotation after init is not seen by the first request (TTL 300 s).
    secrets.put_secret_value(SecretId=arn, SecretString=ROTATED_KEY)
    assert _status(runtime.invoke(CHAT_EVENT))[0] == 200
    assert _chats(upstream)[0].headers["authorization"] == f"Bearer {TEST_KEY}"


def test_secret_unreadable_during_init_is_read_by_the_first_request(
    start_with_secret, runtime_api, secrets, upstream
):
    runtime = start_with_secret("relay-test/late-secret")
    assert runtime_api.emulator.polled.wait(30)  # init is over, and did not fail
    assert not runtime_api.emulator.init_errors
    secrets.create_secret(Name="relay-test/late-secret", SecretString=TEST_KEY)
    assert _status(runtime.invoke(CHAT_EVENT))[0] == 200
    assert _chats(upstream)[0].headers["authorization"] == f"Bearer {TEST_KEY}"
    assert "reading the secret during init failed" in runtime.stop()


def test_secret_unreadable_during_init_and_after_is_503_remembered_briefly_then_recovers(
    start_with_secret, runtime_api, secrets
):
    runtime = start_with_secret("relay-test/missing-secret", SECRET_RETRY_AFTER_S="1")
    status, body = _status(runtime.invoke(CHAT_EVENT))
    assert status == 503
    assert json.loads(body)["error"]["type"] == "credentials_unavailable"
    secrets.create_secret(Name="relay-test/missing-secret", SecretString=TEST_KEY)
    # The failure is remembered for SECRET_RETRY_AFTER_S: no read, the same 503.
    assert _status(runtime.invoke(CHAT_EVENT))[0] == 503
    time.sleep(1.1)
    assert _status(runtime.invoke(CHAT_EVENT))[0] == 200


def test_snapstart_runtime_takes_no_event_before_the_restore(start_runtime, runtime_api):
    runtime = start_runtime(AWS_LAMBDA_INITIALIZATION_TYPE="snap-start")
    assert runtime_api.emulator.restore_waiting.wait(30)
    invocation = runtime_api.invoke(CHAT_EVENT)
    time.sleep(0.5)
    assert not runtime_api.emulator.polled.is_set() and not invocation.done.is_set()
    runtime_api.restore()
    assert _status(invocation.wait())[0] == 200
    assert not runtime_api.emulator.restore_errors
    assert runtime.process.poll() is None


def test_after_restore_the_pool_is_new_and_a_stale_secret_is_read_again(
    start_with_secret, runtime_api, secrets, upstream
):
    arn = secrets.create_secret(Name="relay-test/restore-stale", SecretString=TEST_KEY)["ARN"]
    start_with_secret(arn, AWS_LAMBDA_INITIALIZATION_TYPE="snap-start", SECRET_TTL_S="1")
    assert runtime_api.emulator.restore_waiting.wait(30)
    secrets.put_secret_value(SecretId=arn, SecretString=ROTATED_KEY)
    time.sleep(1.2)  # the snapshot "lies on the shelf" longer than the secret's TTL
    runtime_api.restore()
    assert _status(runtime_api.invoke(CHAT_EVENT).wait())[0] == 200
    at_init, after = (r for r in upstream.requests if r.method == "GET")
    chat = _chats(upstream)[0]
    assert chat.headers["authorization"] == f"Bearer {ROTATED_KEY}"
    # The connection init opened was dropped; the request rode the one opened after restore.
    assert at_init.peer != after.peer and chat.peer == after.peer


def test_after_restore_a_fresh_secret_is_kept(start_with_secret, runtime_api, secrets, upstream):
    arn = secrets.create_secret(Name="relay-test/restore-fresh", SecretString=TEST_KEY)["ARN"]
    start_with_secret(arn, AWS_LAMBDA_INITIALIZATION_TYPE="snap-start")
    assert runtime_api.emulator.restore_waiting.wait(30)
    secrets.put_secret_value(SecretId=arn, SecretString=ROTATED_KEY)
    runtime_api.restore()
    assert _status(runtime_api.invoke(CHAT_EVENT).wait())[0] == 200
    assert _chats(upstream)[0].headers["authorization"] == f"Bearer {TEST_KEY}"


def test_after_restore_randomness_is_reseeded(upstream):
    app = create_app(
        Settings(_env_file=None, openai_api_key=TEST_KEY, openai_base_url=upstream.base_url)
    )
    random.seed(1234)
    from_the_snapshot = [random.random() for _ in range(4)]
    random.seed(1234)  # every environment restored from one snapshot starts from this state

    async def restore_then_shut_down() -> None:
        await after_restore(app)
        await app.state.relay.upstream.close()

    asyncio.run(restore_then_shut_down())
    assert [random.random() for _ in range(4)] != from_the_snapshot


def test_without_keys_in_the_environment_the_sdk_reads_the_secret(
    start_with_secret, runtime_api, secrets, upstream, tmp_path
):
    """Lambda has keys or container credentials in the environment; elsewhere the SDKs' chain
    (here a shared credentials file, read by awscrt) signs the read."""
    arn = secrets.create_secret(Name="relay-test/sdk-read", SecretString=TEST_KEY)["ARN"]
    profile = tmp_path / "credentials"
    profile.write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    runtime = start_with_secret(
        arn,
        AWS_ACCESS_KEY_ID="",
        AWS_SECRET_ACCESS_KEY="",
        AWS_SHARED_CREDENTIALS_FILE=str(profile),
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
    )
    assert _status(runtime.invoke(CHAT_EVENT))[0] == 200
    assert _chats(upstream)[0].headers["authorization"] == f"Bearer {TEST_KEY}"


def test_building_the_app_imports_no_pydantic_v1():
    """No route declares a parameter FastAPI turns into a pydantic field: the first such field
    imports `pydantic.v1` (FastAPI checks each annotation against it), tens of ms of init."""
    check = "import sys, handler.app; print('pydantic.v1' in sys.modules)"
    env = {**os.environ, "OPENAI_API_KEY": TEST_KEY}
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "False"


def test_fastapis_openapi_models_are_built_on_first_use_and_the_relays_own_at_import():
    """FastAPI's OpenAPI models (tens of ms of init) are left for the first /openapi.json, the
    three its module rebuilds itself included; the relay's bodies and settings, used by every
    (throttled) request, are built at import, and pydantic's default and `model_rebuild` are
    back to building at class creation once FastAPI is imported."""
    check = (
        "import handler.app, handler.models, handler.settings, fastapi.openapi.models as m\n"
        "from pydantic import BaseModel\n"
        "from pydantic._internal._config import config_defaults\n"
        "class Later(BaseModel):\n"
        "    x: int\n"
        "class Ahead(BaseModel):\n"
        "    later: 'Behind'\n"
        "class Behind(BaseModel):\n"
        "    x: int\n"
        "Ahead.model_rebuild()\n"
        "deferred = (m.OpenAPI, m.Info, m.Schema, m.Operation, m.Encoding)\n"
        "print(*(model.__pydantic_complete__ for model in deferred),"
        " handler.models.ChatRequest.__pydantic_complete__,"
        " handler.models.ChatCompletionsRequest.__pydantic_complete__,"
        " handler.settings.Settings.__pydantic_complete__,"
        " Later.__pydantic_complete__, Ahead.__pydantic_complete__,"
        " config_defaults['defer_build'])\n"
        "document = handler.app.app.openapi()\n"
        "schema = m.Schema.model_validate({'properties': {'a': {'type': 'string'}}})\n"
        "print(m.OpenAPI.__pydantic_complete__, m.Schema.__pydantic_complete__,"
        " schema.properties['a'].type, sorted(document['paths'])[:2])\n"
    )
    env = {**os.environ, "OPENAI_API_KEY": TEST_KEY}
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    at_import, after_document = result.stdout.splitlines()[-2:]
    assert at_import == "False False False False False True True True True True False"
    assert after_document == "True True string ['/api/chat', '/chat']"
