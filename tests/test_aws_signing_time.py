"""The time a request is signed at (handler/aws.py): our own clock's, until an answer shows the
service's clock far enough off to correct it. Checked as orderings against our clock around
each call, never as a duration."""

from __future__ import annotations

import time

from tests.test_aws_call_outcomes import Answer, client_of, outcomes, scripted_aws


def test_a_call_is_signed_at_our_clocks_time_before_any_correction():
    """With no skew learnt yet, a request's X-Amz-Date (whole seconds, rounded down) falls in
    the second the call was signed in: after the second before the call started, and not after
    the call ended. A signature a second ahead or behind would fall outside most times; three
    calls make that all but certain."""
    for _ in range(3):
        with scripted_aws(Answer()) as (url, script):
            client = client_of(url)
            before = time.time()
            assert outcomes(client) == [{}]
            after = time.time()
        (signed_at,) = script.signed_at
        assert before - 1 < signed_at.timestamp() <= after
