"""Typed access to what the lifespan yielded (Starlette copies it into `scope["state"]`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from plugin.web.app import AppState


def state_of(connection: HTTPConnection) -> AppState:
    return cast("AppState", connection.scope["state"])
