"""Micro-benchmark of the per-chunk parse-and-frame cost: the SDK's pydantic models vs orjson,
and the frame encode of each wire format that re-frames deltas (`/chat` SSE, `/api/chat`).

Run: `.venv/bin/python -m bench.chunk_parse`. It decided how handler/relay.py reads the stream.
"""

from __future__ import annotations

import json
import time

import orjson
from openai._models import construct_type
from openai.types.chat import ChatCompletionChunk

from handler.sse import sse_delta_frames
from handler.uichat import text_delta_frames

EVENT = orjson.dumps(
    {
        "id": "chatcmpl-demo",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-5.4-mini",
        "system_fingerprint": "fp_x",
        "choices": [
            {"index": 0, "delta": {"content": " hello"}, "logprobs": None, "finish_reason": None}
        ],
    }
)


def sdk_stream_model(line: bytes) -> bytes:
    """What the SDK's AsyncStream does per event: json.loads, then construct the model."""
    chunk = construct_type(type_=ChatCompletionChunk, value=json.loads(line))
    return b"data: " + json.dumps({"delta": chunk.choices[0].delta.content}).encode() + b"\n\n"


def pydantic_validate(line: bytes) -> bytes:
    chunk = ChatCompletionChunk.model_validate_json(line)
    return b"data: " + json.dumps({"delta": chunk.choices[0].delta.content}).encode() + b"\n\n"


def orjson_frame(line: bytes) -> bytes:
    """What handler/relay.py + handler/sse.py do."""
    content = orjson.loads(line)["choices"][0]["delta"]["content"]
    return sse_delta_frames([content])


DELTA = [" hello"]


def microseconds_per_chunk(parse, repeat: int, value: object = EVENT) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        parse(value)
    return (time.perf_counter() - started) / repeat * 1e6


def main(repeat: int = 100_000) -> dict[str, float]:
    results = {
        "sdk_stream_model_us": microseconds_per_chunk(sdk_stream_model, repeat // 10),
        "pydantic_validate_json_us": microseconds_per_chunk(pydantic_validate, repeat),
        "orjson_and_frame_us": microseconds_per_chunk(orjson_frame, repeat),
        # The encode alone, one delta per upstream read (the usual case).
        "sse_frame_encode_us": microseconds_per_chunk(sse_delta_frames, repeat, DELTA),
        "ui_message_frame_encode_us": microseconds_per_chunk(text_delta_frames, repeat, DELTA),
    }
    for name, value in results.items():
        print(f"{name:28s} {value:8.2f} µs/chunk")
    return results


if __name__ == "__main__":
    main()
