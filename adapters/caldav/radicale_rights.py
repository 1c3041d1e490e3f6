"""Radicale rights plugin (`rights.type = "adapters.caldav.radicale_rights"`): a member reads
and writes only under `/<their username>/`; the service identity everywhere."""

from __future__ import annotations

from typing import Any

from radicale.rights import BaseRights

from adapters.caldav.embedded import embedded_of


class Rights(BaseRights):
    def __init__(self, configuration: Any) -> None:
        super().__init__(configuration)
        self._dav = embedded_of(configuration, "rights")

    def authorization(self, user: str, user_groups: set[str], path: str) -> str:
        return self._dav.authorization(user, path)
