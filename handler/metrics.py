"""CloudWatch metrics of each request, as embedded metric format (EMF) members of its log line.

CloudWatch Logs turns the `_aws` directive into metrics: no API call, no extra line. Dimensions
are `Model` and `Outcome` (a few values each) and none at all for the totals; never the caller,
whose cardinality would make every user a billed metric.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from handler.requestlog import RequestLog, TokenCount

# The model dimension of a request that was refused before a model was chosen.
NO_MODEL = "none"


def embedded_metrics(record: RequestLog, namespace: str, tokens: TokenCount | None) -> dict:
    """The members to merge into the request's JSON line: metric values at the root, and the
    `_aws` metadata naming which of them are metrics (only those present: EMF rejects a
    directive whose member is missing)."""
    values: dict[str, Any] = {
        "Model": record.model or NO_MODEL,
        "Outcome": record.outcome,
        "Requests": 1,
        "RateLimited": int(record.error_type == "rate_limited"),
        "QuotaExceeded": int(record.error_type == "quota_exceeded"),
    }
    if record.ttft_ms is not None:
        values["FirstTokenMs"] = record.ttft_ms
    if tokens is not None:
        values |= {
            "PromptTokens": tokens.prompt,
            "CompletionTokens": tokens.completion,
            "Tokens": tokens.total,
            "TokensEstimated": tokens.estimated,
        }
    values["_aws"] = {
        "Timestamp": int(time.time() * 1000),
        "CloudWatchMetrics": _directives(namespace, record.ttft_ms is not None, tokens is not None),
    }
    return values


@functools.cache
def _directives(namespace: str, first_token: bool, tokens: bool) -> list[dict[str, Any]]:
    """Which members are metrics, by dimension: one of four lists per namespace, built once
    (orjson only reads them)."""
    per_model = [_metric("Requests", "Count")]
    totals = [_metric("RateLimited", "Count"), _metric("QuotaExceeded", "Count")]
    if first_token:
        per_model.append(_metric("FirstTokenMs", "Milliseconds"))
        totals.append(_metric("FirstTokenMs", "Milliseconds"))
    if tokens:
        per_model += [_metric("PromptTokens", "Count"), _metric("CompletionTokens", "Count")]
        totals.append(_metric("Tokens", "Count"))
    return [
        {"Namespace": namespace, "Dimensions": [["Model"]], "Metrics": per_model},
        {
            "Namespace": namespace,
            "Dimensions": [["Outcome"]],
            "Metrics": [_metric("Requests", "Count")],
        },
        {"Namespace": namespace, "Dimensions": [[]], "Metrics": totals},
    ]


def _metric(name: str, unit: str) -> dict[str, str]:
    return {"Name": name, "Unit": unit}


def embedded_count(namespace: str, metric: str) -> dict[str, Any]:
    """The members that make a log line of its own count once in `metric` (no dimension): for
    events outside any request, such as a secret served past its TTL (credentials.py)."""
    return {
        metric: 1,
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {"Namespace": namespace, "Dimensions": [[]], "Metrics": [_metric(metric, "Count")]}
            ],
        },
    }
