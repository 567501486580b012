"""The events of a streamed answer as the fake OpenAI writes them: Chat Completions chunks and the
Responses API's typed events, one class per API with the same four members.

`ResponsesEvents` follows OpenAI's documented sequence (`response.created`, `...in_progress`,
`output_item.added`, `content_part.added`, `output_text.delta`..., the `.done` events, then
`response.completed` with usage, or `response.incomplete`), numbered by `sequence_number`, and a
mid-stream `error` event in the nested shape OpenAI sends.
"""

from __future__ import annotations

import json
from typing import Any

CREATED_AT = 1700000000


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _prompt_tokens(prompt: object) -> int:
    """A stand-in token count: a quarter of the prompt's characters, plus one."""
    if isinstance(prompt, list):
        return sum(len(str(m.get("content", ""))) for m in prompt if isinstance(m, dict)) // 4 + 1
    return len(str(prompt or "")) // 4 + 1


class ChatCompletionEvents:
    """`data: {chat.completion.chunk}` lines ended by `data: [DONE]`. With
    `stream_options.include_usage`, as OpenAI documents, every chunk has `"usage":null` but the
    extra last one, whose `choices` are empty and whose usage is the request's."""

    def __init__(self, model: str, body: dict, finish_reason: str) -> None:
        self.model, self.body, self.finish_reason = model, body, finish_reason
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def _chunk(self, choices: list, **extra: object) -> bytes:
        event = {
            "id": "chatcmpl-demo",
            "object": "chat.completion.chunk",
            "created": CREATED_AT,
            "model": self.model,
            "choices": choices,
            **({"usage": None} if self.include_usage else {}),
            **extra,
        }
        return b"data: " + _json(event) + b"\n\n"

    def usage(self, completion_tokens: int) -> dict[str, int]:
        prompt = _prompt_tokens(self.body.get("messages"))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        }

    def answer(self, tokens: list[str]) -> dict[str, Any]:
        """The non-streamed answer."""
        message = {"role": "assistant", "content": "".join(tokens)}
        return {
            "id": "chatcmpl-demo",
            "object": "chat.completion",
            "created": CREATED_AT,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
            "usage": self.usage(len(tokens)),
        }

    def opening(self) -> bytes:
        delta = {"role": "assistant", "content": ""}
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": None}])

    def delta(self, token: str) -> bytes:
        return self._chunk([{"index": 0, "delta": {"content": token}, "finish_reason": None}])

    def tool_call_start(self, index: int, call_id: str, name: str) -> bytes:
        """A tool call's first chunk, as OpenAI sends it: id, type and name, no arguments."""
        call = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        delta = {"role": "assistant", "content": None, "tool_calls": [call]}
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": None}])

    def tool_call_arguments(self, index: int, piece: str) -> bytes:
        """The next piece of a tool call's arguments."""
        delta = {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": None}])

    def closing(self, tokens: list[str], extra_tokens: int = 0) -> bytes:
        tail = self._chunk([{"index": 0, "delta": {}, "finish_reason": self.finish_reason}])
        if self.include_usage:
            tail += self._chunk([], usage=self.usage(len(tokens) + extra_tokens))
        return tail + b"data: [DONE]\n\n"

    def failure(self, message: str) -> bytes:
        error = {"message": message, "type": "server_error", "param": None, "code": None}
        return b"data: " + _json({"error": error}) + b"\n\n"


class ResponsesEvents:
    """`event: <type>` + `data: {...}` pairs of one streamed Responses API answer."""

    RESPONSE_ID = "resp_demo"
    ITEM_ID = "msg_demo"

    def __init__(self, model: str, body: dict, finish_reason: str) -> None:
        self.model, self.body, self.finish_reason = model, body, finish_reason
        self._sequence = 0

    def _event(self, kind: str, **fields: object) -> bytes:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + _json(event) + b"\n\n"

    def response(self, status: str, output: list, usage: dict | None) -> dict[str, Any]:
        """The response object, as `response.*` events and the non-streamed answer carry it."""
        incomplete = status == "incomplete"
        return {
            "id": self.RESPONSE_ID,
            "object": "response",
            "created_at": CREATED_AT,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": self.body.get("instructions"),
            "max_output_tokens": self.body.get("max_output_tokens"),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True,
            "store": self.body.get("store", True),
            "temperature": self.body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "safety_identifier": self.body.get("safety_identifier"),
            "metadata": {},
        }

    def message(self, text: str, status: str) -> dict[str, Any]:
        content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        return {
            "id": self.ITEM_ID,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content if status != "in_progress" else [],
        }

    def usage(self, output_tokens: int) -> dict[str, Any]:
        input_tokens = _prompt_tokens(self.body.get("input"))
        return {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }

    def answer(self, tokens: list[str]) -> dict[str, Any]:
        """The non-streamed answer."""
        status = "incomplete" if self.finish_reason == "length" else "completed"
        item = self.message("".join(tokens), status)
        return self.response(status, [item], self.usage(len(tokens)))

    def opening(self) -> bytes:
        shell = self.response("in_progress", [], None)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return (
            self._event("response.created", response=shell)
            + self._event("response.in_progress", response=shell)
            + self._event(
                "response.output_item.added",
                output_index=0,
                item=self.message("", "in_progress"),
            )
            + self._event(
                "response.content_part.added",
                item_id=self.ITEM_ID,
                output_index=0,
                content_index=0,
                part=part,
            )
        )

    def delta(self, token: str) -> bytes:
        return self._event(
            "response.output_text.delta",
            item_id=self.ITEM_ID,
            output_index=0,
            content_index=0,
            delta=token,
            logprobs=[],
        )

    def closing(self, tokens: list[str], extra_tokens: int = 0) -> bytes:
        text = "".join(tokens)
        done = "incomplete" if self.finish_reason == "length" else "completed"
        item = self.message(text, done)
        where = {"item_id": self.ITEM_ID, "output_index": 0, "content_index": 0}
        return (
            self._event("response.output_text.done", **where, text=text, logprobs=[])
            + self._event("response.content_part.done", **where, part=item["content"][0])
            + self._event("response.output_item.done", output_index=0, item=item)
            + self._event(
                f"response.{done}", response=self.response(done, [item], self.usage(len(tokens)))
            )
        )

    def failure(self, message: str) -> bytes:
        error = {"type": "server_error", "code": "server_error", "message": message, "param": None}
        return self._event("error", error=error)
