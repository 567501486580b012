"""What each answer makes of an AWS call (handler/aws.py, `AwsJsonClient.call`): which statuses
are retried, an unreadable success, an attempt cut at the end of the call's budget, how much of
the retry quota a timeout costs, and when the clock is corrected from an answer's `Date`.
Against scripted AWS endpoints on loopback: each answers what the test lists, in turn, and
notes each request's signing time; nothing patched."""

from __future__ import annotations

import email.utils
import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from handler.aws import AwsCallFailed, AwsEnvironment, AwsJsonClient, JsonService
from handler.dynamodb import UPDATE_ITEM, dynamodb_service
from tests.helpers import LoopbackHandler, loopback_server, run_coroutine

ITEM = {"TableName": "quota", "Key": {"pk": {"S": "quota#x"}}}


@dataclass
class Answer:
    """One scripted answer: an HTTP status and AWS error code (none: a success), the `Date`
    header's offset from our clock (or a `Date` that is not one), or a body of its own."""

    status: int = 200
    code: str | None = None
    date_offset_s: float = 0.0
    date: str | None = None
    body: bytes | None = None


@dataclass
class Scripted:
    answers: list[Answer]
    signed_at: list[datetime] = field(default_factory=list)  # each request's X-Amz-Date
    arrived: list[float] = field(default_factory=list)  # each request's time.monotonic()

    def answer(self, handler: LoopbackHandler) -> None:
        handler.rfile.read(int(handler.headers["content-length"]))
        self.arrived.append(time.monotonic())
        stamp = handler.headers["x-amz-date"]
        self.signed_at.append(datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC))
        scripted = self.answers.pop(0) if self.answers else Answer()
        body = scripted.body
        if body is None:
            payload = {"__type": f"com.amazonaws.fake#{scripted.code}"} if scripted.code else {}
            body = json.dumps(payload).encode()
        date = scripted.date or email.utils.formatdate(
            time.time() + scripted.date_offset_s, usegmt=True
        )
        handler.send_response_only(scripted.status)
        handler.send_header("date", date)
        handler.send_header("content-type", "application/x-amz-json-1.0")
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


@contextmanager
def scripted_aws(*answers: Answer) -> Iterator[tuple[str, Scripted]]:
    script = Scripted(list(answers))

    class Handler(LoopbackHandler):
        def do_POST(self):
            script.answer(self)

    with loopback_server(Handler) as url:
        yield url, script


@contextmanager
def silent_endpoint() -> Iterator[str]:
    """An endpoint that takes connections (the kernel's backlog does) and never answers."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(256)
        yield f"http://127.0.0.1:{listening.getsockname()[1]}"


def client_of(url: str, service: JsonService | None = None) -> AwsJsonClient:
    return AwsJsonClient(
        service or dynamodb_service(1.0, 1.0, 5.0), AwsEnvironment("us-east-1", url)
    )


def outcomes(client: AwsJsonClient, count: int = 1) -> list:
    """`count` UpdateItems in turn, in one event loop: each answer, or the failure's message."""

    async def run() -> list:
        results: list = []
        try:
            for _ in range(count):
                try:
                    results.append(await client.call(UPDATE_ITEM, ITEM))
                except AwsCallFailed as exc:
                    results.append(str(exc))
        finally:
            await client.close()
        return results

    return run_coroutine(run())


def seconds_from_now(moment: datetime) -> float:
    return moment.timestamp() - time.time()


def logged_skews(caplog) -> list[tuple[int, str]]:
    """The warnings of corrected clocks: (hours off, "behind" or "ahead of") the service's;
    `Date` has a resolution of one second, so 3599 s is an hour."""
    found = []
    for record in caplog.records:
        if record.name == "relay.aws":
            skew = re.fullmatch(
                r"DynamoDB: our clock is (\d+) s (behind|ahead of) the service's; signing with"
                r" its time",
                record.getMessage(),
            )
            assert skew, record.getMessage()
            found.append((round(int(skew[1]) / 3600), skew[2]))
    return found


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_the_statuses_the_standard_mode_retries_are_tried_again(status):
    with scripted_aws(Answer(status, "SomethingElse")) as (url, script):
        assert outcomes(client_of(url)) == [{}]
    assert len(script.signed_at) == 2


@pytest.mark.parametrize("status", [501, 400, 430])
def test_other_statuses_with_an_unknown_code_are_answers_not_retried(status):
    with scripted_aws(Answer(status, "SomethingElse")) as (url, script):
        assert outcomes(client_of(url)) == [f"HTTP {status} (SomethingElse)"]
    assert len(script.signed_at) == 1


def test_a_success_with_an_unreadable_answer_is_a_failure():
    with scripted_aws(Answer(200, body=b"<html>gateway</html>")) as (url, script):
        assert outcomes(client_of(url)) == ["HTTP 200 with an unreadable answer"]
    assert len(script.signed_at) == 1


def test_an_attempt_is_cut_at_the_end_of_the_calls_budget():
    """The budget (0.3 s) ends before the attempt's own read timeout (5 s) would: the call
    fails with the budget's timeout, after its one attempt."""
    with silent_endpoint() as url:
        [outcome] = outcomes(client_of(url, dynamodb_service(1.0, 5.0, 0.3)))
    assert outcome in (
        "TimeoutError reaching DynamoDB; no time left for another attempt",
        "TimeoutError reaching DynamoDB; out of time after 1 attempts",
    )


def test_a_timeout_costs_twice_an_errors_share_of_the_retry_quota():
    """The standard mode's quota (500) pays 50 retries after timeouts (10 each), against 100
    after errors: 25 calls that time out are retried twice each, the 26th not at all."""
    with silent_endpoint() as url:
        results = outcomes(client_of(url, dynamodb_service(1.0, 0.05, 5.0)), 26)
    read_timeout = "SocketTimeoutError reaching DynamoDB: Timeout on reading data from socket"
    assert results[:25] == [f"{read_timeout}, after 3 attempts"] * 25
    assert results[25] == f"{read_timeout}; not retried: the retry quota is spent"


def test_a_refused_signature_with_clocks_that_agree_is_not_retried():
    with scripted_aws(Answer(400, "InvalidSignatureException")) as (url, script):
        assert outcomes(client_of(url)) == ["HTTP 400 (InvalidSignatureException)"]
    assert len(script.signed_at) == 1


def test_a_date_that_is_not_one_corrects_nothing():
    refused = Answer(400, "InvalidSignatureException", date="not a date at all")
    with scripted_aws(refused) as (url, script):
        assert outcomes(client_of(url)) == ["HTTP 400 (InvalidSignatureException)"]
    assert len(script.signed_at) == 1


def test_the_clock_is_corrected_once_per_call_and_kept_for_the_next(caplog):
    """Refused for its time by a service an hour ahead: signed again with the service's time
    (not an attempt of its own), and kept for the next call. Refused by a service whose clock
    has moved another hour, then another: corrected once, and the call fails on the second
    refusal. A refusal that the corrected clock does not explain is not corrected."""
    hour = 3600.0
    with scripted_aws(
        Answer(400, "RequestTimeTooSkewed", date_offset_s=hour),
        Answer(200),
        Answer(400, "RequestTimeTooSkewed", date_offset_s=2 * hour),
        Answer(400, "RequestTimeTooSkewed", date_offset_s=3 * hour),
        Answer(400, "InvalidSignatureException", date_offset_s=2 * hour),
    ) as (url, script):
        caplog.set_level(logging.WARNING, logger="relay.aws")
        assert outcomes(client_of(url), 3) == [
            {},
            "HTTP 400 (RequestTimeTooSkewed)",
            "HTTP 400 (InvalidSignatureException)",
        ]
    offsets = [seconds_from_now(moment) / hour for moment in script.signed_at]
    assert [round(offset) for offset in offsets] == [0, 1, 1, 2, 2]
    assert logged_skews(caplog) == [(1, "behind"), (2, "behind")]


def test_a_clock_ahead_of_the_services_is_logged_as_ahead(caplog):
    with scripted_aws(Answer(400, "RequestExpired", date_offset_s=-3600.0)) as (url, script):
        caplog.set_level(logging.WARNING, logger="relay.aws")
        assert outcomes(client_of(url)) == [{}]
    assert abs(seconds_from_now(script.signed_at[1]) + 3600.0) < 300
    assert logged_skews(caplog) == [(1, "ahead of")]


def test_an_answer_that_does_not_refuse_the_signatures_time_corrects_no_clock():
    """A throttled answer from a service whose clock is an hour off: retried, signed with our
    own clock still."""
    with scripted_aws(Answer(400, "ThrottlingException", date_offset_s=3600.0)) as (url, script):
        assert outcomes(client_of(url)) == [{}]
    assert [abs(seconds_from_now(moment)) < 300 for moment in script.signed_at] == [True, True]
