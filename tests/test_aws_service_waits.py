"""How long the AWS calls wait, as their services set it (handler/secretsmanager.py and
handler/dynamodb.py): against loopback endpoints that never answer, trickle their answer in,
never accept a connection, or fail every call, observed as attempts and the time between them
at the endpoint.

Lower bounds on time, as a loaded machine makes everything later, never earlier; the one upper
bound (an attempt cut at 5 s, not at the next whole second) leaves 0.7 s for the load against
the 0.95 s a rounded timeout would add."""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from handler.aws import AwsEnvironment
from handler.dynamodb import DynamoDB, DynamoDBFailed
from handler.secretsmanager import SecretReadFailed, SecretsManager
from tests.helpers import (
    LoopbackHandler,
    endpoint_that_never_accepts,
    just_past_a_whole_second,
    loopback_server,
    run_coroutine,
)

INTERNAL_FAILURE = b'{"__type": "com.amazonaws.fake#InternalFailure", "message": "storm"}'
SECRET_ANSWER = b'{"Name": "relay", "SecretString": "sk-test-late-0123456789abcdef"}'


@contextmanager
def endpoint_that_holds_answers(
    answer_after_s: float | None = None,
) -> Iterator[tuple[str, list[float]]]:
    """Reads each request and holds it: answers it with a secret after `answer_after_s`, or
    never (None), at the latest until the test ends; yields the URL and the times
    (time.monotonic()) the requests arrived."""
    arrivals: list[float] = []
    released = threading.Event()

    class Holding(LoopbackHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            arrivals.append(time.monotonic())
            if released.wait(30 if answer_after_s is None else answer_after_s):
                return  # the test has ended
            if answer_after_s is not None:
                with contextlib.suppress(OSError):  # the client may have given up on it
                    self.answer(200, SECRET_ANSWER, "application/x-amz-json-1.1")

    with loopback_server(Holding) as url:
        try:
            yield url, arrivals
        finally:
            released.set()


@contextmanager
def endpoint_that_always_fails() -> Iterator[tuple[str, list[float]]]:
    """Answers every request at once with a 500 (`InternalFailure`, retried by the standard
    mode); yields the URL and the times the requests arrived."""
    arrivals: list[float] = []

    class Failing(LoopbackHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            arrivals.append(time.monotonic())
            self.answer(500, INTERNAL_FAILURE, "application/x-amz-json-1.1")

    with loopback_server(Failing) as url:
        yield url, arrivals


def timed_secret_read(url: str) -> tuple[float, str]:
    """The seconds a failed `GetSecretValue` at `url` took, and the failure's message."""
    client = SecretsManager(AwsEnvironment(region="us-east-1", endpoint_url=url))
    started = time.monotonic()
    with pytest.raises(SecretReadFailed) as failed:
        run_coroutine(client.get_secret_value("relay"))
    return time.monotonic() - started, str(failed.value)


def test_a_secret_read_waits_three_seconds_per_attempt_and_gives_up_at_six():
    """Against a Secrets Manager that takes requests and never answers, each attempt waits its
    3 s read timeout, so within the read's 6 s budget exactly two attempts reach it, and the
    read fails only when the budget is spent."""
    with endpoint_that_holds_answers() as (url, arrivals):
        elapsed, message = timed_secret_read(url)
        assert len(arrivals) == 2, arrivals
        assert arrivals[1] - arrivals[0] >= 2.5  # the first attempt waited its 3 s read timeout
    assert elapsed >= 6.0
    assert message == "TimeoutError reaching Secrets Manager; no time left for another attempt"


def test_a_secret_answer_later_than_the_three_second_read_timeout_is_not_waited_for():
    """Each answer comes 3.6 s after its request, after the attempt's 3 s read timeout: both
    attempts give up on theirs and the read fails at its 6 s budget (a read timeout of 4 s
    would take the first answer). The pauses' draws are fixed (seed 165) so the second
    attempt starts right after the first gives up."""
    random.seed(165)
    with endpoint_that_holds_answers(answer_after_s=3.6) as (url, arrivals):
        elapsed, message = timed_secret_read(url)
        assert len(arrivals) == 2, arrivals
    assert elapsed >= 6.0
    assert message == "TimeoutError reaching Secrets Manager; no time left for another attempt"


def test_a_secret_read_waits_two_seconds_per_connection_attempt_three_times():
    """Against an endpoint whose connections never complete, each attempt gives up on the
    connection after 2 s: three attempts fit in the 6 s budget (the third cut short by it),
    and the read fails only when the budget is spent. The pauses' random draws are fixed
    (seed 165: 0.017, then 0.962 of each bound), so the pause before the third attempt is
    0.38 s of its 0.4 s bound every time; a bound several times larger would leave no time
    for the third attempt."""
    random.seed(165)
    with endpoint_that_never_accepts() as url:
        elapsed, message = timed_secret_read(url)
    assert elapsed >= 6.0
    assert message == "TimeoutError reaching Secrets Manager, after 3 attempts"


def pauses_between_attempts(arrivals: list[float], attempts_per_call: int) -> list[float]:
    """The gaps between consecutive attempts of each call (calls made one after another)."""
    calls = [
        arrivals[start : start + attempts_per_call]
        for start in range(0, len(arrivals), attempts_per_call)
    ]
    return [later - earlier for call in calls for earlier, later in itertools.pairwise(call)]


def test_a_secret_answer_that_trickles_in_is_cut_at_five_seconds_not_at_the_next_whole_one():
    """An answer that keeps arriving a byte at a time never trips the 3 s read timeout; the
    attempt's own bound (connection and read timeouts together, 5 s) cuts it, to the second it
    says: aiohttp rounds a total timeout of 5 s or more up to the next whole second of the
    event loop's clock unless told not to. Sent just past a whole second, the first attempt
    ends at 5 s and the second, after a short pause (its draw is fixed), uses what is left of
    the read's 6 s budget; rounded up, the first would end about 0.95 s later (5.96 s apart,
    measured with aiohttp's rounding put back)."""
    arrivals: list[float] = []
    released = threading.Event()

    class Trickling(LoopbackHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            arrivals.append(time.monotonic())
            self.send_response(200)
            self.send_header("content-type", "application/x-amz-json-1.1")
            self.send_header("content-length", str(len(SECRET_ANSWER)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client gives up on it
                for byte in SECRET_ANSWER[:-1]:
                    if released.wait(0.5):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()

    random.seed(165)
    with loopback_server(Trickling) as url:
        try:
            just_past_a_whole_second()
            elapsed, message = timed_secret_read(url)
        finally:
            released.set()
    assert len(arrivals) == 2, arrivals
    assert 4.95 < arrivals[1] - arrivals[0] < 5.7, arrivals
    assert elapsed >= 6.0
    assert message == "TimeoutError reaching Secrets Manager; no time left for another attempt"


def test_a_failing_secret_read_pauses_between_its_attempts():
    """A 5xx storm is retried with the standard mode's jittered pauses (up to 0.2 s, then
    0.4 s), not back to back: over eight reads the sixteen pauses add up to well over what
    sixteen immediate retries would take (drawn at random, they average 2.4 s; below 0.5 s is
    about five standard deviations off)."""
    with endpoint_that_always_fails() as (url, arrivals):
        client = SecretsManager(AwsEnvironment(region="us-east-1", endpoint_url=url))

        async def read_eight_times() -> list[str]:
            messages = []
            for _ in range(8):
                try:
                    await client.get_secret_value("relay")
                except SecretReadFailed as failed:
                    messages.append(str(failed))
            return messages

        messages = run_coroutine(read_eight_times())
    assert messages == ["HTTP 500 (InternalFailure), after 3 attempts"] * 8
    assert len(arrivals) == 24
    assert sum(pauses_between_attempts(arrivals, 3)) >= 0.5


def test_a_failing_dynamodb_call_pauses_between_its_attempts():
    """DynamoDB's retries pause too, under the SDKs' 25 ms base delay for it (up to 25 ms, then
    50 ms): over twenty calls the forty pauses add up to well over what forty immediate
    retries would take (drawn at random, they average 0.75 s; below 0.3 s is about six
    standard deviations off)."""
    with endpoint_that_always_fails() as (url, arrivals):

        async def call_twenty_times() -> list[str]:
            dynamodb = DynamoDB(AwsEnvironment("us-east-1", url), 1.0, 1.0)
            messages = []
            try:
                for _ in range(20):
                    try:
                        await dynamodb.get_item({"TableName": "quota", "Key": {}})
                    except DynamoDBFailed as failed:
                        messages.append(str(failed))
            finally:
                await dynamodb.close()
            return messages

        messages = run_coroutine(call_twenty_times())
    assert messages == ["HTTP 500 (InternalFailure), after 3 attempts"] * 20
    assert len(arrivals) == 60
    assert sum(pauses_between_attempts(arrivals, 3)) >= 0.3
