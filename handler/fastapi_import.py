"""FastAPI, imported with its own pydantic models built on first use rather than at import.

`import fastapi` defines the OpenAPI document's pydantic models (`fastapi.openapi.models`, about
sixty classes) and pydantic builds each one's validator and serializer as the class is created:
the largest single share of FastAPI's import, itself the largest share of the relay's cold start
(docs/architecture.md, "What FastAPI costs"). The relay uses those models only to serve
`/openapi.json` (`OPENAPI_DOCS=true`, off on Lambda), so they are defined with pydantic's
`defer_build` and built by pydantic the first time one is used, as a model declared with
`defer_build=True` would be.

pydantic reads a config key a model does not set from its defaults table, which is where this
sets `defer_build` for the length of the import; pydantic has no public switch for it.
tests/test_init.py checks both halves: FastAPI's models are left unbuilt, the relay's own models
(the bodies, the settings: their first use is a throttled request) are built at import.
"""

from pydantic._internal._config import config_defaults

config_defaults["defer_build"] = True
try:
    import fastapi  # noqa: F401  (imports fastapi.openapi.models, fastapi.security)
finally:
    config_defaults["defer_build"] = False
