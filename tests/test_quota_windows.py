"""The limits' arithmetic at the edges the clock cannot be steered to in a live test: where a
moment falls (its UTC day and minute, when each ends, the item's TTL), the `minute` attribute's
label, which stream slots are live, what a request is finally charged, and the refusal (and its
Retry-After) that an item as it was at a given moment calls for (handler/quota.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from handler.quota import (
    Admission,
    Quota,
    Window,
    item_key,
    minute_label,
    settled_tokens,
    stream_slots,
)
from handler.requestlog import RequestLog
from handler.settings import Settings

DAY_S = 86_400


def at(text: str) -> float:
    """Seconds since the epoch of an ISO UTC time (`2026-12-03T09:15:30.5`)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_a_moment_falls_in_its_utc_day_and_minute_which_end_on_their_boundaries():
    window = Window.at(at("2026-12-03T09:15:30.5"))
    assert window.day == "2026-12-03"
    assert window.minute == 9 * 60 + 15
    assert window.minute_ends == at("2026-12-03T09:16:00")
    assert window.day_ends == at("2026-12-04T00:00:00")
    # The day's item stays readable for two days after the day (DynamoDB's TTL).
    assert window.expires_at == at("2026-12-06T00:00:00")


def test_midnight_starts_a_new_day_at_its_first_minute():
    window = Window.at(at("2026-12-04T00:00:00"))
    assert (window.day, window.minute) == ("2026-12-04", 0)
    assert window.minute_ends == at("2026-12-04T00:01:00")
    assert window.day_ends == at("2026-12-05T00:00:00")


def test_the_last_minute_of_a_day_ends_with_the_day():
    window = Window.at(at("2026-12-03T23:59:59.9"))
    assert (window.day, window.minute) == ("2026-12-03", 23 * 60 + 59)
    assert window.minute_ends == window.day_ends == at("2026-12-04T00:00:00")


@pytest.mark.parametrize(
    "minute, label", [(0, "00:00"), (9 * 60 + 5, "09:05"), (13 * 60 + 42, "13:42"), (1439, "23:59")]
)
def test_a_minute_is_labelled_as_its_utc_clock_time(minute, label):
    assert minute_label(minute) == label


def test_a_callers_item_is_keyed_by_day_and_caller():
    assert item_key("2026-12-03", "jwt:alice") == {"pk": {"S": "quota#2026-12-03#jwt:alice"}}


def slots(*names: str) -> dict:
    return {"streams": {"SS": list(names)}}


def test_a_stream_slot_is_live_until_its_expiry_second_and_expired_from_it():
    now = 1_000.0
    live, expired = stream_slots(slots("1001#a", "1000#b", "999#c"), now)
    assert live == ["1001#a"]
    assert expired == ["1000#b", "999#c"]
    # Between two whole seconds: a slot expiring at the next one is still live.
    assert stream_slots(slots("1001#a"), 1_000.999) == (["1001#a"], [])


def test_a_slot_without_a_whole_second_expiry_counts_as_expired():
    assert stream_slots(slots("soon#a", "#b", "1e9#c"), 1_000.0) == ([], ["soon#a", "#b", "1e9#c"])


def test_an_item_without_slots_has_none_live_or_expired():
    assert stream_slots({}, 1_000.0) == ([], [])


def finished(status: int | None, usage: dict | None = None, **fields) -> RequestLog:
    return RequestLog(request_id="r", route="POST /chat", status=status, usage=usage, **fields)


ADMITTED = Admission("jwt:alice", "2026-12-03", 0, reserved=900, budgeted=True)
USAGE = {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}


def test_a_request_with_reported_usage_costs_its_usage_whatever_was_reserved():
    assert settled_tokens(ADMITTED, finished(200, USAGE)) == 27
    # Usage reported with a failure after it (a mid-stream error) still costs the usage.
    assert settled_tokens(ADMITTED, finished(200, USAGE, error_type="upstream_error")) == 27


def test_an_answer_cut_short_without_usage_costs_the_reservation():
    cut_short = finished(200, chunks=3, request_bytes=400)
    assert settled_tokens(ADMITTED, cut_short) == 900


def test_a_first_token_timeout_costs_the_reservation_as_the_upstream_may_have_billed():
    timed_out = finished(504, error_type="upstream_timeout")
    assert settled_tokens(ADMITTED, timed_out) == 900


@pytest.mark.parametrize(
    "status, error_type",
    [(502, "upstream_error"), (429, "upstream_rate_limited"), (401, "upstream_auth")],
)
def test_a_request_the_upstream_refused_costs_nothing(status, error_type):
    assert settled_tokens(ADMITTED, finished(status, error_type=error_type)) == 0


def test_an_answer_admitted_without_a_reservation_costs_its_estimate_when_cut_short():
    unreserved = Admission("jwt:alice", "2026-12-03", 0, reserved=0, budgeted=True)
    # The estimate: a token per 4 bytes of the request's body, one per streamed delta.
    assert settled_tokens(unreserved, finished(200, chunks=3, request_bytes=400)) == 100 + 3
    assert settled_tokens(unreserved, finished(504, error_type="upstream_timeout")) == 0


def limits(**values) -> Settings:
    return Settings(_env_file=None, quota_table="quota", **values)


def refusal(item: dict, now: float, slot: str | None = None, **values):
    """The refusal of an admission refused on `item` at `now` under the limits `values`."""
    quota = Quota(Settings(_env_file=None))  # off: no DynamoDB client; `_refusal` reads none
    return quota._refusal(item, Window.at(now), now, limits(**values), slot)


NOW = at("2026-12-03T09:15:30.25")


def counted(minute: str, requests: int, tokens: int = 0) -> dict:
    """An item as an admission leaves it: `requests` this `minute`, `tokens` charged today."""
    return {
        "minute": {"S": minute},
        "minute_requests": {"N": str(requests)},
        "tokens": {"N": str(tokens)},
    }


def test_a_full_minute_refuses_with_retry_after_the_seconds_left_in_it():
    refused = refusal(counted("09:15", 3), NOW, rate_limit_per_minute=3)
    assert refused.type == "rate_limited"
    assert refused.headers == {"Retry-After": "30"}  # 29.75 s to 09:16, rounded up
    assert "over 3 requests per minute" in refused.message


def test_a_minute_under_its_limit_or_past_refuses_nothing():
    assert refusal(counted("09:15", 2), NOW, rate_limit_per_minute=3) is None
    assert refusal(counted("09:14", 9), NOW, rate_limit_per_minute=3) is None


def test_a_used_up_budget_refuses_with_retry_after_the_seconds_to_utc_midnight():
    refused = refusal(counted("09:15", 1, tokens=100), NOW, token_budget_per_day=100)
    assert refused.type == "quota_exceeded"
    seconds_left = at("2026-12-04T00:00:00") - NOW
    assert refused.headers == {"Retry-After": str(int(seconds_left) + 1)}
    assert refusal(counted("09:15", 1, tokens=99), NOW, token_budget_per_day=100) is None


def test_a_used_up_budget_is_named_even_when_the_minute_is_full_too():
    refused = refusal(
        counted("09:15", 3, tokens=100), NOW, rate_limit_per_minute=3, token_budget_per_day=100
    )
    assert refused.type == "quota_exceeded"


def test_in_the_last_second_of_a_minute_or_day_retry_after_is_one_second():
    last = at("2026-12-03T23:59:59.75")
    rate = refusal(counted("23:59", 3), last, rate_limit_per_minute=3)
    budget = refusal(counted("23:59", 1, tokens=5), last, token_budget_per_day=5)
    assert rate.headers == budget.headers == {"Retry-After": "1"}


def test_live_streams_filling_the_slots_refuse_a_new_stream_and_expired_ones_do_not():
    slot = "99999999999#new"
    full = {"streams": {"SS": ["99999999999#a", "99999999999#b"]}}
    refused = refusal(full, NOW, slot, max_concurrent_streams=2)
    assert refused.type == "concurrency_limited"
    assert refused.headers == {"Retry-After": "1"}
    one_dead = {"streams": {"SS": ["99999999999#a", f"{int(NOW)}#dead"]}}
    assert refusal(one_dead, NOW, slot, max_concurrent_streams=2) is None
    # A request that takes no slot (not a model call) is not refused for the streams.
    assert refusal(full, NOW, None, max_concurrent_streams=2) is None
