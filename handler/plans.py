"""Caller plans (PLANS): named sets of policy, and which one a caller gets.

A plan is the global settings with some values of its own; the policy reads `Plan.settings`, so
the global settings are the plan `default` and a relay without PLANS does no work of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from handler.errors import CONFIGURATION_ERROR, RelayError
from handler.settings import Settings

log = logging.getLogger("relay.plans")

DEFAULT_PLAN = "default"
MAX_PLAN_NAME_CHARS = 64


class PlanSpec(BaseModel):
    """One entry of PLANS as written: every field optional, none other accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[str] | None = Field(default=None, min_length=1)
    max_tokens_cap: StrictInt | None = Field(default=None, ge=1)
    rate_limit_per_minute: StrictInt | None = Field(default=None, ge=0)
    token_budget_per_day: StrictInt | None = Field(default=None, ge=0)
    max_concurrent_streams: StrictInt | None = Field(default=None, ge=0)
    allow_client_system_prompt: StrictBool | None = None
    roles: list[str] = []


# The settings a plan may set, besides `models` (which sets ALLOWED_MODELS and DEFAULT_MODEL).
PLAN_SETTINGS = (
    "max_tokens_cap",
    "rate_limit_per_minute",
    "token_budget_per_day",
    "max_concurrent_streams",
    "allow_client_system_prompt",
)


@dataclass(frozen=True)
class Plan:
    """A caller's plan: its name, and the settings its policy and limits are read from."""

    name: str
    settings: Settings
    roles: frozenset[str] = field(default=frozenset())

    @property
    def limited(self) -> bool:
        """Whether a request on this plan is counted in the quota table at all."""
        return self.settings.limited

    def models(self) -> list[str]:
        """The plan's models, its default first."""
        settings = self.settings
        others = sorted(settings.model_allow_list - {settings.default_model})
        if settings.default_model in settings.model_allow_list:
            return [settings.default_model, *others]
        return others


class PlansInvalid(Exception):
    """PLANS (or a token's plan) names what is not there; the message names no secret."""


def plan_settings(settings: Settings, spec: PlanSpec) -> Settings:
    """The global settings with `spec`'s values: what a caller on the plan is held to."""
    update: dict[str, Any] = {
        name: getattr(spec, name) for name in PLAN_SETTINGS if getattr(spec, name) is not None
    }
    if spec.models is not None:
        unknown = sorted(set(spec.models) - settings.model_allow_list)
        if unknown:
            raise PlansInvalid(f"models {unknown} are not in ALLOWED_MODELS")
        update["allowed_models"] = list(spec.models)
        if settings.default_model not in spec.models:
            update["default_model"] = spec.models[0]
    view = settings.model_copy(update=update)
    # The copy keeps the original's cached properties (`model_allow_list`): drop them.
    for name in [name for name in vars(view) if name not in type(view).model_fields]:
        del vars(view)[name]
    return view


def parse_plans(settings: Settings) -> dict[str, Plan]:
    """Every plan by name, `default` included, or `PlansInvalid` saying what is wrong."""
    plans = {DEFAULT_PLAN: Plan(DEFAULT_PLAN, settings)}
    if not settings.plans.strip():
        return plans
    try:
        raw = orjson.loads(settings.plans)
    except orjson.JSONDecodeError:
        raise PlansInvalid("PLANS is not JSON") from None
    if not isinstance(raw, dict):
        raise PlansInvalid('PLANS is not a JSON object {"<name>": {...}}')
    for name, entry in raw.items():
        if not name or len(name) > MAX_PLAN_NAME_CHARS or not name.isprintable():
            raise PlansInvalid(f"PLANS has an unusable plan name {name[:MAX_PLAN_NAME_CHARS]!r}")
        try:
            spec = PlanSpec.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            raise PlansInvalid(f"plan {name!r}: {where}: {first['msg']}") from None
        try:
            plans[name] = Plan(name, plan_settings(settings, spec), frozenset(spec.roles))
        except PlansInvalid as exc:
            raise PlansInvalid(f"plan {name!r}: {exc}") from None
    owners: dict[str, str] = {}
    for plan in plans.values():
        for role in plan.roles:
            if role in owners:
                raise PlansInvalid(f"role {role!r} is in plans {owners[role]!r} and {plan.name!r}")
            owners[role] = plan.name
    if not settings.quota_table and any(plan.limited for plan in plans.values()):
        limited = sorted(plan.name for plan in plans.values() if plan.limited)
        raise PlansInvalid(f"plans {limited} set limits, which need QUOTA_TABLE")
    return plans


def configuration_error() -> RelayError:
    return RelayError(CONFIGURATION_ERROR, "the relay is misconfigured; its operator has been told")


class Plans:
    """The plans of one process, and which one a caller gets. A misconfiguration is logged once
    and then refuses every caller (`503 configuration_error`): never a caller on the wrong plan."""

    def __init__(self, settings: Settings) -> None:
        self._claim = settings.jwt_plan_claim
        self.error: str | None = None
        try:
            self.by_name = parse_plans(settings)
        except PlansInvalid as exc:
            self.error = str(exc)
            self.by_name = {}
        self._by_role = {role: plan for plan in self.by_name.values() for role in plan.roles}
        self._reported: set[str] = set()

    @property
    def any_limited(self) -> bool:
        return any(plan.limited for plan in self.by_name.values())

    def log_startup(self) -> None:
        if self.error is not None:
            log.error("plans: refusing every caller: %s", self.error)
        elif len(self.by_name) > 1:
            log.info("plans: %s", ", ".join(sorted(self.by_name)))

    def check(self) -> None:
        """Raise the configuration error when PLANS is invalid (logged at startup)."""
        if self.error is not None:
            raise configuration_error()

    def named(self, name: str | None) -> Plan:
        """The plan a client token names (None: `default`); a missing one refuses the caller
        and is logged once per name."""
        self.check()
        if name is None:
            return self.by_name[DEFAULT_PLAN]
        plan = self.by_name.get(name)
        if plan is None:
            if name not in self._reported:
                self._reported.add(name)
                log.error("plans: a client token names the plan %r, which PLANS lacks", name[:64])
            raise configuration_error()
        return plan

    def for_claims(self, claims: Mapping[str, Any]) -> Plan:
        """A signed-in user's plan: the first value of JWT_PLAN_CLAIM that names one (a list,
        as Cognito's groups, or space-separated, as `scope`), else `default`."""
        self.check()
        if self._claim:
            value = claims.get(self._claim)
            values = value.split() if isinstance(value, str) else value
            if isinstance(values, list):
                for candidate in values:
                    if isinstance(candidate, str) and candidate in self.by_name:
                        return self.by_name[candidate]
        return self.by_name[DEFAULT_PLAN]

    def for_role(self, identity: str) -> Plan:
        """An IAM caller's plan, by the name of its role (`iam:...:assumed-role/<role>` or a
        role's ARN), else `default`."""
        self.check()
        _, marker, rest = identity.rpartition(":assumed-role/")
        if not marker:
            _, marker, rest = identity.rpartition(":role/")
        role = rest.rsplit("/", 1)[-1] if marker else None
        return self._by_role.get(role or "", self.by_name[DEFAULT_PLAN])
