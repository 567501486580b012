"""aiohttp's timeouts, kept to the second they are given.

aiohttp rounds a total or connect timeout of 5 s or more up to the next whole second of the
event loop's clock (`ClientTimeout.ceil_threshold`, a saving on timer churn for servers with
many connections). The relay's timeouts are promises: a whole answer bounded by the
invocation's deadline less `DEADLINE_MARGIN_S`, which a rounding of up to a second could spend
before the 504 is written; the sign-in keys' 5 s fetch; the AWS calls' time budget. So every
`ClientTimeout` the relay makes is exact.
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
