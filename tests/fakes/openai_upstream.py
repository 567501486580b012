"""The fake OpenAI of the tests: the demo upstream server, run on a loopback port in a thread.

Tests script it per request (`enqueue(Script(...))`) and read what it saw in `requests`.
"""

from __future__ import annotations

from infra.demo_upstream import OpenAICompatibleServer, RecordedRequest, Script, ThreadedUpstream

__all__ = ["FakeOpenAI", "RecordedRequest", "Script"]


class FakeOpenAI(OpenAICompatibleServer):
    def run(self) -> FakeOpenAI:
        self._runner = ThreadedUpstream(self).start()
        return self

    @property
    def base_url(self) -> str:
        return self._runner.base_url

    def stop(self) -> None:
        self._runner.stop()

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]
