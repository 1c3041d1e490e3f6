"""Radicale auth plugin (`auth.type = "adapters.caldav.radicale_auth"`): members' app
passwords and the service identity, checked by carecal (see `adapters.caldav.embedded`)."""

from __future__ import annotations

from typing import Any

from radicale.auth import BaseAuth

from adapters.caldav.embedded import embedded_of


class Auth(BaseAuth):
    def __init__(self, configuration: Any) -> None:
        super().__init__(configuration)
        self._dav = embedded_of(configuration, "auth")

    def _login(self, login: str, password: str) -> str:
        found = self._dav.login(login, password)
        return found.username if found is not None else ""
