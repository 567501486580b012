"""Lambda Managed Instances: with `AWS_LAMBDA_MAX_CONCURRENCY=N` one native runtime process
serves N invocations at once on one event loop, each with its own request id, trace id and
answer, through one upstream connection pool."""

from __future__ import annotations

import json
import os

from devtools.scripts import Script
from handler.settings import Settings
from tests.conftest import TEST_KEY
from tests.helpers import counting_proxy
from tests.runtime_process import ROOT

COMPLETIONS_EVENT = json.loads((ROOT / "events" / "completions.json").read_text())
TOKENS = [f"w{i} " for i in range(10)]
SLOTS = 64

DEFAULT_MODEL = Settings.model_fields["default_model"].default


def completions_event(model: str) -> dict:
    event = dict(COMPLETIONS_EVENT)
    messages = [{"role": "user", "content": f"which model are you, {model}?"}]
    event["body"] = json.dumps({"model": model, "stream": True, "messages": messages})
    return event


def trace_id(index: int) -> str:
    return f"Root=1-67891234-{index:024x};Parent=53995c3f42cd8ad8;Sampled=1"


def answer_of(invocation) -> tuple[set[str], str, bool]:
    """The models named in an OpenAI stream, its text, and whether it ended with [DONE]."""
    prelude, body = invocation.prelude_and_body()
    assert prelude["statusCode"] == 200
    assert prelude["headers"]["x-request-id"] == invocation.request_id
    models, text = set(), ""
    lines = [line for line in body.decode().split("\n\n") if line.startswith("data: ")]
    for line in lines[:-1]:
        chunk = json.loads(line.removeprefix("data: "))
        models.add(chunk["model"])
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
    return models, text, lines[-1] == "data: [DONE]"


def test_64_concurrent_invocations_in_one_process_each_exact_with_its_own_trace_id(
    start_runtime, upstream
):
    models = [f"model-{index:02d}" for index in range(SLOTS)]
    upstream.default = Script(tokens=TOKENS, delay_s=0.1)
    runtime = start_runtime(
        AWS_LAMBDA_MAX_CONCURRENCY=str(SLOTS),
        ALLOWED_MODELS=",".join(models),
        RELAY_RUNTIME_DEBUG="1",
    )
    peers_by_round = []
    for round_ in range(2):
        invocations = [
            runtime.api.invoke(completions_event(model), trace_id=trace_id(round_ * SLOTS + i))
            for i, model in enumerate(models)
        ]
        for invocation in invocations:
            invocation.wait(60)
        # Every event was taken before any answer had ended: all 64 were served at once.
        assert max(i.delivered_at for i in invocations) < min(i.chunks[-1][0] for i in invocations)
        for model, invocation in zip(models, invocations, strict=True):
            assert invocation.trailers == {}
            assert answer_of(invocation) == ({model}, "".join(TOKENS), True)
        chats = [r for r in upstream.requests if r.path != "/v1/models"]  # not init's warm-up
        round_requests = chats[round_ * SLOTS :]
        peers_by_round.append({request.peer for request in round_requests})

    # One pool for the process: the second round reused the first round's connections.
    assert len(peers_by_round[0]) <= SLOTS
    assert peers_by_round[1] <= peers_by_round[0]

    runtime.stop()
    logs = {line["request_id"]: line for line in runtime.request_logs()}
    assert len(logs) == 2 * SLOTS
    debug = [line for line in runtime.lines if "runtime-debug" in line]
    assert len(debug) == 2 * SLOTS
    for index, invocation in enumerate(invocations):
        line = logs[invocation.request_id]
        assert line["trace_id"] == invocation.trace_id == trace_id(SLOTS + index)
        assert (line["model"], line["outcome"]) == (models[index], "ok")
    # Never process-wide: with several invocations at once, _X_AMZN_TRACE_ID stays unset.
    assert all(" environ_trace=None " in line for line in debug)
    assert len({line.split(" trace=")[1].split(" ")[0] for line in debug}) == 2 * SLOTS


def test_one_slot_by_default(start_runtime, upstream):
    """Without AWS_LAMBDA_MAX_CONCURRENCY one invocation at a time, as on standard Lambda."""
    upstream.default = Script(tokens=TOKENS, delay_s=0.05)
    runtime = start_runtime()
    first, second = (runtime.api.invoke(completions_event(DEFAULT_MODEL)) for _ in range(2))
    first.wait(30), second.wait(30)
    assert second.delivered_at >= first.chunks[-1][0]


def test_concurrent_cold_invocations_read_the_secret_once(start_runtime, upstream, secrets):
    arn = secrets.create_secret(Name="relay-test/concurrent", SecretString=TEST_KEY)["ARN"]
    upstream.default = Script(tokens=TOKENS)
    with counting_proxy(os.environ["AWS_ENDPOINT_URL"]) as (endpoint, targets):
        runtime = start_runtime(
            AWS_LAMBDA_MAX_CONCURRENCY=str(SLOTS),
            OPENAI_API_KEY="",
            OPENAI_SECRET_ID=arn,
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
        )
        invocations = [runtime.api.invoke(completions_event(DEFAULT_MODEL)) for _ in range(SLOTS)]
        for invocation in invocations:
            assert invocation.wait(60).prelude_and_body()[0]["statusCode"] == 200
    assert targets == ["secretsmanager.GetSecretValue"]
    # Init opens the upstream connection with an unauthenticated GET /v1/models (handler/init.py).
    chats = [r for r in upstream.requests if r.path != "/v1/models"]
    assert len(chats) == SLOTS
    assert {r.headers["authorization"] for r in chats} == {f"Bearer {TEST_KEY}"}
