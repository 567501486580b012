"""The chat relay that AWS Lambda runs: a FastAPI app streaming OpenAI tokens to HTTP clients.

`handler.app:app` is the ASGI app, `handler.app.handler` the buffered Mangum handler.
"""
