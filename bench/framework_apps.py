"""The two apps `bench.work.framework_instructions` counts: a route that answers at once, as
FastAPI serves it behind three nested dependencies (the shape of the relay's model routes: the
caller, the body, the admission) and as a plain Starlette route. Imported only by its child."""

from typing import Annotated

from fastapi import Depends, FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

# As the relay runs FastAPI (handler/app.py): its own telemetry off.
TELEMETRY_OFF = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


async def answer(request: Request) -> Response:
    return Response(b"ok")


async def caller(request: Request) -> int:
    return 1


async def body(request: Request, who: Annotated[int, Depends(caller)]) -> int:
    return who


async def admitted(request: Request, call: Annotated[int, Depends(body)]) -> int:
    return call


def fastapi_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, telemetry=TELEMETRY_OFF)

    @app.post("/", response_class=Response)
    async def route(request: Request, call: Annotated[int, Depends(admitted)]) -> Response:
        return await answer(request)

    return app


def starlette_app() -> Starlette:
    return Starlette(routes=[Route("/", answer, methods=["POST"])])


APPS = {"fastapi": fastapi_app, "starlette": starlette_app}
