"""What an upstream's refusal means, by its status: a 5xx (500 included) is the upstream failing,
which no route passes on; a 4xx other than auth and rate limits is a rejection of the request,
which /v1 passes on as OpenAI's own answer, whatever its body. And a whole (non-streamed)
answer is passed on as it came even when the relay cannot read its usage."""

from __future__ import annotations

import httpx
import pytest

from devtools.loopback import LoopbackHttpServer, ServerThread, read_request_head
from devtools.scripts import Script
from tests.test_quota import request_lines

MESSAGES = [{"role": "user", "content": "hi"}]


def test_an_upstream_500_on_v1_is_the_relays_502_not_passed_on(upstream, relay):
    upstream.enqueue(Script(status=500, error_message="the server had an error"))
    response = httpx.post(f"{relay.url}/v1/chat/completions", json={"messages": MESSAGES})
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"
    assert "the server had an error" not in response.text


class FixedAnswer(LoopbackHttpServer):
    """Answers every request with one status and body, as a proxy or a compatible server in
    front of the model might: not always OpenAI's error object."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__()
        self.status, self.body = status, body

    async def _serve_request(self, reader, writer) -> bool:
        _, _, headers = await read_request_head(reader)
        await reader.readexactly(int(headers.get("content-length", "0")))
        writer.write(
            b"HTTP/1.1 %d Refused\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % (self.status, len(self.body))
            + self.body
        )
        await writer.drain()
        return True


REJECTIONS = {
    "not_json": b"<html>Bad Request</html>",
    "a_list": b"[]",
    "error_as_text": b'{"error": "model_not_found"}',
}


@pytest.mark.parametrize("body", sorted(REJECTIONS))
def test_a_rejection_in_any_body_is_a_rejection_not_a_relay_failure(make_relay, body):
    """/chat says the model rejected the request; /v1 passes the upstream's answer on as it
    came. Neither reads a body that is not OpenAI's error object as a retired model."""
    thread = ServerThread(FixedAnswer(400, REJECTIONS[body])).start()
    try:
        relay = make_relay(openai_base_url=f"http://127.0.0.1:{thread.server.port}/v1")
        chat = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"})
        assert chat.status_code == 502
        assert chat.json()["error"]["type"] == "upstream_error"
        assert "rejected the request (HTTP 400)" in chat.json()["error"]["message"]
        v1 = httpx.post(f"{relay.url}/v1/chat/completions", json={"messages": MESSAGES})
        assert (v1.status_code, v1.content) == (400, REJECTIONS[body])
    finally:
        thread.stop()


@pytest.mark.parametrize("answer", [b"not json", b"[]", b'{"usage": 5}'])
def test_a_whole_answer_the_relay_cannot_read_usage_from_is_passed_on_as_it_came(
    make_relay, answer, caplog
):
    """A non-streamed /v1 answer goes to the caller byte for byte; the relay only reads its
    `usage` for the log, and logs none when the answer has no usage object to read."""
    thread = ServerThread(FixedAnswer(200, answer)).start()
    try:
        relay = make_relay(openai_base_url=f"http://127.0.0.1:{thread.server.port}/v1")
        response = httpx.post(f"{relay.url}/v1/chat/completions", json={"messages": MESSAGES})
        assert (response.status_code, response.content) == (200, answer)
        [line] = request_lines(caplog)
        assert line["usage"] is None
    finally:
        thread.stop()
