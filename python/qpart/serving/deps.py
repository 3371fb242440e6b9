"""What the routes depend on: the server's state (settings, the models registry, the index
of served plans) kept on ``app.state`` and read through typed FastAPI dependencies, and the
bearer-token check.

The ``Annotated`` aliases are the routes' parameter types: a route that takes
``models: ModelsDep`` gets the registry, ``served: ServedPlanDep`` gets the plan named by
the ``{plan_id}`` path parameter (422 for a malformed id, 404 for an unknown one), and
``dependencies=[Depends(require_token)]`` guards a route with the token (401). Tests swap
any of them with ``app.dependency_overrides[get_settings] = ...``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Path, Request

from .registry import ModelEntry, ServedPlan
from .schemas import PLAN_ID_PATTERN


@dataclass(frozen=True)
class ServerSettings:
    """Limits and auth of a server instance."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_concurrency: int = 8
    queue_timeout_s: float = 30.0
    max_batch: int = 1024
    token: str | None = None


@dataclass(frozen=True)
class ServingState:
    """Everything the routes read: settings, the registry (model id -> entry) and the
    index of every served plan (plan id -> :class:`ServedPlan`, over all models)."""

    settings: ServerSettings
    models: Mapping[str, ModelEntry]
    plans: Mapping[str, ServedPlan]

    @classmethod
    def build(
        cls, models: Mapping[str, ModelEntry], settings: ServerSettings | None = None
    ) -> ServingState:
        """The state serving ``models`` (copied; read-only views)."""
        models = dict(models)
        plans = {pid: sp for entry in models.values() for pid, sp in entry.plans.items()}
        return cls(settings or ServerSettings(), MappingProxyType(models), MappingProxyType(plans))

    def install(self, app: FastAPI) -> None:
        """Stores this state on ``app.state`` (where :func:`get_state` finds it)."""
        app.state.qpart = self


def get_state(request: Request) -> ServingState:
    """The state of the app answering ``request``."""
    return request.app.state.qpart


StateDep = Annotated[ServingState, Depends(get_state)]


def get_settings(state: StateDep) -> ServerSettings:
    return state.settings


def get_models(state: StateDep) -> Mapping[str, ModelEntry]:
    return state.models


def get_plans(state: StateDep) -> Mapping[str, ServedPlan]:
    return state.plans


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
ModelsDep = Annotated[Mapping[str, ModelEntry], Depends(get_models)]
PlansDep = Annotated[Mapping[str, ServedPlan], Depends(get_plans)]


def get_served_plan(
    plan_id: Annotated[str, Path(pattern=PLAN_ID_PATTERN)], plans: PlansDep
) -> ServedPlan:
    """The served plan named by the ``{plan_id}`` path parameter (404 when unknown)."""
    served = plans.get(plan_id)
    if served is None:
        raise HTTPException(404, f"unknown plan id {plan_id!r}: ask POST /v1/plan first")
    return served


ServedPlanDep = Annotated[ServedPlan, Depends(get_served_plan)]


def require_token(request: Request, settings: SettingsDep) -> None:
    """401 unless the request carries ``Authorization: Bearer <token>`` (no-op when the
    server has no token). Compared in constant time."""
    if settings.token is None:
        return
    got = request.headers.get("authorization", "")
    if not hmac.compare_digest(got.encode(), f"Bearer {settings.token}".encode()):
        raise HTTPException(
            401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
