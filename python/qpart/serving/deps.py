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

from fastapi import Depends, FastAPI, HTTPException, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .registry import ModelEntry, ServedPlan
from .schemas import PLAN_ID_PATTERN


@dataclass(frozen=True)
class ServerSettings:
    """Limits and auth of a server instance (docs/SERVING.md, "Limits").

    * ``max_body_bytes``: larger request bodies get 413.
    * ``max_concurrency``: requests handled at once; a request waits at most
      ``queue_timeout_s`` (default short) for a slot, then gets 503 with ``Retry-After``.
    * ``max_uploads``: request bodies being received at once (before a slot is taken, so a
      slow upload never holds one); more get 503 at once. Default: 4 x ``max_concurrency``.
    * ``body_timeout_s``: the whole body must arrive within this time, else 408.
    * ``retry_after_s``: the ``Retry-After`` of a 503.
    * ``token``: bearer token required on every ``/v1`` route but ``/v1/health`` (401),
      checked before the body is read or a slot is taken.
    """

    max_body_bytes: int = 4 * 1024 * 1024
    max_concurrency: int = 8
    queue_timeout_s: float = 0.5
    max_batch: int = 1024
    token: str | None = None
    max_uploads: int | None = None
    body_timeout_s: float = 10.0
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1 or self.max_concurrency < 1 or self.max_batch < 1:
            raise ValueError(
                "ServerSettings: max_body_bytes, max_concurrency, max_batch must be >= 1"
            )
        if self.max_uploads is not None and self.max_uploads < 1:
            raise ValueError("ServerSettings: max_uploads must be >= 1")
        if not (self.queue_timeout_s >= 0 and self.body_timeout_s > 0 and self.retry_after_s >= 0):
            raise ValueError("ServerSettings: timeouts must be positive")

    @property
    def upload_slots(self) -> int:
        """Bodies received at once (``max_uploads`` or 4 x ``max_concurrency``)."""
        return self.max_uploads if self.max_uploads is not None else 4 * self.max_concurrency

    def token_ok(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries the token (constant time)."""
        if self.token is None:
            return True
        got = (authorization or "").encode()
        return hmac.compare_digest(got, f"Bearer {self.token}".encode())


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


async def get_state(request: Request) -> ServingState:
    """The state of the app answering ``request``."""
    return request.app.state.qpart


StateDep = Annotated[ServingState, Depends(get_state)]


async def get_settings(state: StateDep) -> ServerSettings:
    return state.settings


async def get_models(state: StateDep) -> Mapping[str, ModelEntry]:
    return state.models


async def get_plans(state: StateDep) -> Mapping[str, ServedPlan]:
    return state.plans


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
ModelsDep = Annotated[Mapping[str, ModelEntry], Depends(get_models)]
PlansDep = Annotated[Mapping[str, ServedPlan], Depends(get_plans)]


async def get_served_plan(
    plan_id: Annotated[str, Path(pattern=PLAN_ID_PATTERN)], plans: PlansDep
) -> ServedPlan:
    """The served plan named by the ``{plan_id}`` path parameter (404 when unknown)."""
    served = plans.get(plan_id)
    if served is None:
        raise HTTPException(404, f"unknown plan id {plan_id!r}: ask POST /v1/plan first")
    return served


ServedPlanDep = Annotated[ServedPlan, Depends(get_served_plan)]


#: The bearer scheme, declared in the OpenAPI (``components.securitySchemes.bearer``).
BEARER = HTTPBearer(
    auto_error=False, scheme_name="bearer", description="`Authorization: Bearer <token>`"
)


async def require_token(
    request: Request,
    settings: SettingsDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
) -> None:
    """401 unless the request carries ``Authorization: Bearer <token>`` (no-op when the
    server has no token). Compared in constant time. The limits middleware applies the same
    check before reading a body; this dependency declares the scheme in the OpenAPI."""
    if not settings.token_ok(request.headers.get("authorization")):
        raise HTTPException(
            401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
