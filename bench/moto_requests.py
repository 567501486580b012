"""The AWS requests that reach the bench's moto server, counted by moto itself (its recorder).

moto's server can record every request it serves to a file (`MOTO_RECORDER_FILEPATH`), switched
on and off at `/moto-api/recorder/...`. The plans figure counts the DynamoDB round trips per
request that way, on the server's side: nothing in the relay is patched or wrapped.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections import Counter

from bench.services import LOGS


class MotoRecorder:
    """Switches the recorder of the moto server at `endpoint` and reads what it recorded."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.recording = LOGS / "moto-recording.jsonl"

    def _post(self, action: str) -> None:
        url = f"{self.endpoint}/moto-api/recorder/{action}"
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10):
            pass

    def start(self) -> None:
        """Forget what was recorded and record from now on."""
        self._post("reset-recording")
        self._post("start-recording")

    def stop(self, settle_s: float = 0.5) -> Counter[str]:
        """After `settle_s` (writes still on their way, such as the charge after a stream), stop
        recording; the requests recorded, by operation (`UpdateItem`, and `UpdateItem
        (conditional)` for one with a ConditionExpression)."""
        time.sleep(settle_s)
        self._post("stop-recording")
        lines = self.recording.read_text().splitlines() if self.recording.exists() else []
        return Counter(operation(json.loads(line)) for line in lines if line.strip())


def operation(entry: dict) -> str:
    """A recorded request's DynamoDB operation, marked when its write is conditional."""
    headers = {name.lower(): value for name, value in entry.get("headers", {}).items()}
    target = headers.get("x-amz-target")
    name = target.rpartition(".")[2] if target else f"{entry.get('method')} {entry.get('url')}"
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    try:
        conditional = "ConditionExpression" in json.loads(body or "{}")
    except ValueError:
        conditional = False
    return f"{name} (conditional)" if conditional else name
