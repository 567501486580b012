"""Console client of the relay: streams an answer to the terminal as it is generated.

    python tools/chat.py "Tell me a joke"                  # one question, local relay
    python tools/chat.py --url https://…on.aws --token T    # a deployed relay with client tokens
    python tools/chat.py --url https://…on.aws --iam        # a function URL with AuthType AWS_IAM
    python tools/chat.py                                     # interactive: keeps the conversation

Time to first token and tokens per second go to stderr; HTTP errors, an `event: error` and a
stream that stops before `done` exit non-zero with the error type.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterator

import httpx
from httpx_sse import EventSource


class ChatFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def sigv4_headers(url: str, body: bytes, headers: dict[str, str], region: str | None) -> dict:
    """Headers of the request signed for a function URL with AuthType AWS_IAM (botocore)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.session import Session

    match = re.search(r"\.lambda-url\.([a-z0-9-]+)\.on\.aws", url)
    region = region or (match and match.group(1)) or os.environ.get("AWS_REGION", "us-east-1")
    credentials = Session().get_credentials()
    if credentials is None:
        raise ChatFailed("no_credentials", "--iam needs AWS credentials (env, profile, role)")
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(credentials.get_frozen_credentials(), "lambda", region).add_auth(request)
    return dict(request.headers.items())


class Chat:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.url = args.url.rstrip("/") + "/chat"
        self.client = httpx.Client(timeout=httpx.Timeout(30, read=None))

    def ask(self, messages: list[dict]) -> str:
        """Stream one answer to stdout; returns its text."""
        # The console runs no tools, so it asks the relay to offer the model none (CHAT_TOOLS).
        body: dict = {"messages": messages, "tools": []}
        if self.args.model:
            body["model"] = self.args.model
        content = json.dumps(body).encode()
        headers = {
            "content-type": "application/json",
            "accept": "text/plain" if self.args.raw else "text/event-stream",
        }
        if self.args.token:
            headers["authorization"] = f"Bearer {self.args.token}"
        if self.args.iam:
            headers = sigv4_headers(self.url, content, headers, self.args.region)
        started = time.monotonic()
        first_at, pieces, text = None, 0, []
        with self.client.stream("POST", self.url, content=content, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                try:
                    error = response.json()["error"]
                    raise ChatFailed(
                        error["type"], f"HTTP {response.status_code}: {error['message']}"
                    )
                except (ValueError, KeyError, TypeError):
                    raise ChatFailed("http_error", f"HTTP {response.status_code}") from None
            for piece in self._pieces(response):
                first_at = first_at or time.monotonic()
                pieces += 1
                text.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
        self._report(started, first_at, pieces)
        return "".join(text)

    def _pieces(self, response: httpx.Response) -> Iterator[str]:
        if self.args.raw:
            try:
                yield from response.iter_text()
            except httpx.RemoteProtocolError:
                raise ChatFailed("incomplete", "the answer broke off") from None
            return
        for event in EventSource(response).iter_sse():
            if event.event == "message":
                yield event.json()["delta"]
            elif event.event == "done":
                return
            elif event.event == "error":
                error = event.json()["error"]
                raise ChatFailed(error["type"], error["message"])
        raise ChatFailed("incomplete", "the stream ended before `done`")

    @staticmethod
    def _report(started: float, first_at: float | None, pieces: int) -> None:
        now = time.monotonic()
        if first_at is None:
            print("\n[no tokens]", file=sys.stderr)
            return
        rate = (pieces - 1) / (now - first_at) if now > first_at else 0.0
        ttft = (first_at - started) * 1000
        print(f"\n[TTFT {ttft:.0f} ms · {rate:.1f} tokens/s · {pieces} tokens]", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Stream an answer from the chat relay.")
    parser.add_argument("prompt", nargs="?", help="the question; none for an interactive session")
    parser.add_argument("--url", default=os.environ.get("RELAY_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("RELAY_TOKEN"), help="bearer token")
    parser.add_argument("--raw", action="store_true", help="plain-text mode instead of SSE")
    parser.add_argument("--iam", action="store_true", help="sign with SigV4 (AuthType AWS_IAM)")
    parser.add_argument("--region", help="region for --iam (default: from the URL)")
    parser.add_argument("--model")
    args = parser.parse_args(argv)
    chat = Chat(args)
    try:
        if args.prompt:
            chat.ask([{"role": "user", "content": args.prompt}])
            return 0
        history: list[dict] = []
        while True:
            try:
                question = input("you> ").strip()
            except EOFError:
                print(file=sys.stderr)
                return 0
            if not question:
                continue
            history.append({"role": "user", "content": question})
            try:
                history.append({"role": "assistant", "content": chat.ask(history)})
            except ChatFailed as failure:  # say so and keep the conversation going
                print(f"\nerror ({failure.kind}): {failure}", file=sys.stderr)
                history.pop()
    except ChatFailed as failure:
        print(f"\nerror ({failure.kind}): {failure}", file=sys.stderr)
        return 1
    except httpx.TransportError as exc:
        print(f"\nerror (network_error): {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
