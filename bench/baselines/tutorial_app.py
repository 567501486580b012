"""The baseline: a streaming chat endpoint the way a typical "FastAPI + OpenAI" tutorial has it.

A synchronous endpoint, the synchronous OpenAI client with `stream=True`, a generator yielding
each delta's text, and `StreamingResponse`; run with `uvicorn bench.baselines.tutorial_app:app`.
Written from that description for the benchmark; nothing here is tuned.
"""

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from openai import OpenAI
from pydantic import BaseModel

app = FastAPI()
client = OpenAI()  # reads OPENAI_API_KEY and OPENAI_BASE_URL from the environment


class ChatRequest(BaseModel):
    prompt: str


@app.post("/chat")
def chat(request: ChatRequest):
    def generate():
        stream = client.chat.completions.create(
            model="gpt-5.4-mini",
            messages=[{"role": "user", "content": request.prompt}],
            stream=True,
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    return StreamingResponse(generate(), media_type="text/plain")
