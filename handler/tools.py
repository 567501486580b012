"""Frontend tools on `/chat` and `/api/chat`: the operator's `CHAT_TOOLS`, what a request may ask
of them, and the tool calls and results a conversation carries (docs/api.md, "Tools").

The relay never runs a tool: it offers the operator's definitions to the model, streams the
model's calls to the caller, and passes the caller's results back to the model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from handler.errors import TOOLS_NEED_EVENTS, RelayError, invalid_request

# JSON Schema's type names (draft 2020-12), for the checks of `parameters`.
SCHEMA_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
# Keywords whose value is one schema, a list of schemas, or an object of schemas.
_ONE_SCHEMA = ("items", "additionalProperties", "not", "contains", "propertyNames")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")


class ChatTool(BaseModel):
    """One function tool of `CHAT_TOOLS`: what the model is told, never code the relay runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # OpenAI's rule for function names.
    name: StrictStr = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: StrictStr | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    @field_validator("parameters")
    @classmethod
    def _an_object_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        if schema.get("type") != "object":
            raise ValueError('parameters must be a JSON Schema with "type": "object"')
        check_schema(schema, "parameters")
        return schema

    def upstream(self) -> dict[str, Any]:
        """The tool as Chat Completions' `tools` entry."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description is not None:
            function["description"] = self.description
        return {"type": "function", "function": function}


def check_schema(schema: object, where: str) -> None:
    """The structure of a JSON Schema as far as a model reads it: each keyword that holds
    schemas holds schemas, `type` names JSON Schema types, `required` lists property names.
    Not a full meta-schema check (why: docs/architecture.md, "Tools cost text nothing")."""
    pending = [(schema, where)]
    while pending:
        node, at = pending.pop()
        if isinstance(node, bool):
            continue
        if not isinstance(node, dict):
            raise ValueError(f"{at} must be a JSON Schema (an object)")
        kind = node.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
        if not all(isinstance(k, str) and k in SCHEMA_TYPES for k in kinds):
            raise ValueError(f"{at}.type must be one of {', '.join(sorted(SCHEMA_TYPES))}")
        required = node.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ValueError(f"{at}.required must be a list of property names")
        for key in ("description", "title"):
            if key in node and not isinstance(node[key], str):
                raise ValueError(f"{at}.{key} must be a string")
        if "enum" in node and not isinstance(node["enum"], list):
            raise ValueError(f"{at}.enum must be a list")
        for key in _ONE_SCHEMA:
            if key in node:
                pending.append((node[key], f"{at}.{key}"))
        for key in _SCHEMA_LISTS:
            if key in node:
                if not isinstance(node[key], list):
                    raise ValueError(f"{at}.{key} must be a list of schemas")
                pending.extend((item, f"{at}.{key}[{i}]") for i, item in enumerate(node[key]))
        for key in _SCHEMA_MAPS:
            if key in node:
                if not isinstance(node[key], dict):
                    raise ValueError(f"{at}.{key} must be an object of schemas")
                pending.extend((item, f"{at}.{key}.{name}") for name, item in node[key].items())


def check_unique_names(tools: list[ChatTool]) -> list[ChatTool]:
    names = [tool.name for tool in tools]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"the tool name {name!r} is declared twice")
    return tools


def tool_steps(messages: list[dict[str, Any]]) -> int:
    """Check that a conversation's tool calls and results pair up as Chat Completions requires,
    and count its tool round trips (assistant messages with `tool_calls`).

    Each `tool` message answers a call of the assistant message just before it, and each call
    is answered before the conversation goes on; a violation is an `invalid_request` naming the
    message, rather than the upstream's 400 turned into a 502."""
    steps = 0
    waiting: set[str] = set()
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        role = message["role"]
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id is None or message.get("content") is None:
                raise invalid_request(
                    f"{where}: a tool message needs tool_call_id and content", where
                )
            if call_id not in waiting:
                raise invalid_request(
                    f"{where}.tool_call_id: answers no open tool call of the assistant message "
                    "before it",
                    f"{where}.tool_call_id",
                )
            waiting.discard(call_id)
            continue
        if message.get("tool_call_id") is not None:
            raise invalid_request(f"{where}.tool_call_id: only tool messages have one", where)
        if waiting:
            raise _unanswered(waiting, where)
        calls = message.get("tool_calls")
        if calls:
            if role != "assistant":
                raise invalid_request(
                    f"{where}.tool_calls: only assistant messages have them", where
                )
            ids = {call["id"] for call in calls}
            if len(ids) < len(calls):
                raise invalid_request(f"{where}.tool_calls: two calls have the same id", where)
            waiting = ids
            steps += 1
        elif message.get("content") is None:
            raise invalid_request(f"{where}.content: field required", f"{where}.content")
    if waiting:
        raise _unanswered(waiting, "messages")
    return steps


def _unanswered(waiting: set[str], where: str) -> RelayError:
    ids = ", ".join(sorted(waiting))
    return invalid_request(f"{where}: the tool calls {ids} need their results (role tool) first")


def offered_tools(
    names: list[str] | None,
    messages: list[dict[str, Any]],
    tools: dict[str, dict[str, Any]],
    max_steps: int,
    *,
    events: bool,
) -> dict[str, Any]:
    """The upstream request's `tools` (and `tool_choice`) for one chat request.

    `tools` are the operator's definitions by name; `names`, the request's own list, narrows
    them and never widens them. A plain-text answer (`events` false) offers none, and refuses
    a request that names tools or carries tool calls. At `max_steps` tool round trips the model
    still sees the tools (it needs them to read the conversation) but may call none; beyond
    them the request is refused."""
    steps = tool_steps(messages)
    carries_tools = steps > 0 or bool(names)
    if not events:
        if carries_tools:
            raise RelayError(
                TOOLS_NEED_EVENTS,
                "this request needs tool calls, which only the event stream carries: "
                "send Accept: text/event-stream",
                param="tools",
            )
        return {}
    if names is not None:
        unknown = sorted(set(names) - tools.keys())
        if unknown:
            raise invalid_request(f"tools: {unknown[0]!r} is not a tool this relay offers", "tools")
        chosen = [tools[name] for name in dict.fromkeys(names)]
    else:
        chosen = list(tools.values())
    if steps > max_steps:
        raise invalid_request(
            f"too many tool round trips in the conversation ({steps} > {max_steps})", "messages"
        )
    if not chosen:
        return {}
    params: dict[str, Any] = {"tools": chosen}
    if steps == max_steps:
        params["tool_choice"] = "none"
    return params
