"""aiohttp's timeouts, kept to the second they are given.

aiohttp rounds a total timeout of 5 s or more, and a connection's wait of more than 5 s, up to
the next whole second of the event loop's clock (`ClientTimeout.ceil_threshold`, a saving on
timer churn for servers with many connections). The relay's timeouts are promises: a whole
answer bounded by the invocation's deadline less `DEADLINE_MARGIN_S`, which a rounding of up to
a second could spend before the 504 is written; the upstream connection's wait; the sign-in
keys' 5 s fetch; the AWS calls' time budget. So every `ClientTimeout` the relay makes is exact.

Each is tested from just past a whole second of that clock, where a rounded bound would end
nearly a second late: the answer's deadline (tests/test_cost_policy.py), the upstream
connection's wait (tests/test_upstream_failures.py), the keys' fetch
(tests/test_signin_key_fetching.py) and a Secrets Manager attempt (tests/test_aws_service_waits.py).
"""

from __future__ import annotations

import math

import aiohttp


def exact_timeout(
    *,
    total: float | None = None,
    connect: float | None = None,
    sock_read: float | None = None,
    sock_connect: float | None = None,
) -> aiohttp.ClientTimeout:
    """`aiohttp.ClientTimeout` with these bounds, none of them rounded up."""
    return aiohttp.ClientTimeout(
        total=total,
        connect=connect,
        sock_read=sock_read,
        sock_connect=sock_connect,
        ceil_threshold=math.inf,
    )
