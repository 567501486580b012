"""The limits of an AWS call (handler/aws.py, `AwsJsonClient`): the clock is corrected only when
the service's `Date` is a minute or more off ours, a call whose budget is already spent makes no
attempt, the pause before each retry is drawn under a bound that doubles, and one process holds
at most 100 calls to a service in flight (the pool's size).
Against scripted endpoints on loopback; nothing patched."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import math
import random
import threading
import time
from http.server import ThreadingHTTPServer

from handler.dynamodb import UPDATE_ITEM, dynamodb_service
from tests.helpers import LoopbackHandler, run_coroutine
from tests.test_aws_call_outcomes import ITEM, Answer, client_of, outcomes, scripted_aws


def whole_second_ahead(seconds: int) -> str:
    """A `Date` `seconds` whole seconds after the current second, taken early in a second, so
    that it reads between `seconds - 0.3` and `seconds - 0.05` ahead of our clock now and
    less than that by the time its answer arrives (`Date` has a resolution of one second)."""
    while not 0.05 <= time.time() % 1 < 0.3:
        time.sleep(0.01)
    return email.utils.formatdate(math.floor(time.time()) + seconds, usegmt=True)


def test_a_refusal_from_a_clock_just_over_a_minute_ahead_is_corrected():
    """The service's `Date` reads 60.7-60.95 s ahead when the refusal is read (less the
    answer's travel): a minute or more, so the request is signed again with its time."""
    refused = Answer(400, "RequestTimeTooSkewed", date=whole_second_ahead(61))
    with scripted_aws(refused, Answer(200)) as (url, script):
        assert outcomes(client_of(url)) == [{}]
    first, second = script.signed_at
    assert 59 <= (second - first).total_seconds() <= 61


def test_a_refusal_from_a_clock_just_under_a_minute_ahead_is_not_corrected():
    """59.7-59.95 s ahead at most: under a minute, so not taken for our clock's error; the
    refusal is the call's answer (it is not retried)."""
    refused = Answer(400, "RequestTimeTooSkewed", date=whole_second_ahead(60))
    with scripted_aws(refused, Answer(200)) as (url, script):
        assert outcomes(client_of(url)) == ["HTTP 400 (RequestTimeTooSkewed)"]
    assert len(script.signed_at) == 1


def test_a_call_with_no_time_left_in_its_budget_makes_no_attempt():
    with scripted_aws(Answer(200)) as (url, script):
        [outcome] = outcomes(client_of(url, dynamodb_service(1.0, 1.0, 0.0)))
    assert outcome == "no attempt; out of time after 0 attempts"
    assert script.signed_at == []


def test_the_pause_before_each_retry_is_drawn_under_a_bound_that_doubles():
    """Full jitter: each pause is a random fraction of a bound that starts at the service's
    base (1 s here) and doubles per retry. With the random draws fixed (seed 165: 0.017, then
    0.962), the pause before the second attempt is 0.017 s and the one before the third is
    0.962 of 2 s, 1.92 s, which still fits the call's 2.6 s budget: three attempts, the last
    at least 1.92 s after the second. A bound of 1 s or less for the third would pause under
    1 s; one of 3 s or more would leave no time for a third attempt."""
    service = dataclasses.replace(dynamodb_service(1.0, 1.0, 2.6), base_backoff_s=1.0)
    failing = Answer(503, "ServiceUnavailable")
    with scripted_aws(failing, failing, failing) as (url, script):
        client = client_of(url, service)
        random.seed(165)
        [outcome] = outcomes(client)
    assert outcome == "HTTP 503 (ServiceUnavailable), after 3 attempts"
    first, second, third = script.arrived
    assert second - first >= 0.017
    assert third - second >= 0.962 * 2


class HeldCalls(LoopbackHandler):
    """Notes each call's arrival, then holds its answer until the test releases them all."""

    arrived: list[float]
    release: threading.Event
    lock = threading.Lock()

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        with self.lock:
            self.arrived.append(time.monotonic())
        self.release.wait(60)
        self.answer(200, b"{}")


class WideBacklogServer(ThreadingHTTPServer):
    request_queue_size = 256  # 101 connections at once, none of them left to retry its SYN


def test_at_most_a_hundred_calls_to_a_service_are_in_flight_and_the_next_waits_for_one():
    """101 calls at once: 100 reach the service, the 101st waits for a free connection
    (none comes while the 100 are held), and reaches it once they are answered."""
    release = threading.Event()
    handler = type("Held", (HeldCalls,), {"arrived": [], "release": release})
    server = WideBacklogServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = client_of(f"http://127.0.0.1:{server.server_port}", dynamodb_service(10, 60, 90))

    async def run() -> tuple[int, list]:
        calls = [asyncio.create_task(client.call(UPDATE_ITEM, ITEM)) for _ in range(101)]
        try:
            give_up = time.monotonic() + 30
            while len(handler.arrived) < 100 and time.monotonic() < give_up:
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # time for a 101st connection, were there one
            held = len(handler.arrived)
            release.set()
            return held, await asyncio.gather(*calls)
        finally:
            release.set()
            await client.close()

    try:
        held, answers = run_coroutine(run())
    finally:
        release.set()
        server.shutdown()
    assert held == 100
    assert answers == [{}] * 101
    assert len(handler.arrived) == 101
