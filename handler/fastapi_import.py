"""FastAPI, imported with its own pydantic models built on first use rather than at import.

`import fastapi` defines the OpenAPI document's pydantic models (`fastapi.openapi.models`, about
sixty classes) and pydantic builds each one's validator and serializer as the class is created:
the largest single share of FastAPI's import, itself the largest share of the relay's cold start
(docs/architecture.md, "What FastAPI costs"). The relay uses those models only to serve
`/openapi.json` (`OPENAPI_DOCS=true`, off on Lambda), so they are defined with pydantic's
`defer_build` and built by pydantic the first time one is used, as a model declared with
`defer_build=True` would be. The module ends by rebuilding three of them itself (`Schema`,
`Operation`, `Encoding`, whose fields refer to classes defined after them), which would build
them at once, a third of what is deferred; those calls are skipped for the length of the
import, and pydantic resolves the same names when it builds them on first use.

pydantic reads a config key a model does not set from its defaults table, which is where this
sets `defer_build` for the length of the import; pydantic has no public switch for it.
tests/test_init.py checks both halves: FastAPI's models are left unbuilt, the relay's own models
(the bodies, the settings: their first use is a throttled request) are built at import.
"""

from typing import Any

from pydantic import BaseModel
from pydantic._internal._config import config_defaults

pydantic_rebuild = BaseModel.__dict__["model_rebuild"]


def _built_on_first_use(
    cls: type[BaseModel],
    *,
    raise_errors: bool = True,
    _parent_namespace_depth: int = 2,
    **kwargs: Any,
) -> bool | None:
    """`model_rebuild` while FastAPI imports: a module's own `Model.model_rebuild()` leaves the
    model deferred; pydantic's rebuild on a deferred model's first use (`raise_errors=False`:
    FastAPI builds one `OAuthFlows` at import) goes through, one frame further from its caller."""
    if raise_errors:
        return None
    return pydantic_rebuild.__func__(
        cls, raise_errors=False, _parent_namespace_depth=_parent_namespace_depth + 1, **kwargs
    )


config_defaults["defer_build"] = True
BaseModel.model_rebuild = classmethod(_built_on_first_use)  # type: ignore[method-assign,assignment]
try:
    import fastapi  # noqa: F401  (imports fastapi.openapi.models, fastapi.security)
finally:
    BaseModel.model_rebuild = pydantic_rebuild  # type: ignore[method-assign]
    config_defaults["defer_build"] = False
