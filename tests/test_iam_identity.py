"""IAM callers are counted by what they cannot choose: an assumed role's limits are the role's,
whatever session name the caller gave itself, while the log line keeps the full ARN. Through the
relay on uvicorn in Lambda Web Adapter mode (the IAM caller in the adapter's header) with its
limits in moto's DynamoDB."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

ROLE = "arn:aws:sts::123456789012:assumed-role/frontend"


def as_iam(relay, arn: str) -> int:
    context = json.dumps({"authorizer": {"iam": {"userArn": arn}}})
    headers = {"x-amzn-request-context": context}
    return httpx.post(
        f"{relay.url}/chat", json={"prompt": "hi"}, headers=headers, timeout=15
    ).status_code


def log_lines(caplog, count: int) -> list[dict]:
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "relay.request"]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


def test_a_new_session_name_is_not_a_new_set_of_limits(upstream, make_relay, quota_table, caplog):
    relay = make_relay(
        url_auth_type="AWS_IAM",
        aws_lwa_invoke_mode="response_stream",
        quota_table=quota_table,
        rate_limit_per_minute=1,
    )
    if time.time() % 60 > 50:  # the three requests share one clock minute
        time.sleep(60.5 - time.time() % 60)
    statuses = [
        as_iam(relay, f"{ROLE}/alice-session"),
        as_iam(relay, f"{ROLE}/fresh-session-{uuid.uuid4().hex[:6]}"),
        as_iam(relay, "arn:aws:sts::123456789012:assumed-role/backend/alice-session"),
    ]
    assert statuses == [200, 429, 200]
    assert len(upstream.requests) == 2
    lines = log_lines(caplog, 3)
    assert [line["caller"] for line in lines] == [
        f"iam:{ROLE}",
        f"iam:{ROLE}",
        "iam:arn:aws:sts::123456789012:assumed-role/backend",
    ]
    assert lines[0]["caller_arn"] == f"{ROLE}/alice-session"  # the log keeps who exactly
    assert lines[1]["caller_arn"].startswith(f"{ROLE}/fresh-session-")


@pytest.mark.parametrize(
    ("arn", "identity"),
    [
        (f"{ROLE}/s1", ROLE),
        (
            "arn:aws-cn:sts::123456789012:assumed-role/r/s",
            "arn:aws-cn:sts::123456789012:assumed-role/r",
        ),
        (
            "arn:aws:sts::123456789012:federated-user/bob",
            "arn:aws:sts::123456789012:federated-user",
        ),
        ("arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/alice"),
        ("arn:aws:iam::123456789012:root", "arn:aws:iam::123456789012:root"),
    ],
)
def test_the_identity_of_each_kind_of_iam_principal(arn, identity):
    from handler.access import iam_identity

    assert iam_identity(arn) == identity
